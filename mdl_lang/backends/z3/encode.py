"""Per-sample clauses and type refinements as Z3 formulas over the reals.

One `Encoder` holds the Z3 variables of one query: a port's sample is a tensor
of real (or integer, or boolean) variables, one per element, as long as it has
at most `element_limit` elements; a larger tensor is summarised by its minimum,
maximum and sum (`Summary`), which decides `all(x >= c)`, `min`, `max`, `sum`,
`mean` and constant indexing, and nothing else. A tensor whose size rests on a
free dim (one nothing binds) is summarised the same way when a proof must hold for
every size: its element count is then an unknown integer `n >= 1`, and the facts
linking min, max and sum hold for each `n`. A model that reads only its min and
max is one of every size from 2 on; one that reads its sum or mean picks a count
that the tensors sharing the dim may not share, so it is a relaxation.

Each IR node kind has an `emit_<Node>` method; a node or function this backend
cannot encode raises `Unsupported`, never a guess.

Soundness: every formula is exact over the reals, or a *relaxation* (it admits
every real behaviour and maybe more: a fresh variable for `exp(v)` with the facts
`exp(v) > 0`, a softmax known only to be in [0, 1] with sum 1 and order-preserving,
an element of a summarised tensor known only to lie between its min and max).
Relaxations are recorded in `relaxed`; a satisfying model of a relaxed query
proves nothing, so the caller turns it into `unknown`, never `refuted`, and an
unsatisfiable one is still a proof. NaN and infinity do not exist over the reals:
`finite(v)` is true, and a proof holds for real-valued tensors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import z3

from mdl_lang import ir

DEFAULT_ELEMENT_LIMIT = 64
# The size first tried for a symbolic dim that nothing binds. An answer found with it holds for that size
# only: the checks then ask again with the tensor summarised for every size (`Encoder.tensor`, `free`).
DEFAULT_DIM_SIZE = 3


class Unsupported(Exception):
    """A node or function outside the encodable fragment; the message is the reason shown to users."""


@dataclass(frozen=True)
class Tensor:
    """Explicit elements: a numpy object array of Z3 expressions (0-d for a scalar).

    `axes` names the label set of each axis (None for a plain one); `labels` is set
    for label values, which are integer codes of labels (see `Encoder.label_code`).
    """

    items: np.ndarray
    axes: tuple[ir.LabelSet | None, ...] = ()
    labels: ir.LabelSet | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.items.shape

    def flat(self) -> list:
        return list(self.items.reshape(-1))


@dataclass(frozen=True)
class Summary:
    """A tensor too large for one variable per element, or of a free size: its min, max and sum, and
    named elements. `count` is its number of elements (an unknown integer for a free size); `why`
    says why it is summarised, for the reasons of `unknown` answers."""

    name: str
    shape: tuple[int, ...]
    low: z3.ArithRef
    high: z3.ArithRef
    total: z3.ArithRef
    count: int | z3.ArithRef
    why: str
    free: bool = False
    elements: dict[tuple[int, ...], z3.ArithRef] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class SummaryTest:
    """`x OP c` on a summarised tensor: `every` holds when all elements pass, `some` when one does (None: unknown)."""

    every: z3.BoolRef
    some: z3.BoolRef | None


Value = Tensor | Summary | SummaryTest

_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def scalar(expr: z3.ExprRef, labels: ir.LabelSet | None = None) -> Tensor:
    return Tensor(np.array(expr, dtype=object).reshape(()), (), labels)


def _elementwise(function: Callable, *tensors: Tensor) -> np.ndarray:
    return _array(np.frompyfunc(function, len(tensors), 1)(*(tensor.items for tensor in tensors)))


def _is_constant(expr: z3.ExprRef) -> bool:
    return z3.is_rational_value(expr) or z3.is_int_value(expr) or z3.is_true(expr) or z3.is_false(expr)


def _as_real(expr: z3.ExprRef) -> z3.ExprRef:
    return z3.ToReal(expr) if z3.is_int(expr) else expr


def _as_bool(expr: z3.ExprRef) -> z3.BoolRef:
    return expr if z3.is_bool(expr) else expr != 0


class Encoder:
    """Encodes clauses of the ports it is given; collects side facts, relaxations and display names."""

    def __init__(self, element_limit: int = DEFAULT_ELEMENT_LIMIT) -> None:
        self.element_limit = element_limit
        self.facts: list[z3.BoolRef] = []
        self.relaxed: set[str] = set()
        self.nonlinear: set[str] = set()
        self.shown: dict[str, str] = {}  # Z3 variable name -> how a counter-model names it
        self.ports: Mapping[str, Value] = {}
        self._codes: dict[ir.Label, int] = {}
        self._labels: dict[str, Tensor] = {}
        self._fresh = itertools.count()
        self._counted: set[str] = set()  # summaries of a free size whose sum is linked to their count

    # ------------------------------------------------------------ variables

    def tensor(self, name: str, shape: tuple[int, ...], element: ir.Element,
               axes: tuple[ir.LabelSet | None, ...] = (), free: tuple[str, ...] = ()) -> Tensor | Summary:
        """Variables for one port's sample, shown in counter-models as `name[i, j]`. With `free` (the free
        dims its shape rests on), a summary that holds for every size of them: `shape` is only the size tried."""
        if free:
            dims = ", ".join(f"`{dim}`" for dim in free)
            why = f"free size: `{name}` has as many elements as {dims} {'says' if len(free) == 1 else 'say'}"
            count = z3.Int(f"count{next(self._fresh)}")
            self.facts.append(count >= 1)
            return self._summary(name, shape, element, count, why, free=True)
        if math.prod(shape) > self.element_limit:
            why = f"too large: `{name}` has {math.prod(shape)} elements, over the limit of {self.element_limit}"
            return self._summary(name, shape, element, math.prod(shape), why)
        items = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            shown = name + _index_text(index, axes)
            items[index] = self._variable(shown, element)
        return Tensor(items, axes)

    def _summary(self, name: str, shape: tuple[int, ...], element: ir.Element, count: int | z3.ArithRef, why: str,
                 free: bool = False) -> Summary:
        if element is ir.Element.BOOL:
            raise Unsupported(f"{why}, and they are booleans: only real and integer tensors are summarised")
        if element is ir.Element.INT:
            self.relaxed.add(f"{why}: its integers are summarised as reals")
        low, high, total = (self._shown_real(f"{what}({name})") for what in ("min", "max", "sum"))
        summary = Summary(name, shape, low, high, total, count, why, free)
        self.facts.append(low <= high)
        if not free:
            self.facts += _sum_facts(summary)
        return summary

    def _variable(self, shown: str, element: ir.Element) -> z3.ExprRef:
        key = f"v{next(self._fresh)}"
        self.shown[key] = shown
        if element is ir.Element.BOOL:
            return z3.Bool(key)
        return z3.Int(key) if element is ir.Element.INT else z3.Real(key)

    def _shown_real(self, shown: str) -> z3.ArithRef:
        return self._variable(shown, ir.Element.REAL)  # type: ignore[return-value]

    def _auxiliary(self) -> z3.ArithRef:
        return z3.Real(f"aux{next(self._fresh)}")

    def label_code(self, label: ir.Label) -> int:
        """A number per label, the same in every label set, so labels of different sets compare."""
        return self._codes.setdefault(label, len(self._codes))

    def label_name(self, code: int) -> str:
        return next((ir.format_label(label) for label, known in self._codes.items() if known == code), str(code))

    # ------------------------------------------------------------ refinements

    def in_range(self, value: Value, low: float, high: float) -> z3.BoolRef:
        """The refinement `in [low, high]` of every element."""
        if isinstance(value, Summary):
            return z3.And(value.low >= low, value.high <= high)
        items = [_as_real(item) for item in value.flat()]
        return z3.And([z3.And(item >= low, item <= high) for item in items]) if items else z3.BoolVal(True)

    # ------------------------------------------------------------ clauses

    def clause(self, expr: ir.Expr) -> z3.BoolRef:
        """A boolean formula for a clause: a boolean tensor means all of it."""
        return self.truth(self.emit(expr))

    def truth(self, value: Value) -> z3.BoolRef:
        if isinstance(value, SummaryTest):
            return value.every
        if isinstance(value, Summary):
            raise Unsupported(f"`{value.name}` used as a condition")
        items = value.flat()
        return z3.And([_as_bool(item) for item in items]) if len(items) != 1 else _as_bool(items[0])

    def emit(self, expr: ir.Expr) -> Value:
        return getattr(self, f"emit_{type(expr).__name__}")(expr)

    def tensor_of(self, expr: ir.Expr, what: str) -> Tensor:
        value = self.emit(expr)
        if isinstance(value, Summary):
            raise Unsupported(f"{value.why}: {what} of it is outside the interval abstraction")
        return self._plain(value)

    def emit_Const(self, expr: ir.Const) -> Value:
        value = expr.value
        if isinstance(value, bool):
            return scalar(z3.BoolVal(value))
        if isinstance(value, float) and not math.isfinite(value):
            raise Unsupported(f"the constant {value} is not a real number")
        return scalar(z3.IntVal(value) if isinstance(value, int) else z3.RealVal(value))

    def emit_LabelConst(self, expr: ir.LabelConst) -> Value:
        return scalar(z3.IntVal(self.label_code(expr.label)), expr.type.labels or ir.LabelSet((expr.label,)))

    def emit_PortRef(self, expr: ir.PortRef) -> Value:
        if expr.port not in self.ports:
            raise Unsupported(f"port `{expr.port}` is not part of this query")
        return self.ports[expr.port]

    def emit_VarRef(self, expr: ir.VarRef) -> Value:
        if expr.name not in self._labels:
            raise Unsupported(f"`{expr.name}` is bound by a relational quantifier")
        return self._labels[expr.name]

    def emit_DimValue(self, expr: ir.DimValue) -> Value:
        raise Unsupported(f"the size of `{expr.dim}` is known only per call")

    def emit_Arith(self, expr: ir.Arith) -> Value:
        if expr.op == "//":
            raise Unsupported("unsupported function `//` (floor division) over the reals")
        left, right = self.tensor_of(expr.left, "arithmetic"), self.tensor_of(expr.right, "arithmetic")
        operation = ir.ARITHMETIC[expr.op]

        def apply(a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
            if expr.op in ("*", "/", "**") and not (_is_constant(b) or (expr.op == "*" and _is_constant(a))):
                self.nonlinear.add(f"`{expr.op}` of two unknowns")
            a, b = _as_real(a), _as_real(b)
            return operation(a, b)

        return Tensor(_elementwise(apply, left, right), _axes(left, right))

    def emit_Neg(self, expr: ir.Neg) -> Value:
        value = self.tensor_of(expr.operand, "negation")
        return Tensor(_elementwise(lambda a: -a, value), value.axes)

    def emit_Logic(self, expr: ir.Logic) -> Value:
        left, right = self.clause(expr.left), self.clause(expr.right)
        combine = {"and": z3.And, "or": z3.Or, "implies": z3.Implies}[expr.op]
        return scalar(combine(left, right))

    def emit_Not(self, expr: ir.Not) -> Value:
        return scalar(z3.Not(self.clause(expr.operand)))

    def emit_Compare(self, expr: ir.Compare) -> Value:
        values = [self.emit(operand) for operand in expr.operands]
        tolerance = None
        if expr.tolerance is not None:
            tolerance = self.tensor_of(expr.tolerance, "a tolerance")
        tests = [self._compare(a, op, b, tolerance) for a, op, b in zip(values, expr.ops, values[1:], strict=False)]
        if len(tests) == 1:
            return tests[0]
        if all(isinstance(test, SummaryTest) for test in tests):
            # all(a <= x <= b) is all(a <= x) and all(x <= b); nothing is known of single elements
            return SummaryTest(z3.And([test.every for test in tests]), None)  # type: ignore[union-attr]
        # `a <= x <= b` is elementwise: (a <= x) and (x <= b) per element, so `any(...)`, `count(...)` see each
        plain = [self._plain(test) for test in tests]
        return Tensor(_elementwise(z3.And, *plain), _axes(plain[0], plain[-1]))

    def _compare(self, left: Value, op: str, right: Value, tolerance: Tensor | None) -> Value:
        if isinstance(left, Summary) or isinstance(right, Summary):
            return self._compare_summary(left, op, right, tolerance)
        left, right = self._plain(left), self._plain(right)
        if left.labels is not None or right.labels is not None:
            if op not in ("==", "!="):
                raise Unsupported(f"labels compared with `{op}`")
            return Tensor(_elementwise(ir.COMPARISONS[op], left, right))
        if tolerance is not None:
            bound = tolerance.flat()[0]
            return Tensor(_elementwise(lambda a, b: _absolute(_as_real(a) - _as_real(b)) <= bound, left, right),
                          _axes(left, right))

        def test(a: z3.ExprRef, b: z3.ExprRef) -> z3.BoolRef:
            if z3.is_bool(a) or z3.is_bool(b):
                return ir.COMPARISONS[op](_as_bool(a), _as_bool(b))
            return ir.COMPARISONS[op](_as_real(a), _as_real(b))

        return Tensor(_elementwise(test, left, right), _axes(left, right))

    def _plain(self, value: Value) -> Tensor:
        """Explicit elements; a test on a summarised tensor has none (only `all` and `any` of it are known)."""
        if isinstance(value, SummaryTest):
            raise Unsupported(f"too large: a test on a tensor over the limit of {self.element_limit} elements (or of a "
                              "free size) is known only as a whole (`all`/`any`), not element by element")
        return value  # type: ignore[return-value]

    def _compare_summary(self, left: Value, op: str, right: Value, tolerance: Tensor | None) -> SummaryTest:
        """`x OP c` with `x` summarised and `c` a scalar: decided by the min and the max alone."""
        if isinstance(right, Summary):
            left, right, op = right, left, _FLIPPED[op]
        if not isinstance(right, Tensor) or right.shape != () or right.labels is not None:
            raise Unsupported(f"{left.why}: it is compared elementwise with a tensor")  # type: ignore[union-attr]
        summary: Summary = left  # type: ignore[assignment]
        bound = _as_real(right.flat()[0])
        low, high = summary.low, summary.high
        if tolerance is not None:
            slack = tolerance.flat()[0]
            return SummaryTest(z3.And(low >= bound - slack, high <= bound + slack), None)
        tests = {
            ">=": (low >= bound, high >= bound), ">": (low > bound, high > bound),
            "<=": (high <= bound, low <= bound), "<": (high < bound, low < bound),
            "==": (z3.And(low == bound, high == bound), None),
            "!=": (None, z3.Not(z3.And(low == bound, high == bound))),
        }
        every, some = tests[op]
        if every is None:
            raise Unsupported(f"{summary.why}: `!= c` for every element is outside the interval abstraction")
        return SummaryTest(every, some)

    def emit_InRange(self, expr: ir.InRange) -> Value:
        value = self.emit(expr.value)
        low, high = self.tensor_of(expr.low, "a bound"), self.tensor_of(expr.high, "a bound")
        lower, upper = self._compare(low, "<=", value, None), self._compare(value, "<=", high, None)
        if isinstance(lower, SummaryTest) and isinstance(upper, SummaryTest):
            return SummaryTest(z3.And(lower.every, upper.every), None)
        return Tensor(_elementwise(z3.And, self._plain(lower), self._plain(upper)))

    def emit_InLabels(self, expr: ir.InLabels) -> Value:
        value = self.tensor_of(expr.value, "a label test")
        codes = [self.label_code(label) for label in expr.labels.labels]
        return Tensor(_elementwise(lambda item: z3.Or([item == code for code in codes]), value))

    def emit_Index(self, expr: ir.Index) -> Value:
        value = self.emit(expr.value)
        if isinstance(value, Summary):
            return self._summary_element(value, expr.items)
        value = self._plain(value)
        items: list = []
        axes: list = []
        axis = 0
        for item in expr.items:
            if isinstance(item, ir.IndexEllipsis):
                skipped = value.items.ndim - sum(not isinstance(other, ir.IndexEllipsis) for other in expr.items)
                items += [slice(None)] * skipped
                axes += [value.axes[i] if value.axes else None for i in range(axis, axis + skipped)]
                axis += skipped
                continue
            if isinstance(item, ir.IndexPosition):
                items.append(item.position)
            elif isinstance(item, ir.IndexSlice):
                items.append(slice(item.start, item.stop))
                axes.append(value.axes[axis] if value.axes else None)
            else:
                items.append(self._dynamic(item, value.shape[axis]))
            axis += 1
        axes += list(value.axes[axis:]) if value.axes else [None] * (value.items.ndim - axis)
        dynamic = [i for i, item in enumerate(items) if isinstance(item, list)]
        if not dynamic:
            return Tensor(_array(value.items[tuple(items)]), tuple(axes))
        return self._select(value, items, dynamic, tuple(axes))

    def _dynamic(self, item: ir.IndexDynamic, size: int) -> list:
        """A per-sample index as a list of (condition, position) pairs, one per position it may take."""
        index = self.tensor_of(item.expr, "an index").flat()[0]
        if item.labels is not None:
            return [(index == self.label_code(label), position) for position, label in enumerate(item.labels.labels)]
        return [(index == position, position) for position in range(size)]

    def _select(self, value: Tensor, items: list, dynamic: list[int], axes: tuple) -> Tensor:
        """Indexing with per-sample positions: an if-then-else over the positions they may take."""
        result = None
        for choice in itertools.product(*(items[i] for i in dynamic)):
            fixed = list(items)
            for i, (_, position) in zip(dynamic, choice, strict=True):
                fixed[i] = position
            picked = _array(value.items[tuple(fixed)])
            condition = z3.And([condition for condition, _ in choice])
            if result is None:
                result = picked
            else:
                result = _array(np.frompyfunc(lambda a, b, c=condition: z3.If(c, a, b), 2, 1)(picked, result))
        return Tensor(result, axes)

    def _summary_element(self, summary: Summary, items: tuple[ir.IndexItem, ...]) -> Value:
        if not all(isinstance(item, ir.IndexPosition) for item in items) or len(items) != len(summary.shape):
            raise Unsupported(f"{summary.why}: only its single elements can be named")
        positions = [item.position for item in items]  # type: ignore[union-attr]
        if summary.free and min(positions) < 0:
            # Counted from the end of an axis of free size, it may be any element: not one to name.
            raise Unsupported(f"{summary.why}: an element counted from the end of it cannot be named")
        index = tuple(position % size for position, size in zip(positions, summary.shape, strict=True))
        if index not in summary.elements:
            element = self._shown_real(summary.name + _index_text(index, ()))
            summary.elements[index] = element
            self.facts += [summary.low <= element, element <= summary.high]
            self.relaxed.add(f"{summary.why}; only its min, max, sum and named elements are modelled")
        return scalar(summary.elements[index])

    def emit_SelfCall(self, expr: ir.SelfCall) -> Value:
        raise Unsupported("`self(...)` is relational: outside the spec check")

    def emit_BallQuantifier(self, expr: ir.BallQuantifier) -> Value:
        raise Unsupported("a ball quantifier is relational: outside the spec check")

    def emit_Statistic(self, expr: ir.Statistic) -> Value:
        raise Unsupported(f"`{expr.metric}` is statistical: outside the spec check")

    def emit_LabelQuantifier(self, expr: ir.LabelQuantifier) -> Value:
        bodies = []
        for label in expr.labels.labels:
            self._labels[expr.var] = scalar(z3.IntVal(self.label_code(label)), expr.labels)
            bodies.append(self.clause(expr.body))
        self._labels.pop(expr.var, None)
        return scalar(z3.And(bodies) if expr.quantifier == "forall" else z3.Or(bodies))

    def emit_Call(self, expr: ir.Call) -> Value:
        handler = getattr(self, f"call_{expr.function}", None)
        if handler is None:
            raise Unsupported(f"unsupported function `{expr.function}`")
        return handler(expr)

    # ------------------------------------------------------------ built-ins

    def call_finite(self, expr: ir.Call) -> Value:
        return scalar(z3.BoolVal(True))  # every real number is finite

    def call_abs(self, expr: ir.Call) -> Value:
        value = self.tensor_of(expr.args[0], "`abs`")
        return Tensor(_elementwise(lambda a: _absolute(_as_real(a)), value), value.axes)

    def call_relu(self, expr: ir.Call) -> Value:
        value = self.tensor_of(expr.args[0], "`relu`")
        return Tensor(_elementwise(lambda a: z3.If(_as_real(a) > 0, _as_real(a), 0), value), value.axes)

    def call_clamp(self, expr: ir.Call) -> Value:
        value, low, high = (self.tensor_of(arg, "`clamp`") for arg in expr.args)

        def clamp(a: z3.ExprRef, lo: z3.ExprRef, hi: z3.ExprRef) -> z3.ExprRef:
            a = _as_real(a)
            return z3.If(a < lo, _as_real(lo), z3.If(a > hi, _as_real(hi), a))

        return Tensor(_elementwise(clamp, value, low, high), value.axes)

    def _relaxed_function(self, expr: ir.Call, facts: Callable[[z3.ArithRef, z3.ArithRef], list]) -> Value:
        """A non-linear function as a fresh variable per element, with facts true of the real function."""
        value = self.tensor_of(expr.args[0], f"`{expr.function}`")
        self.relaxed.add(f"non-linear: `{expr.function}`")

        def fresh(a: z3.ExprRef) -> z3.ArithRef:
            result = self._auxiliary()
            self.facts.extend(facts(_as_real(a), result))
            return result

        return Tensor(_elementwise(fresh, value), value.axes)

    def call_exp(self, expr: ir.Call) -> Value:
        return self._relaxed_function(expr, lambda a, r: [r > 0, r >= 1 + a])

    def call_sigmoid(self, expr: ir.Call) -> Value:
        return self._relaxed_function(expr, lambda a, r: [r > 0, r < 1, (a >= 0) == (r >= 0.5)])

    def call_log(self, expr: ir.Call) -> Value:
        return self._relaxed_function(expr, lambda a, r: [z3.Implies(a > 0, r <= a - 1)])

    def call_sqrt(self, expr: ir.Call) -> Value:
        self.nonlinear.add("`sqrt`")
        return self._relaxed_function(expr, lambda a, r: [r >= 0, z3.Implies(a >= 0, r * r == a)])

    def call_softmax(self, expr: ir.Call) -> Value:
        """Softmax over the last axis: each in (0, 1), each row sums to 1, and it keeps the order of its input."""
        value = self.tensor_of(expr.args[0], "`softmax`")
        self.relaxed.add("non-linear: `softmax`")
        items = value.items if value.items.ndim else value.items.reshape(1)
        result = np.empty(items.shape, dtype=object)
        for row in np.ndindex(*items.shape[:-1]):
            scores = [_as_real(item) for item in items[row]]
            outputs = [self._auxiliary() for _ in scores]
            self.facts += [z3.And(out > 0, out < 1) for out in outputs] + [z3.Sum(outputs) == 1]
            self.facts += [
                (a <= b) == (out_a <= out_b)
                for (a, out_a), (b, out_b) in itertools.combinations(zip(scores, outputs, strict=True), 2)
            ]
            result[row] = np.array(outputs, dtype=object) if outputs else result[row]
        return Tensor(result.reshape(value.items.shape), value.axes)

    def _reduce(self, expr: ir.Call) -> tuple[list, Summary | None]:
        value = self.emit(expr.args[0])
        if isinstance(value, Summary):
            if value.free and expr.function in ("sum", "mean") and value.name not in self._counted:
                # Only now, so that min/max questions stay linear. Its count is its own unknown: tensors that
                # share the dim may get other counts in a model, which is then no tensor's.
                self._counted.add(value.name)
                self.facts += _sum_facts(value)
                self.relaxed.add(f"{value.why}; its sum is modelled with a count of its own")
            return [], value
        return [_as_real(item) if not z3.is_bool(item) else item for item in self._plain(value).flat()], None

    def call_sum(self, expr: ir.Call) -> Value:
        items, summary = self._reduce(expr)
        return scalar(summary.total if summary is not None else z3.Sum(items) if items else z3.RealVal(0))

    def call_mean(self, expr: ir.Call) -> Value:
        items, summary = self._reduce(expr)
        if summary is not None:
            return scalar(summary.total / summary.count)
        if not items:
            raise Unsupported("the mean of no elements")
        return scalar(z3.Sum(items) / len(items))

    def _extreme(self, expr: ir.Call, pick_high: bool) -> Value:
        if len(expr.args) == 2:
            a, b = (self.tensor_of(arg, f"`{expr.function}`") for arg in expr.args)
            choose = (lambda x, y: z3.If(x >= y, x, y)) if pick_high else (lambda x, y: z3.If(x <= y, x, y))
            return Tensor(_elementwise(lambda x, y: choose(_as_real(x), _as_real(y)), a, b), _axes(a, b))
        items, summary = self._reduce(expr)
        if summary is not None:
            return scalar(summary.high if pick_high else summary.low)
        if not items:
            raise Unsupported(f"`{expr.function}` of no elements")
        best = items[0]
        for item in items[1:]:
            best = z3.If(item > best, item, best) if pick_high else z3.If(item < best, item, best)
        return scalar(best)

    def call_max(self, expr: ir.Call) -> Value:
        return self._extreme(expr, pick_high=True)

    def call_min(self, expr: ir.Call) -> Value:
        return self._extreme(expr, pick_high=False)

    def call_norm(self, expr: ir.Call) -> Value:
        order = float(dict(expr.options)["p"].value)  # type: ignore[union-attr]
        value = self.tensor_of(expr.args[0], "`norm`")
        magnitudes = [_absolute(_as_real(item)) for item in value.flat()]
        if order == 1.0:
            return scalar(z3.Sum(magnitudes) if magnitudes else z3.RealVal(0))
        if order == math.inf:
            best = z3.RealVal(0)
            for item in magnitudes:
                best = z3.If(item > best, item, best)
            return scalar(best)
        self.nonlinear.add("`norm(v, 2)`")
        result = self._auxiliary()
        squares = z3.Sum([item * item for item in magnitudes]) if magnitudes else z3.RealVal(0)
        self.facts += [result >= 0, result * result == squares]
        return scalar(result)

    def _arg_extreme(self, expr: ir.Call, pick_high: bool) -> Value:
        """The first position holding the max (min), as torch's argmax (argmin) returns it; a label on a label axis."""
        value = self.tensor_of(expr.args[0], f"`{expr.function}`")
        items = [_as_real(item) for item in value.flat()]
        labels = expr.type.labels if expr.type.element is ir.Element.LABEL else None
        codes = [self.label_code(label) for label in labels.labels] if labels else list(range(len(items)))
        result = z3.Int(f"aux{next(self._fresh)}")
        better = (lambda a, b: a > b) if pick_high else (lambda a, b: a < b)
        cases = []
        for position, item in enumerate(items):
            wins = [better(item, other) if j < position else z3.Not(better(other, item))
                    for j, other in enumerate(items) if j != position]
            cases.append(z3.And(result == codes[position], *wins))
        self.facts.append(z3.Or(cases))
        return scalar(result, labels)

    def call_argmax(self, expr: ir.Call) -> Value:
        return self._arg_extreme(expr, pick_high=True)

    def call_argmin(self, expr: ir.Call) -> Value:
        return self._arg_extreme(expr, pick_high=False)

    def call_count(self, expr: ir.Call) -> Value:
        value = self.tensor_of(expr.args[0], "`count`")
        return scalar(z3.Sum([z3.If(_as_bool(item), 1, 0) for item in value.flat()]) if value.flat() else z3.IntVal(0))

    def call_all(self, expr: ir.Call) -> Value:
        value = self.emit(expr.args[0])
        return scalar(self.truth(value))

    def call_any(self, expr: ir.Call) -> Value:
        value = self.emit(expr.args[0])
        if isinstance(value, SummaryTest):
            if value.some is None:
                raise Unsupported("too large: `any` of this test is outside the interval abstraction")
            return scalar(value.some)
        return scalar(z3.Or([_as_bool(item) for item in self._plain(value).flat()]))  # type: ignore[union-attr]


def _sum_facts(summary: Summary) -> list[z3.BoolRef]:
    """True of every tensor of `count` elements: one element is the max, one the min, the rest between.
    (With `count` unknown these are products of two unknowns: Z3's non-linear arithmetic decides them.)"""
    count, low, high, total = summary.count, summary.low, summary.high, summary.total
    return [total >= (count - 1) * low + high, total <= low + (count - 1) * high]


def _array(picked: object) -> np.ndarray:
    """numpy indexing returns a bare element for a full index: wrap it back into a 0-d array."""
    if isinstance(picked, np.ndarray):
        return picked
    return np.array(picked, dtype=object).reshape(())


def _absolute(expr: z3.ArithRef) -> z3.ArithRef:
    return z3.If(expr >= 0, expr, -expr)


def _axes(left: Tensor, right: Tensor) -> tuple[ir.LabelSet | None, ...]:
    """The axes of a broadcast result: the longer operand's, label sets taken from either side."""
    longer, shorter = (left, right) if len(left.axes) >= len(right.axes) else (right, left)
    padded = (None,) * (len(longer.axes) - len(shorter.axes)) + shorter.axes
    return tuple(a if a is not None else b for a, b in zip(longer.axes, padded, strict=True))


def _index_text(index: tuple[int, ...], axes: tuple[ir.LabelSet | None, ...]) -> str:
    """`[2, 0]`; a position on a label-indexed axis is shown as its label (`y[5]`, `y[other]`)."""
    if not index:
        return ""
    shown = []
    for axis, position in enumerate(index):
        labels = axes[axis] if axis < len(axes) else None
        shown.append(ir.format_label(labels.labels[position]) if labels is not None else str(position))
    return "[" + ", ".join(shown) + "]"
