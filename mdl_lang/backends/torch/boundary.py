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
    """A per-sample check: a clause, or a port refinement (`x in [0, 1]`, `finite`)."""

    name: str
    kind: str
    fragment: str
    span: Span
    mask: Mask
    clause: ir.Clause | None = None
    nodes: dict[int, ir.Expr] = field(default_factory=dict)


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

    # ------------------------------------------------------------ building

    def _refinement_checks(self, ports: tuple[ir.Port, ...], kind: str) -> list[Check]:
        checks = []
        for port in ports:
            tensor = port.type
            name = port.name
            if tensor.finite:
                checks.append(Check(f"finite({name})", kind, "per-sample", port.span, _finite_check(name)))
            if tensor.value_range is not None:
                low, high = tensor.value_range
                checks.append(Check(
                    f"{name} in [{_number(low)}, {_number(high)}]", kind, "per-sample", port.span,
                    _range_check(name, low, high),
                ))
        return checks

    def _clause_check(self, clause: ir.Clause) -> Check | None:
        try:
            compiled = PredicateCompiler().compile(clause)
        except UnsupportedClause as reason:
            self.skipped.append(Skipped(clause, str(reason)))
            return None
        return Check(clause.name, clause.kind, clause.fragment.value, clause.span, compiled.mask, clause,
                     compiled.nodes)

    # ------------------------------------------------------------ checking

    def ports(self, phase: str) -> tuple[ir.Port, ...]:
        return self.inputs if phase == "requires" else self.outputs

    def check(self, phase: str, values: dict[str, torch.Tensor], bound: dict[str, int]) -> list[Violation]:
        """Every violation of one phase (`requires` before the call, `ensures` after it)."""
        for port in self.ports(phase):
            problem = check_call_shape(port, values.get(port.name), bound)
            if problem is not None:
                return [Violation(f"type of {port.name}", phase, "per-sample", port.span, problem.message, None)]
        checks = self.requires if phase == "requires" else self.ensures
        if not checks:
            return []
        batch = _batch_size(values, self.ports(phase))
        ctx = CallContext(_clause_values(values), bound, batch)
        try:
            masks = [check.mask(ctx) for check in checks]
            if bool(torch.stack([m.to(masks[0].device) for m in masks]).all()):
                return []
        except Exception:  # noqa: BLE001 - a clause that cannot run is reported per check below
            masks = None
        return self._violations(checks, masks, ctx)

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


def _clause_values(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Port values as clauses see them: detached, and low-precision floats widened to float32."""
    return {name: _for_clauses(value) for name, value in values.items()}


def _for_clauses(value: object) -> object:
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value


def _batch_size(values: dict[str, torch.Tensor], ports: tuple[ir.Port, ...]) -> int:
    for port in ports:
        value = values.get(port.name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


def _range_check(name: str, low: float, high: float) -> Mask:
    return lambda ctx: range_mask(ctx.values[name], low, high)


def _finite_check(name: str) -> Mask:
    return lambda ctx: finite_mask(ctx.values[name])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
