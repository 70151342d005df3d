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

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mdl_lang import ir
from mdl_lang.backends.torch.refinements import dim_size

Value = torch.Tensor | float | int | bool


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
class CompiledClause:
    """A clause ready to run.

    `holds(ctx)` is the fast path: one bool tensor, True when every sample keeps
    the clause. `mask(ctx)` is True per sample that keeps it, and records every
    sub-expression's value in `ctx.trace` when one is given (the slow path).
    """

    clause: ir.Clause
    holds: Callable[[CallContext], torch.Tensor]
    mask: Callable[[CallContext], torch.Tensor]
    nodes: dict[int, ir.Expr] = field(default_factory=dict)


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
    return value.reshape(value.shape[0], -1).all(dim=1)


def _all(value: Value) -> torch.Tensor:
    """Whether every element holds, as a 0-dim bool tensor (no host sync)."""
    if isinstance(value, torch.Tensor):
        return value.all()
    return torch.tensor(bool(value))


def _isfinite(value: Value) -> Value:
    if isinstance(value, torch.Tensor):
        return torch.isfinite(value) if value.is_floating_point() else torch.ones((), dtype=torch.bool)
    return math.isfinite(value)


def _flat(value: torch.Tensor) -> torch.Tensor:
    return value.reshape(value.shape[0], -1)


class PredicateCompiler:
    """Compiles the IR of per-sample clauses; one instance per bound module."""

    def __init__(self, traced: bool = False, labels: dict[str, ir.Label] | None = None) -> None:
        self._labels: dict[str, ir.Label] = dict(labels or {})
        self._traced = traced
        self.nodes: dict[int, ir.Expr] = {}

    def compile(self, clause: ir.Clause) -> CompiledClause:
        if clause.fragment is not ir.Fragment.PER_SAMPLE:
            raise UnsupportedClause(
                f"a {clause.fragment.value} clause is checked by `mdl test`, not by a monitor"
            )
        fast = PredicateCompiler().emit_root(clause.expr)
        tracer = PredicateCompiler(traced=True)
        body = tracer.emit(clause.expr)

        def holds(ctx: CallContext) -> torch.Tensor:
            return _all(fast(ctx))

        def mask(ctx: CallContext) -> torch.Tensor:
            return per_sample(body(ctx), ctx.batch)

        return CompiledClause(clause, holds, mask, dict(tracer.nodes))

    def emit_root(self, expr: ir.Expr) -> Closure:
        """The clause for the fast path: `all` over the whole batch needs no per-sample reduction first."""
        if isinstance(expr, ir.Logic) and expr.op == "and":
            left, right = self.emit_root(expr.left), self.emit_root(expr.right)
            return lambda ctx: _all(left(ctx)) & _all(right(ctx))
        if isinstance(expr, ir.Call) and expr.function in ("finite", "all"):
            (argument,) = (self.emit(arg) for arg in expr.args)
            if expr.function == "finite":
                return lambda ctx: _isfinite(argument(ctx))
            return argument
        return self.emit(expr)

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
        left, right = self.emit(expr.left), self.emit(expr.right)
        operation = ir.ARITHMETIC[expr.op]
        fit = aligner(expr.left, expr.right)
        return lambda ctx: operation(*fit(left(ctx), right(ctx)))

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
        operands = [self._comparable(operand, expr) for operand in expr.operands]
        aligners = [aligner(expr.operands[i], expr.operands[i + 1]) for i in range(len(expr.ops))]
        if expr.tolerance is not None:
            tolerance = self.emit(expr.tolerance)
            tests = [lambda a, b, ctx: _close(a, b, tolerance(ctx)) for _ in expr.ops]
        else:
            tests = [_comparison(op) for op in expr.ops]
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

    def _comparable(self, operand: ir.Expr, compare: ir.Compare) -> Closure:
        """Label operands of different label sets are compared through a shared label space."""
        closure = self.emit(operand)
        label_sets = {
            o.type.labels for o in compare.operands if o.type.element is ir.Element.LABEL and o.type.labels
        }
        if operand.type.element is not ir.Element.LABEL or len(label_sets) <= 1:
            return closure
        space = _label_space(label_sets)
        table = torch.tensor([space[label] for label in operand.type.labels.labels])
        return lambda ctx: _lookup(table, closure(ctx))

    def emit_InRange(self, expr: ir.InRange) -> Closure:
        value, low, high = self.emit(expr.value), self.emit(expr.low), self.emit(expr.high)

        def in_range(ctx: CallContext) -> Value:
            v = value(ctx)
            lo, hi = align(low(ctx), v)[0], align(high(ctx), v)[0]
            return _conjoin(_ge(v, lo), _le(v, hi))

        return in_range

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
        for label in expr.labels.labels:
            self._labels[expr.var] = label
            bodies.append(self.emit(expr.body))
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

    def _elementwise(self, operation) -> Callable:
        def build(args, options, expr):
            (argument,) = args
            return lambda ctx: operation(as_float(argument(ctx)))

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
        return lambda ctx: torch.clamp(as_float(value(ctx)), min=low(ctx), max=high(ctx))

    def call_sum(self, args, options, expr):
        return self._reduce(args, expr, lambda flat: flat.sum(dim=1))

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

    torch's CPU kernel is slow for many short rows (a batch of 256 scores over
    10 classes takes it longer than the exp formula by 3x); the formula is used there.
    """
    if value.device.type == "cpu" and value.dim() > 1 and value.shape[-1] <= 64 and value.numel() >= 1024:
        exponentials = (value - value.amax(dim=-1, keepdim=True)).exp()
        return exponentials / exponentials.sum(dim=-1, keepdim=True)
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


def _conjoin(left: Value, right: Value) -> Value:
    if isinstance(left, bool) and isinstance(right, bool):
        return left and right
    return torch.as_tensor(left) & torch.as_tensor(right) if not isinstance(left, torch.Tensor) else left & right


def _close(left: Value, right: Value, tolerance: Value) -> Value:
    difference = left - right
    if isinstance(difference, torch.Tensor):
        return difference.abs() <= tolerance
    return abs(difference) <= tolerance


def _ge(left: Value, right: Value) -> Value:
    return left >= right


def _le(left: Value, right: Value) -> Value:
    return left <= right

