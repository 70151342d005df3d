"""`mdl test`: every clause of a component checked by the backend its fragment calls for.

- per-sample clauses and output types: property-based tests (`pbt`): hypothesis
  draws batches that keep the requires, the monitored component runs on them,
  and a failing batch is shrunk and saved for replay;
- relational clauses: the same batches, then random search and a projected
  gradient attack inside the ball, every counterexample confirmed by re-running;
- statistical clauses: the data set of the clause, one-sided Clopper-Pearson
  bounds (`stat`); a failing `vote` blames the parts whose own per-label clauses
  fail on the same data;
- cost clauses: counted or timed (`cost`).

This module orchestrates backends; it is the one place that imports several.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import HypothesisException
from torch import nn

from mdl_lang import blame, ir
from mdl_lang.backends.hypothesis import strategies
from mdl_lang.backends.torch import cost as cost_backend
from mdl_lang.backends.torch import relational, statistics
from mdl_lang.backends.torch.boundary import TYPE_CHECK, Boundary, type_check_name
from mdl_lang.backends.torch.monitor import RAISED_IN, monitor_mode
from mdl_lang.backends.torch.predicates import CallContext, UnsupportedClause
from mdl_lang.backends.torch.refinements import check_call_shape, finite_mask, range_mask, summarize
from mdl_lang.bindings import BindingError, MissingBinding, made_by, module_for, parts_for
from mdl_lang.compiler import CheckedSpec
from mdl_lang.diagnostics import Diagnostic, Note
from mdl_lang.report import Blame, Result, Role, Verdict, Witness
from mdl_lang.span import Span
from mdl_lang.testing.shrink import shrink_batch

PARTS_FIT = "parts fit"

_RAN_ON = {
    "pbt": "on an input that keeps its requires",
    "stat": "on the clause's data set",
    "cost": "while its cost was measured",
}
"""Where a module that raised was run, by the backend of the test, for the blame."""


@dataclass
class TestSettings:
    """How hard to test: examples per clause, the seed, batch sizes, where failing inputs go."""

    __test__ = False  # not a pytest test class, despite its name

    seed: int = 0
    max_examples: int = 100
    relational_examples: int = 20
    # Checking a batch is vectorised, so a wide batch tries many samples for little more than one;
    # relational clauses attack every sample, so theirs stay small.
    batch: tuple[int, int] = (1, 256)
    relational_batch: tuple[int, int] = (1, 64)
    replay_dir: Path | None = Path("reports")
    progress: Callable[[str], None] | None = None


@dataclass(frozen=True)
class ClauseItem:
    """One test: a clause (or an output type, or a composition's fit) of one component."""

    component: str
    name: str
    kind: str
    fragment: str
    backend: str
    span: object
    clause: ir.Clause | ir.CostClause | None = None


def clause_items(spec: CheckedSpec, name: str) -> list[ClauseItem]:
    """Every test of a component, in the order `mdl test` runs them."""
    component = spec.component(name)
    if component is None:
        raise KeyError(name)
    boundary = Boundary(name, component, spec.sources)
    items = [
        ClauseItem(name, check.name, "requires", check.fragment, "pbt", check.span, check.clause)
        for check in boundary.requires if check.clause is not None
    ]
    items += [
        ClauseItem(name, type_check_name(port), "ensures", "per-sample", "pbt", port.span)
        for port in component.interface.outputs
    ]
    items += [
        ClauseItem(name, check.name, "ensures", check.fragment, "pbt", check.span, check.clause)
        for check in boundary.ensures
    ]
    if isinstance(component, ir.Composition):
        items.append(ClauseItem(name, PARTS_FIT, "ensures", "per-sample", "pbt", component.span))
    for skipped in boundary.skipped:
        clause = skipped.clause
        backend = "stat" if clause.fragment is ir.Fragment.STATISTICAL else "pbt"
        items.append(ClauseItem(name, clause.name, clause.kind, clause.fragment.value, backend, clause.span, clause))
    items += [
        ClauseItem(name, cost.name, "ensures", "cost", "cost", cost.span, cost) for cost in component.all_costs
    ]
    return items


class Undecided(Exception):
    """The test could not reach a verdict; the message says why."""


class BadData(BindingError):
    """A data binding returned something its `data` declaration does not allow."""

    def __init__(self, data: ir.Data, problem: str) -> None:
        super().__init__(f"data set `{data.name}` ({_where(data.span)}): {problem}")
        self.data = data
        self.problem = problem


def _output_type_failure(report: Result, item: ClauseItem) -> bool:
    """A failed output type of the item's own component: its ensures were not evaluated on that call."""
    return (report.verdict is Verdict.FAIL and report.component == item.component
            and report.kind == "ensures" and report.clause.startswith(TYPE_CHECK))


class _ClauseFailed(Exception):
    """Raised inside a hypothesis property so that hypothesis shrinks the batch."""


class PartlyUntested(BindingError):
    """Bindings that some clauses need could not be loaded: an environment error, after the run.

    `results` holds every verdict of the run, those clauses `unknown` with the binding error as the
    reason, so that the failures found on the way are still reported.
    """

    def __init__(self, errors: list[BindingError], results: list[Result]) -> None:
        super().__init__("\n".join(dict.fromkeys(str(error) for error in errors)))
        self.results = results


class _Raised(Exception):
    """The module under test raised while a backend ran it: a failure blamed on the module, not a bug of mdl.

    `path` is the innermost monitored component the error came out of, else the component that was run.
    """

    def __init__(self, error: Exception, path: tuple[str, ...]) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.path: tuple[str, ...] = getattr(error, RAISED_IN, None) or path


class _Guarded(nn.Module):
    """A module under test whose exceptions come out as `_Raised`, so that an exception of the module is told
    apart from one of the backend running it. A wrapper module, not a function: the cost backend counts its
    parameters and switches its mode, which reach the wrapped module as a submodule."""

    def __init__(self, module: nn.Module, path: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.path = path

    def forward(self, *args: object, **kwargs: object) -> object:
        try:
            return self.module(*args, **kwargs)
        except Exception as error:
            raise _Raised(error, self.path) from error


@dataclass
class _Found:
    result: Result | None = None
    batch: dict[str, torch.Tensor] = field(default_factory=dict)


class ContractTester:
    """Tests the components of one checked spec; models come from bindings unless given."""

    def __init__(self, spec: CheckedSpec, settings_: TestSettings | None = None) -> None:
        self.spec = spec
        self.settings = settings_ or TestSettings()
        self.diagnostics: list[Diagnostic] = []
        self._models: dict[str, nn.Module] = {}

    # ------------------------------------------------------------ models

    def provide(self, name: str, module: nn.Module | None = None, parts: dict[str, nn.Module] | None = None) -> None:
        """Use these modules for `name` instead of its bindings."""
        component = self.spec.component(name)
        if isinstance(component, ir.Composition):
            parts = parts or parts_for(self.spec, component)
            self._models[name] = self.spec.bind(name, parts=parts, mode="record", replay_dir=None)
            # The parts' own clauses (a vote's blame) are measured on the very modules composed.
            for part_name, part in parts.items():
                self._models[part_name] = part
        else:
            self._models[name] = module if module is not None else module_for(component, component.file)

    def _raw(self, name: str) -> nn.Module:
        if name not in self._models:
            self.provide(name)
        return self._models[name]

    def _guarded(self, name: str, path: tuple[str, ...] | None = None) -> nn.Module:
        """The module bound to `name` (unmonitored), its exceptions raised as `_Raised` blamed on `path`."""
        return _Guarded(self._raw(name), path or (name,))

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Every module in eval mode, as it is used for inference (what contracts describe), each submodule's
        `training` flag restored afterwards: a test must not measure Dropout's noise or change BatchNorm's
        running statistics."""
        with contextlib.ExitStack() as stack:
            for model in self._models.values():
                stack.enter_context(cost_backend.evaluation_mode(model))
            yield

    def _monitored(self, name: str, replay_dir: Path | None = None) -> nn.Module:
        raw = self._raw(name)
        component = self.spec.component(name)
        if isinstance(component, ir.Composition):
            raw.reports.clear()
            raw.options.replay_dir = replay_dir
            return raw
        return self.spec.bind(name, raw, mode="record", replay_dir=replay_dir)

    # ------------------------------------------------------------ running

    def run(self, name: str, only: set[str] | None = None) -> list[Result]:
        """Every test of a component (or only the named clauses).

        Raises PartlyUntested, which holds the results, when a binding that some clauses need cannot be loaded.
        """
        items = [item for item in clause_items(self.spec, name) if only is None or item.name in only]
        try:
            self._raw(name)
        except MissingBinding as error:
            return [self._skip(item, f"no module to test: {error}") for item in items]
        unbound: list[BindingError] = []
        results = []
        for position, item in enumerate(items, start=1):
            started = time.perf_counter()
            try:
                result = self.run_item(item)
            except BindingError as error:
                # An environment error of this clause only: the others still run and are reported.
                unbound.append(error)
                result = self._result(item, Verdict.UNKNOWN, f"a binding it needs cannot be loaded: {error}")
            results.append(result)
            self._progress(f"[{position}/{len(items)}] {item.component} · {item.name} ({item.backend}): "
                           f"{result.verdict.value} in {time.perf_counter() - started:.1f}s")
        if unbound:
            raise PartlyUntested(unbound, results)
        return results

    def run_item(self, item: ClauseItem) -> Result:
        """One test, its verdict and, on failure, its blame and witness; run with every module in eval mode.

        Raises BindingError when a binding the test needs cannot be loaded.
        """
        if item.kind == "requires":
            return self._skip(item, "a requires is the caller's obligation; `mdl test` draws inputs that keep it")
        try:
            self._raw(item.component)
        except MissingBinding as error:
            return self._skip(item, f"no module to test: {error}")
        try:
            with self._inference():
                if item.backend == "cost":
                    return self._cost(item)
                if item.backend == "stat":
                    return self._statistical(item)
                if item.fragment == ir.Fragment.RELATIONAL.value:
                    return self._relational(item)
                return self._per_sample(item)
        except _Raised as raised:
            return self._crash(item, raised)
        except (UnsupportedClause, statistics.UnsupportedStatistic, MissingBinding) as reason:
            return self._unreachable(item, str(reason))
        except (strategies.StarvedRequires, strategies.UnsatisfiableRequires) as starved:
            return self._result(item, Verdict.UNKNOWN, f"inputs cannot be drawn: {starved}")
        except Undecided as reason:
            return self._result(item, Verdict.UNKNOWN, str(reason))
        except BadData as bad:
            return self._bad_data(item, bad)

    # ------------------------------------------------------------ per-sample: property-based tests

    def _per_sample(self, item: ClauseItem) -> Result:
        component = self.spec.component(item.component)
        monitored = self._monitored(item.component)
        guarded = _Guarded(monitored, (item.component,))
        found = _Found()
        inputs = component.interface.inputs

        def failing(report: Result) -> bool:
            if report.verdict is not Verdict.FAIL:
                return False
            if item.name == PARTS_FIT:
                return report.component != item.component
            return report.component == item.component and report.clause == item.name

        # A clause is not evaluated on a call whose output types fail: it must not pass on such calls.
        untyped: list[Result] = []

        def property_(batch: dict[str, torch.Tensor]) -> None:
            monitored.reports.clear()
            try:
                guarded(*(batch[port.name] for port in inputs))
            except _Raised as raised:
                found.result = self._crash(item, raised)
                found.batch = batch
                raise _ClauseFailed from raised
            if not item.name.startswith(TYPE_CHECK):
                untyped.extend(report for report in monitored.reports if _output_type_failure(report, item))
            matches = [report for report in monitored.reports if failing(report)]
            if matches:
                found.result, found.batch = matches[0], batch
                raise _ClauseFailed

        strategy = self._strategy(component, self.settings.batch)
        corner = self._corners(component)
        try:
            if corner is not None:
                property_(corner)
        except _ClauseFailed:
            pass
        at_a_corner = found.result is not None
        if not at_a_corner:
            self._hypothesis(property_, strategy, self.settings.max_examples, shrink=False)
        if found.result is None and untyped:
            return self._result(item, Verdict.UNKNOWN, f"not evaluated: {untyped[0].message}")
        if found.result is None:
            return self._result(item, Verdict.PASS, f"held on {self.settings.max_examples} generated batches")
        samples = found.result.witness.samples if found.result.witness is not None else ()
        if found.result.backend == "monitor" and samples:
            names = [port.name for port in inputs]
            still_fails = _still_fails(monitored, names, failing, requires_mask(self._boundary(component)))
            found.batch = shrink_batch(found.batch, tuple(samples), _batched_inputs(component), still_fails)
        elif not at_a_corner:
            # A crash or a failure of the whole batch names no sample: hypothesis shrinks it, one try at a
            # time. (A corner batch is kept as it is: a few samples of single values, already simple.)
            found.result = None
            self._hypothesis(property_, strategy, self.settings.max_examples)
        return self._confirmed(item, found)

    def _corners(self, component: ir.Component) -> dict[str, torch.Tensor] | None:
        """The batch of range ends, zeros and midpoints, less the samples that break a requires; None if
        it cannot be built (a shape no simple binding gives) or keeps no sample."""
        try:
            batch = strategies.corners(component)
        except (ValueError, TypeError, KeyError):
            return None
        kept = requires_mask(self._boundary(component))(batch)
        if not bool(kept.any()):
            return None
        batched = _batched_inputs(component)
        return {name: tensor[kept] if name in batched else tensor for name, tensor in batch.items()}

    def _boundary(self, component: ir.Component) -> Boundary:
        return Boundary(component.name, component, self.spec.sources)

    def _strategy(self, component: ir.Component, batch: tuple[int, int]):
        return strategies.inputs(component, batch=batch, keep=requires_mask(self._boundary(component)))

    def _hypothesis(self, property_, strategy, examples: int, shrink: bool = True) -> None:
        # `explain` re-runs the shrunk failure many times to annotate which arguments matter; our
        # report names the samples and sub-expression values itself, so it is cost without use.
        skipped = {Phase.explain} if shrink else {Phase.explain, Phase.shrink}
        phases = [phase for phase in Phase if phase not in skipped]
        test = seed(self.settings.seed)(
            settings(
                max_examples=examples, database=None, deadline=None, derandomize=False,
                suppress_health_check=list(HealthCheck), phases=phases,
            )(given(strategy)(property_))
        )
        try:
            test()
        except _ClauseFailed:
            return
        except HypothesisException as error:
            # Hypothesis gave up (no valid batch, or a flaky failure): never a pass.
            raise Undecided(f"hypothesis stopped: {type(error).__name__}: {error}") from error

    def _confirmed(self, item: ClauseItem, found: _Found) -> Result:
        """Re-run the shrunk batch once with replays on, for the report that is kept."""
        if found.result is not None and found.result.backend != "monitor":
            return found.result
        component = self.spec.component(item.component)
        monitored = self._monitored(item.component, self.settings.replay_dir)
        with torch.no_grad():
            monitored(*(found.batch[port.name] for port in component.interface.inputs))
        matches = [r for r in monitored.reports if r.verdict is Verdict.FAIL and (
            r.clause == found.result.clause and r.component == found.result.component)]
        result = matches[0] if matches else found.result
        witness = result.witness
        saved = matches and result.component == item.component and witness is not None and witness.replay
        if saved and not self._fails_alone(item, found, result):
            witness = _whole_batch_replay(witness, found.batch)
        return Result(
            item.component, item.name, item.kind, item.fragment, "pbt", Verdict.FAIL, result.span, result.message,
            result.blame, witness,
        )

    def _fails_alone(self, item: ClauseItem, found: _Found, result: Result) -> bool:
        """Whether the failing samples, without the rest of their batch, still fail the clause: the monitor
        saves only them for replay, which reproduces nothing when the module mixes samples (`x - x.mean(0)`)."""
        component = self.spec.component(item.component)
        samples = list(result.witness.samples) if result.witness is not None else []
        if not samples or len(samples) == _batch_of(found.batch):
            return True
        batched = _batched_inputs(component)
        alone = {name: tensor[samples] if name in batched else tensor for name, tensor in found.batch.items()}
        monitored = self._monitored(item.component)
        try:
            with torch.no_grad():
                monitored(*(alone[port.name] for port in component.interface.inputs))
        except Exception:  # noqa: BLE001 - a crash on the samples alone is not the failure being saved
            return False
        return any(r.verdict is Verdict.FAIL and r.component == result.component and r.clause == result.clause
                   for r in monitored.reports)

    def _crash(self, item: ClauseItem, raised: _Raised) -> Result:
        """The module raised: blame the innermost monitored part it came out of (the item's own component
        when it is a module, or when the composition itself raised)."""
        path, error = raised.path, raised.error
        party = Blame(path[-1], Role.MODULE, path, f"raised {type(error).__name__} {_RAN_ON[item.backend]}: {error}")
        return Result(item.component, item.name, item.kind, item.fragment, item.backend, Verdict.FAIL, item.span,
                      f"`{path[-1]}` raised {type(error).__name__}", party)

    # ------------------------------------------------------------ relational

    def _relational(self, item: ClauseItem) -> Result:
        component = self.spec.component(item.component)
        model = self._guarded(item.component)
        generator = torch.Generator().manual_seed(self.settings.seed)
        found = _Found()
        verdicts = []
        # LANGUAGE.md section 5: `x2` ranges over the ball intersected with the input's type and requires.
        admissible = requires_mask(self._boundary(component))

        def call(*args):
            with monitor_mode("off"):
                return model(*args)

        def property_(batch: dict[str, torch.Tensor]) -> None:
            try:
                verdict = relational.check_relational(
                    item.clause, call, batch, component.interface.ports, generator=generator, first_only=True,
                    admissible=admissible,
                )
            except _Raised as raised:
                found.result = self._crash(item, raised)
                raise _ClauseFailed from raised
            verdicts.append(verdict)
            if verdict.failing:
                path = (item.component,)
                found.result = Result(
                    item.component, item.name, item.kind, item.fragment, "pbt", Verdict.FAIL, item.span,
                    f"ensures `{item.name}` of `{item.component}` has a confirmed counterexample",
                    blame.for_ensures(item.component, item.name, path),
                    Witness(verdict.failing, verdict.values, self._save(item, verdict.counterexample)),
                )
                raise _ClauseFailed

        # The attack already narrows a failure to one sample and one perturbed input; shrinking
        # the batch around it would repeat the attack for nothing.
        self._hypothesis(
            property_, self._strategy(component, self.settings.relational_batch), self.settings.relational_examples,
            shrink=False,
        )
        if found.result is not None:
            return found.result
        return self._result(item, Verdict.PASS, f"no counterexample in {len(verdicts)} batches "
                                                "(random search and a gradient attack, each confirmed)")

    def _save(self, item: ClauseItem, tensors: dict[str, torch.Tensor] | None) -> str | None:
        folder = self.settings.replay_dir
        if folder is None or not tensors:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{item.component}-{_file_safe(item.name)}-counterexample.pt"
        torch.save({
            # Absolute: `mdl replay` may run from another folder.
            "schema": "mdl-replay/1", "spec": str(Path(self.spec.file).resolve()), "component": item.component,
            "clause": item.name, "kind": item.kind, "samples": [0],
            "inputs": {k: v.detach().cpu() for k, v in tensors.items()},
        }, path)
        return str(path)

    # ------------------------------------------------------------ statistical

    def _statistical(self, item: ClauseItem) -> Result:
        clause: ir.Clause = item.clause  # type: ignore[assignment]
        data = self._data(clause)
        component = self.spec.component(item.component)
        scores = self._scores(item.component, data[0])
        verdict = statistics.evaluate_statistical(
            clause, scores, data[1], _output_labels(component), self._data_labels(clause),
        )
        values = verdict.values
        if verdict.verdict == "pass":
            return self._result(item, Verdict.PASS, verdict.reason, values=values)
        if verdict.verdict == "unknown":
            return self._result(item, Verdict.UNKNOWN, verdict.reason, values=values)
        party = self._statistical_blame(item, component, data)
        return Result(item.component, item.name, item.kind, item.fragment, "stat", Verdict.FAIL, item.span,
                      verdict.reason, party, Witness((), values))

    def _statistical_blame(self, item: ClauseItem, component: ir.Component, data) -> Blame:
        """LANGUAGE.md section 7: a vote's failing parts, else a composition's failing parts, else the
        composition; a module's own clause blames the module."""
        path = (item.component,)
        if not isinstance(component, ir.Composition):
            return blame.for_ensures(item.component, item.name, path)
        parts = _vote_parts(self.spec, component)
        if parts is None:
            return _composition_blame(item, self._parts_failing_on(item.component, data[0]))
        failing = []
        for part_name in parts:
            part = self.spec.component(part_name)
            for clause in part.all_clauses:
                if clause.fragment is not ir.Fragment.STATISTICAL:
                    continue
                scores = self._part_scores(part_name, data[0])
                verdict = statistics.evaluate_statistical(
                    clause, scores, data[1], _output_labels(part), self._data_labels(clause),
                )
                if verdict.verdict == "fail":
                    failing.append((part_name, clause.name))
        return blame.for_statistical_vote(item.component, item.name, path, tuple(failing))

    def _parts_failing_on(self, name: str, inputs: torch.Tensor) -> tuple[blame.Fault, ...]:
        """The failures of the parts of composition `name` on a data set, one per blamed part, as the monitor
        blames them; run only after the composition's own clause failed on that data."""
        monitored = self._monitored(name)
        guarded = _Guarded(monitored, (name,))
        faults: dict[str, blame.Fault] = {}
        with torch.no_grad():
            for start in range(0, len(inputs), 1024):
                monitored.reports.clear()
                guarded(inputs[start:start + 1024])
                for report in monitored.reports:
                    party = report.blame
                    if (report.verdict is Verdict.FAIL and report.component != name and party is not None
                            and party.role is Role.MODULE):
                        # The clause is about the whole data set: a part's failure on it covers all of it.
                        faults.setdefault(party.party, blame.Fault(
                            report.component, report.clause, report.kind, party.path, None, party,
                        ))
        return tuple(faults.values())

    def _data(self, clause: ir.Clause) -> tuple[torch.Tensor, torch.Tensor]:
        declared = self._declared_data(clause)
        if declared.binding is None:
            raise MissingBinding(f"data set `{declared.name}` has no `python \"...\"` binding to load it from")
        loaded = made_by(declared, declared.file)
        if isinstance(loaded, tuple) and len(loaded) == 2:
            inputs, labels = loaded
        elif isinstance(loaded, torch.utils.data.Dataset):
            pairs = [loaded[i] for i in range(len(loaded))]
            try:
                inputs, labels = torch.stack([p[0] for p in pairs]), torch.as_tensor([int(p[1]) for p in pairs])
            except (TypeError, ValueError, RuntimeError, IndexError) as error:
                raise BadData(declared, f"its items are not (input tensor, label position) pairs: {error}") from error
        else:
            raise BadData(declared, f"returned {type(loaded).__name__}, not an (inputs, labels) pair or a Dataset")
        return _checked_data(declared, inputs, labels)

    def _declared_data(self, clause: ir.Clause) -> ir.Data:
        # A clause names its data set as the file that wrote it sees it (an imported interface's clause too).
        writer = _spec_of_file(self.spec, clause.span.file) or self.spec
        head, _, rest = clause.data.partition(".")
        spec = writer.imports.get(head) if rest else writer
        data = spec.data.get(rest or head) if spec else None
        if data is None:
            raise BindingError(f"no data set `{clause.data}`")
        return data

    def _data_labels(self, clause: ir.Clause) -> ir.LabelSet:
        return self._declared_data(clause).labels

    def _scores(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) == 0:
            # No trials: every statistic on the data set is `unknown`, and the module has nothing to score.
            return torch.empty(0, len(_output_labels(self.spec.component(name))))
        model = self._guarded(name)
        with torch.no_grad(), monitor_mode("off"):
            return torch.cat([_first(model(inputs[i:i + 1024])) for i in range(0, len(inputs), 1024)])

    def _part_scores(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        return self._scores(name, inputs)

    # ------------------------------------------------------------ cost

    def _cost(self, item: ClauseItem) -> Result:
        component = self.spec.component(item.component)
        model = self._guarded(item.component)
        inputs = component.interface.inputs
        with monitor_mode("off"):
            verdict = cost_backend.measure_cost(
                item.clause, model, lambda batch: cost_backend.example_inputs(inputs, batch),
            )
        # Numbers alone, so that JSON carries them as numbers; the unit is a value of its own.
        values = (("measured", f"{verdict.measured:g}"), ("limit", f"{verdict.limit:g}"), ("unit", verdict.unit))
        outcome = Verdict(verdict.verdict)
        party = self._cost_blame(item, component) if outcome is Verdict.FAIL else None
        return Result(item.component, item.name, item.kind, item.fragment, "cost", outcome, item.span,
                      verdict.detail, party, Witness((), values))

    def _cost_blame(self, item: ClauseItem, component: ir.Component) -> Blame:
        """A module's cost blames the module; a composition's blames a part whose own cost clause of the same
        metric fails, else the composition (its parts' contracts do not establish it)."""
        path = (item.component,)
        if not isinstance(component, ir.Composition):
            return blame.for_ensures(item.component, item.name, path)
        faults = []
        for part_name in component.parts:
            part = self.spec.component(part_name)
            if not isinstance(part, ir.Module):
                continue
            for cost in part.all_costs:
                if cost.metric != item.clause.metric:
                    continue
                with monitor_mode("off"):
                    verdict = cost_backend.measure_cost(
                        cost, self._guarded(part_name, (*path, part_name)),
                        lambda batch, ports=part.interface.inputs: cost_backend.example_inputs(ports, batch),
                    )
                if verdict.verdict == "fail":
                    part_path = (*path, part_name)
                    faults.append(blame.Fault(part_name, cost.name, "ensures", part_path, None,
                                              blame.for_ensures(part_name, cost.name, part_path)))
                    break
        return _composition_blame(item, tuple(faults))

    # ------------------------------------------------------------ helpers

    def _result(self, item: ClauseItem, verdict: Verdict, message: str, values=()) -> Result:
        return Result(item.component, item.name, item.kind, item.fragment, item.backend, verdict, item.span,
                      message, None, Witness((), tuple(values)) if values else None)

    def _unreachable(self, item: ClauseItem, reason: str) -> Result:
        """A clause no backend can check: an error diagnostic (E0419), never a pass."""
        self.diagnostics.append(Diagnostic(
            "E0419", f"no backend can check `{item.name}` of `{item.component}`: {reason}", item.span,
            help="give the data set or module a `python \"...\"` binding, or state the clause in a checkable form",
        ))
        return self._result(item, Verdict.UNKNOWN, f"no backend can check this clause: {reason}")

    def _bad_data(self, item: ClauseItem, bad: BadData) -> Result:
        """A data set whose binding does not give what its `data` declaration says: an error at the
        declaration (E0419: the clause cannot be checked on it), and `unknown`, never a verdict on such data."""
        data = bad.data
        self.diagnostics.append(Diagnostic(
            "E0419", f"data set `{data.name}` does not match its declaration: {bad.problem}", data.span,
            help=f"make the binding \"{data.binding}\" return inputs of type {data.input_type.describe()} and "
                 f"one label position of {_label_set(data.labels)} per input",
            notes=(Note(f"`{item.name}` of `{item.component}` is measured on it", item.span),),
        ))
        return self._result(item, Verdict.UNKNOWN, f"data set `{data.name}` does not match its declaration "
                                                   f"({_where(data.span)}): {bad.problem}")

    def _skip(self, item: ClauseItem, reason: str) -> Result:
        return self._result(item, Verdict.SKIP, reason)

    def _progress(self, line: str) -> None:
        if self.settings.progress is not None:
            self.settings.progress(line)


def requires_mask(boundary: Boundary) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Per sample, whether it keeps every requires of the component (types included)."""
    checks = boundary.requires

    def keep(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        bound: dict[str, int] = {}
        for port in boundary.inputs:
            if check_call_shape(port, batch.get(port.name), bound) is not None:
                return torch.zeros(_batch_of(batch), dtype=torch.bool)
        ctx = CallContext(batch, bound, _batch_of(batch))
        mask = torch.ones(ctx.batch, dtype=torch.bool)
        for check in checks:
            mask &= check.mask(ctx)
        return mask

    return keep


def _still_fails(
    monitored: nn.Module, inputs: list[str], failing: Callable[[Result], bool],
    keep: Callable[[dict[str, torch.Tensor]], torch.Tensor],
) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Per sample of a batch of shrink candidates: it keeps the requires and the same clause still fails on it."""

    def still_fails(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fails = torch.zeros(_batch_of(batch), dtype=torch.bool)
        monitored.reports.clear()
        try:
            with torch.no_grad():
                monitored(*(batch[name] for name in inputs))
        except Exception:  # noqa: BLE001 - a candidate that crashes is not the failure being shrunk
            return fails
        for report in monitored.reports:
            if failing(report) and report.witness is not None:
                fails[list(report.witness.samples)] = True
        return fails & keep(batch)

    return still_fails


def _whole_batch_replay(witness: Witness, batch: dict[str, torch.Tensor]) -> Witness:
    """The witness with its replay file holding the whole batch, not only the failing samples, and saying so."""
    saved = torch.load(witness.replay, weights_only=True)
    saved["inputs"] = {name: tensor.detach().cpu() for name, tensor in batch.items()}
    torch.save(saved, witness.replay)
    note = (f"the whole batch of {_batch_of(batch)}: the failing samples alone do not fail, the module's output "
            "depends on the other samples of the batch")
    return replace(witness, values=(*witness.values, ("replay holds", note)))


def _checked_data(data: ir.Data, inputs: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The data set as tensors, after checking it is what its declaration says: inputs of the declared
    type (shape, dtype, range), one integer label position per input, each a position of the label set."""
    if not isinstance(inputs, torch.Tensor):
        raise BadData(data, f"its inputs are {type(inputs).__name__}, not a tensor")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as error:
        raise BadData(data, f"its labels are not a tensor of label positions: {error}") from error
    port = ir.Port("inputs", "input", data.input_type, data.span)
    problem = check_call_shape(port, inputs, {})
    if problem is not None:
        raise BadData(data, problem.message)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise BadData(data, f"its labels are {str(labels.dtype).replace('torch.', '')}, not integer positions")
    if labels.shape != (inputs.shape[0],):
        raise BadData(data, f"{inputs.shape[0]} inputs but labels of shape [{', '.join(map(str, labels.shape))}]: "
                            "one label position per input")
    count = len(data.labels.labels)
    outside = (labels < 0) | (labels >= count)
    if bool(outside.any()):
        first = int(outside.nonzero()[0])
        raise BadData(data, f"{int(outside.sum())} of {labels.shape[0]} labels are not positions of "
                            f"{_label_set(data.labels)} (in [0, {count})), the first at index {first}: "
                            f"{int(labels[first])}")
    bad = ~_declared_values(data.input_type, inputs)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise BadData(data, f"{int(bad.sum())} of {inputs.shape[0]} inputs are outside {data.input_type.describe()}, "
                            f"the first at index {first}: {summarize(inputs[first])}")
    return inputs, labels.long()


def _declared_values(tensor_type: ir.TensorType, inputs: torch.Tensor) -> torch.Tensor:
    """Per input, whether its values keep the type's refinements (`in [lo, hi]`, `finite`)."""
    keep = torch.ones(inputs.shape[0], dtype=torch.bool)
    if tensor_type.value_range is not None:
        keep &= range_mask(inputs, *tensor_type.value_range).cpu()
    if tensor_type.finite:
        keep &= finite_mask(inputs).cpu()
    return keep


def _label_set(labels: ir.LabelSet) -> str:
    return labels.name or "{" + ", ".join(ir.format_label(label) for label in labels.labels) + "}"


def _where(span: Span) -> str:
    return f"{span.file}:{span.line}:{span.column}"


def _batched_inputs(component: ir.Component) -> frozenset[str]:
    return frozenset(port.name for port in component.interface.inputs if port.type.has_batch)


def _batch_of(batch: dict[str, torch.Tensor]) -> int:
    return next(iter(batch.values())).shape[0]


def _first(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else next(iter(output))


def _output_labels(component: ir.Component) -> ir.LabelSet:
    last = component.interface.outputs[0].type.dims[-1]
    if not isinstance(last, ir.DimLabels):
        raise UnsupportedClause(f"`{component.name}` has no label-indexed output to measure")
    return last.labels


def _composition_blame(item: ClauseItem, parts: tuple[blame.Fault, ...]) -> Blame:
    """A composition's own clause failed on a whole data set or in a whole measurement: a part that broke its
    own contract there, else the composition (LANGUAGE.md section 7)."""
    (share, *_) = blame.ensures_failure(item.component, item.name, (item.component,), None, (), parts)
    return share.blame


def _vote_parts(spec: ir.Spec, component: ir.Composition) -> list[str] | None:
    """The parts of a composition that is a vote, possibly with parts replaced (also `replace(v, ...)` where `v`
    names a vote composition), else None."""
    node, replaced, scope = component.expr, {}, ""
    while True:
        while isinstance(node, ir.ReplaceNode):
            # The same mapping as the composition builds when it runs (composed.py `_plan`).
            replaced[scope + node.old] = scope + node.new
            node = node.base
        reference = scope + node.name if isinstance(node, ir.PartRef) else None
        named = spec.component(replaced.get(reference, reference)) if reference is not None else None
        if not isinstance(named, ir.Composition):
            break
        node, scope = named.expr, ir.import_scope(named.name)
    if not isinstance(node, ir.VoteNode):
        return None
    names = [scope + part.name for part in node.parts if isinstance(part, ir.PartRef)]
    return [replaced.get(name, name) for name in names]


def _spec_of_file(spec: ir.Spec, file: str, seen: set[str] | None = None) -> ir.Spec | None:
    """The spec of `file` among `spec` and everything it imports."""
    seen = seen if seen is not None else set()
    if spec.file == file:
        return spec
    seen.add(spec.file)
    for imported in spec.imports.values():
        if imported.file not in seen:
            found = _spec_of_file(imported, file, seen)
            if found is not None:
                return found
    return None


def _file_safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)


