"""One component's contract compiled for the monitor: what is checked before and after a call.

The fast path of a phase evaluates every check to a per-sample mask, stacks
them and syncs once to learn pass or fail. Only on failure does the slow
path find which checks failed, on which samples, and with what values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mdl_lang import ir
from mdl_lang.backends.torch.predicates import CallContext, PredicateCompiler, UnsupportedClause
from mdl_lang.backends.torch.refinements import check_call_shape, finite_mask, range_mask, summarize
from mdl_lang.diagnostics import SourceMap
from mdl_lang.span import Span

Mask = Callable[[CallContext], torch.Tensor]


@dataclass(frozen=True)
class Check:
    """A per-sample check: a clause, or a port refinement (`x in [0, 1]`, `finite`).

    `holds` is the fast whole-batch test, `mask` the per-sample one of the slow
    path; `implied` marks a check another check of the fast path already covers.
    """

    name: str
    kind: str
    fragment: str
    span: Span
    holds: Mask
    mask: Mask
    clause: ir.Clause | None = None
    nodes: dict[int, ir.Expr] = field(default_factory=dict)
    implied: bool = False


@dataclass(frozen=True)
class Violation:
    """A failed check: on `samples`, or on the whole call when `samples` is None."""

    name: str
    kind: str
    fragment: str
    span: Span
    message: str
    samples: tuple[int, ...] | None
    values: tuple[tuple[str, str], ...] = ()
    error: str | None = None


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
        for clause in component.all_clauses:
            check = self._clause_check(clause)
            if check is not None:
                (self.requires if clause.kind == "requires" else self.ensures).append(check)
        self.requires.sort(key=_report_order)
        self.ensures.sort(key=_report_order)
        self._fast = {
            phase: [check for check in checks if not check.implied]
            for phase, checks in (("requires", self.requires), ("ensures", self.ensures))
        }
        self._shape_cache: dict[tuple, tuple[bool, dict[str, int]]] = {}

    # ------------------------------------------------------------ building

    def _refinement_checks(self, ports: tuple[ir.Port, ...], kind: str) -> list[Check]:
        checks = []
        for port in ports:
            tensor = port.type
            name = port.name
            bounded = tensor.value_range is not None and all(abs(b) != float("inf") for b in tensor.value_range)
            if tensor.finite:
                # A finite range already rejects NaN and infinities on the fast path.
                checks.append(Check(f"finite({name})", kind, "per-sample", port.span, _finite_holds(name),
                                    _finite_check(name), implied=bounded))
            if tensor.value_range is not None:
                low, high = tensor.value_range
                checks.append(Check(
                    f"{name} in [{_number(low)}, {_number(high)}]", kind, "per-sample", port.span,
                    _range_holds(name, low, high), _range_check(name, low, high),
                ))
        return checks

    def _clause_check(self, clause: ir.Clause) -> Check | None:
        try:
            compiled = PredicateCompiler().compile(clause)
        except UnsupportedClause as reason:
            self.skipped.append(Skipped(clause, str(reason)))
            return None
        except RecursionError:
            self.skipped.append(Skipped(clause, "nested too deeply for the monitor to compile"))
            return None
        return Check(clause.name, clause.kind, clause.fragment.value, clause.span, compiled.holds, compiled.mask,
                     clause, compiled.nodes)

    # ------------------------------------------------------------ checking

    def ports(self, phase: str) -> tuple[ir.Port, ...]:
        return self.inputs if phase == "requires" else self.outputs

    def fast(self, phase: str, values: dict[str, object], bound: dict[str, int]) -> torch.Tensor | bool:
        """The fast path of a phase: a 0-dim bool tensor (no host sync yet), or False for a wrong call.

        Shapes and dtypes are decided here in Python (cached per call signature);
        values only on the device. Binds the call's symbolic dims into `bound`.
        """
        ports = self.ports(phase)
        if not self._shapes_hold(phase, ports, values, bound):
            return False
        checks = self._fast[phase]
        if not checks:
            return True
        ctx = CallContext(_clause_values(values), bound, _batch_size(values, ports))
        try:
            result = checks[0].holds(ctx)
            for check in checks[1:]:
                result = result & check.holds(ctx)
        except Exception:  # noqa: BLE001 - the slow path names the check that cannot run
            return False
        return result

    def _shapes_hold(self, phase: str, ports, values: dict[str, object], bound: dict[str, int]) -> bool:
        key = _signature(phase, ports, values, bound)
        cached = self._shape_cache.get(key) if key is not None else None
        if cached is None:
            local = dict(bound)
            holds = all(check_call_shape(port, values.get(port.name), local) is None for port in ports)
            cached = (holds, local)
            if key is not None and len(self._shape_cache) < 256:
                self._shape_cache[key] = cached
        holds, local = cached
        bound.update(local)
        return holds

    def violations(self, phase: str, values: dict[str, object], bound: dict[str, int]) -> list[Violation]:
        """The slow path: every violation of one phase, with samples and values."""
        for port in self.ports(phase):
            problem = check_call_shape(port, values.get(port.name), bound)
            if problem is not None:
                return [Violation(f"type of {port.name}", phase, "per-sample", port.span, problem.message, None)]
        checks = self.requires if phase == "requires" else self.ensures
        ctx = CallContext(_clause_values(values), bound, _batch_size(values, self.ports(phase)))
        return self._violations(checks, None, ctx)

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
                    check.name, check.kind, check.fragment, check.span,
                    f"{check.kind} {self._shown(check)} of `{self.name}` failed on {len(failing)} of {ctx.batch} "
                    f"sample{'s' if ctx.batch != 1 else ''}",
                    tuple(failing), self._explain(check, ctx, failing[0]),
                ))
        return found

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
        shown: dict[str, str] = {}
        for node_id, value in sorted(single.trace.items()):
            node = check.nodes.get(node_id)
            if node is None or isinstance(node, (ir.Const, ir.LabelConst)):
                continue
            text = self.sources.excerpt(node.span) or type(node).__name__
            if text not in shown:
                shown[text] = _describe_value(value, node)
        return tuple(shown.items())


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


def _signature(phase: str, ports, values: dict[str, object], bound: dict[str, int]) -> tuple | None:
    """What a shape check depends on, or None when a value is not a tensor (then it is not cached)."""
    parts: list[object] = [phase, tuple(bound.items())]
    for port in ports:
        value = values.get(port.name)
        if not isinstance(value, torch.Tensor):
            return None
        parts.append((value.shape, value.dtype))
    return tuple(parts)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _clause_values(values: dict[str, object]) -> dict[str, object]:
    """Port values as clauses see them: detached, and low-precision floats widened to float32."""
    for value in values.values():
        if isinstance(value, torch.Tensor) and (value.requires_grad or value.dtype in _LOW_PRECISION):
            return {name: _for_clauses(value) for name, value in values.items()}
    return values


def _for_clauses(value: object) -> object:
    if not isinstance(value, torch.Tensor):
        return value
    if value.requires_grad:
        value = value.detach()
    return value.float() if value.dtype in _LOW_PRECISION else value


def _batch_size(values: dict[str, torch.Tensor], ports: tuple[ir.Port, ...]) -> int:
    for port in ports:
        value = values.get(port.name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


def _range_holds(name: str, low: float, high: float) -> Mask:
    def holds(ctx: CallContext) -> torch.Tensor:
        value = ctx.values[name]
        if value.numel() == 0:
            return torch.ones((), dtype=torch.bool)
        smallest, largest = torch.aminmax(value)
        # aminmax propagates NaN, and NaN compares false: a NaN anywhere fails here.
        return (smallest >= low) & (largest <= high)

    return holds


def _finite_holds(name: str) -> Mask:
    def holds(ctx: CallContext) -> torch.Tensor:
        value = ctx.values[name]
        if not value.is_floating_point():
            return torch.ones((), dtype=torch.bool)
        # A NaN or infinity anywhere makes the sum non-finite; an overflowing sum of finite values only
        # sends the call down the slow path, which checks element by element.
        return torch.isfinite(value.sum())

    return holds


def _range_check(name: str, low: float, high: float) -> Mask:
    return lambda ctx: range_mask(ctx.values[name], low, high)


def _finite_check(name: str) -> Mask:
    return lambda ctx: finite_mask(ctx.values[name])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
