"""Per-sample clauses compiled into vectorised torch predicates.

A compiled clause maps the tensors of one call (batch axis first) to a bool
mask of shape [N]: True where the sample keeps the clause. Each IR node kind
has an `emit_<Node>` method returning a closure; nodes this backend cannot
run (statistical ones, and the searches of relational ones, which
`relational.py` adds) raise `UnsupportedClause`, which the caller turns into
a `skip` with the reason, never a pass. `self(...)` is evaluated when the
context carries the module; a variable bound by a ball quantifier reads the
perturbed input the context holds under its name.

Values flowing between closures are either sample-independent Python numbers
or tensors whose first axis is the batch. Label values are held as positions
in the label set of their static type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mdl_lang import ir
from mdl_lang.backends.torch.constants import Constant, Value
from mdl_lang.backends.torch.readings import (
    BoundReader,
    CloseReader,
    NearReader,
    RangeReader,
    Reader,
    Readings,
    read_finite,
)
from mdl_lang.backends.torch.refinements import dim_size, sample_rows


@dataclass(slots=True)
class CallContext:
    """What one call provides: port tensors and the dims bound by the shape check.

    `module` is the module itself, called with its inputs in port order, for
    clauses that apply it to other inputs (`self(...)`); a monitor leaves it out.
    """

    values: dict[str, torch.Tensor]
    dims: dict[str, int]
    batch: int
    trace: dict[int, Value] | None = None
    module: Callable[..., object] | None = None


Closure = Callable[[CallContext], Value]


class UnsupportedClause(Exception):
    """A clause (or part of one) that the torch backend cannot evaluate; the message says why."""


@dataclass(frozen=True)
class Instance:
    """One unrolled body of a label quantifier: `var` bound to `label`, its traced nodes `first` to `last`
    (the body's own value is node `last`), `quantifier` telling which quantifier it unrolls."""

    quantifier: int
    var: str
    label: ir.Label
    first: int
    last: int


@dataclass(frozen=True)
class CompiledClause:
    """A clause ready to run.

    `read(ctx, readings)` is the fast path: it leaves whole-batch statistics in
    `readings`, which hold when every sample keeps the clause. `mask(ctx)` is
    True per sample that keeps it, and records every sub-expression's value in
    `ctx.trace` when one is given (the slow path).
    """

    clause: ir.Clause
    read: Reader
    mask: Callable[[CallContext], torch.Tensor]
    nodes: dict[int, ir.Expr] = field(default_factory=dict)
    instances: tuple[Instance, ...] = ()


def sample_rank(value_type: ir.ValueType) -> int | None:
    """The number of per-sample axes, or None when `...` leaves it open."""
    if any(isinstance(dim, ir.DimEllipsis) for dim in value_type.shape):
        return None
    return len(value_type.shape)


def _rank_of(value: Value) -> int:
    return value.dim() - 1 if isinstance(value, torch.Tensor) else -1


def align(left: Value, right: Value) -> tuple[Value, Value]:
    """Insert axes after the batch axis so per-sample shapes broadcast from the right."""
    left_rank, right_rank = _rank_of(left), _rank_of(right)
    if left_rank < 0 or right_rank < 0 or left_rank == right_rank:
        return left, right
    if left_rank < right_rank:
        return _widen(left, right_rank - left_rank), right
    return left, _widen(right, left_rank - right_rank)


def aligner(left: ir.Expr, right: ir.Expr) -> Callable[[Value, Value], tuple[Value, Value]]:
    """How to align two operands for broadcasting, decided at compile time where ranks are known."""
    if _is_constant(left) or _is_constant(right):
        return _unchanged
    left_rank, right_rank = sample_rank(left.type), sample_rank(right.type)
    if left_rank is not None and left_rank == right_rank:
        return _unchanged
    return align


def _is_constant(expr: ir.Expr) -> bool:
    return isinstance(expr, (ir.Const, ir.LabelConst, ir.DimValue))


def _unchanged(left: Value, right: Value) -> tuple[Value, Value]:
    return left, right


def _comparison(op: str) -> Callable[[Value, Value, CallContext], Value]:
    compare = ir.COMPARISONS[op]
    return lambda a, b, ctx: compare(a, b)


def _widen(value: torch.Tensor, extra: int) -> torch.Tensor:
    return value.reshape(value.shape[0], *([1] * extra), *value.shape[1:])


def per_sample(value: Value, batch: int) -> torch.Tensor:
    """A boolean value reduced to one verdict per sample: `all` over each sample's elements."""
    if not isinstance(value, torch.Tensor):
        return torch.full((batch,), bool(value), dtype=torch.bool)
    if value.dim() == 0:
        return value.expand(batch)
    if value.dim() == 1:
        return value
    return sample_rows(value).all(dim=1)


def _all(value: Value) -> torch.Tensor:
    """Whether every element holds, as a 0-dim bool tensor (no host sync)."""
    if isinstance(value, torch.Tensor):
        return value.all()
    return torch.tensor(bool(value))


_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
"""`c < x` is `x > c`: the comparisons a constant on the left turns around."""


def _numeric(expr: ir.Expr) -> bool:
    return expr.type.element in (ir.Element.REAL, ir.Element.INT)


def _flat(value: torch.Tensor) -> torch.Tensor:
    return sample_rows(value)


class PredicateCompiler:
    """Compiles the IR of per-sample clauses; one instance per bound module."""

    def __init__(self, traced: bool = False, labels: dict[str, ir.Label] | None = None) -> None:
        self._labels: dict[str, ir.Label] = dict(labels or {})
        self._traced = traced
        self.nodes: dict[int, ir.Expr] = {}
        self.instances: list[Instance] = []
        self._quantifiers = 0

    def compile(self, clause: ir.Clause) -> CompiledClause:
        if clause.fragment is not ir.Fragment.PER_SAMPLE:
            raise UnsupportedClause(
                f"a {clause.fragment.value} clause is checked by `mdl test`, not by a monitor"
            )
        read = PredicateCompiler().emit_root(clause.expr)
        tracer = PredicateCompiler(traced=True)
        body = tracer.emit(clause.expr)

        def mask(ctx: CallContext) -> torch.Tensor:
            return per_sample(body(ctx), ctx.batch)

        return CompiledClause(clause, read, mask, dict(tracer.nodes), tuple(tracer.instances))

    def emit_root(self, expr: ir.Expr) -> Reader:
        """The clause for the fast path: whole-batch statistics, no per-sample reduction.

        `all` over the whole batch needs no per-sample verdicts first, and a
        conjunction holds when both sides do. A comparison with a number is
        decided by the batch's largest or smallest value, a tolerance by the
        largest distance; anything else by `all` of its elements.
        """
        if isinstance(expr, ir.Logic) and expr.op == "and":
            left, right = self.emit_root(expr.left), self.emit_root(expr.right)

            def both(ctx: CallContext, readings: Readings) -> None:
                left(ctx, readings)
                right(ctx, readings)

            return both
        if isinstance(expr, ir.Call) and expr.function in ("finite", "all"):
            (argument,) = (self.emit(arg) for arg in expr.args)
            if expr.function == "finite":
                return lambda ctx, readings: read_finite(argument(ctx), readings)
            return lambda ctx, readings: readings.add_verdict(_all(argument(ctx)))
        reader = self._extreme_reader(expr)
        if reader is not None:
            return reader
        body = self.emit(expr)
        return lambda ctx, readings: readings.add_verdict(_all(body(ctx)))

    def _extreme_reader(self, expr: ir.Expr) -> Reader | None:
        """A comparison with constant numbers, read from extremes or the largest distance; None for other clauses."""
        if isinstance(expr, ir.InRange):
            low, high = Constant.of(expr.low), Constant.of(expr.high)
            if low is None or high is None or not _numeric(expr.value):
                return None
            value, in_range = self.emit(expr.value), RangeReader(low, high)
            return lambda ctx, readings: in_range.read(value(ctx), readings)
        if not isinstance(expr, ir.Compare) or len(expr.ops) != 1 or self._label_compare(expr):
            return None
        (op,), (left, right) = expr.ops, expr.operands
        if Constant.of(left) is not None and Constant.of(right) is None:
            left, right, op = right, left, _MIRRORED.get(op, op)
        number = Constant.of(right)
        if expr.tolerance is not None:
            tolerance = Constant.of(expr.tolerance)
            if tolerance is None:
                return None
            if number is None:
                pair, close = self._operands(left, right), CloseReader(tolerance)
                return lambda ctx, readings: close.read(*pair(ctx), readings)
            near, value = NearReader(number, tolerance), self.emit(left)
            return lambda ctx, readings: near.read(value(ctx), readings)
        if number is None or op not in _MIRRORED or not _numeric(left):
            return None
        bound, value = BoundReader(op, number), self.emit(left)
        return lambda ctx, readings: bound.read(value(ctx), readings)

    def emit(self, expr: ir.Expr) -> Closure:
        handler = getattr(self, f"emit_{type(expr).__name__}", None)
        if handler is None:
            raise UnsupportedClause(f"the monitor cannot evaluate {type(expr).__name__} nodes")
        closure = handler(expr)
        if not self._traced:
            return closure
        node_id = len(self.nodes)
        self.nodes[node_id] = expr

        def traced(ctx: CallContext) -> Value:
            value = closure(ctx)
            if ctx.trace is not None:
                ctx.trace[node_id] = value
            return value

        return traced

    # ------------------------------------------------------------ leaves

    def emit_Const(self, expr: ir.Const) -> Closure:
        value = expr.value
        return lambda ctx: value

    def emit_LabelConst(self, expr: ir.LabelConst) -> Closure:
        labels = expr.type.labels
        if labels is None or expr.label not in labels:
            raise UnsupportedClause(f"label {ir.format_label(expr.label)} has no position outside a label set")
        position = labels.position(expr.label)
        return lambda ctx: position

    def emit_DimValue(self, expr: ir.DimValue) -> Closure:
        dim = expr.dim
        return lambda ctx: evaluate_dim(dim, ctx.dims)

    def emit_PortRef(self, expr: ir.PortRef) -> Closure:
        name = expr.port
        return lambda ctx: ctx.values[name]

    def emit_VarRef(self, expr: ir.VarRef) -> Closure:
        """A quantified label is a constant once unrolled; a perturbed input (`x2`) is a value of the context."""
        if expr.type.element is not ir.Element.LABEL:
            name = expr.name
            return lambda ctx: ctx.values[name]
        if expr.name not in self._labels:
            raise UnsupportedClause(f"label variable `{expr.name}` is not bound by a quantifier here")
        position = expr.type.labels.position(self._labels[expr.name])
        return lambda ctx: position

    # ------------------------------------------------------------ arithmetic and logic

    def emit_Arith(self, expr: ir.Arith) -> Closure:
        operation = ir.ARITHMETIC[expr.op]
        # Only these take a tensor constant to the same bits: torch divides by a number as by its reciprocal.
        if expr.op in ("+", "-", "*"):
            operands = self._operands(expr.left, expr.right)
            return lambda ctx: operation(*operands(ctx))
        left, right = self.emit(expr.left), self.emit(expr.right)
        fit = aligner(expr.left, expr.right)
        return lambda ctx: operation(*fit(left(ctx), right(ctx)))

    def _operands(self, left_expr: ir.Expr, right_expr: ir.Expr) -> Callable[[CallContext], tuple[Value, Value]]:
        """Both operands of a binary operation, aligned; a number constant comes as a cached tensor.

        torch wraps a Python number into a new tensor on every operation, which
        costs more than the operation itself on small tensors; a `Constant`
        gives the same bits (same dtype, same rounding) without that.
        """
        left, right = self.emit(left_expr), self.emit(right_expr)
        constant_left, constant_right = Constant.of(left_expr), Constant.of(right_expr)
        if constant_right is not None and constant_left is None:
            def with_right(ctx: CallContext) -> tuple[Value, Value]:
                value = left(ctx)
                return value, constant_right.against(value)

            return with_right
        if constant_left is not None and constant_right is None:
            def with_left(ctx: CallContext) -> tuple[Value, Value]:
                value = right(ctx)
                return constant_left.against(value), value

            return with_left
        fit = aligner(left_expr, right_expr)
        return lambda ctx: fit(left(ctx), right(ctx))

    def emit_Neg(self, expr: ir.Neg) -> Closure:
        operand = self.emit(expr.operand)
        return lambda ctx: -operand(ctx)

    def emit_Logic(self, expr: ir.Logic) -> Closure:
        left, right = self.emit(expr.left), self.emit(expr.right)
        if expr.op == "and":
            return lambda ctx: per_sample(left(ctx), ctx.batch) & per_sample(right(ctx), ctx.batch)
        if expr.op == "or":
            return lambda ctx: per_sample(left(ctx), ctx.batch) | per_sample(right(ctx), ctx.batch)
        return lambda ctx: ~per_sample(left(ctx), ctx.batch) | per_sample(right(ctx), ctx.batch)

    def emit_Not(self, expr: ir.Not) -> Closure:
        operand = self.emit(expr.operand)
        return lambda ctx: ~per_sample(operand(ctx), ctx.batch)

    def emit_Compare(self, expr: ir.Compare) -> Closure:
        if len(expr.ops) == 1 and not self._label_compare(expr):
            pair = self._operands(*expr.operands)
            (test,) = self._tests(expr)
            return lambda ctx: test(*pair(ctx), ctx)
        operands = [self._comparable(operand, expr) for operand in expr.operands]
        aligners = [aligner(expr.operands[i], expr.operands[i + 1]) for i in range(len(expr.ops))]
        tests = self._tests(expr)
        if len(expr.ops) == 1:
            (left, right), (fit,), (test,) = operands, aligners, tests
            return lambda ctx: test(*fit(left(ctx), right(ctx)), ctx)

        def chain(ctx: CallContext) -> Value:
            values = [operand(ctx) for operand in operands]
            result: Value = True
            for position, (fit, test) in enumerate(zip(aligners, tests, strict=True)):
                holds = test(*fit(values[position], values[position + 1]), ctx)
                result = holds if result is True else _conjoin(result, holds)
            return result

        return chain

    def _tests(self, expr: ir.Compare) -> list[Callable[[Value, Value, CallContext], Value]]:
        """One test per comparison of a chain; `within` makes each a distance test."""
        if expr.tolerance is None:
            return [_comparison(op) for op in expr.ops]
        constant = Constant.of(expr.tolerance)
        if constant is not None:
            return [lambda a, b, ctx: _close(a, b, constant) for _ in expr.ops]
        tolerance = self.emit(expr.tolerance)
        return [lambda a, b, ctx: _close(a, b, tolerance(ctx)) for _ in expr.ops]

    @staticmethod
    def _label_sets(compare: ir.Compare) -> set[ir.LabelSet]:
        return {o.type.labels for o in compare.operands if o.type.element is ir.Element.LABEL and o.type.labels}

    def _label_compare(self, compare: ir.Compare) -> bool:
        """Whether labels of different label sets are compared (through a shared label space)."""
        return len(self._label_sets(compare)) > 1

    def _comparable(self, operand: ir.Expr, compare: ir.Compare) -> Closure:
        """Label operands of different label sets are compared through a shared label space."""
        closure = self.emit(operand)
        label_sets = self._label_sets(compare)
        if operand.type.element is not ir.Element.LABEL or len(label_sets) <= 1:
            return closure
        space = _label_space(label_sets)
        table = torch.tensor([space[label] for label in operand.type.labels.labels])
        return lambda ctx: _lookup(table, closure(ctx))

    def emit_InRange(self, expr: ir.InRange) -> Closure:
        value, low, high = self.emit(expr.value), self._bound(expr.low), self._bound(expr.high)

        def in_range(ctx: CallContext) -> Value:
            v = value(ctx)
            lo, hi = align(low(ctx, v), v)[0], align(high(ctx, v), v)[0]
            return _conjoin(_ge(v, lo), _le(v, hi))

        return in_range

    def _bound(self, expr: ir.Expr) -> Callable[[CallContext, Value], Value]:
        """A bound of `in [lo, hi]`, given the value it bounds (a constant bound matches its dtype)."""
        constant = Constant.of(expr)
        if constant is not None:
            return lambda ctx, value: constant.against(value)
        closure = self.emit(expr)
        return lambda ctx, value: closure(ctx)

    def emit_InLabels(self, expr: ir.InLabels) -> Closure:
        value = self.emit(expr.value)
        labels = expr.value.type.labels
        if labels is None:
            if isinstance(expr.value, ir.LabelConst):
                holds = expr.value.label in expr.labels
                return lambda ctx: holds
            raise UnsupportedClause("a label of unknown label set")
        member = torch.tensor([label in expr.labels for label in labels.labels], dtype=torch.bool)
        return lambda ctx: _lookup(member, value(ctx))

    # ------------------------------------------------------------ indexing and calls

    def emit_Index(self, expr: ir.Index) -> Closure:
        value = self.emit(expr.value)
        items = tuple(self._unrolled(item) for item in expr.items)
        if any(isinstance(item, ir.IndexDynamic) for item in items):
            return self._dynamic_index(items, value)
        index = (slice(None), *(_static_item(item) for item in items))
        return lambda ctx: value(ctx)[index]

    def _unrolled(self, item: ir.IndexItem) -> ir.IndexItem:
        """A quantified label used as an index is a constant once the quantifier is unrolled."""
        if not (isinstance(item, ir.IndexDynamic) and isinstance(item.expr, ir.VarRef)):
            return item
        label = self._labels.get(item.expr.name)
        if label is None or item.labels is None:
            return item
        if label not in item.labels:
            raise UnsupportedClause(f"label {ir.format_label(label)} is not on the indexed axis")
        return ir.IndexPosition(item.labels.position(label), label)

    def _dynamic_index(self, items: tuple[ir.IndexItem, ...], value: Closure) -> Closure:
        parts: list[Closure | object] = []
        for item in items:
            parts.append(self.emit(item.expr) if isinstance(item, ir.IndexDynamic) else _static_item(item))

        def index(ctx: CallContext) -> Value:
            tensor = value(ctx)
            rows = torch.arange(tensor.shape[0], device=tensor.device)
            resolved = [rows]
            for part in parts:
                if callable(part):
                    position = part(ctx)
                    resolved.append(position if isinstance(position, int) else position.to(torch.long))
                else:
                    resolved.append(part)
            return tensor[tuple(resolved)]

        return index

    def emit_Call(self, expr: ir.Call) -> Closure:
        handler = getattr(self, f"call_{expr.function}", None)
        if handler is None:
            raise UnsupportedClause(f"`{expr.function}` is checked by `mdl test`, not by a monitor")
        args = [self.emit(arg) for arg in expr.args]
        options = {name: value.value for name, value in expr.options if isinstance(value, ir.Const)}
        return handler(args, options, expr)

    def emit_SelfCall(self, expr: ir.SelfCall) -> Closure:
        """The module applied to the argument values (in input-port order); the value is its output `output`."""
        args = [self.emit(arg) for arg in expr.args]
        output = expr.output

        def call(ctx: CallContext) -> Value:
            if ctx.module is None:
                raise UnsupportedClause("`self(...)` runs the module again; `mdl test` checks such clauses")
            inputs = [batched(arg(ctx), ctx.batch) for arg in args]
            result = outputs_by_port(ctx.module(*inputs), (output,))[output]
            return result.float() if result.dtype in (torch.float16, torch.bfloat16) else result

        return call

    def emit_LabelQuantifier(self, expr: ir.LabelQuantifier) -> Closure:
        bodies = []
        quantifier, self._quantifiers = self._quantifiers, self._quantifiers + 1
        for label in expr.labels.labels:
            self._labels[expr.var] = label
            first = len(self.nodes)
            bodies.append(self.emit(expr.body))
            if self._traced:
                self.instances.append(Instance(quantifier, expr.var, label, first, len(self.nodes) - 1))
        self._labels.pop(expr.var, None)
        combine = (lambda a, b: a & b) if expr.quantifier == "forall" else (lambda a, b: a | b)
        empty = expr.quantifier == "forall"

        def quantified(ctx: CallContext) -> Value:
            result = per_sample(empty, ctx.batch)
            for body in bodies:
                result = combine(result, per_sample(body(ctx), ctx.batch))
            return result

        return quantified

    # ------------------------------------------------------------ built-ins

    def _elementwise(self, operation: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
        def build(args, options, expr):
            (argument,) = args
            return lambda ctx: elementwise(operation, argument(ctx))

        return build

    @property
    def call_abs(self):
        return self._elementwise(torch.abs)

    @property
    def call_exp(self):
        return self._elementwise(torch.exp)

    @property
    def call_log(self):
        return self._elementwise(torch.log)

    @property
    def call_sqrt(self):
        return self._elementwise(torch.sqrt)

    @property
    def call_sigmoid(self):
        return self._elementwise(torch.sigmoid)

    @property
    def call_relu(self):
        return self._elementwise(torch.relu)

    def call_softmax(self, args, options, expr):
        (argument,) = args
        return lambda ctx: softmax(as_float(argument(ctx)))

    def call_clamp(self, args, options, expr):
        value, low, high = args
        return lambda ctx: clamp(value(ctx), low(ctx), high(ctx))

    def call_sum(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.sum(1))

    def call_mean(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.float().mean(dim=1))

    def call_min(self, args, options, expr):
        if len(args) == 2:
            return self._pairwise(args, torch.minimum)
        return self._reduce(args, expr, lambda flat: flat.amin(dim=1))

    def call_max(self, args, options, expr):
        if len(args) == 2:
            return self._pairwise(args, torch.maximum)
        return self._reduce(args, expr, lambda flat: flat.amax(dim=1))

    def call_norm(self, args, options, expr):
        order = options.get("p", 2.0)
        return self._reduce(args, expr, lambda flat: torch.linalg.vector_norm(flat.float(), ord=order, dim=1))

    def call_count(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.sum(dim=1))

    def call_all(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.all(dim=1))

    def call_any(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.any(dim=1))

    def call_finite(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: torch.isfinite(flat).all(dim=1))

    def call_argmax(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.argmax(dim=1))

    def call_argmin(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.argmin(dim=1))

    def call_flip(self, args, options, expr):
        (argument,) = args
        axis = int(options.get("dim", -1))
        tensor_axis = axis + 1 if axis >= 0 else axis
        return lambda ctx: torch.flip(argument(ctx), dims=(tensor_axis,))

    def _reduce(self, args, expr, reduction) -> Closure:
        (argument,) = args
        rank = sample_rank(expr.args[0].type) if not isinstance(expr.args[0], ir.Const) else 0
        if rank == 1:
            return lambda ctx: reduction(argument(ctx))

        def reduce(ctx: CallContext) -> Value:
            value = argument(ctx)
            if not isinstance(value, torch.Tensor):
                value = torch.full((ctx.batch, 1), value)
            return reduction(_flat(value) if value.dim() > 1 else value.reshape(-1, 1))

        return reduce

    def _pairwise(self, args, operation) -> Closure:
        left, right = args

        def pairwise(ctx: CallContext) -> Value:
            a, b = align(left(ctx), right(ctx))
            return operation(torch.as_tensor(a), torch.as_tensor(b))

        return pairwise


def batched(value: Value, batch: int) -> torch.Tensor:
    """A value as a module input: a sample-independent number repeated over the batch."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value
    return torch.as_tensor(value).expand(batch)


def outputs_by_port(raw: object, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A module's result as output ports: one tensor, a tuple in port order, or a dict by port name."""
    if isinstance(raw, torch.Tensor):
        return {names[0]: raw}
    if isinstance(raw, dict):
        if all(name in raw for name in names):
            return {name: raw[name] for name in names}
        return dict(zip(names, raw.values(), strict=False))
    if isinstance(raw, (tuple, list)):
        return dict(zip(names, raw, strict=False))
    raise UnsupportedClause(f"the module returned {type(raw).__name__}, not tensors for its outputs")


def softmax(value: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis.

    torch's CPU kernel is slow along many short rows (a batch of 256 scores
    over 10 classes: 33 us) and fast across them: with the class axis moved
    first it takes 6 us. The result is a view in the original layout, and a
    sum over its classes reads it across rows too (2 us instead of 3).
    """
    if value.numel() >= 1024 and value.is_cpu and value.dim() > 1 and value.shape[-1] <= 64:
        return torch.softmax(value.movedim(-1, 0), dim=0).movedim(0, -1)
    return torch.softmax(value, dim=-1)


def evaluate_dim(dim: ir.Dim, bound: dict[str, int]) -> int:
    """The size of a dim in this call; the shape check has bound every name it uses."""
    size = dim_size(dim, bound)
    if size is None:
        raise UnsupportedClause(f"dimension {dim} has no single size")
    return size


def _static_item(item: ir.IndexItem) -> object:
    if isinstance(item, ir.IndexPosition):
        return item.position
    if isinstance(item, ir.IndexSlice):
        return slice(item.start, item.stop)
    return Ellipsis


def _label_space(label_sets) -> dict[ir.Label, int]:
    space: dict[ir.Label, int] = {}
    for labels in label_sets:
        for label in labels.labels:
            space.setdefault(label, len(space))
    return space


def _lookup(table: torch.Tensor, positions: Value) -> Value:
    if isinstance(positions, torch.Tensor):
        return table.to(positions.device)[positions]
    return bool(table[positions]) if table.dtype == torch.bool else int(table[positions])


def as_float(value: Value) -> Value:
    if isinstance(value, torch.Tensor) and not value.is_floating_point():
        return value.float()
    return value


def elementwise(operation: Callable[[torch.Tensor], torch.Tensor], value: Value) -> Value:
    """An elementwise built-in on a tensor, or on a sample-independent number (`sqrt(F)`, `exp(2)`)."""
    if isinstance(value, torch.Tensor):
        return operation(as_float(value))
    return _on_number(operation, float(value))


@functools.lru_cache(maxsize=256)
def _on_number(operation: Callable[[torch.Tensor], torch.Tensor], value: float) -> float:
    """A built-in on a number, computed by torch so that it means what it means on a tensor.

    `math` would raise where torch answers: `sqrt(-1)` and `log(-1)` are NaN
    (which then fails its comparison), `log(0)` is -inf, `exp(1000)` is inf.
    The numbers are dims and literals, few per spec, so the result is cached
    and a passing call does not build a tensor for them each time.
    """
    return operation(torch.tensor(value, dtype=torch.float64)).item()


def clamp(value: Value, low: Value, high: Value) -> Value:
    """`clamp(v, lo, hi)`, each of them a number or a per-sample value (`clamp(y, min(x), max(x))`).

    Per-sample values of fewer axes are aligned after the batch axis, as for
    any binary operation; `torch.clamp` takes bounds as two numbers or two
    tensors of the value's shape, so mixed or per-sample bounds go through
    `maximum` and `minimum`, which agree with it (`hi` wins when `lo > hi`).
    """
    value = as_float(value)
    if not isinstance(low, torch.Tensor) and not isinstance(high, torch.Tensor):
        if isinstance(value, torch.Tensor):
            return torch.clamp(value, min=low, max=high)
        return torch.clamp(torch.tensor(float(value), dtype=torch.float64), min=low, max=high).item()
    device = (low if isinstance(low, torch.Tensor) else high).device
    value, low, high = _aligned(*(torch.as_tensor(part, device=device) for part in (value, low, high)))
    return torch.minimum(torch.maximum(value, low), high)


def _aligned(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-sample values widened after the batch axis to the largest per-sample rank (`align` for many)."""
    rank = max(_rank_of(value) for value in values)
    return tuple(value if _rank_of(value) in (-1, rank) else _widen(value, rank - _rank_of(value)) for value in values)


def _conjoin(left: Value, right: Value) -> Value:
    if isinstance(left, bool) and isinstance(right, bool):
        return left and right
    return torch.as_tensor(left) & torch.as_tensor(right) if not isinstance(left, torch.Tensor) else left & right


def _close(left: Value, right: Value, tolerance: Value | Constant) -> Value:
    difference = left - right
    if isinstance(difference, torch.Tensor):
        distance = difference.abs()
        if isinstance(tolerance, Constant):
            return distance <= tolerance.against(distance)
        # A tolerance computed per sample (`within max(x) / 10`) has fewer axes than the distance.
        distance, tolerance = align(distance, tolerance)
        return distance <= tolerance
    return abs(difference) <= (tolerance.value if isinstance(tolerance, Constant) else tolerance)


def _ge(left: Value, right: Value) -> Value:
    return left >= right


def _le(left: Value, right: Value) -> Value:
    return left <= right

