"""Requires read as bounds: which clauses drawing can guarantee, and which must filter samples.

A requires clause that puts every element of an input port on one side of a
constant (`all(x >= 0)`, `0 <= x <= 1`, `x in [lo, hi]`, `-x >= -1`,
`not any(x > 1)`, `finite(x)`, and conjunctions of these) is *narrowed*: its
bounds join the port type's own range, the values are drawn inside them, so
the clause holds by construction and costs no rejected samples. Every other
requires is *filtering*: drawn samples that break it are dropped, by a test
the caller supplies; the conjuncts of it that are bounds still narrow. Reading
is conservative: anything not recognised as a bound filters, which is slower
but never wrong.

Bounds stay real numbers here, and the module imports neither torch nor
hypothesis; `strategies` rounds them into each port's dtype.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mdl_lang import ir


@dataclass(frozen=True)
class Bound:
    """One side of a per-element bound: `value`, itself excluded when `strict`."""

    value: float
    strict: bool = False


@dataclass(frozen=True)
class PortBounds:
    """Everything known about each element of one port: lower bounds, upper bounds, finiteness.

    Bounds are kept as lists, not intersected, so that each one can be rounded
    into the port's dtype before the tightest is chosen (two reals that round
    to the same float may differ in strictness).
    """

    lows: tuple[Bound, ...] = ()
    highs: tuple[Bound, ...] = ()
    finite: bool = False

    def meet(self, other: PortBounds) -> PortBounds:
        """Both sets of bounds at once."""
        return PortBounds(self.lows + other.lows, self.highs + other.highs, self.finite or other.finite)

    @property
    def unbounded(self) -> bool:
        """No range, no bound and no `finite`: the only ports that may be given NaN and infinities."""
        return not (self.lows or self.highs or self.finite)


@dataclass(frozen=True)
class PortPlan:
    """How one input port is drawn: its type, the bounds on its elements, and the clauses they came from.

    `bounds` includes the type's own `in [lo, hi]` and `finite`; `clauses` names
    the requires that bound this port, a filtering one among them when one of
    its conjuncts is a bound.
    """

    port: ir.Port
    bounds: PortBounds
    clauses: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.port.name


@dataclass(frozen=True)
class InputPlan:
    """What is drawn for a component: one plan per input port, and its requires split by how they are kept.

    `narrowed` clauses hold by construction; `filtering` clauses must be
    checked on every drawn sample by the caller's `keep`. Reports list both.
    """

    component: str
    ports: tuple[PortPlan, ...]
    narrowed: tuple[str, ...]
    filtering: tuple[str, ...]


Narrowing = dict[str, PortBounds]


def input_plan(component: ir.Component) -> InputPlan:
    """Split the component's requires (its interface's and its own) into narrowed and filtering ones.

    Each top-level conjunct that is a bound narrows its port, even inside a
    clause that filters for its other conjuncts (`all(x >= 0) and sum(x) <= 1`
    draws x >= 0 and filters on the sum): drawing only where the clause can
    hold costs no test and saves rejected samples. The module's own requires
    are kept alongside the interface's: drawing inside both never hands the
    module an input its caller may not give.
    """
    ports = component.interface.inputs
    reader = BoundReader(frozenset(port.name for port in ports))
    bounds = {port.name: type_bounds(port.type) for port in ports}
    sources: dict[str, list[str]] = {port.name: [] for port in ports}
    narrowed: list[str] = []
    filtering: list[str] = []
    for clause in component.all_clauses:
        if clause.kind != "requires":
            continue
        readings = [reader.read(conjunct) for conjunct in conjuncts(clause.expr)]
        if all(reading is not None for reading in readings):
            narrowed.append(clause.name)
        else:
            filtering.append(clause.name)
        for reading in readings:
            for name, port_bounds in (reading or {}).items():
                bounds[name] = bounds[name].meet(port_bounds)
                if clause.name not in sources[name]:
                    sources[name].append(clause.name)
    plans = tuple(PortPlan(port, bounds[port.name], tuple(sources[port.name])) for port in ports)
    return InputPlan(component.name, plans, tuple(narrowed), tuple(filtering))


def conjuncts(expr: ir.Expr) -> tuple[ir.Expr, ...]:
    """The parts of a top-level chain of `and`, each of which must hold on its own."""
    if isinstance(expr, ir.Logic) and expr.op == "and":
        return conjuncts(expr.left) + conjuncts(expr.right)
    return (expr,)


def type_bounds(tensor_type: ir.TensorType) -> PortBounds:
    """The bounds a port's type sets by itself: `in [lo, hi]` (closed, hence finite) and `finite`."""
    if tensor_type.value_range is None:
        return PortBounds(finite=tensor_type.finite)
    low, high = tensor_type.value_range
    return PortBounds((Bound(low),), (Bound(high),), finite=True)


_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
"""`a op b` is `b mirrored[op] a`, and `-x op c` is `x mirrored[op] -c`."""

_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "!=": "=="}
"""`not (a op b)` for one element; `not (a == b)` has no single bound."""

_CONSTANT_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul,
}


class BoundReader:
    """Reads a boolean clause expression as per-element bounds on input ports, or None when it is not one.

    Dispatches on the node kind (`read_<Node>`, as the torch backend's
    `emit_<Node>`); a kind without a method is no bound, and its clause filters.
    """

    def __init__(self, inputs: frozenset[str]) -> None:
        self.inputs = inputs

    def read(self, expr: ir.Expr) -> Narrowing | None:
        method = getattr(self, f"read_{type(expr).__name__}", None)
        return method(expr) if method is not None else None

    def read_Logic(self, expr: ir.Logic) -> Narrowing | None:
        """Only `and` keeps a conjunction of bounds; `or` and `implies` are not bounds."""
        if expr.op != "and":
            return None
        return _meet_all([self.read(expr.left), self.read(expr.right)])

    def read_Call(self, expr: ir.Call) -> Narrowing | None:
        """`all(p)` is `p` (a bool tensor clause already means all of it); `finite(x)` marks x finite."""
        if len(expr.args) != 1:
            return None
        (argument,) = expr.args
        if expr.function == "all":
            return self.read(argument)
        if expr.function == "finite":
            port = self._signed_port(argument)
            return {port[0]: PortBounds(finite=True)} if port is not None else None
        return None

    def read_Not(self, expr: ir.Not) -> Narrowing | None:
        """`not any(x > c)` is `all(x <= c)`; `not (x > c)` alone means `not all(...)`, which is no bound."""
        inner = expr.operand
        if not (isinstance(inner, ir.Call) and inner.function == "any" and len(inner.args) == 1):
            return None
        compare = inner.args[0]
        if not isinstance(compare, ir.Compare) or compare.tolerance is not None or len(compare.ops) != 1:
            return None
        negated = _NEGATED.get(compare.ops[0])
        if negated is None:
            return None
        return self._pair(compare.operands[0], negated, compare.operands[1])

    def read_Compare(self, expr: ir.Compare) -> Narrowing | None:
        """A chain `a op b op c` is the conjunction of its links; `within` tolerances filter instead."""
        if expr.tolerance is not None:
            return None
        links = zip(expr.operands[:-1], expr.ops, expr.operands[1:], strict=True)
        return _meet_all(self._pair(left, op, right) for left, op, right in links)

    def read_InRange(self, expr: ir.InRange) -> Narrowing | None:
        return _meet_all([self._pair(expr.low, "<=", expr.value), self._pair(expr.value, "<=", expr.high)])

    def _pair(self, left: ir.Expr, op: str, right: ir.Expr) -> Narrowing | None:
        """`left op right` as a bound, when one side is an input port (perhaps negated) and the other a constant."""
        port, constant = self._signed_port(left), constant_value(right)
        if port is None or constant is None:
            port, constant, op = self._signed_port(right), constant_value(left), _MIRRORED[op]
        if port is None or constant is None:
            return None
        name, negated = port
        if negated:
            op, constant = _MIRRORED[op], -constant
        bounds = _bounds_of(op, constant)
        return {name: bounds} if bounds is not None else None

    def _signed_port(self, expr: ir.Expr) -> tuple[str, bool] | None:
        """An input port, and whether it is negated (`-x`, `--x`...); negation is exact in every dtype."""
        if isinstance(expr, ir.Neg):
            inner = self._signed_port(expr.operand)
            return (inner[0], not inner[1]) if inner is not None else None
        if isinstance(expr, ir.PortRef) and expr.port in self.inputs and expr.type.is_numeric:
            return (expr.port, False)
        return None


def constant_value(expr: ir.Expr) -> float | None:
    """The value of an expression over numeric constants only, computed as the torch backend does (in Python)."""
    if isinstance(expr, ir.Const):
        return None if isinstance(expr.value, bool) else float(expr.value)
    if isinstance(expr, ir.Neg):
        inner = constant_value(expr.operand)
        return -inner if inner is not None else None
    if isinstance(expr, ir.Arith):
        left, right = constant_value(expr.left), constant_value(expr.right)
        if left is None or right is None:
            return None
        if expr.op == "/":
            return left / right if right != 0 else None
        combine = _CONSTANT_ARITHMETIC.get(expr.op)
        return combine(left, right) if combine is not None else None
    return None


def _bounds_of(op: str, constant: float) -> PortBounds | None:
    """`x op constant` as bounds on x; `!=` excludes one point, which is no interval."""
    match op:
        case "<" | "<=":
            return PortBounds(highs=(Bound(constant, op == "<"),))
        case ">" | ">=":
            return PortBounds(lows=(Bound(constant, op == ">"),))
        case "==":
            return PortBounds((Bound(constant),), (Bound(constant),))
    return None


def _meet_all(parts: Iterable[Narrowing | None]) -> Narrowing | None:
    """The conjunction of several narrowings; None as soon as one part is not a bound."""
    merged: Narrowing = {}
    for part in parts:
        if part is None:
            return None
        for name, bounds in part.items():
            merged[name] = merged[name].meet(bounds) if name in merged else bounds
    return merged
