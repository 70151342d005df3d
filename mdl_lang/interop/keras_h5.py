"""Keras 2 HDF5 `Sequential` models of Flatten and Dense layers, loaded as `torch.nn.Sequential`.

Enough Keras to bind the ESEC/FSE 2020 artifacts' models in a spec, no more.
Anything else, a damaged file included, fails with `KerasImportError` naming the
file, the layer and what is supported, so a model is never half imported. h5py
is imported only when a file is read: it is the optional extra `mdl-lang[keras]`.
Keras 3 writes the same layout to a legacy `.h5` file, its weights named
`kernel` where Keras 2 writes `kernel:0`; both are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    import h5py

SUPPORTED = (
    "Keras 2 Sequential models saved as HDF5 (or by Keras 3 as legacy .h5), "
    "made of InputLayer, Flatten (channels_last), Dropout and Dense layers "
    "with activation relu, softmax, sigmoid, tanh or linear"
)
SKIPPED_LAYERS = ("InputLayer", "Dropout")
# The config keys that declare a layer's input shape, batch axis first: Keras 2's, then Keras 3's.
SHAPE_KEYS = ("batch_input_shape", "batch_shape")
# A sample's shape as far as the layers so far tell it; a leading None stands for dims not known.
Shape = tuple[int | None, ...]
ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "linear": None,
    "relu": nn.ReLU,
    "softmax": partial(nn.Softmax, dim=-1),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


class KerasImportError(Exception):
    """A Keras file outside what this importer reads; the message names the file, the layer and what is supported."""


@dataclass(frozen=True)
class KerasLayer:
    """One entry of the file's layer list: its Keras class, its name and its config."""

    kind: str
    name: str
    config: dict[str, Any]


def load_keras_sequential(path: str | Path) -> nn.Sequential:
    """The model of a Keras 2 HDF5 file as a float32 `nn.Sequential` that computes what Keras computes.

    Inputs are taken in the Keras layout, channels last: Flatten turns (N, H, W, C)
    into (N, H * W * C) row-major over H, W, C as Keras does, so (N, H, W) reads as
    C == 1. Channels-first tensors must be permuted to (N, H, W, C) by the caller.
    InputLayer and Dropout compute nothing at inference and are left out.
    """
    h5py = _import_h5py()
    path = Path(path)
    with _open(h5py, path) as file:
        try:
            return _sequential(file, path)
        except OSError as error:
            # h5py reports a damaged file that still opens (a bad heap, a truncated dataset) on the first read.
            raise _import_error(path, f"the file is damaged: a read failed ({error})") from error


def _sequential(file: h5py.File, path: Path) -> nn.Sequential:
    """The layers in order, each checked to take the features the layers before it give."""
    modules: list[nn.Module] = []
    shape: Shape | None = None
    for layer in _layer_list(file, path):
        if shape is None:  # Keras reads the input shape from the first layer that declares one
            shape = _declared_shape(layer)
        layer_modules, shape = _torch_modules(file, layer, shape, path)
        modules.extend(layer_modules)
    if not modules:
        # An identity model would bind and pass every check while computing nothing the file meant.
        raise _import_error(path, "no layer computes anything (the layer list is empty or only InputLayer and Dropout)")
    return nn.Sequential(*modules)


def _declared_shape(layer: KerasLayer) -> Shape | None:
    """The sample shape a layer's config declares for its input, if any (the first layer's usually does)."""
    for key in SHAPE_KEYS:
        declared = layer.config.get(key)
        if isinstance(declared, list) and len(declared) >= 2:
            return tuple(size if isinstance(size, int) else None for size in declared[1:])
    return None


def _import_h5py() -> ModuleType:
    try:
        import h5py
    except ImportError as error:
        raise KerasImportError("reading Keras HDF5 files needs h5py: pip install mdl-lang[keras]") from error
    return h5py


def _import_error(path: Path, problem: str) -> KerasImportError:
    """An error that says where, what went wrong, and what the importer does read."""
    return KerasImportError(f"{path}: {problem}; supported: {SUPPORTED}")


def _open(library: ModuleType, path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"no Keras model file at {path}")
    try:
        return library.File(path, "r")
    except OSError as error:
        raise _import_error(path, f"not an HDF5 file ({error})") from error


def _layer_list(file: h5py.File, path: Path) -> list[KerasLayer]:
    """The layers named by the `model_config` attribute, in order; Keras 2.0 stores a list, later 2.x a dict."""
    raw = file.attrs.get("model_config")
    if raw is None:
        raise _import_error(path, "no `model_config` attribute (a weights-only file from save_weights?)")
    try:
        model = json.loads(raw)
    except (TypeError, ValueError) as error:
        raise _import_error(path, f"`model_config` is not JSON ({error})") from error
    kind = model.get("class_name") if isinstance(model, dict) else None
    if kind != "Sequential":
        raise _import_error(path, f"the model is a `{kind}`, not a `Sequential` (functional models are not supported)")
    config = model.get("config")
    entries = config.get("layers") if isinstance(config, dict) else config
    if not isinstance(entries, list):
        raise _import_error(path, "`model_config` has no layer list")
    return [_layer(entry, path) for entry in entries]


def _layer(entry: object, path: Path) -> KerasLayer:
    if isinstance(entry, dict):
        kind, config = entry.get("class_name"), entry.get("config")
        if isinstance(kind, str) and isinstance(config, dict) and "name" in config:
            return KerasLayer(kind=kind, name=str(config["name"]), config=config)
    raise _import_error(path, f"a layer entry without `class_name` and `config.name`: {entry!r:.200}")


def _torch_modules(
    file: h5py.File, layer: KerasLayer, shape: Shape | None, path: Path
) -> tuple[list[nn.Module], Shape | None]:
    """The torch modules computing one Keras layer (none, one, or a Linear and its activation) and the
    sample shape they give, from the sample shape they take (None where no layer so far declares it)."""
    if layer.kind in SKIPPED_LAYERS:
        return [], shape
    if layer.kind == "Flatten":
        return [_flatten(layer, path)], _flattened(shape)
    if layer.kind == "Dense":
        modules = _dense(file, layer, shape[-1] if shape else None, path)
        # `units` is the kernel's second dim once _dense has checked it.
        return modules, (*(shape[:-1] if shape else (None,)), int(layer.config["units"]))
    raise _import_error(path, f"layer `{layer.name}` is a {layer.kind}, which is not supported")


def _flattened(shape: Shape | None) -> Shape | None:
    """The sample shape after a Flatten: one dim, their product, when every dim before is known."""
    sizes = [size for size in (shape or ()) if size is not None]
    return (math.prod(sizes),) if shape and len(sizes) == len(shape) else None


def _flatten(layer: KerasLayer, path: Path) -> nn.Flatten:
    # Keras permutes channels-first input to channels-last before flattening; we take channels-last only.
    data_format = layer.config.get("data_format") or "channels_last"
    if data_format != "channels_last":
        raise _import_error(path, f"layer `{layer.name}` (Flatten) has data_format {data_format}")
    return nn.Flatten(start_dim=1)


def _dense(file: h5py.File, layer: KerasLayer, features: int | None, path: Path) -> list[nn.Module]:
    """A Linear (and its activation) whose kernel takes `features` inputs, when the layers before tell it."""
    activation = layer.config.get("activation", "linear")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise _import_error(path, f"layer `{layer.name}` (Dense) has activation {activation!r}")
    units = layer.config.get("units")
    kernel = _weight(file, layer, "kernel", path)
    _check_shape(kernel, (kernel.shape[0] if kernel.ndim == 2 else None, units), layer, "kernel", path)
    if features is not None and kernel.shape[0] != features:
        # Layers that do not chain would load and then fail deep inside torch on the first input.
        raise _import_error(path, f"layer `{layer.name}` (Dense) takes {kernel.shape[0]} inputs (its kernel is "
                                  f"{tuple(kernel.shape)}), but the layers before it give {features}")
    use_bias = bool(layer.config.get("use_bias", True))
    linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=use_bias)
    with torch.no_grad():
        linear.weight.copy_(kernel.T)
        if use_bias:
            bias = _weight(file, layer, "bias", path)
            _check_shape(bias, (units,), layer, "bias", path)
            linear.bias.copy_(bias)
    make_activation = ACTIVATIONS[activation]
    return [linear] if make_activation is None else [linear, make_activation()]


def _check_shape(
    weight: torch.Tensor, expected: tuple[int | None, ...], layer: KerasLayer, role: str, path: Path
) -> None:
    """Reject a weight that disagrees with the layer's `units` here, not as a shape error deep inside torch."""
    if tuple(weight.shape) != expected:
        found = tuple(weight.shape)
        raise _import_error(path, f"layer `{layer.name}` (Dense) has a {role} of shape {found}, expected {expected}")


def _weight(file: h5py.File, layer: KerasLayer, role: str, path: Path) -> torch.Tensor:
    """The layer's `<role>:0` dataset (Keras 3: `<role>`) as float32, found by walking `model_weights/<layer>`.

    Keras nests it under `<layer>/<layer or layer_N>/` (Keras 3: `<layer>/<model>/<layer>/`),
    the suffix counting the models built before in the same session, so the path cannot be guessed.
    """
    weights = file.get("model_weights")
    group = weights.get(layer.name) if weights is not None else None
    found = [] if group is None else _datasets_named(group, (f"{role}:0", role))
    if len(found) != 1:
        where = f"model_weights/{layer.name}"
        raise _import_error(path, f"layer `{layer.name}` needs one `{role}:0` weight under {where}, found {len(found)}")
    if found[0].dtype.kind not in "fiu":
        raise _import_error(path, f"layer `{layer.name}` has a {role} of dtype {found[0].dtype}, not numbers")
    return torch.as_tensor(found[0][()], dtype=torch.float32)


def _datasets_named(group: h5py.Group, names: tuple[str, ...]) -> list[h5py.Dataset]:
    import h5py

    members: list[str] = []
    group.visit(members.append)
    return [
        group[member]
        for member in members
        if member.rsplit("/", 1)[-1] in names and isinstance(group[member], h5py.Dataset)
    ]
