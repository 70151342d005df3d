"""A decomposition on disk: module state dicts, a JSON manifest, factories, the `.mdl` spec and the size table.

Layout of the output folder, for a spec named S:

    m0.pt ... m9.pt      state dicts, loadable with torch.load(weights_only=True)
    manifest.json        mdl-decomposition/1: each module's layer list and sizes, to rebuild it
    S_modules.py         one zero-argument factory per module (`python "S_modules:load_m3"`)
    S.mdl                the modules' interfaces and their `vote`, in the formatter's canonical layout
    sizes.txt            the size and Jaccard table

The factories module is named after the spec, not `modules.py`, because Python
caches imports by name: two decompositions bound in one process must not
share a module name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from mdl_lang.modular.concern import ConcernView
from mdl_lang.modular.decompose import Decomposition, ModuleStats, format_table, jaccard_table
from mdl_lang.modular.decompose_cnn import layer_entry, layer_from_entry

SCHEMA = "mdl-decomposition/1"
MANIFEST = "manifest.json"


class ArtifactError(Exception):
    """A folder or file that is not what `mdl decompose` writes; the message names it."""


def module_name(label: int) -> str:
    """The spec and file name of the module of class index `label`."""
    return f"m{label}"


def write_decomposition(
    decomposition: Decomposition,
    out_dir: Path,
    *,
    spec_name: str,
    input_type: str | None = None,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Write the modules, manifest, factories, spec and table into `out_dir`; returns the `.mdl` path.

    `input_type` is the spec's type of one input batch, written with `B` for the
    batch (default `Tensor[B, <input shape>] float32`); `label_names` names the
    classes by index (default: the indices themselves).
    """
    if not spec_name.isidentifier():
        raise ArtifactError(f"the spec name `{spec_name}` is not an identifier")
    classes = _class_count(decomposition)
    if label_names is not None and len(label_names) != classes:
        raise ArtifactError(f"{len(label_names)} label names given for a model of {classes} classes")
    rows = module_sizes(decomposition)
    # The spec first: a bad `input_type` is refused before any file is written.
    spec = spec_text(decomposition, rows, spec_name, input_type, label_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for label, module in decomposition.modules.items():
        name = module_name(label)
        torch.save(module.state_dict(), out_dir / f"{name}.pt")
        entries[f"{name}.pt"] = {"label": label, "layers": _layer_list(module)}
    manifest = {
        "schema": SCHEMA,
        "classes": classes,
        "input_shape": list(decomposition.input_shape),
        "probabilities": decomposition.probabilities,
        "channel": decomposition.channel,
        "modules": entries,
        "sizes": [asdict(row) for row in rows],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    paths = {f"load_{module_name(label)}": f"{module_name(label)}.pt" for label in sorted(decomposition.modules)}
    (out_dir / f"{spec_name}_modules.py").write_text(factories_text(spec_name, paths))
    (out_dir / "sizes.txt").write_text(format_table(rows) + "\n")
    spec_path = out_dir / f"{spec_name}.mdl"
    spec_path.write_text(spec)
    _check_written(spec_path)
    return spec_path


def _check_written(spec_path: Path) -> None:
    """The spec written must check: options such as `--label-names a,a` or an `--input-type` naming an
    undeclared dim would otherwise leave a spec that `mdl check` rejects, after an exit 0."""
    from mdl_lang.diagnostics import render_all
    from mdl_lang.semantics.checker import check_paths

    checked = check_paths([spec_path], prove=False)
    if checked.has_errors:
        raise ArtifactError(f"the spec written to {spec_path} does not check:\n"
                            f"{render_all(checked.diagnostics, checked.sources)}")


def module_sizes(decomposition: Decomposition) -> list[ModuleStats]:
    """The size and overlap table of a dense or a CNN decomposition."""
    from mdl_lang.modular.decompose_cnn import is_cnn, size_table

    if is_cnn(decomposition.model):
        return size_table(decomposition)
    return jaccard_table(decomposition.model, decomposition)


def _class_count(decomposition: Decomposition) -> int:
    from mdl_lang.modular.decompose import dense_network
    from mdl_lang.modular.decompose_cnn import class_count, is_cnn

    if is_cnn(decomposition.model):
        return class_count(decomposition.model)
    return dense_network(decomposition.model).classes


def _layer_list(module: nn.Sequential) -> list[dict[str, object]]:
    """What `load_module` needs to rebuild `module` before loading its state dict."""
    layers: list[dict[str, object]] = []
    for layer in module:
        if isinstance(layer, nn.Flatten):
            layers.append({"kind": "flatten"})
        elif isinstance(layer, nn.Linear):
            layers.append({"kind": "linear", "in": layer.in_features, "out": layer.out_features,
                           "bias": layer.bias is not None})
        elif isinstance(layer, nn.ReLU):
            layers.append({"kind": "relu"})
        elif isinstance(layer, nn.Softmax):
            layers.append({"kind": "softmax"})
        elif isinstance(layer, ConcernView) and isinstance(layer.module, nn.Identity):
            layers.append({"kind": "best_rival", "label": layer.label})
        elif (convolutional := layer_entry(layer)) is not None:
            layers.append(convolutional)
        else:
            raise ArtifactError(f"a module layer of kind {type(layer).__name__} cannot be written")
    return layers


def load_module(path: Path) -> nn.Sequential:
    """The module saved at `path` by `write_decomposition`, rebuilt from the manifest beside it."""
    path = Path(path)
    manifest_path = path.parent / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"no module file at {path}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{manifest_path}: not a readable {SCHEMA} manifest ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ArtifactError(f"{manifest_path}: not a {SCHEMA} manifest")
    entry = manifest.get("modules", {}).get(path.name)
    if not isinstance(entry, dict):
        raise ArtifactError(f"{manifest_path} lists no module `{path.name}`")
    module = nn.Sequential(*[_layer(layer, manifest_path) for layer in entry.get("layers", [])])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ArtifactError(f"{path}: not a module file written by mdl decompose ({type(error).__name__})") from error
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ArtifactError(f"{path} does not fit the layers {manifest_path} lists: {error}") from error
    return module.eval()


def _layer(entry: object, manifest_path: Path) -> nn.Module:
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind == "flatten":
        return nn.Flatten(start_dim=1)
    if kind == "relu":
        return nn.ReLU()
    if kind == "softmax":
        return nn.Softmax(dim=-1)
    if kind == "linear" and isinstance(entry.get("in"), int) and isinstance(entry.get("out"), int):
        # Manifests written before `bias` was recorded hold only layers with one.
        return nn.Linear(entry["in"], entry["out"], bias=bool(entry.get("bias", True)))
    if kind == "best_rival" and isinstance(entry.get("label"), int):
        return ConcernView(nn.Identity(), entry["label"])
    try:
        convolutional = layer_from_entry(entry) if isinstance(entry, dict) else None
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{manifest_path}: a malformed layer entry {entry!r:.200}: {error}") from error
    if convolutional is not None:
        return convolutional
    raise ArtifactError(f"{manifest_path}: a layer entry it cannot rebuild: {entry!r:.200}")


def factories_text(spec_name: str, paths: Mapping[str, str]) -> str:
    """A factories module: per `name -> path`, a zero-argument `name()` that loads the module saved at `path`.

    The paths are relative to the factories file's own folder (so the folder can
    be moved as a whole) and each names a `.pt` file `write_decomposition` wrote,
    with its manifest beside it. `mdl demo` uses it for specs that bind modules
    of several decompositions.
    """
    lines = [
        f'"""Factories of the modules of `{spec_name}.mdl`: one per module, taking no arguments',
        '(LANGUAGE.md section 8), each loading a module `mdl decompose` wrote, relative to this folder."""',
        "",
        "from pathlib import Path",
        "",
        "from mdl_lang.modular.artifacts import load_module",
        "",
        "HERE = Path(__file__).resolve().parent",
    ]
    for name, path in paths.items():
        if not name.isidentifier():
            raise ArtifactError(f"the factory name `{name}` is not an identifier")
        lines += ["", "", f"def {name}():", f"    return load_module(HERE / {json.dumps(path)})"]
    return "\n".join(lines) + "\n"


def spec_text(
    decomposition: Decomposition,
    rows: Sequence[ModuleStats],
    spec_name: str,
    input_type: str | None,
    label_names: Sequence[str] | None,
) -> str:
    """The generated spec in canonical layout; raises ArtifactError if it does not parse (a bad `input_type`)."""
    from mdl_lang.syntax.format import format_text

    classes = _class_count(decomposition)
    labels = [_label(index, label_names) for index in range(classes)]
    decomposed = sorted(decomposition.modules)
    shape = ", ".join(str(size) for size in decomposition.input_shape)
    scores = "Tensor[B, L] float32 in [0, 1]" if decomposition.probabilities else "Tensor[B, L] float32"
    sizes = {row.label: row for row in rows}
    lines = [
        "# The modules of one classifier, one per class, written by `mdl decompose` (Pan & Rajan,",
        "# ESEC/FSE 2020, CM-RIE), over the hidden units its class and the other classes switch on.",
        *CHANNEL_COMMENTS[decomposition.channel],
        "# `vote` of all of them decides as the model does on inputs where no cut unit would fire.",
        *_range_comment(decomposition.probabilities),
        f"spec {spec_name}",
        "",
        f"labels Label = {{{', '.join(labels)}}}",
    ]
    if len(decomposed) < classes:
        chosen = ", ".join(labels[index] for index in decomposed)
        lines.append(f"labels Decomposed = {{{chosen}}} within Label")
    voted_labels = "Decomposed" if len(decomposed) < classes else "Label"
    lines += [
        "",
        "dim B : batch",
        "",
        f"type Input = {input_type or f'Tensor[B, {shape}] float32'}",
        f"type Scores[L] = {scores}",
        "",
        *_classifier_interface(),
        "",
        "# A module of one class k: its argmax is `other` when it does not claim k.",
        "interface Concern[L] {",
        "  input x: Input",
        "  output y: Scores[L]",
        "  requires finite(x)",
        "  ensures finite(y)",
        "}",
    ]
    for index in decomposed:
        row = sizes[index]
        units = "+".join(str(count) for count in row.hidden_units) or "no"
        lines += [
            "",
            f"# {units} hidden units, {row.edges} nonzero weights; Jaccard {row.jaccard:.3f} with the model's.",
            f"module {module_name(index)} : Concern[{{{labels[index]}}} | other] {{",
            f'  python "{spec_name}_modules:load_{module_name(index)}"',
        ]
        if decomposition.probabilities and decomposition.channel == "mean":
            lines.append("  ensures probabilities: sum(y) == 1 within 1e-5")
        elif decomposition.probabilities:
            lines.append("  ensures concern: sum(y) <= 1 + 1e-5")
        lines += [f"  cost {{ params <= {row.params} }}", "}"]
    parts = ", ".join(module_name(index) for index in decomposed)
    lines += [
        "",
        "# The vote of Pan & Rajan (LANGUAGE.md section 6) over the modules' disjoint label sets.",
        f"compose voted : Classifier[{voted_labels}] = vote({parts})",
    ]
    source = "\n".join(lines) + "\n"
    result = format_text(source, f"{spec_name}.mdl")
    if result.text is None:
        problems = "; ".join(f"{d.code} {d.message}" for d in result.diagnostics)
        raise ArtifactError(f"the generated spec does not parse ({problems}); check --input-type")
    return result.text


CHANNEL_COMMENTS = {
    "mean": (
        "# Module k scores `{k} | other`: the model's output k against the mean of the others (the",
        "# paper's channel), so it claims k whenever k beats the average rival.",
    ),
    "max": (
        "# Module k scores `{k} | other`: the model's output k against the best of the others, so it",
        "# claims k exactly where its argmax over all the outputs is k.",
    ),
}


def _classifier_interface() -> list[str]:
    """The vote's interface: a vote scores a label whose module abstains at the bottom of its scores'
    range, or at the lowest score of the call where they have none, so finite scores stay finite."""
    return [
        "interface Classifier[L] {", "  input x: Input", "  output y: Scores[L]", "  requires finite(x)",
        "  ensures finite(y)", "}",
    ]


def _range_comment(probabilities: bool) -> list[str]:
    if probabilities:
        return ["# The model ends in softmax, and so do the modules: scores in [0, 1].", ""]
    return [
        "# The model outputs logits, so do the modules: the vote compares the claimed logits as they are,",
        "# which ranks the classes as the model's own logits do.",
        "",
    ]


def _label(index: int, label_names: Sequence[str] | None) -> str:
    if label_names is None:
        return str(index)
    escaped = label_names[index].replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
