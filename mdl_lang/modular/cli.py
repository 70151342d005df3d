"""`mdl decompose` and `mdl demo`.

`mdl decompose MODEL --data DATA --out DIR` reads a dense classifier or a small
CNN (mdl_lang.modular.decompose_cnn) and a labelled data set, writes one module per class (mdl_lang.modular.artifacts),
prints the size table, and reports progress on stderr. MODEL is one of:

- a Keras 2 HDF5 file (`.h5` or `.hdf5`, any case), read by mdl_lang.interop.keras_h5;
- a state dict of an `nn.Sequential` of Linear layers with ReLU between them
  (`.pt`, loaded with `torch.load(weights_only=True)`): the Linear layers come
  from the keys and shapes, a Flatten goes first when the data has more than
  one feature axis, and `--softmax` says the model ends in Softmax;
- `pkg.mod:factory`, a zero-argument factory returning the `nn.Sequential` (the one
  way to give a CNN)
  (imported with the current directory on the path); `--weights W.pt` loads a
  state dict into it.

DATA is a `.npz` or `.pt` holding `inputs` and `labels` (or `x` and `y`).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

INPUT_KEYS = (("inputs", "labels"), ("x", "y"))


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to `mdl`."""
    from mdl_lang.modular.demo import add_demo_command

    add_decompose_command(commands)
    add_demo_command(commands)


def add_decompose_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    decompose = commands.add_parser(
        "decompose", help="split a classifier into one module per class (dense: ESEC/FSE 2020; CNN: ICSE 2022)",
    )
    decompose.add_argument("model", metavar="MODEL", help="a Keras .h5 file, a state-dict .pt file, or pkg.mod:factory")
    decompose.add_argument("--data", type=Path, required=True, metavar="DATA",
                           help=".npz or .pt with `inputs` and `labels` (or `x` and `y`) to identify the concerns")
    decompose.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the modules into")
    decompose.add_argument("--classes", type=int, nargs="+", metavar="K",
                           help="class indices to decompose (default all)")
    decompose.add_argument("--spec-name", metavar="NAME", help="name of the generated spec (default from MODEL)")
    decompose.add_argument("--input-type", metavar="TYPE",
                           help='the spec type of an input batch, B the batch: "Tensor[B, 8, 8] float32 in [0, 1]"')
    decompose.add_argument("--label-names", metavar="A,B,...", help="comma-separated class names, by index")
    decompose.add_argument("--min-support", type=float, default=0.01, metavar="F",
                           help="fraction of a class's examples that must use a unit to keep it (default 0.01)")
    decompose.add_argument("--channel", choices=("max", "mean"), default="max",
                           help="`other` as the best rival (the published modules' form; default) or the rivals' mean")
    decompose.add_argument("--softmax", action="store_true", help="a state-dict MODEL ends in Softmax")
    decompose.add_argument("--weights", type=Path, metavar="W.pt", help="state dict to load into a factory's model")
    decompose.set_defaults(handler=_run_decompose)


def _run_decompose(args: argparse.Namespace) -> int:
    from mdl_lang.cli import EXIT_OK, UsageError
    from mdl_lang.modular.artifacts import ArtifactError, module_sizes, write_decomposition
    from mdl_lang.modular.decompose import DecomposeError, decompose, format_table
    from mdl_lang.modular.decompose_cnn import decompose_cnn, is_cnn

    def progress(message: str) -> None:
        print(f"mdl decompose: {message}", file=sys.stderr)

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    inputs, labels = _load_data(args.data, UsageError)
    model = _load_model(args, inputs, UsageError)
    label_names = args.label_names.split(",") if args.label_names else None
    spec_name = args.spec_name or _spec_name(args.model)
    started = time.perf_counter()
    try:
        if is_cnn(model):
            decomposition = decompose_cnn(
                model, inputs, labels, classes=args.classes, progress=progress, min_support=args.min_support,
                channel=args.channel,
            )
        else:
            decomposition = decompose(
                model, inputs, labels, classes=args.classes, progress=progress, min_support=args.min_support,
                channel=args.channel,
            )
        spec_path = write_decomposition(
            decomposition, args.out, spec_name=spec_name, input_type=args.input_type, label_names=label_names,
        )
    except (DecomposeError, ArtifactError) as error:
        raise UsageError(f"{args.model}: {error}") from error
    _input_type_fits(spec_path, inputs, UsageError)
    progress(f"decomposed in {time.perf_counter() - started:.1f} s")
    print(format_table(module_sizes(decomposition)))
    print(f"wrote {spec_path} and its {len(decomposition.modules)} modules")
    return EXIT_OK


def _input_type_fits(spec_path: Path, inputs: torch.Tensor, usage: type[Exception]) -> None:
    """The modules' input type, as the written spec declares it, must take the data decomposed: an
    `--input-type` of another shape or dtype would leave a spec whose every test fails."""
    from mdl_lang import ir
    from mdl_lang.backends.torch.refinements import check_call_shape
    from mdl_lang.compiler import load

    spec = load(spec_path)
    module = next(component for component in spec.components().values() if isinstance(component, ir.Module))
    for port in module.interface.inputs:
        problem = check_call_shape(port, inputs[:2], {})
        if problem is not None:
            raise usage(f"--input-type does not fit the data in --data ({problem.message}); "
                        f"{spec_path} declares it")


def _spec_name(model: str) -> str:
    """A spec identifier from the model's file or factory name: `kmnist.h5` gives `kmnist_modules`."""
    stem = Path(model).stem if ":" not in model else model.rpartition(":")[2]
    name = re.sub(r"\W", "_", stem)
    return f"{'m_' if not name or name[0].isdigit() else ''}{name}_modules"


def _load_data(path: Path, usage: type[Exception]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels from a `.npz` or a `.pt` dict, by the key pairs of INPUT_KEYS."""
    import torch

    if not path.is_file():
        raise usage(f"--data {path}: no such file")
    if path.suffix == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: torch.from_numpy(archive[key]) for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise usage(f"--data {path}: not a readable .npz ({error})") from error
    elif path.suffix == ".pt":
        try:
            arrays = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # any unpickling failure is a bad file, told as usage
            raise usage(f"--data {path}: not loadable with weights_only=True ({error})") from error
    else:
        raise usage(f"--data {path}: expected a .npz or .pt file")
    for inputs_key, labels_key in INPUT_KEYS:
        if isinstance(arrays, dict) and inputs_key in arrays and labels_key in arrays:
            inputs, labels = arrays[inputs_key], arrays[labels_key]
            if isinstance(inputs, torch.Tensor) and isinstance(labels, torch.Tensor):
                return inputs.to(torch.float32), labels.to(torch.int64)
    raise usage(f"--data {path}: needs arrays `inputs` and `labels` (or `x` and `y`)")


# Keras and h5py write either suffix, and files copied from other systems come as `MODEL.H5`.
KERAS_SUFFIXES = (".h5", ".hdf5")


def _load_model(args: argparse.Namespace, inputs: torch.Tensor, usage: type[Exception]) -> nn.Module:
    source = args.model
    path = Path(source)
    if path.suffix.lower() in KERAS_SUFFIXES:
        from mdl_lang.interop.keras_h5 import KerasImportError, load_keras_sequential

        try:
            return load_keras_sequential(path)
        except (KerasImportError, FileNotFoundError) as error:
            raise usage(str(error)) from error
    if path.suffix == ".pt":
        return _runs_on(_state_dict_model(path, inputs, args.softmax, usage), inputs, source, usage)
    if ":" in source:
        return _runs_on(_factory_model(source, args.weights, usage), inputs, source, usage)
    raise usage(f"MODEL {source}: expected a .h5 file (or .hdf5), a .pt state dict, or pkg.mod:factory")


def _runs_on(model: nn.Module, inputs: torch.Tensor, source: str, usage: type[Exception]) -> nn.Module:
    """The model, once it has run on one sample of the data: layers that do not chain, or data of the wrong
    shape, are told here as the user's to fix, before any decomposing."""
    import torch

    try:
        with torch.no_grad():
            model.eval()(inputs[:1])
    except Exception as error:
        raise usage(f"MODEL {source} does not run on --data: {type(error).__name__}: {error}") from error
    return model


def _state_dict_model(path: Path, inputs: torch.Tensor, softmax: bool, usage: type[Exception]) -> nn.Sequential:
    """An `nn.Sequential` rebuilt from a state dict of Linear layers (`<index>.weight`, `<index>.bias`)."""
    import torch
    from torch import nn

    if not path.is_file():
        raise usage(f"MODEL {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a full pickled model, or a broken file: say what is expected
        raise usage(f"MODEL {path}: not a state dict loadable with weights_only=True ({error}); "
                    "save model.state_dict(), or pass pkg.mod:factory") from error
    weights = {key: value for key, value in state.items() if key.endswith(".weight")} if isinstance(state, dict) else {}
    if not weights or not all(isinstance(value, torch.Tensor) and value.ndim == 2 for value in weights.values()):
        raise usage(f"MODEL {path}: expected the state dict of an nn.Sequential of Linear layers")
    layers: list[nn.Module] = [nn.Flatten(start_dim=1)] if inputs.ndim > 2 else []
    keys = list(weights)  # the order the state dict was saved in, as `state_dict()` lists the layers
    for position, key in enumerate(keys):
        weight = weights[key]
        bias = state.get(key.removesuffix("weight") + "bias")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        layers += [linear] if position == len(keys) - 1 else [linear, nn.ReLU()]
    if softmax:
        layers.append(nn.Softmax(dim=-1))
    return nn.Sequential(*layers)


def _factory_model(source: str, weights: Path | None, usage: type[Exception]) -> nn.Module:
    import torch

    from mdl_lang.bindings import BindingError, instantiate

    try:
        model = instantiate(source, Path.cwd() / "MODEL")
    except BindingError as error:
        raise usage(f"MODEL {source}: {error}") from error
    if not isinstance(model, torch.nn.Module):
        raise usage(f"MODEL {source}: the factory returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        if not weights.is_file():
            raise usage(f"--weights {weights}: no such file")
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as error:  # shape or key mismatch, or a broken file
            raise usage(f"--weights {weights}: does not load into {source} ({error})") from error
    return model
