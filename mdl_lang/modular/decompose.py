"""Decompose a dense classifier into one binary module per class (Pan & Rajan, ESEC/FSE 2020, CM-RIE).

The model is an `nn.Sequential` of an optional Flatten, then Linear layers with
ReLU between them, then an optional Softmax (what `mdl_lang.interop.keras_h5`
imports). For class k, with the model run on labelled examples:

1. Concern identification: the hidden units that the positive examples (label
   k, predicted k) switch on, in at least `min_support` of them, and the edges
   into them that those examples carry (source nonzero while the unit is on).
2. Tangling identification: the concern alone scores everything as k, so the
   units and edges that negative examples (other labels) switch on, by the same
   rule, are restored with their original weights.
3. Channeling with removal of irrelevant edges: the module keeps the model's
   C outputs over the kept units (then the Softmax, if the model has one) and
   is seen as `{k} | other` by `ConcernView`: `(s_k, max over j != k of s_j)`.
   Edges no example carried are removed, and the outputs read only the kept
   units.

Units kept by neither step are cut out, so a module is a smaller
`nn.Sequential` (Flatten?, Linear, ReLU, ..., Linear(h, C), Softmax?,
ConcernView) whose output is the scores of `{k} | other` in the model's value
range: probabilities when the model ends in Softmax (they add up to at most
1), logits otherwise.

Why this channel (`channel="max"`, the default): it is the form of the
paper's published modules (the KMNIST-1 modules of the ESEC/FSE 2020 artifact
have all ten outputs), a module claims k exactly where its pruned network's
argmax is k, so per-module recall and precision clauses mean what they say and
blame can name a faulty module, and the vote of the modules keeps the model's
accuracy (digits MLPs of 1 to 4 hidden layers lose 0.00 points,
examples/README.md). The price is C - 2 more output columns per module.

`channel="mean"` is the paper's text: the C outputs become two, k and the
mean of the C - 1 rival outputs (a Linear(h, 2), then a 2-way softmax if the
model has one). A module then claims k whenever l_k beats the rivals' mean,
so it claims on almost every input (on KMNIST-1, recall about 0.97 and
precision about 0.2 per module), and its 2-way softmax scores are not
comparable across modules: each is normalised over its own two logits, so
the vote's "highest claim wins" no longer ranks the classes as the model does
once the modules' hidden layers differ (digits: a 4 x 64 MLP loses 33 points).
It is kept as an option for comparison with the paper's figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mdl_lang.modular.concern import ConcernView

SUPPORTED = (
    "an nn.Sequential of an optional Flatten, Linear layers with ReLU between them, and an optional final "
    "Softmax over the last dimension (Dropout and Identity are skipped)"
)
SKIPPED = (nn.Dropout, nn.Identity)
CHANNELS = ("mean", "max")


class DecomposeError(Exception):
    """A model or data set the decomposition cannot take; the message says what is supported."""


@dataclass(frozen=True)
class DenseNetwork:
    """The parts of a dense classifier the decomposition reads: its Linear layers and its ends."""

    linears: tuple[nn.Linear, ...]
    flatten: bool
    softmax: bool

    @property
    def classes(self) -> int:
        return self.linears[-1].out_features


@dataclass(frozen=True)
class ModuleMasks:
    """Which parts of the model one module keeps, in the model's coordinates.

    `units[l]` marks the kept units of hidden layer l and `edges[l]` the kept
    weights of hidden Linear l (out, in). `concern[l]` marks the units the
    positive examples use, the rest of `units[l]` being restored for the
    negative ones; it is kept for inspection and the size table.
    """

    units: tuple[torch.Tensor, ...]
    edges: tuple[torch.Tensor, ...]
    concern: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Decomposition:
    """The modules of one model, by class index, with what each keeps of the model.

    `modules[k]` maps x (N, *input_shape) to (N, 2) scores ({k}, other), in the
    model's value range: probabilities when `probabilities` (the model ends in
    Softmax), logits otherwise. `channel` says how `other` was scored: "max"
    (the best rival, the default) or "mean" (the rivals' mean).
    """

    modules: dict[int, nn.Module]
    masks: dict[int, ModuleMasks]
    model: nn.Sequential
    input_shape: tuple[int, ...]
    probabilities: bool
    positives: dict[int, int]
    negatives: dict[int, int]
    channel: str = "max"


@dataclass(frozen=True)
class ModuleStats:
    """One row of the size table: a module against its model.

    `edges` counts the module's nonzero weights, `params` all its parameters.
    `jaccard` compares edge sets in the model's coordinates: the outputs read
    every kept unit of the last hidden layer (with the mean channel, an edge
    j -> other stands for the C - 1 model edges j -> c, c != k, it averages).
    """

    label: int
    hidden_units: tuple[int, ...]
    model_hidden_units: tuple[int, ...]
    params: int
    model_params: int
    edges: int
    model_edges: int
    jaccard: float


def dense_network(model: nn.Module) -> DenseNetwork:
    """The Linear layers of `model`, checked to form a classifier the decomposition supports."""
    if not isinstance(model, nn.Sequential):
        raise DecomposeError(f"the model is a {type(model).__name__}; supported: {SUPPORTED}")
    layers = [layer for layer in model if not isinstance(layer, SKIPPED)]
    flatten = bool(layers) and isinstance(layers[0], nn.Flatten)
    if flatten and (layers[0].start_dim, layers[0].end_dim) != (1, -1):
        raise DecomposeError(f"layer 0 is a Flatten that keeps dimensions; supported: {SUPPORTED}")
    body = layers[1:] if flatten else layers
    softmax = bool(body) and isinstance(body[-1], nn.Softmax)
    if softmax and body[-1].dim not in (-1, 1):
        raise DecomposeError(f"the final Softmax is over dim {body[-1].dim}; supported: {SUPPORTED}")
    body = body[:-1] if softmax else body
    linears = tuple(body[0::2])
    activations = body[1::2]
    if not linears or len(body) % 2 == 0 or not all(isinstance(layer, nn.Linear) for layer in linears):
        raise DecomposeError(f"the layers are {_layer_names(model)}; supported: {SUPPORTED}")
    if not all(isinstance(layer, nn.ReLU) for layer in activations):
        raise DecomposeError(f"the layers are {_layer_names(model)}; supported: {SUPPORTED}")
    if linears[-1].out_features < 3:
        raise DecomposeError(f"the model has {linears[-1].out_features} outputs; a decomposition needs 3 or more")
    return DenseNetwork(linears=linears, flatten=flatten, softmax=softmax)


def _layer_names(model: nn.Module) -> str:
    return ", ".join(type(layer).__name__ for layer in model.children()) or "none"


def decompose(
    model: nn.Sequential,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    classes: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
    min_support: float = 0.01,
    channel: str = "max",
) -> Decomposition:
    """One binary module per class of `classes` (default all), identified on `inputs` and `labels`.

    `min_support` is the fraction of a class's positive (or negative) examples
    that must switch a hidden unit on for the unit to count as theirs: 0 keeps
    every unit any example uses, larger values cut rarely used units.
    `channel` is how the rivals of k become `other`: "max" (the best rival,
    the published modules' form) or "mean" (see the module docstring).
    """
    network = dense_network(model)
    wanted = _classes(classes, network.classes)
    if inputs.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise DecomposeError(
            f"inputs {tuple(inputs.shape)} and labels {tuple(labels.shape)} must be (N, ...) and (N,) with equal N"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= network.classes):
        raise DecomposeError(f"labels must lie in 0..{network.classes - 1}, the model's classes")
    if not 0 <= min_support < 1:
        raise DecomposeError(f"min_support must lie in [0, 1), got {min_support}")
    if channel not in CHANNELS:
        raise DecomposeError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    report = progress or (lambda message: None)
    with torch.no_grad():
        trace = _trace(network, inputs)
        predicted = trace.logits.argmax(dim=1)
        labels = labels.to(torch.int64)
        masks, modules, positives, negatives = {}, {}, {}, {}
        for label in wanted:
            positive = (labels == label) & (predicted == label)
            negative = labels != label
            if not positive.any():
                raise DecomposeError(f"class {label}: no example is labelled {label} and predicted {label}")
            if not negative.any():
                raise DecomposeError(f"class {label}: no example has another label, so nothing shows what to keep")
            masks[label] = _masks(trace, positive, negative, min_support)
            modules[label] = _module(network, masks[label], label, channel)
            positives[label], negatives[label] = int(positive.sum()), int(negative.sum())
            kept = "+".join(str(int(units.sum())) for units in masks[label].units) or "none (no hidden layer)"
            report(f"module {label}: {positives[label]} positive, {negatives[label]} negative examples, "
                   f"hidden units kept {kept}")
    return Decomposition(
        modules=modules,
        masks=masks,
        model=model,
        input_shape=tuple(inputs.shape[1:]),
        probabilities=network.softmax,
        positives=positives,
        negatives=negatives,
        channel=channel,
    )


def _classes(classes: Sequence[int] | None, count: int) -> list[int]:
    wanted = list(range(count)) if classes is None else list(classes)
    wrong = [label for label in wanted if not 0 <= label < count]
    if wrong or not wanted or len(set(wanted)) != len(wanted):
        raise DecomposeError(f"classes must be distinct indices in 0..{count - 1}, got {wanted}")
    return wanted


@dataclass(frozen=True)
class Trace:
    """What the model did on every example: each Linear's input is nonzero where, and each hidden unit is on where."""

    nonzero_inputs: tuple[torch.Tensor, ...]
    active: tuple[torch.Tensor, ...]
    logits: torch.Tensor


def _trace(network: DenseNetwork, inputs: torch.Tensor) -> Trace:
    reference = network.linears[0].weight
    values = inputs.to(device=reference.device, dtype=reference.dtype).flatten(start_dim=1)
    expected = network.linears[0].in_features
    if values.shape[1] != expected:
        found = values.shape[1]
        raise DecomposeError(f"inputs {tuple(inputs.shape)} give {found} features; the model takes {expected}")
    nonzero, active = [], []
    for linear in network.linears[:-1]:
        nonzero.append(values != 0)
        values = linear(values)
        active.append(values > 0)
        values = values.clamp(min=0)
    nonzero.append(values != 0)
    return Trace(tuple(nonzero), tuple(active), network.linears[-1](values))


def _masks(trace: Trace, positive: torch.Tensor, negative: torch.Tensor, min_support: float) -> ModuleMasks:
    """Concern units from the positive examples, tangling units restored from the negative ones, and their edges."""
    units, edges, concern = [], [], []
    source_kept = torch.ones(trace.nonzero_inputs[0].shape[1], dtype=torch.bool)
    for layer, active in enumerate(trace.active):
        concern_units = _supported(active[positive], min_support)
        tangling_units = _supported(active[negative], min_support)
        concern_edges = _carried(trace, layer, positive) & concern_units[:, None]
        tangling_edges = _carried(trace, layer, negative) & tangling_units[:, None]
        edges.append((concern_edges | tangling_edges) & source_kept[None, :])
        source_kept = concern_units | tangling_units
        units.append(source_kept)
        concern.append(concern_units)
    return ModuleMasks(units=tuple(units), edges=tuple(edges), concern=tuple(concern))


def _supported(active: torch.Tensor, min_support: float) -> torch.Tensor:
    """Units on in more than `min_support` of the examples (and in at least one)."""
    counts = active.sum(dim=0)
    return (counts > 0) & (counts >= min_support * active.shape[0])


def _carried(trace: Trace, layer: int, examples: torch.Tensor) -> torch.Tensor:
    """(out, in): some example had input `in` nonzero while unit `out` was on."""
    active = trace.active[layer][examples].to(torch.float32)
    nonzero = trace.nonzero_inputs[layer][examples].to(torch.float32)
    return (active.T @ nonzero) > 0


def _module(network: DenseNetwork, masks: ModuleMasks, label: int, channel: str) -> nn.Sequential:
    """The module of `label`: the kept units' Linear layers, then the outputs seen as `{label} | other`."""
    layers: list[nn.Module] = [nn.Flatten(start_dim=1)] if network.flatten else []
    source = torch.ones(network.linears[0].in_features, dtype=torch.bool)
    for linear, units, edges in zip(network.linears, masks.units, masks.edges, strict=False):
        weight = (linear.weight * edges)[units][:, source]
        bias = linear.bias[units] if linear.bias is not None else None
        layers += [_linear(weight, bias), nn.ReLU()]
        source = units
    last = network.linears[-1]
    bias = last.bias
    softmax = [nn.Softmax(dim=-1)] if network.softmax else []
    if channel == "max":
        layers.append(_linear(last.weight[:, source], bias))
        return nn.Sequential(*layers, *softmax, ConcernView(nn.Identity(), label)).eval()
    rivals = [index for index in range(last.out_features) if index != label]
    weight = torch.stack((last.weight[label], last.weight[rivals].mean(dim=0)))[:, source]
    pair = torch.stack((bias[label], bias[rivals].mean())) if bias is not None else None
    layers.append(_linear(weight, pair))
    return nn.Sequential(*layers, *softmax).eval()


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear layer with these weights; without a bias where the model's layer has none (zeros would add
    parameters the model does not have)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def jaccard_table(model: nn.Sequential, decomposition: Decomposition) -> list[ModuleStats]:
    """Per module: hidden units, parameters and nonzero edges against the model's, and their Jaccard index."""
    network = dense_network(model)
    model_edges = [linear.weight != 0 for linear in network.linears]
    model_units = tuple(linear.out_features for linear in network.linears[:-1])
    rows = []
    for label, masks in decomposition.masks.items():
        module = decomposition.modules[label]
        module_edges = [edges & model for edges, model in zip(masks.edges, model_edges, strict=False)]
        # Both outputs read the kept units of the last hidden layer (all inputs when there is none).
        last_units = masks.units[-1] if masks.units else torch.ones_like(model_edges[-1][0])
        output = last_units[None, :].expand_as(model_edges[-1])
        module_edges.append(output & model_edges[-1])
        shared = sum(int(edges.sum()) for edges in module_edges)
        union = sum(int(edges.sum()) for edges in model_edges)
        rows.append(
            ModuleStats(
                label=label,
                hidden_units=tuple(int(units.sum()) for units in masks.units),
                model_hidden_units=model_units,
                params=sum(parameter.numel() for parameter in module.parameters()),
                model_params=sum(parameter.numel() for parameter in model.parameters()),
                edges=sum(int((layer.weight != 0).sum()) for layer in module if isinstance(layer, nn.Linear)),
                model_edges=union,
                jaccard=shared / union if union else 1.0,
            )
        )
    return rows


def format_table(rows: Sequence[ModuleStats]) -> str:
    """The size table as aligned text, one module a line, for the CLI and the docs."""
    header = ("module", "hidden units", "params", "edges", "jaccard")
    lines = [header]
    for row in rows:
        units = "+".join(str(count) for count in row.hidden_units) or "-"
        model_units = "+".join(str(count) for count in row.model_hidden_units) or "-"
        lines.append((
            f"m{row.label}",
            f"{units} / {model_units}",
            f"{row.params} / {row.model_params}",
            f"{row.edges} / {row.model_edges}",
            f"{row.jaccard:.3f}",
        ))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
