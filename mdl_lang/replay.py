"""`mdl replay`: run the inputs a monitor saved through the module again, as the report left them.

A replay file (`torch.save` of tensors and strings, read back with
`weights_only=True`) names the spec, the component and the clause. The
component is rebuilt through its `python "..."` binding and run in `record`
mode, so the run shows whether the failure still happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mdl_lang import ir
from mdl_lang.bindings import BindingError, module_for, parts_for
from mdl_lang.compiler import SpecError, load
from mdl_lang.report import Verdict, render_result


class ReplayError(Exception):
    """The replay cannot run: a missing file, spec or binding."""


@dataclass(frozen=True)
class ReplayOutcome:
    reproduced: bool
    text: str


def replay(path: Path, spec_path: Path | None = None) -> ReplayOutcome:
    import torch

    try:
        saved = torch.load(path, weights_only=True)
    except FileNotFoundError as error:
        raise ReplayError(f"no such replay file: {path}") from error
    except Exception as error:
        raise ReplayError(f"{path} is not an mdl replay file: {error}") from error
    if not isinstance(saved, dict) or saved.get("schema") != "mdl-replay/1":
        raise ReplayError(f"{path} is not an mdl replay file")
    spec_file = Path(spec_path or saved["spec"])
    try:
        spec = load(spec_file)
    except (FileNotFoundError, SpecError) as error:
        raise ReplayError(f"cannot load the spec {spec_file}: {error}") from error
    name = saved["component"]
    model = _bound(spec, name)
    ports = spec.component(name).interface.inputs
    model(*(saved["inputs"][port.name] for port in ports))
    failures = [r for r in model.reports if r.verdict is Verdict.FAIL and r.clause == saved["clause"]]
    if not failures:
        return ReplayOutcome(False, f"`{saved['clause']}` of `{name}` now holds on the saved inputs")
    return ReplayOutcome(True, render_result(failures[0], spec.sources))


def _bound(spec, name: str):
    component = spec.component(name)
    one_liner = (
        f"bind it yourself: spec = mdl_lang.load(...); spec.bind({name!r}, model, mode='record')"
        f"(**torch.load(REPLAY, weights_only=True)['inputs'])"
    )
    try:
        if isinstance(component, ir.Module):
            return spec.bind(name, module_for(component, component.file), mode="record", replay_dir=None)
        if isinstance(component, ir.Composition):
            return spec.bind(name, parts=parts_for(spec, component), mode="record", replay_dir=None)
    except BindingError as error:
        raise ReplayError(f"{error}; {one_liner}") from error
    raise ReplayError(f"the spec declares no `{name}`")
