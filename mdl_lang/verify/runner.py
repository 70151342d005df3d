"""Verify every clause of one bound module: extract, translate, decide, report.

Each clause becomes one `Result` (robustness clauses one per point), backend `z3`: proved ->
pass, refuted -> fail (with the float32 replay and a replay file), unknown -> unknown with the
reason; statistical and cost clauses are skipped with a pointer to `mdl test`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mdl_lang import ir
from mdl_lang.report import Blame, Result, Role, Verdict, Witness
from mdl_lang.span import NO_SPAN
from mdl_lang.verify.clauses import (
    InputRegion,
    Robustness,
    Untranslatable,
    ensures_unsafe,
    input_region,
    port_shape,
    robustness,
    robustness_query,
    single_ports,
)
from mdl_lang.verify.engine import verify_query
from mdl_lang.verify.extract import Extraction, Unsupported, extract
from mdl_lang.verify.query import LinearConstraint, Outcome, Query

BACKEND = "z3"


class PointsMismatch(ValueError):
    """Robustness centres whose samples do not have the input port's shape: a bad `--points` file
    (`from_data` False) or a data binding that does not keep its declaration. Never reshaped to fit."""

    def __init__(self, message: str, from_data: bool) -> None:
        super().__init__(message)
        self.from_data = from_data


@dataclass(frozen=True)
class VerifySettings:
    """Per-query timeout, where robustness points come from, where replays go, how progress is shown."""

    timeout_s: float = 60.0
    points: torch.Tensor | None = None
    data_points: Callable[[ir.Clause], torch.Tensor | None] | None = None
    max_points: int = 20
    replay_dir: Path | None = Path("reports")
    seed: int = 0
    progress: Callable[[str], None] | None = None


class _Networks:
    """The module lowered once per need: exactly, and with a trailing softmax dropped (argmax clauses)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        self.model = model
        self.input_shape = input_shape
        self._cache: dict[bool, Extraction | Unsupported] = {}

    def get(self, argmax: bool) -> Extraction:
        if argmax not in self._cache:
            try:
                self._cache[argmax] = extract(self.model, self.input_shape, allow_softmax=argmax)
            except Unsupported as error:
                self._cache[argmax] = error
        found = self._cache[argmax]
        if isinstance(found, Unsupported):
            raise found
        return found

    def reference(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(batch.to(torch.float32))


def verify_module(spec: ir.Spec, name: str, model: nn.Module, settings: VerifySettings) -> list[Result]:
    """Results for every `ensures` of module `name` (and its output port's range)."""
    component = spec.component(name)
    if not isinstance(component, ir.Module):
        raise TypeError(f"`{name}` is not a module")
    ensures = [c for c in component.all_clauses if c.kind == "ensures"]
    try:
        input_port, output_port = single_ports(component)
        fallback = tuple(settings.points.shape[1:]) if settings.points is not None else None
        input_shape = port_shape(input_port, fallback)
        region = input_region(component, input_shape)
    except Untranslatable as error:
        return [_result(name, clause, Verdict.UNKNOWN, f"unknown: {error}") for clause in ensures]
    networks = _Networks(model, input_shape)
    checker = _ClauseChecker(name, component, networks, region, input_port, output_port, settings)
    results = checker.output_range()
    for clause in ensures:
        results.extend(checker.clause(clause))
    return results


class _ClauseChecker:
    def __init__(self, name, component, networks: _Networks, region: InputRegion, input_port, output_port,
                 settings: VerifySettings) -> None:
        self.name = name
        self.component = component
        self.networks = networks
        self.region = region
        self.input_port = input_port
        self.output_port = output_port
        self.settings = settings

    def clause(self, clause: ir.Clause) -> list[Result]:
        if clause.fragment in (ir.Fragment.STATISTICAL, ir.Fragment.COST):
            return [_result(self.name, clause, Verdict.SKIP,
                            f"not a verification clause ({clause.fragment.value}): `mdl test` checks it")]
        try:
            promise = robustness(clause, self.input_port.name, self.output_port.name)
            if promise is not None:
                return self._robustness(clause, promise)
            if isinstance(clause.expr, ir.Call) and clause.expr.function == "finite":
                return [self._finite(clause)]
            network = self.networks.get(argmax=False).network
            unsafe = ensures_unsafe(clause.expr, self.output_port.name, network.size(network.output))
        except (Untranslatable, Unsupported) as error:
            return [_result(self.name, clause, Verdict.UNKNOWN, f"unknown: {error}")]
        query = Query(self.region.lower, self.region.upper, unsafe, self.region.constraints, clause.name)
        return [self._decide(clause, query, argmax=False)]

    def output_range(self) -> list[Result]:
        """The output type's `in [lo, hi]` is a claim about every output: verify it as a clause."""
        port = self.output_port
        if port.type.value_range is None:
            return []
        low, high = port.type.value_range
        span = port.type.span if port.type.span != NO_SPAN else port.span
        clause = ir.Clause(f"{port.name} in [{low:g}, {high:g}]", "ensures", ir.Const(True, ir.BOOL),
                           ir.Fragment.PER_SAMPLE, "type", span=span)
        try:
            network = self.networks.get(argmax=False).network
        except Unsupported as error:
            return [_result(self.name, clause, Verdict.UNKNOWN, f"unknown: {error}")]
        size = network.size(network.output)
        unsafe = tuple(
            (LinearConstraint.less_equal(size, {i: 1.0}, low, strict=True),) for i in range(size)
        ) + tuple((LinearConstraint.less_equal(size, {i: -1.0}, -high, strict=True),) for i in range(size))
        query = Query(self.region.lower, self.region.upper, unsafe, self.region.constraints, clause.name)
        return [self._decide(clause, query, argmax=False)]

    def _finite(self, clause: ir.Clause) -> Result:
        self.networks.get(argmax=False)
        if bool(torch.isfinite(self.region.lower).all() and torch.isfinite(self.region.upper).all()):
            return _result(self.name, clause, Verdict.PASS,
                           "proved: holds over the reals (a piecewise-linear network maps a bounded box to "
                           "finite outputs)")
        return _result(self.name, clause, Verdict.UNKNOWN, "unknown: the input region is unbounded")

    def _robustness(self, clause: ir.Clause, promise: Robustness) -> list[Result]:
        extraction = self.networks.get(argmax=True)
        points = self._points(clause)
        if points is None:
            return [_result(self.name, clause, Verdict.UNKNOWN,
                            "unknown: no points to verify robustness at: pass --points FILE.pt or declare a "
                            "`data` set with a binding")]
        radius = promise.radius
        classes = extraction.network.size(extraction.network.output)
        outputs = self.networks.reference(points.reshape(-1, *self.networks.input_shape)).reshape(points.shape[0], -1)
        labels = outputs.argmax(dim=1)
        promised = self._premise_holds(promise.premise, points, outputs)
        results = []
        for index in range(points.shape[0]):
            excluded = self.region.excluded_because(points[index])
            if excluded is not None:
                results.append(_result(self.name, clause, Verdict.SKIP,
                                       f"point {index}: not an input of `{self.name}`: {excluded}; the clause "
                                       "promises nothing there", samples=(index,)))
                continue
            if not bool(promised[index]):
                results.append(_result(self.name, clause, Verdict.PASS,
                                       f"point {index}: holds: the premise is false at the point (evaluated "
                                       "there in float32, as the monitor evaluates it)", samples=(index,)))
                continue
            label = int(labels[index])
            query = robustness_query(radius, points[index], label, classes, self.region,
                                     f"{clause.name}[point {index}] eps={radius:g}")
            if query is None:
                results.append(_result(self.name, clause, Verdict.SKIP,
                                       f"point {index}: its ball misses the input's range", samples=(index,)))
                continue
            results.append(self._decide(clause, query, argmax=True, sample=index, centre=points[index]))
        return results

    def _premise_holds(self, premise: ir.Expr | None, points: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Per point, whether the clause's premise holds there: the monitor's own evaluation of it."""
        if premise is None:
            return torch.ones(points.shape[0], dtype=torch.bool)
        from mdl_lang.backends.torch.predicates import CallContext, PredicateCompiler, UnsupportedClause, per_sample

        inputs = points.to(torch.float32).reshape(-1, *self.networks.input_shape)
        values = {self.input_port.name: inputs, self.output_port.name: outputs.to(torch.float32)}
        try:
            holds = PredicateCompiler().emit(premise)(CallContext(values, {}, points.shape[0]))
            return per_sample(holds, points.shape[0]).cpu()
        except (UnsupportedClause, RuntimeError, KeyError) as error:
            raise Untranslatable(f"the premise cannot be evaluated at the points: {error}") from error

    def _points(self, clause: ir.Clause) -> torch.Tensor | None:
        """The robustness centres, each of the input port's shape; `PointsMismatch` when they are not."""
        points = self.settings.points
        from_data = points is None
        if from_data and self.settings.data_points is not None:
            points = self.settings.data_points(clause)
        if points is None:
            return None
        expected = self.networks.input_shape
        if points.dim() < 1 or tuple(points.shape[1:]) != expected:
            raise PointsMismatch(
                f"points of shape {list(points.shape)} hold samples of shape {list(points.shape[1:])}, but input "
                f"`{self.input_port.name}` of `{self.name}` takes one of shape {list(expected)}", from_data)
        return points[: self.settings.max_points].to(torch.float64)

    def _decide(self, clause: ir.Clause, query: Query, argmax: bool, sample: int | None = None,
                centre: torch.Tensor | None = None) -> Result:
        """The verdict on one query; `sample` and `centre` name the robustness point it is about."""
        try:
            network = self.networks.get(argmax=argmax).network
        except Unsupported as error:
            return _result(self.name, clause, Verdict.UNKNOWN, f"unknown: {error}")
        if not bool(torch.isfinite(query.lower).all() and torch.isfinite(query.upper).all()):
            return _result(self.name, clause, Verdict.UNKNOWN,
                           f"unknown: the input `{self.input_port.name}` is unbounded: give its type a value range "
                           "(`in [lo, hi]`) or a linear `requires`")
        progress = _progress_printer(self.settings.progress, query.name)
        outcome = verify_query(network, query, timeout_s=self.settings.timeout_s, progress=progress,
                               reference=self.networks.reference, seed=self.settings.seed)
        if self.settings.progress is not None:
            self.settings.progress(f"verify {self.name}: {query.name}: {outcome.verdict} in {outcome.elapsed_s:.2f}s")
        return self._outcome_result(clause, query, outcome, sample, centre)

    def _outcome_result(self, clause: ir.Clause, query: Query, outcome: Outcome, sample: int | None,
                        centre: torch.Tensor | None) -> Result:
        samples = () if sample is None else (sample,)
        where = "" if sample is None else f"point {sample}: "
        timing = f" in {outcome.elapsed_s:.2f}s"
        stats = outcome.statistics
        detail = (f"{stats.nodes_explored} nodes, {stats.unstable_relus} unstable / {stats.stable_relus} stable "
                  f"ReLUs, {stats.z3_calls} Z3 calls")
        if outcome.verdict == "proved":
            return _result(self.name, clause, Verdict.PASS, f"{where}proved{timing}: {outcome.reason} ({detail})",
                           samples=samples)
        if outcome.verdict == "unknown":
            return _result(self.name, clause, Verdict.UNKNOWN, f"{where}unknown{timing}: {outcome.reason} ({detail})",
                           samples=samples)
        point = outcome.counterexample
        replay = self._save_replay(clause, query, point, sample)
        values: tuple[tuple[str, str], ...] = (
            (f"{self.input_port.name} (counterexample)", _summary(point)),
            (f"{self.output_port.name} (float32 replay)", _summary(outcome.replay_output)),
        )
        if centre is None:
            box_centre = (query.lower + query.upper) / 2
            values += (("distance to the box centre (linf)", f"{_distance(point, box_centre):.4g}"),)
        else:
            values += ((f"{self.input_port.name} (ball centre, point {sample})", _summary(centre)),
                       ("distance to the ball centre (linf)", f"{_distance(point, centre):.4g}"))
        witness = Witness(samples, values, replay)
        # The counterexample lies in the input's range and keeps every `requires` (the query's region), and a
        # robustness centre that breaks them is skipped before: the ensures failed while the requires held.
        blame = Blame(self.name, Role.MODULE, (self.name,),
                      f"ensures `{clause.name}` fails at an input that keeps its requires")
        return _result(self.name, clause, Verdict.FAIL, f"{where}refuted{timing}: {outcome.reason}",
                       samples=samples, witness=witness, blame=blame)

    def _save_replay(self, clause: ir.Clause, query: Query, point: torch.Tensor, sample: int | None) -> str | None:
        """The counterexample as `mdl replay` reads it: the input itself, or for a robustness point (`sample`) the
        ball's centre under the input's name and the counterexample under the ball's variable (`x2`), so that the
        replay re-checks the clause at that centre with that point. The spec path is absolute: a replay may run
        from another folder."""
        folder = self.settings.replay_dir
        if folder is None or point is None:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        suffix = "" if sample is None else f"-point{sample}"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.name}-{clause.name}{suffix}").strip("_")
        path = folder / f"{stem}-verify.pt"
        shape = (1, *self.networks.input_shape)
        inputs = {self.input_port.name: point.reshape(shape).clone()}
        ball = next((node for node in ir.walk(clause.expr) if isinstance(node, ir.BallQuantifier)), None)
        if sample is not None and ball is not None:
            centre = self._points(clause)[sample]
            inputs = {self.input_port.name: centre.reshape(shape).to(point.dtype),
                      ball.var: inputs[self.input_port.name]}
        torch.save({
            "schema": "mdl-replay/1", "spec": str(Path(self.component.file).resolve()), "component": self.name,
            "clause": clause.name, "kind": clause.kind, "samples": [0], "inputs": inputs,
        }, path)
        return str(path)


def _progress_printer(sink: Callable[[str], None] | None, label: str):
    """Branch-and-bound progress, at most once a second."""
    if sink is None:
        return None
    last = [time.monotonic()]

    def report(nodes: int, open_nodes: int, elapsed: float) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            sink(f"  {label}: {nodes} nodes done, {open_nodes} open, {elapsed:.1f}s")

    return report


def _distance(point: torch.Tensor, centre: torch.Tensor) -> float:
    return float((point.reshape(-1).to(torch.float64) - centre.reshape(-1).to(torch.float64)).abs().max())


def _summary(tensor: torch.Tensor | None) -> str:
    if tensor is None or tensor.numel() == 0:
        return "none"
    dtype = {torch.float32: "f32", torch.float64: "f64"}.get(tensor.dtype, str(tensor.dtype))
    flat = tensor.reshape(-1)
    text = f"{dtype}[{flat.numel()}] min {float(flat.min()):.4g} max {float(flat.max()):.4g}"
    if flat.numel() <= 10:
        text += f", argmax {int(flat.argmax())}: [" + ", ".join(f"{float(v):.4g}" for v in flat) + "]"
    return text


def _result(component: str, clause: ir.Clause, verdict: Verdict, message: str, samples: tuple[int, ...] = (),
            witness: Witness | None = None, blame: Blame | None = None) -> Result:
    if witness is None and samples:
        witness = Witness(samples)
    return Result(component, clause.name, clause.kind, clause.fragment.value, BACKEND, verdict, clause.span,
                  message, blame, witness)
