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
    component = spec.component(name)
    ports = component.interface.inputs
    clause = next((c for c in component.all_clauses if c.name == saved["clause"]), None)
    if clause is not None and clause.fragment is ir.Fragment.RELATIONAL:
        return _replay_relational(clause, model, saved, component)
    model(*(saved["inputs"][port.name] for port in ports))
    failures = [r for r in model.reports if r.verdict is Verdict.FAIL and r.clause == saved["clause"]]
    if not failures:
        return ReplayOutcome(False, f"`{saved['clause']}` of `{name}` now holds on the saved inputs")
    return ReplayOutcome(True, render_result(failures[0], spec.sources))


def _replay_relational(clause: ir.Clause, model, saved: dict, component: ir.Component) -> ReplayOutcome:
    """A relational clause is not the monitor's: it is checked again at the saved inputs, its balls
    searched afresh (seed 0) from them, as `mdl test` does; a counterexample is confirmed before it counts."""
    import torch

    from mdl_lang.backends.torch.monitor import monitor_mode
    from mdl_lang.backends.torch.relational import check_relational

    def call(*args):
        with monitor_mode("off"):
            return model(*args)

    inputs = {port.name: saved["inputs"][port.name] for port in component.interface.inputs}
    verdict = check_relational(clause, call, inputs, component.interface.ports,
                               generator=torch.Generator().manual_seed(0), first_only=True)
    where = f"`{clause.name}` of `{component.name}`"
    if not verdict.failing:
        return ReplayOutcome(False, f"{where} now holds on the saved inputs: {verdict.reason}")
    values = "\n".join(f"  {expression} = {value}" for expression, value in verdict.values)
    return ReplayOutcome(True, f"{where} fails again on the saved inputs (a confirmed counterexample):\n{values}")


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
