"""`mdl replay`: run the inputs a monitor saved through the module again, as the report left them.

A replay file (`torch.save` of tensors and strings, read back with
`weights_only=True`) names the spec, the component and the clause. The
component is rebuilt through its `python "..."` binding, as it ran (with the
parts a `replace` around it put in), and run in `record` mode, so the run
shows whether the failure still happens. A relational counterexample is
checked again at the saved centre with the saved perturbed input (`x2`).

A replay says a failure is gone only when it re-checked the same thing; when
it cannot know (a file that does not say where the component ran, or holds no
searched point) it says `unknown` and why. Its finding is one `Result`, so that
the text and the mdl-report/1 JSON of `mdl replay` say the same thing.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mdl_lang import blame, ir
from mdl_lang.bindings import BindingError, module_for, parts_for
from mdl_lang.compiler import CheckedSpec, load
from mdl_lang.diagnostics import SourceMap
from mdl_lang.report import Result, Verdict, Witness, render_result
from mdl_lang.span import Span


class ReplayError(Exception):
    """The replay cannot run: a missing file, spec or binding."""


@dataclass(frozen=True)
class ReplayOutcome:
    """The re-checked clause's `Result`: verdict FAIL when the failure happens again (with the blame and
    witness of the check that found it), PASS when the same check now holds, UNKNOWN when the replay could
    not re-check what failed (its message says why). `sources` render the clause's source line."""

    result: Result
    sources: SourceMap = field(default_factory=SourceMap)

    @property
    def verdict(self) -> Verdict:
        return self.result.verdict

    @property
    def reproduced(self) -> bool:
        return self.verdict is Verdict.FAIL

    @property
    def text(self) -> str:
        """A failure as every failure is shown (`render_result`, so a monitor's report reads as the monitor
        wrote it); otherwise the finding, then the values that show it."""
        if self.reproduced:
            return render_result(self.result, self.sources)
        prefix = "unknown: " if self.verdict is Verdict.UNKNOWN else ""
        values = self.result.witness.values if self.result.witness else ()
        return prefix + self.result.message + (f":\n{_lines(values)}" if values else "")


def replay(path: Path, spec_path: Path | None = None) -> ReplayOutcome:
    import torch

    try:
        saved = torch.load(path, weights_only=True)
    except FileNotFoundError as error:
        raise ReplayError(f"no such replay file: {path}") from error
    except Exception as error:
        # torch's own message is several lines of advice about unpickling untrusted files, not about this one.
        raise ReplayError(
            f"{path} is not an mdl replay file (torch.load with weights_only=True cannot read it: "
            f"{type(error).__name__})"
        ) from error
    if not isinstance(saved, dict) or saved.get("schema") != "mdl-replay/1":
        raise ReplayError(f"{path} is not an mdl replay file")
    spec_file = spec_path or _recorded_spec(Path(path), saved["spec"])
    try:
        spec = load(spec_file)  # a SpecError (the spec no longer checks) is the command's to report: exit 1
    except FileNotFoundError as error:
        raise ReplayError(f"cannot load the spec {spec_file}: {error}") from error
    name = saved["component"]
    component = spec.component(name)
    if component is None:
        raise ReplayError(f"the spec declares no `{name}`")
    clause = next((c for c in component.all_clauses if c.name == saved["clause"]), None)
    recorded_path = tuple(saved.get("path", ()))
    model = _bound(spec, name, recorded_path)
    if clause is not None and clause.fragment is ir.Fragment.RELATIONAL:
        return ReplayOutcome(_replay_relational(spec, clause, model, saved), spec.sources)
    missing = [port.name for port in component.interface.inputs if port.name not in saved["inputs"]]
    if missing:
        raise ReplayError(f"{path} holds no tensor for the input {', '.join(missing)} of `{name}` (the call gave "
                          "something else): replay it by hand")
    try:
        model(*(saved["inputs"][port.name] for port in component.interface.inputs))
    except TypeError as error:
        # The replay file holds the ports' tensors only; a module that also took other arguments cannot rerun.
        raise ReplayError(f"`{name}` cannot be called with its saved inputs alone ({error}): replay it by hand, "
                          "with the arguments the call had besides its ports") from error
    failures = [r for r in model.reports
                if r.verdict is Verdict.FAIL and r.component == name and r.clause == saved["clause"]]
    if failures:
        return ReplayOutcome(failures[0], spec.sources)
    checked = _monitor_check(spec, component, saved["clause"])
    where = f"`{saved['clause']}` of `{name}`"
    if checked is None:
        # Renamed or removed since the file was saved, or a clause the monitor skips: nothing re-checked it.
        unchecked = Checked(saved["clause"], str(saved.get("kind", "")), "", (clause or component).span)
        return ReplayOutcome(_finding(name, unchecked, "monitor", Verdict.UNKNOWN, (
            f"the monitor of `{name}` has no check `{saved['clause']}` as {spec_file} stands now, so nothing "
            f"re-checked it")), spec.sources)
    if not recorded_path:
        outer = next(_replacing_outer(spec, name), None)
        if outer is not None:
            return ReplayOutcome(_finding(name, checked, "monitor", Verdict.UNKNOWN, (
                f"{where} holds on the saved inputs with `{name}`'s own parts, but `{outer}` runs "
                f"`{name}` with parts replaced and the replay file does not say where it ran; replay it "
                f"yourself: spec.bind({outer!r}, parts=...)")), spec.sources)
    return ReplayOutcome(_finding(name, checked, "monitor", Verdict.PASS, f"{where} now holds on the saved inputs"),
                         spec.sources)


class Checked(NamedTuple):
    """What a replay re-checks, as a report names and places it: a clause, a port's refinement or its type."""

    name: str
    kind: str
    fragment: str
    span: Span


def _monitor_check(spec: CheckedSpec, component: ir.Component, name: str) -> Checked | None:
    """The check the monitor reports under `name` (a clause, a port's refinement such as `y in [0, 1]`, or
    `type of y`); None when the spec no longer has it."""
    from mdl_lang.backends.torch.boundary import Boundary, type_check_name

    boundary = Boundary(component.name, component, spec.sources)
    for check in (*boundary.requires, *boundary.ensures):
        if check.name == name:
            return Checked(check.name, check.kind, check.fragment, check.span)
    for port in component.interface.ports:
        if type_check_name(port) == name:
            return Checked(name, "requires" if port.direction == "input" else "ensures", "per-sample", port.span)
    return None


def _finding(component: str, checked: Checked, backend: str, verdict: Verdict, message: str,
             witness: Witness | None = None) -> Result:
    """The replay's own verdict, where no monitor report gives one. A failure is blamed as `mdl test` blames
    the relational failure it saved: on the module, whose requires the saved inputs keep."""
    party = blame.for_ensures(component, checked.name, (component,)) if verdict is Verdict.FAIL else None
    return Result(component, checked.name, checked.kind, checked.fragment, backend, verdict, checked.span,
                  message, party, witness)


def _replay_relational(spec: CheckedSpec, clause: ir.Clause, model, saved: dict) -> Result:
    """A relational clause is not the monitor's: it is checked again at the saved inputs. Where the file holds
    the point each ball's search found (`x2`), the clause is evaluated exactly there; otherwise the balls are
    searched afresh (seed 0), and finding nothing is `unknown`, since that need not be the point that failed."""
    import torch

    from mdl_lang.backends.torch.boundary import Boundary
    from mdl_lang.backends.torch.monitor import monitor_mode
    from mdl_lang.backends.torch.relational import check_relational
    from mdl_lang.testing.runner import requires_mask

    component = spec.component(saved["component"])
    where = f"`{clause.name}` of `{component.name}`"
    checked = Checked(clause.name, clause.kind, clause.fragment.value, clause.span)

    def call(*args):
        with monitor_mode("off"):
            return model(*args)

    inputs = {port.name: saved["inputs"][port.name] for port in component.interface.inputs}
    admissible = requires_mask(Boundary(component.name, component, spec.sources))
    searched = _searched_names(clause.expr)
    if searched and searched <= saved["inputs"].keys():
        points = {name: saved["inputs"][name] for name in searched}
        failing, values, remarks = _check_at_points(clause, call, inputs, component.interface.ports, points,
                                                    admissible)
        if failing:
            return _finding(component.name, checked, "pbt", Verdict.FAIL, f"{where} fails again at the saved point",
                            Witness((0,), values))
        return _finding(component.name, checked, "pbt", Verdict.PASS,
                        f"{where} holds at the saved point" + "".join(f"; {remark}" for remark in remarks),
                        Witness((), values))
    verdict = check_relational(clause, call, inputs, component.interface.ports, admissible=admissible,
                               generator=torch.Generator().manual_seed(0), first_only=True)
    if verdict.failing:
        return _finding(component.name, checked, "pbt", Verdict.FAIL,
                        f"{where} fails again on the saved inputs (a confirmed counterexample, searched afresh)",
                        Witness(verdict.failing, verdict.values))
    if searched is not None and not searched:
        # No search: the clause was evaluated exactly, as when it failed.
        return _finding(component.name, checked, "pbt", Verdict.PASS,
                        f"{where} now holds on the saved inputs: {verdict.reason}")
    return _finding(component.name, checked, "pbt", Verdict.UNKNOWN, (
        f"the replay file holds no searched point to re-check {where} at, and a fresh search found "
        f"no counterexample: {verdict.reason}"))


def _check_at_points(clause: ir.Clause, module, inputs: dict, ports: tuple[ir.Port, ...], points: dict,
                     admissible) -> tuple[bool, tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The clause on the saved inputs (batch of 1), each ball decided at its saved point alone: false there, and
    the point inside the ball, the input's range and the requires, makes a counterexample. Returns whether the
    clause fails, the values that show it (the distance and the outputs at both points), and why a saved point
    where the clause is false is no counterexample."""
    import torch

    from mdl_lang.backends.torch.predicates import CallContext, PredicateCompiler, per_sample
    from mdl_lang.backends.torch.refinements import summarize
    from mdl_lang.backends.torch.relational import Ball, Search

    search = Search(tuple(p for p in ports if p.direction == "input"), tuple(p for p in ports if p.direction ==
                    "output"), torch.Generator(), 0, 0, 0, admissible)
    values: list[tuple[str, str]] = []
    remarks: list[str] = []

    class AtSavedPoints(PredicateCompiler):
        def emit_BallQuantifier(self, expr: ir.BallQuantifier):
            port = search.input(expr.center)
            radius, body = self.emit(expr.radius), self.emit(expr.body)

            def at_point(ctx: CallContext) -> torch.Tensor:
                center = ctx.values[expr.center]
                point = points[expr.var].to(device=center.device, dtype=center.dtype)
                if point.shape != center.shape:
                    raise ReplayError(f"the saved `{expr.var}` has shape {list(point.shape)}, the saved "
                                      f"`{expr.center}` {list(center.shape)}")
                radii = torch.as_tensor(radius(ctx), dtype=torch.float64).detach().reshape(-1).expand(ctx.batch)
                ball = Ball.around(center, radii, expr.norm, port)
                moved = CallContext({**ctx.values, expr.var: point}, ctx.dims, ctx.batch, module=ctx.module)
                false = ~per_sample(body(moved), ctx.batch)
                inside, admitted = ball.contains(point), search.admits(ctx, port.name, point)
                values.append((f"{expr.norm} distance of {expr.var} from {expr.center}",
                               f"{float(ball.distance(point)[0]):.6g} (radius {float(radii[0]):.6g})"))
                if bool(false[0]) and not bool(inside[0]):
                    remarks.append(f"`{expr.var}` lies outside the ball or the input's range: it is no counterexample")
                elif bool(false[0]) and not bool(admitted[0]):
                    remarks.append(f"`{expr.var}` breaks a requires of the module: it is no counterexample")
                there = search.moved(ctx, port.name, point).values
                for output in search.outputs:
                    values.append((f"{output.name} at {expr.var}", summarize(there[output.name][0])))
                    values.append((f"{output.name} at {expr.center}", summarize(ctx.values[output.name][0])))
                return ~(false & inside & admitted)

            return at_point

    evaluate = AtSavedPoints().emit(clause.expr)
    with torch.no_grad():
        ctx = search.context(module, inputs)
        holds = per_sample(evaluate(ctx), ctx.batch)
    return not bool(holds.all()), tuple(values), tuple(remarks)


def _searched_names(expr: ir.Expr) -> set[str] | None:
    """The variables of the balls in a clause (the points a replay must re-check); None when the clause has
    a `monotone`, whose pair of points is searched afresh."""
    names: set[str] = set()
    for node in ir.walk(expr):
        if isinstance(node, ir.Call) and node.function == "monotone":
            return None
        if isinstance(node, ir.BallQuantifier):
            names.add(node.var)
    return names


def _lines(values: tuple[tuple[str, str], ...]) -> str:
    return "\n".join(f"  {expression} = {value}" for expression, value in values)


def _recorded_spec(replay_file: Path, recorded: str) -> Path:
    """The spec a replay file names: as recorded (absolute, or relative to the working folder), else relative
    to the replay file's folder or one above it (a report folder beside the spec), nearest first."""
    spec = Path(recorded)
    if spec.is_absolute() or spec.is_file():
        return spec
    for folder in replay_file.resolve().parents:
        if (folder / spec).is_file():
            return folder / spec
    return spec


def _bound(spec: CheckedSpec, name: str, path: tuple[str, ...]):
    """The component in record mode, rebuilt as it ran at `path` (outermost component first): a composition
    gets the parts that the `replace`s around it put in."""
    component = spec.component(name)
    one_liner = (
        f"bind it yourself: spec = mdl_lang.load(...); spec.bind({name!r}, model, mode='record')"
        f"(**torch.load(REPLAY, weights_only=True)['inputs'])"
    )
    try:
        if isinstance(component, ir.Module):
            return spec.bind(name, module_for(component, component.file), mode="record", replay_dir=None)
        replaced = _replacements_at(spec, path) if len(path) > 1 else {}
        if replaced:
            return _with_replacements(spec, component, replaced)
        return spec.bind(name, parts=parts_for(spec, component), mode="record", replay_dir=None)
    except BindingError as error:
        raise ReplayError(f"{error}; {one_liner}") from error


def _with_replacements(spec: CheckedSpec, component: ir.Composition, replaced: dict[str, str]):
    """The composition bound with `replaced` in effect, as an enclosing `replace` runs it."""
    from mdl_lang.backends.torch.composed import ComposedModel
    from mdl_lang.backends.torch.monitor import MonitorOptions

    expr: ir.CompNode = component.expr
    for old, new in replaced.items():
        expr = ir.ReplaceNode(expr, old, new)
    rebuilt = dataclasses.replace(
        component, expr=expr, parts=tuple(dict.fromkeys(replaced.get(part, part) for part in component.parts)),
    )
    options = MonitorOptions("record", 1, None, spec.file)
    return ComposedModel(spec, component.name, rebuilt, parts_for(spec, rebuilt), spec.sources, options)


def _runs(node: ir.CompNode, replaced: dict[str, str], scope: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The components a composition expression runs directly, by the name they run under, each with the
    replacements in effect there (the mapping composed.py's `_plan` builds)."""
    if isinstance(node, ir.PartRef):
        name = scope + node.name
        yield replaced.get(name, name), replaced
    elif isinstance(node, ir.Pipeline):
        for stage in node.stages:
            yield from _runs(stage, replaced, scope)
    elif isinstance(node, ir.VoteNode):
        for part in node.parts:
            yield from _runs(part, replaced, scope)
    else:
        yield from _runs(node.base, {**replaced, scope + node.old: scope + node.new}, scope)


def _replacements_at(spec: CheckedSpec, path: tuple[str, ...]) -> dict[str, str]:
    """The replacements in effect where the last component of `path` ran inside the first."""
    replaced: dict[str, str] = {}
    for outer, inner in itertools.pairwise(path):
        composition = spec.component(outer)
        if not isinstance(composition, ir.Composition):
            raise ReplayError(f"the replay file's path names `{outer}`, which is no composition of the spec")
        scope = ir.import_scope(outer)
        found = next((effect for ran, effect in _runs(composition.expr, replaced, scope) if ran == inner), None)
        if found is None:
            raise ReplayError(f"the replay file's path runs `{inner}` inside `{outer}`, which has no such part")
        replaced = found
    return replaced


def _replacing_outer(spec: CheckedSpec, name: str) -> Iterator[str]:
    """The compositions that run `name` somewhere inside them with one of its parts replaced."""
    component = spec.component(name)
    if not isinstance(component, ir.Composition):
        return
    inside = set(component.parts)
    for outer_name in spec.components():
        outer = spec.component(outer_name)
        if outer_name != name and isinstance(outer, ir.Composition) and _runs_replaced(spec, outer, name, inside):
            yield outer_name


def _runs_replaced(spec: CheckedSpec, outer: ir.Composition, name: str, inside: set[str]) -> bool:
    pending = [(outer.expr, {}, ir.import_scope(outer.name))]
    seen: set[str] = set()
    while pending:
        expr, replaced, scope = pending.pop()
        for ran, effect in _runs(expr, replaced, scope):
            if ran == name and inside & effect.keys():
                return True
            nested = spec.component(ran)
            if isinstance(nested, ir.Composition) and ran not in seen:
                seen.add(ran)
                pending.append((nested.expr, effect, ir.import_scope(ran)))
    return False
