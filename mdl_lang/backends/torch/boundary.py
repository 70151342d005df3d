"""One component's contract compiled for the monitor: what is checked before and after a call.

The fast path of a call reduces every check of both phases to whole-batch
statistics and syncs once, after the module has run, to learn pass or fail
(`readings.py`). Only on failure does the slow path find which checks
failed, on which samples, and with what values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from mdl_lang import ir
from mdl_lang.backends.torch import identities
from mdl_lang.backends.torch.constants import Constant
from mdl_lang.backends.torch.predicates import CallContext, Instance, PredicateCompiler, UnsupportedClause
from mdl_lang.backends.torch.readings import RangeReader, Reader, Readings, read_finite
from mdl_lang.backends.torch.refinements import check_call_shape, dim_names, finite_mask, range_mask, summarize
from mdl_lang.diagnostics import SourceMap
from mdl_lang.span import Span

Mask = Callable[[CallContext], torch.Tensor]
PortReader = Callable[[object, Readings], None]
"""A refinement's fast check: reads its port's value and leaves statistics and tests in the readings."""


@dataclass(frozen=True)
class Check:
    """A per-sample check: a clause, or a port refinement (`x in [0, 1]`, `finite`).

    `read` leaves the fast path's whole-batch statistics, `mask` is the
    per-sample test of the slow path; `implied` marks a check another check of
    the fast path already covers. A refinement names its `port`, and its
    `read` takes that port's value rather than the call's context.
    """

    name: str
    kind: str
    fragment: str
    span: Span
    read: Reader | PortReader
    mask: Mask
    clause: ir.Clause | None = None
    nodes: dict[int, ir.Expr] = field(default_factory=dict)
    instances: tuple[Instance, ...] = ()
    implied: bool = False
    port: str | None = None


class FastChecks(NamedTuple):
    """One phase's fast checks: refinements by the port they read, then the clauses, which read the context."""

    ports: tuple[tuple[str, PortReader], ...]
    clauses: tuple[Reader, ...]

    @classmethod
    def of(cls, checks: list[Check]) -> FastChecks:
        read = [check for check in checks if not check.implied]
        return cls(tuple((check.port, check.read) for check in read if check.port is not None),
                   tuple(check.read for check in read if check.port is None))


@dataclass(frozen=True)
class Violation:
    """A failed check: on `samples`, or on the whole call when `samples` is None.

    `check` and `batch` let the report be narrowed to some of the samples
    (`Boundary.narrowed`) when several parties share the blame; `replayable`
    is False when the inputs no longer show it (the module changed them).
    """

    name: str
    kind: str
    fragment: str
    span: Span
    message: str
    samples: tuple[int, ...] | None
    values: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    check: Check | None = field(default=None, compare=False, repr=False)
    batch: int = 0
    replayable: bool = True


class Shapes(NamedTuple):
    """What the shape and dtype checks of one call signature found: pass, the dims bound, the batch size."""

    holds: bool
    dims: dict[str, int]
    batch: int


class FastCall(NamedTuple):
    """The fast requires of one call, kept for its ensures: the input values as given, what their shapes
    bound, the input signature (None when an input is not a tensor, then nothing is cached), the readings,
    not yet synced, that the ensures add to (None for a wrong call: shape, dtype, a check that raised),
    how many of their tests are the requires', and the inputs' version counters before the call.
    """

    values: dict[str, object]
    shapes: Shapes
    signature: tuple | None
    readings: Readings | None
    tests: int = 0
    versions: tuple = ()


@dataclass(frozen=True)
class Skipped:
    """A clause the monitor does not run, and why (another backend checks it)."""

    clause: ir.Clause
    reason: str


class Boundary:
    """The compiled contract of one module or composition."""

    def __init__(self, name: str, component: ir.Component, sources: SourceMap) -> None:
        self.name = name
        self.component = component
        self.sources = sources
        self.inputs = component.interface.inputs
        self.outputs = component.interface.outputs
        self.skipped: list[Skipped] = []
        self.requires = self._refinement_checks(self.inputs, "requires")
        self.ensures = self._refinement_checks(self.outputs, "ensures")
        # A requires reads the inputs as given; an ensures reads them after the call, when the module may have
        # changed them in place: only the outputs' finite checks stand for what an ensures reads.
        finite = {"requires": identities.finite_ports(self.inputs), "ensures": identities.finite_ports(self.outputs)}
        for clause in component.all_clauses:
            check = self._clause_check(clause, finite[clause.kind])
            if check is not None:
                (self.requires if clause.kind == "requires" else self.ensures).append(check)
        self.requires.sort(key=_report_order)
        self.ensures.sort(key=_report_order)
        # The fast path runs flat tuples of closures: no per-call dict or dataclass work.
        self._fast_requires = FastChecks.of(self.requires)
        self._fast_ensures = FastChecks.of(self.ensures)
        self._input_names = tuple(port.name for port in self.inputs)
        self._unbatched = tuple(port.name for port in (*self.inputs, *self.outputs) if not port.type.has_batch)
        self._inputs_batched = any(port.type.has_batch for port in self.inputs)
        self._output_names = tuple(port.name for port in self.outputs)
        inputs = set(self._input_names)
        self._ensures_read_inputs = any(
            isinstance(node, ir.PortRef) and node.port in inputs
            for check in self.ensures if check.clause is not None for node in ir.walk(check.clause.expr)
        )
        # Shape and dtype verdicts by call signature (input shapes and dtypes; then with the outputs').
        self._input_shapes: dict[tuple, Shapes] = {}
        self._output_shapes: dict[tuple, Shapes] = {}

    # ------------------------------------------------------------ building

    def _refinement_checks(self, ports: tuple[ir.Port, ...], kind: str) -> list[Check]:
        checks = []
        for port in ports:
            tensor = port.type
            name = port.name
            bounded = identities.finite_range(tensor.value_range)
            if tensor.finite:
                # A finite range already rejects NaN and infinities on the fast path.
                checks.append(Check(f"finite({name})", kind, "per-sample", port.span, read_finite,
                                    _finite_check(name), implied=bounded, port=name))
            if tensor.value_range is not None:
                low, high = tensor.value_range
                checks.append(Check(
                    f"{name} in [{_number(low)}, {_number(high)}]", kind, "per-sample", port.span,
                    RangeReader(Constant(low), Constant(high)).read, _range_check(name, low, high), port=name,
                ))
        return checks

    def _clause_check(self, clause: ir.Clause, finite: dict[str, int]) -> Check | None:
        """The clause compiled; `implied` where it follows from the ports in `finite` being finite
        (`identities.py`), which the fast path checks anyway."""
        unsized = _unsized_dims(clause, self.inputs if clause.kind == "requires" else (*self.inputs, *self.outputs))
        if unsized:
            where = "input" if clause.kind == "requires" else "input or output"
            them = "it" if len(unsized) == 1 else "them"
            self.skipped.append(Skipped(
                clause, f"no {where} port's shape has {', '.join(unsized)}: no call gives {them} a size",
            ))
            return None
        try:
            compiled = PredicateCompiler().compile(clause)
        except UnsupportedClause as reason:
            self.skipped.append(Skipped(clause, str(reason)))
            return None
        except RecursionError:
            self.skipped.append(Skipped(clause, "nested too deeply for the monitor to compile"))
            return None
        return Check(clause.name, clause.kind, clause.fragment.value, clause.span, compiled.read, compiled.mask,
                     clause, compiled.nodes, compiled.instances, identities.implied_by_finite(clause.expr, finite))

    # ------------------------------------------------------------ checking

    def ports(self, phase: str) -> tuple[ir.Port, ...]:
        return self.inputs if phase == "requires" else self.outputs

    def fast_requires(self, values: dict[str, object]) -> FastCall:
        """The fast path of the requires: shapes and dtypes decided in Python (cached per call signature),
        values reduced on the device to readings that are not synced yet.
        """
        signature = _signature(self._input_names, values)
        shapes = self._input_shapes.get(signature) if signature is not None else None
        if shapes is None:
            shapes = self._shapes(self.inputs, values, {})
            if signature is not None and len(self._input_shapes) < _SIGNATURES:
                self._input_shapes[signature] = shapes
        if not shapes.holds:
            return FastCall(values, shapes, signature, None)
        readings = Readings()
        held = self._read(self._fast_requires, _clause_values(values), shapes.dims, shapes.batch, readings)
        return FastCall(values, shapes, signature, readings if held else None, len(readings.tests),
                        versions(values))

    def fast_ensures(self, call: FastCall, outputs: tuple) -> bool:
        """The fast path of the ensures, after the requires of the same call; an ensures may read the inputs too.

        Adds to the requires' readings; False for a wrong call (shape, dtype, a check that raised).
        """
        if len(outputs) != len(self._output_names):
            return False
        out_signature = _signature_of(outputs) if call.signature is not None else None
        key = (call.signature, *out_signature) if out_signature is not None else None
        shapes = self._output_shapes.get(key) if key is not None else None
        if shapes is None:
            # Dtypes are checked on the outputs as returned, before low-precision ones are widened.
            raw = dict(zip(self._output_names, outputs, strict=False))
            shapes = self._shapes(self.outputs, raw, dict(call.shapes.dims))
            if key is not None and len(self._output_shapes) < _SIGNATURES:
                self._output_shapes[key] = shapes
        if not shapes.holds:
            return False
        # The inputs as they are now, as the slow path reads them: the module may have changed them in place.
        values = dict(_clause_values(call.values)) if self._ensures_read_inputs else {}
        for name, value in zip(self._output_names, outputs, strict=False):
            values[name] = _for_clauses(value)
        batch = call.shapes.batch if self._inputs_batched else shapes.batch
        return self._read(self._fast_ensures, values, shapes.dims, batch, call.readings)

    def _read(
        self, checks: FastChecks, values: dict[str, object], dims: dict[str, int], batch: int, readings: Readings,
    ) -> bool:
        """Leave every fast check's statistics in `readings`; False when one cannot run.

        A refinement reads its port as given: the batch axis an unbatched port
        gets for the clauses repeats its elements, so they pass or fail alike
        (with no samples, the slow path finds nothing to fail).
        """
        try:
            for name, read in checks.ports:
                read(values[name], readings)
            if checks.clauses:
                ctx = CallContext(self._per_sample(values, batch), dims, batch)
                for read in checks.clauses:
                    read(ctx, readings)
        except Exception:  # noqa: BLE001 - the slow path names the check that cannot run
            return False
        return True

    def bind_input_dims(self, values: dict[str, object], bound: dict[str, int]) -> None:
        """Bind the dims of the inputs' shapes into `bound`, as the slow requires would, without checking values."""
        self._shapes(self.inputs, values, bound)

    @staticmethod
    def _shapes(ports: tuple[ir.Port, ...], values: dict[str, object], dims: dict[str, int]) -> Shapes:
        """Check the shapes and dtypes of `ports`, binding their dims into `dims` (the slow, uncached way)."""
        holds = all(check_call_shape(port, values.get(port.name), dims) is None for port in ports)
        return Shapes(holds, dims, _batch_size(values, ports))

    def context(self, values: dict[str, object], bound: dict[str, int]) -> CallContext:
        """What the clauses of a call read: port values as clauses see them, one row per sample."""
        batch = _batch_size(values, self.inputs + self.outputs)
        return CallContext(self._per_sample(_clause_values(values), batch), bound, batch)

    def _per_sample(self, values: dict[str, object], batch: int) -> dict[str, object]:
        """Ports without the batch axis (a weight vector, a threshold) are the same for every sample: repeated
        as a view along a batch axis, so that clauses index and reduce them as they do batched ports."""
        if not self._unbatched:
            return values
        repeated = dict(values)
        for name in self._unbatched:
            value = values.get(name)
            if isinstance(value, torch.Tensor):
                repeated[name] = value.unsqueeze(0).expand(batch, *value.shape)
        return repeated

    def violations(
        self, phase: str, values: dict[str, object], bound: dict[str, int], returned: int | None = None,
    ) -> list[Violation]:
        """The slow path: every violation of one phase, with samples and values; `returned` is how many
        values the module returned, for the ensures (a tuple longer than the outputs is a wrong call too)."""
        ports = self.ports(phase)
        if returned is not None and returned != len(ports) and ports:
            message = f"`{self.name}` returned {returned} values, its interface declares {len(ports)} output(s)"
            port = ports[min(returned, len(ports) - 1)]  # the first one missing, or the last one for extras
            return [_type_violation(port, phase, message)]
        for port in ports:
            problem = check_call_shape(port, values.get(port.name), bound)
            if problem is not None:
                return [_type_violation(port, phase, problem.message)]
        checks = self.requires if phase == "requires" else self.ensures
        return self._violations(checks, None, self.context(values, bound))

    def _violations(self, checks: list[Check], masks, ctx: CallContext) -> list[Violation]:
        found = []
        for position, check in enumerate(checks):
            try:
                mask = masks[position] if masks is not None else check.mask(ctx)
            except Exception as error:  # noqa: BLE001 - an evaluation error makes the verdict unknown
                found.append(Violation(check.name, check.kind, check.fragment, check.span,
                                       f"`{check.name}` could not be evaluated: {error}", None,
                                       error=f"{type(error).__name__}: {error}"))
                continue
            failing = (~mask).nonzero().flatten().tolist()
            if failing:
                found.append(Violation(
                    check.name, check.kind, check.fragment, check.span, self._headline(check, len(failing), ctx.batch),
                    tuple(failing), self._explain(check, ctx, failing[0]), check=check, batch=ctx.batch,
                ))
        return found

    def narrowed(
        self, violation: Violation, samples: tuple[int, ...] | None, values: dict[str, object], bound: dict[str, int],
    ) -> Violation:
        """`violation` on `samples`, some of its own (one party's share of it), explained at the first of them.

        `values` and `bound` are those the violation was found on.
        """
        check = violation.check
        if samples == violation.samples or not samples or check is None:
            return violation
        return replace(
            violation, message=self._headline(check, len(samples), violation.batch), samples=samples,
            values=self._explain(check, self.context(values, bound), samples[0]),
        )

    def modified_in_place(self) -> Violation:
        """A requires that failed on the fast path before the call and holds on the inputs after it.

        The module changed its input in place, so which check failed, and on
        which samples, is lost: the report names the requires and says why.
        """
        checks = [check for check in self.requires if not check.implied]
        names = ", ".join(f"`{check.name}`" for check in checks)
        what = f"requires {names}" if len(checks) == 1 else f"one of the requires {names}"
        return Violation(
            checks[0].name if len(checks) == 1 else "requires", "requires", checks[0].fragment, checks[0].span,
            f"{what} of `{self.name}` failed on the input as given, and holds after the call: `{self.name}` "
            "changed its input in place, so the failing samples cannot be shown; pass it a copy, or avoid "
            "in-place operations",
            None, replayable=False,
        )

    def _headline(self, check: Check, failing: int, batch: int) -> str:
        return (f"{check.kind} {self._shown(check)} of `{self.name}` failed on {failing} of {batch} "
                f"sample{'s' if batch != 1 else ''}")

    def _shown(self, check: Check) -> str:
        """A clause as a headline names it: by name, with its text when it has none of its own."""
        if check.clause is None or "@" not in check.name:
            return f"`{check.name}`"
        text = self.sources.excerpt(check.clause.expr.span)
        return f"`{text}` ({check.name})" if text else f"`{check.name}`"

    def _explain(self, check: Check, ctx: CallContext, sample: int) -> tuple[tuple[str, str], ...]:
        """The value of each sub-expression of the clause for one sample, by its source text."""
        if check.clause is None:
            return tuple((name, summarize(value[sample])) for name, value in ctx.values.items()
                         if isinstance(value, torch.Tensor))
        single = CallContext(
            {name: value[sample:sample + 1] for name, value in ctx.values.items()}, ctx.dims, 1, trace={},
        )
        try:
            check.mask(single)
        except Exception:  # noqa: BLE001 - values are a courtesy; the failure itself is already known
            return ()
        shown, hidden = _shown_instances(check.instances, single.trace)
        for node_id, value in sorted(single.trace.items()):
            if any(instance.first <= node_id <= instance.last for instance in hidden):
                continue
            node = check.nodes.get(node_id)
            if node is None or isinstance(node, (ir.Const, ir.LabelConst)):
                continue
            text = self.sources.excerpt(node.span) or type(node).__name__
            if text not in shown:
                shown[text] = _describe_value(value, node)
        return tuple(shown.items())


def _shown_instances(instances: tuple[Instance, ...], trace: dict) -> tuple[dict[str, str], list[Instance]]:
    """Of each label quantifier, the unrolled body to explain (the first that is false, else the first),
    with the label it binds, and the bodies whose values to leave out: they share its source text."""
    chosen: dict[int, Instance] = {}
    for instance in instances:
        current = chosen.get(instance.quantifier)
        if current is None or (_holds_in(trace, current) and not _holds_in(trace, instance)):
            chosen[instance.quantifier] = instance
    shown = {instance.var: ir.format_label(instance.label) for instance in chosen.values()}
    return shown, [instance for instance in instances if chosen.get(instance.quantifier) is not instance]


def _holds_in(trace: dict, instance: Instance) -> bool:
    value = trace.get(instance.last, True)
    return bool(value.all()) if isinstance(value, torch.Tensor) else bool(value)


TYPE_CHECK = "type of "
"""How a port's shape-and-dtype check is named in reports: `type of PORT`."""


def type_check_name(port: ir.Port) -> str:
    return f"{TYPE_CHECK}{port.name}"


def _type_violation(port: ir.Port, phase: str, message: str) -> Violation:
    """A wrong shape, dtype or number of values: a fault of the whole call, so no samples."""
    return Violation(type_check_name(port), phase, "per-sample", port.span, message, None)


def _report_order(check: Check) -> int:
    """Finiteness first, then ranges, then other clauses: a NaN is reported as a NaN."""
    if check.name.startswith("finite(") or (
        check.clause is not None and isinstance(check.clause.expr, ir.Call) and check.clause.expr.function == "finite"
    ):
        return 0
    return 1 if check.clause is None else 2


def _describe_value(value, node: ir.Expr) -> str:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        value = value[0]
    labels = node.type.labels if node.type.element is ir.Element.LABEL else None
    if labels is not None and not labels.opaque:
        position = int(value) if not isinstance(value, torch.Tensor) else int(value.reshape(-1)[0])
        if 0 <= position < len(labels):
            return ir.format_label(labels.labels[position])
    return summarize(value)


_SIGNATURES = 256
"""Call signatures whose shape verdicts a boundary keeps, per phase (a bound on memory, not a tuning knob)."""


def _signature(names: tuple[str, ...], values: dict[str, object]) -> tuple | None:
    """What the input shape checks depend on, or None when an input is not a tensor (then it is not cached)."""
    if len(names) == 1:
        value = values.get(names[0])
        return (value.shape, value.dtype) if isinstance(value, torch.Tensor) else None
    return _signature_of(tuple(values.get(name) for name in names))


def _signature_of(values: tuple) -> tuple | None:
    """Shapes and dtypes of a call's values, or None when one is not a tensor."""
    if len(values) == 1:
        (value,) = values
        return (value.shape, value.dtype) if isinstance(value, torch.Tensor) else None
    parts: list[object] = []
    for value in values:
        if not isinstance(value, torch.Tensor):
            return None
        parts.append(value.shape)
        parts.append(value.dtype)
    return tuple(parts)


_WIDENED = {
    torch.float16: torch.float32, torch.bfloat16: torch.float32,
    torch.uint8: torch.int64, torch.int8: torch.int64, torch.int16: torch.int64, torch.int32: torch.int64,
}
"""Dtypes clauses see widened: low-precision floats to float32, narrow integers to int64, so that a spec's
numbers neither round nor wrap (`x >= -1` on uint8 would compare with 255, as torch casts -1 to uint8)."""


def _clause_values(values: dict[str, object]) -> dict[str, object]:
    """Port values as clauses see them: detached, and narrow dtypes widened (`_WIDENED`)."""
    for value in values.values():
        if isinstance(value, torch.Tensor) and (value.requires_grad or value.dtype in _WIDENED):
            return {name: _for_clauses(value) for name, value in values.items()}
    return values


def _for_clauses(value: object) -> object:
    if not isinstance(value, torch.Tensor):
        return value
    if value.requires_grad:
        value = value.detach()
    wider = _WIDENED.get(value.dtype)
    return value if wider is None else value.to(wider)


def versions(values: dict[str, object]) -> tuple:
    """The version counters of the tensors among `values` (None for other values and inference tensors, which
    have none): an in-place operation on a tensor raises its counter, so unequal versions mean a change."""
    found = []
    for value in values.values():
        try:
            found.append(value._version)
        except (AttributeError, RuntimeError):
            found.append(None)
    return tuple(found)


def _batch_size(values: dict[str, torch.Tensor], ports: tuple[ir.Port, ...]) -> int:
    """The batch size of a call: the first axis of its first port that has the batch axis; 1 without one."""
    for port in ports:
        value = values.get(port.name)
        if port.type.has_batch and isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


def _unsized_dims(clause: ir.Clause, ports: tuple[ir.Port, ...]) -> list[str]:
    """The dims a clause reads that none of `ports` has in its shape: a call binds only the dims of its ports
    (a requires, before the call, only the inputs'), so such a clause would be undecided on every call."""
    sized = {name for port in ports for dim in port.type.dims for name in dim_names(dim)}
    read = {name for node in ir.walk(clause.expr) if isinstance(node, ir.DimValue) for name in dim_names(node.dim)}
    return sorted(read - sized)


def _range_check(name: str, low: float, high: float) -> Mask:
    return lambda ctx: range_mask(ctx.values[name], low, high)


def _finite_check(name: str) -> Mask:
    return lambda ctx: finite_mask(ctx.values[name])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
