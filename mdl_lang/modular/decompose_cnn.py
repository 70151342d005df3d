"""Decompose a small CNN into one binary module per class (Pan & Rajan, ICSE 2022).

The dense decomposition (ESEC/FSE 2020, `mdl_lang.modular.decompose`) removes
the edges into the hidden units a class does not use. A convolution cannot do
that: one kernel serves every output position, so zeroing a weight would also
change the positions the class does use. As the ICSE 2022 paper does, a module
keeps the convolution weights as they are and *deactivates* output positions
instead: a `PositionMask` right after each convolution that a ReLU follows
zeroes the positions (channel, row, column) outside the class's concern.

For class k, on labelled examples run through the model once:

1. Concern identification: a position is kept when it passes the ReLU on at
   least `concern_rate` of the positive examples (label k, predicted k).
2. Tangling identification: a position is also kept when it passes the ReLU on
   at least `tangling_rate` of the negative examples, each other class weighted
   equally, so that the module can still see that an input is *not* k.
3. The dense head (the Linear/ReLU layers after the convolutions) is decomposed
   by the 2020 method, CM-RIE, on the features the *masked* convolutions give:
   `decompose` from the dense decomposition, reused as it is.

Module k is one flat `nn.Sequential`: the masked convolutional layers, then the
dense module (..., Linear(h, 2), Softmax?), mapping images to the scores of
`{k} | other` in the model's value range. Convolution positions are measured on
the original network, so all classes share one pass over the data.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from mdl_lang.modular.decompose import DecomposeError, Decomposition, ModuleMasks, ModuleStats, decompose, jaccard_table

SUPPORTED = (
    "an nn.Sequential (nested ones are flattened) of convolutional layers (Conv2d with groups=1, ReLU, MaxPool2d, "
    "AvgPool2d, Dropout), then an optional Flatten, then Linear layers with ReLU between them, then an optional "
    "final Softmax"
)
CONVOLUTIONAL = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout)
_BATCH = 512

Layers = tuple[tuple[str, nn.Module], ...]


class UnsupportedLayer(DecomposeError):
    """A layer the CNN decomposition cannot slice; `path` is its dotted name inside the model."""

    def __init__(self, path: str, layer: nn.Module, reason: str) -> None:
        self.path = path
        super().__init__(f"layer `{path}` ({type(layer).__name__}): {reason}; supported: {SUPPORTED}")


class PositionMask(nn.Module):
    """Zeroes the output positions of the convolution before it that lie outside the module's concern.

    `keep` is a boolean buffer shaped like one sample of that output
    (channels, rows, columns), so it travels with `state_dict` and pickling.
    """

    def __init__(self, keep: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", keep.to(torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != tuple(self.keep.shape):
            expected = ", ".join(str(size) for size in self.keep.shape)
            raise ValueError(
                f"PositionMask expects convolution outputs (N, {expected}), got {tuple(x.shape)}: "
                "a CNN module only takes inputs of the size it was decomposed on"
            )
        # `where`, not a product: a masked position is exactly 0 even where the convolution gave inf or NaN.
        return torch.where(self.keep, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return f"kept={int(self.keep.sum())}/{self.keep.numel()}"


def model_layers(model: nn.Module) -> Layers:
    """The model's layers in order, nested `nn.Sequential`s flattened, each with its dotted path."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayer("<model>", model, "the model itself must be an nn.Sequential")
    return tuple(_flatten(model, ""))


def _flatten(sequential: nn.Sequential, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    for name, layer in sequential.named_children():
        path = f"{prefix}{name}"
        if isinstance(layer, nn.Sequential):
            yield from _flatten(layer, f"{path}.")
        else:
            yield path, layer


def split_model(model: nn.Module) -> tuple[Layers, Layers]:
    """The convolutional layers and the dense head (from the Flatten or first Linear on), each layer checked.

    Raises `UnsupportedLayer` naming the first layer outside `SUPPORTED`.
    """
    layers = model_layers(model)
    first_linear = next((index for index, (_, layer) in enumerate(layers) if isinstance(layer, nn.Linear)), None)
    if first_linear is None:
        raise UnsupportedLayer("<model>", model, "the model has no Linear layer to classify with")
    flattened = first_linear > 0 and isinstance(layers[first_linear - 1][1], nn.Flatten)
    start = first_linear - 1 if flattened else first_linear
    convolutional, head = layers[:start], layers[start:]
    for path, layer in convolutional:
        _check_convolutional(path, layer)
    _check_head(head)
    return convolutional, head


def _check_convolutional(path: str, layer: nn.Module) -> None:
    if isinstance(layer, nn.Flatten):
        raise UnsupportedLayer(path, layer, "a Flatten is supported only right before the first Linear")
    if not isinstance(layer, CONVOLUTIONAL):
        raise UnsupportedLayer(path, layer, "not a layer the decomposition knows how to slice")
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise UnsupportedLayer(path, layer, f"grouped or depthwise convolution (groups={layer.groups})")


def _check_head(head: Layers) -> None:
    """Flatten?, Linear, (ReLU, Linear)*, Softmax?: the shape the 2020 decomposition takes, Dropout skipped."""
    layers = [(path, layer) for path, layer in head if not isinstance(layer, nn.Dropout)]
    if isinstance(layers[0][1], nn.Flatten):
        path, flatten = layers.pop(0)
        if (flatten.start_dim, flatten.end_dim) != (1, -1):
            raise UnsupportedLayer(path, flatten, "a Flatten that keeps dimensions")
    if isinstance(layers[-1][1], nn.Softmax):
        path, softmax = layers.pop()
        if softmax.dim not in (1, -1):
            raise UnsupportedLayer(path, softmax, f"a Softmax over dim {softmax.dim}, not over the classes")
    for position, (path, layer) in enumerate(layers):
        expected = nn.Linear if position % 2 == 0 else nn.ReLU
        if not isinstance(layer, expected):
            raise UnsupportedLayer(path, layer, f"after the first Linear a {expected.__name__} was expected here")
    if isinstance(layers[-1][1], nn.ReLU):
        path, layer = layers[-1]
        raise UnsupportedLayer(path, layer, "the model must end in a Linear (or a Linear and a Softmax)")


def conv_sites(convolutional: Layers) -> tuple[int, ...]:
    """Indices of the convolutions a ReLU follows: only there does "active" mean "passes the ReLU"."""
    return tuple(
        index for index, (_, layer) in enumerate(convolutional[:-1])
        if isinstance(layer, nn.Conv2d) and isinstance(convolutional[index + 1][1], nn.ReLU)
    )


def decompose_cnn(
    model: nn.Sequential,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
    concern_rate: float = 0.2,
    tangling_rate: float = 0.5,
    min_support: float = 0.01,
    channel: str = "max",
) -> Decomposition:
    """One binary module per class of `classes` (default all), identified on `inputs` (N, C, H, W) and `labels`.

    A convolution position is kept for class k when it is active on at least
    `concern_rate` of k's positive examples or `tangling_rate` of its
    (class-balanced) negative ones; `min_support` is the dense decomposition's
    threshold for the hidden units of the head, and `channel` how its outputs
    become `{k} | other` (`decompose`'s, "max" by default as for dense models). `masks` in the result describe
    the head, in its own coordinates; the convolution masks are the modules'
    `PositionMask` layers (`position_masks`).
    """
    convolutional, head = split_model(model)
    for name, rate in (("concern_rate", concern_rate), ("tangling_rate", tangling_rate)):
        if not 0 < rate <= 1:
            raise DecomposeError(f"{name} must lie in (0, 1], got {rate}: 0 would keep every position")
    if inputs.ndim != 4 or labels.ndim != 1 or inputs.shape[0] != labels.shape[0] or inputs.shape[0] == 0:
        raise DecomposeError(
            f"inputs {tuple(inputs.shape)} and labels {tuple(labels.shape)} must be (N, C, H, W) and (N,) "
            "with equal N > 0"
        )
    report = progress or (lambda message: None)
    parameter = next(model.parameters())
    inputs = inputs.to(device=parameter.device, dtype=parameter.dtype)
    labels = labels.to(device=parameter.device, dtype=torch.int64)
    head_model = nn.Sequential(*(layer for _, layer in head))
    with torch.no_grad(), _evaluating(model):
        active, outputs = _activity(convolutional, head_model, inputs)
        count = outputs.shape[1]
        wanted = list(range(count)) if classes is None else list(classes)
        if not wanted or len(set(wanted)) != len(wanted) or any(not 0 <= label < count for label in wanted):
            raise DecomposeError(f"classes must be distinct indices in 0..{count - 1}, got {wanted}")
        if labels.min() < 0 or labels.max() >= count:
            raise DecomposeError(f"labels must lie in 0..{count - 1}, the model's classes")
        predicted = outputs.argmax(dim=1)
        modules: dict[int, nn.Module] = {}
        masks: dict[int, ModuleMasks] = {}
        positives: dict[int, int] = {}
        negatives: dict[int, int] = {}
        for label in wanted:
            positive = (labels == label) & (predicted == label)
            if not positive.any():
                raise DecomposeError(f"class {label}: no example is labelled {label} and predicted {label}")
            keep = _concern_positions(active, positive, labels, label, count, concern_rate, tangling_rate)
            masked = _masked_layers(convolutional, keep)
            features = nn.Sequential(*masked)(inputs)
            dense = decompose(
                head_model, features, labels, classes=[label], min_support=min_support, channel=channel,
            )
            modules[label] = nn.Sequential(*masked, *dense.modules[label]).eval()
            masks[label] = dense.masks[label]
            positives[label], negatives[label] = int(positive.sum()), int((labels != label).sum())
            kept = ", ".join(f"{int(mask.sum())}/{mask.numel()}" for mask in keep.values()) or "none"
            units = "+".join(str(int(units.sum())) for units in masks[label].units) or "-"
            report(f"module {label}: {positives[label]} positive, {negatives[label]} negative examples, "
                   f"convolution positions kept {kept}, hidden units kept {units}")
    return Decomposition(
        modules=modules,
        masks=masks,
        model=model,
        input_shape=tuple(inputs.shape[1:]),
        probabilities=isinstance(head[-1][1], nn.Softmax),
        positives=positives,
        negatives=negatives,
        channel=channel,
    )


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (Dropout off) while it is measured, then back in the mode it was in."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _activity(
    convolutional: Layers, head: nn.Sequential, inputs: torch.Tensor,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Per convolution site, per example, which positions pass the ReLU; and the model's outputs.

    Kept per example (as bool) rather than as per-class sums, because which
    examples are positive depends on the predictions, known only at the end.
    """
    sites = set(conv_sites(convolutional))
    active: dict[int, list[torch.Tensor]] = {index: [] for index in sites}
    outputs = []
    for start in range(0, inputs.shape[0], _BATCH):
        value = inputs[start : start + _BATCH]
        for index, (_, layer) in enumerate(convolutional):
            value = layer(value)
            if index in sites:
                # Read before the ReLU runs: an in-place ReLU would overwrite `value`.
                active[index].append(value > 0)
        outputs.append(head(value))
    return {index: torch.cat(chunks) for index, chunks in active.items()}, torch.cat(outputs)


def _concern_positions(
    active_at: dict[int, torch.Tensor], positive: torch.Tensor, labels: torch.Tensor, label: int, count: int,
    concern_rate: float, tangling_rate: float,
) -> dict[int, torch.Tensor]:
    """Per site, the positions module `label` keeps: active for its concern, or for its negatives."""
    others = [other for other in range(count) if other != label and bool((labels == other).any())]
    keep = {}
    for index, active in active_at.items():
        own = active[positive].to(torch.float32).mean(dim=0) >= concern_rate
        if others:
            # Each other class weighs the same, as the paper balances its negative examples by class.
            per_class = torch.stack([active[labels == other].to(torch.float32).mean(dim=0) for other in others])
            own = own | (per_class.mean(dim=0) >= tangling_rate)
        keep[index] = own
    return keep


def _masked_layers(convolutional: Layers, keep: dict[int, torch.Tensor]) -> list[nn.Module]:
    """Copies of the convolutional layers, a `PositionMask` after each site: the weights stay shared in value."""
    layers: list[nn.Module] = []
    for index, (_, layer) in enumerate(convolutional):
        layers.append(copy.deepcopy(layer).eval())
        if index in keep:
            layers.append(PositionMask(keep[index]))
    return layers


def position_masks(module: nn.Module) -> tuple[PositionMask, ...]:
    """The position masks of a CNN module, in layer order."""
    return tuple(layer for layer in module.modules() if isinstance(layer, PositionMask))


def is_cnn(model: nn.Module) -> bool:
    """Whether `model` holds a Conv2d anywhere: what `mdl decompose` reads to pick this decomposition."""
    return any(isinstance(layer, nn.Conv2d) for layer in model.modules())


def class_count(model: nn.Module) -> int:
    """How many classes a supported CNN scores: its last Linear's outputs (the dense `DenseNetwork.classes`)."""
    _, head = split_model(model)
    return next(layer.out_features for _, layer in reversed(head) if isinstance(layer, nn.Linear))


def size_table(decomposition: Decomposition) -> list[ModuleStats]:
    """The dense size table's rows for CNN modules, for `format_table`.

    `hidden_units` lists the kept positions of each masked convolution, then
    the head's hidden units; `params` and `edges` count every weight (a
    convolution's weights all stay, shared by its positions). `jaccard`
    compares edges unrolled over positions, in the model's coordinates: a
    masked position drops the edges into it, as a removed unit does in the
    dense decomposition; the head's edges count as there.
    """
    convolutional, head = split_model(decomposition.model)
    head_model = nn.Sequential(*(layer for _, layer in head))
    head_rows = {
        row.label: row
        for row in jaccard_table(head_model, Decomposition(
            modules=decomposition.modules, masks=decomposition.masks, model=head_model, input_shape=(),
            probabilities=decomposition.probabilities, positives=decomposition.positives,
            negatives=decomposition.negatives,
        ))
    }
    sites = [convolutional[index][1] for index in conv_sites(convolutional)]
    model_params = sum(parameter.numel() for parameter in decomposition.model.parameters())
    model_edges = sum(int((parameter != 0).sum()) for name, parameter in decomposition.model.named_parameters()
                      if name.endswith("weight"))
    # Edges into one output position of channel c: the nonzero weights of c's kernel.
    fan_in = [(conv.weight != 0).flatten(start_dim=1).sum(dim=1) for conv in sites]
    rows = []
    for label, module in decomposition.modules.items():
        masks = position_masks(module)
        head_row = head_rows[label]
        unrolled_model = sum(int(fan.sum()) * mask.keep[0].numel() for fan, mask in zip(fan_in, masks, strict=True))
        unrolled_kept = sum(int((mask.keep.flatten(start_dim=1).sum(dim=1) * fan).sum())
                            for fan, mask in zip(fan_in, masks, strict=True))
        head_shared = round(head_row.jaccard * head_row.model_edges)
        union = unrolled_model + head_row.model_edges
        rows.append(ModuleStats(
            label=label,
            hidden_units=(*(int(mask.keep.sum()) for mask in masks), *head_row.hidden_units),
            model_hidden_units=(*(mask.keep.numel() for mask in masks), *head_row.model_hidden_units),
            params=sum(parameter.numel() for parameter in module.parameters()),
            model_params=model_params,
            edges=sum(int((parameter != 0).sum()) for name, parameter in module.named_parameters()
                      if name.endswith("weight")),
            model_edges=model_edges,
            jaccard=(unrolled_kept + head_shared) / union if union else 1.0,
        ))
    return rows


def layer_entry(layer: nn.Module) -> dict[str, object] | None:
    """A manifest entry that rebuilds one convolutional layer of a CNN module; None for other layers.

    For the decomposition writer: the dense layers keep their own entries.
    """
    if isinstance(layer, nn.Conv2d):
        return {
            "kind": "conv2d", "in": layer.in_channels, "out": layer.out_channels,
            "kernel": list(layer.kernel_size), "stride": list(layer.stride), "padding": _padding(layer.padding),
            "dilation": list(layer.dilation), "bias": layer.bias is not None, "padding_mode": layer.padding_mode,
        }
    if isinstance(layer, nn.MaxPool2d):
        return {"kind": "maxpool2d", "kernel": layer.kernel_size, "stride": layer.stride, "padding": layer.padding,
                "dilation": layer.dilation, "ceil_mode": layer.ceil_mode}
    if isinstance(layer, nn.AvgPool2d):
        return {"kind": "avgpool2d", "kernel": layer.kernel_size, "stride": layer.stride, "padding": layer.padding,
                "ceil_mode": layer.ceil_mode, "count_include_pad": layer.count_include_pad,
                "divisor_override": layer.divisor_override}
    if isinstance(layer, PositionMask):
        return {"kind": "position_mask", "shape": list(layer.keep.shape)}
    if isinstance(layer, nn.Dropout):
        return {"kind": "dropout", "p": layer.p}
    return None


def _padding(padding: str | tuple[int, ...]) -> str | list[int]:
    return padding if isinstance(padding, str) else list(padding)


def layer_from_entry(entry: dict[str, object]) -> nn.Module | None:
    """The layer `layer_entry` described, weights and mask left to the state dict; None for another kind.

    Raises KeyError or TypeError for an entry of a known kind that lacks a field.
    """
    kind = entry.get("kind")
    if kind == "conv2d":
        padding = entry["padding"]
        return nn.Conv2d(
            entry["in"], entry["out"], tuple(entry["kernel"]), stride=tuple(entry["stride"]),
            padding=padding if isinstance(padding, str) else tuple(padding), dilation=tuple(entry["dilation"]),
            bias=bool(entry["bias"]), padding_mode=entry["padding_mode"],
        )
    if kind == "maxpool2d":
        return nn.MaxPool2d(_pair(entry["kernel"]), stride=_pair(entry["stride"]), padding=_pair(entry["padding"]),
                            dilation=_pair(entry["dilation"]), ceil_mode=entry["ceil_mode"])
    if kind == "avgpool2d":
        return nn.AvgPool2d(_pair(entry["kernel"]), stride=_pair(entry["stride"]), padding=_pair(entry["padding"]),
                            ceil_mode=entry["ceil_mode"], count_include_pad=entry["count_include_pad"],
                            divisor_override=entry["divisor_override"])
    if kind == "position_mask":
        return PositionMask(torch.ones(tuple(entry["shape"]), dtype=torch.bool))
    if kind == "dropout":
        return nn.Dropout(entry["p"])
    return None


def _pair(value: object) -> object:
    """JSON turns a pool's (h, w) tuple into a list; torch wants the tuple back, an int as it is."""
    return tuple(value) if isinstance(value, list) else value
