"""The typed IR: the one representation every backend reads.

The resolver (`mdl_lang.semantics`) produces it from the syntax tree: names are
resolved, generics instantiated, label sets evaluated to ordered sets, dims to
symbolic expressions, and every clause typed and tagged with its fragment.
Backends never see syntax; each node keeps the span it came from for reports.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mdl_lang.span import NO_SPAN, Span


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


# ---------------------------------------------------------------- labels


class _Other:
    """The built-in label `other`: everything outside a module's own labels."""

    _instance: _Other | None = None

    def __new__(cls) -> _Other:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "other"

    def __reduce__(self) -> str:
        return "OTHER"


OTHER = _Other()
Label = int | str | _Other


def format_label(label: Label) -> str:
    return f'"{label}"' if isinstance(label, str) else repr(label)


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of labels; the order is the order of a label-indexed axis.

    `opaque` marks a generic parameter checked before instantiation: its
    labels are unknown, so membership questions about it are not decided.
    """

    labels: tuple[Label, ...]
    name: str | None = field(default=None, compare=False)
    opaque: bool = False

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_other(self) -> bool:
        return OTHER in self.labels

    @property
    def own_labels(self) -> tuple[Label, ...]:
        """The labels other than `other`."""
        return tuple(label for label in self.labels if label is not OTHER)

    def position(self, label: Label) -> int:
        return self.labels.index(label)

    def union(self, other: LabelSet) -> LabelSet:
        merged = self.labels + tuple(label for label in other.labels if label not in self.labels)
        return LabelSet(merged, opaque=self.opaque or other.opaque)

    def difference(self, other: LabelSet) -> LabelSet:
        return LabelSet(tuple(label for label in self.labels if label not in other.labels), opaque=self.opaque)

    def describe(self) -> str:
        if self.opaque:
            return self.name or "?"
        shown = ", ".join(format_label(label) for label in self.labels)
        return f"{self.name} = {{{shown}}}" if self.name else f"{{{shown}}}"


# ---------------------------------------------------------------- dims


@dataclass(frozen=True)
class DimConst:
    value: int

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class DimVar:
    """A symbolic dimension bound per call; `batch` marks the spec's batch dimension."""

    name: str
    batch: bool = False

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class DimBinary:
    """`left op right` over dims, `op` one of `+ - * //`."""

    op: str
    left: Dim
    right: Dim

    def __str__(self) -> str:
        return f"{_dim_operand(self.left)} {self.op} {_dim_operand(self.right)}"


def _dim_operand(dim: Dim) -> str:
    return f"({dim})" if isinstance(dim, DimBinary) else str(dim)


@dataclass(frozen=True)
class DimAny:
    """`_`: one axis of any size."""

    def __str__(self) -> str:
        return "_"


@dataclass(frozen=True)
class DimEllipsis:
    """`...`: any number of axes."""

    def __str__(self) -> str:
        return "..."


@dataclass(frozen=True)
class DimLabels:
    """An axis of size |labels|, indexed by those labels in order."""

    labels: LabelSet

    def __str__(self) -> str:
        return self.labels.name or self.labels.describe()


Dim = DimConst | DimVar | DimBinary | DimAny | DimEllipsis | DimLabels


def format_shape(dims: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(dim) for dim in dims) + "]"


# ---------------------------------------------------------------- tensor types

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
DTYPES = (*FLOAT_DTYPES, "int64", "int32", "uint8", "bool")
ANY_FLOAT = "float"


@dataclass(frozen=True)
class TensorType:
    """A port's type: shape (batch axis included), dtype, value range, `finite`.

    `dtype` is one of DTYPES, `"float"` (any floating dtype) or None (any).
    """

    dims: tuple[Dim, ...]
    dtype: str | None = None
    value_range: tuple[float, float] | None = None
    finite: bool = False
    span: Span = _span()

    @property
    def has_batch(self) -> bool:
        return bool(self.dims) and isinstance(self.dims[0], DimVar) and self.dims[0].batch

    @property
    def sample_dims(self) -> tuple[Dim, ...]:
        """The shape of one sample: the batch axis removed."""
        return self.dims[1:] if self.has_batch else self.dims

    def describe(self) -> str:
        text = f"Tensor{format_shape(self.dims)}"
        if self.dtype:
            text += f" {self.dtype}"
        if self.value_range is not None:
            low, high = self.value_range
            text += f" in [{_number(low)}, {_number(high)}]"
        if self.finite:
            text += " finite"
        return text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


# ---------------------------------------------------------------- clause expressions


class Element(str, Enum):
    REAL = "real"
    INT = "int"
    BOOL = "bool"
    LABEL = "label"


@dataclass(frozen=True)
class ValueType:
    """The type of a clause expression for one sample.

    `shape` is empty for a scalar; `axes` gives, per axis, the label set that
    indexes it (None for a plain axis); `labels` is the label set of a LABEL.
    """

    element: Element
    shape: tuple[Dim, ...] = ()
    axes: tuple[LabelSet | None, ...] = ()
    labels: LabelSet | None = None

    @property
    def is_scalar(self) -> bool:
        return not self.shape

    @property
    def is_numeric(self) -> bool:
        return self.element in (Element.REAL, Element.INT)

    def describe(self) -> str:
        if self.element is Element.LABEL:
            return f"a label of {self.labels.describe()}" if self.labels else "a label"
        noun = {Element.REAL: "number", Element.INT: "integer", Element.BOOL: "boolean"}[self.element]
        if self.is_scalar:
            return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} tensor of shape {format_shape(self.shape)}"


REAL = ValueType(Element.REAL)
INT = ValueType(Element.INT)
BOOL = ValueType(Element.BOOL)


@dataclass(frozen=True)
class Const:
    value: float | int | bool
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class LabelConst:
    label: Label
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class DimValue:
    """The size of a symbolic dim, known only once a call binds it."""

    dim: Dim
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class PortRef:
    """One sample of a port (batch axis removed)."""

    port: str
    direction: str
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class VarRef:
    """A variable bound by a quantifier (a label, or a perturbed input `x2`)."""

    name: str
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class Arith:
    """`+ - * / // **`, elementwise with broadcasting."""

    op: str
    left: Expr
    right: Expr
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class Neg:
    operand: Expr
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class Logic:
    """`and`, `or`, `implies`; a boolean tensor operand means all of it."""

    op: str
    left: Expr
    right: Expr
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class Not:
    operand: Expr
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class Compare:
    """A comparison chain, elementwise; `tolerance` makes `==` absolute-tolerance equality."""

    operands: tuple[Expr, ...]
    ops: tuple[str, ...]
    tolerance: Expr | None
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class InRange:
    value: Expr
    low: Expr
    high: Expr
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class InLabels:
    value: Expr
    labels: LabelSet
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class IndexPosition:
    """A constant position; `label` is set when it was written as a label."""

    position: int
    label: Label | None = None


@dataclass(frozen=True)
class IndexDynamic:
    """An index computed per sample (a quantified label); `labels` maps labels to positions."""

    expr: Expr
    labels: LabelSet | None


@dataclass(frozen=True)
class IndexSlice:
    start: int | None
    stop: int | None


@dataclass(frozen=True)
class IndexEllipsis:
    pass


IndexItem = IndexPosition | IndexDynamic | IndexSlice | IndexEllipsis


@dataclass(frozen=True)
class Index:
    value: Expr
    items: tuple[IndexItem, ...]
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    """A built-in function (`softmax`, `sum`, `norm`, ...); `options` are keyword arguments."""

    function: str
    args: tuple[Expr, ...]
    options: tuple[tuple[str, Expr], ...]
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class SelfCall:
    """`self(args)`: the module applied to other inputs; the value is its output `output`."""

    args: tuple[Expr, ...]
    output: str
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class Statistic:
    """`accuracy(y)`, `recall(y, l)` or `precision(y, l)` over the clause's data set.

    `label` is a LabelConst, or a VarRef to a label bound by an enclosing quantifier.
    """

    metric: str
    output: str
    label: Expr | None
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class LabelQuantifier:
    quantifier: str
    var: str
    labels: LabelSet
    body: Expr
    type: ValueType
    span: Span = _span()


@dataclass(frozen=True)
class BallQuantifier:
    """`forall var within radius of center (norm): body`, `center` an input port."""

    var: str
    radius: Expr
    center: str
    norm: str
    body: Expr
    type: ValueType
    span: Span = _span()


Expr = (
    Const | LabelConst | DimValue | PortRef | VarRef | Arith | Neg | Logic | Not | Compare | InRange | InLabels
    | Index | Call | SelfCall | Statistic | LabelQuantifier | BallQuantifier
)

# What the IR's operators mean, for every backend that evaluates them (on numbers or tensors).
ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "**": operator.pow,
}
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">=": operator.ge, ">": operator.gt,
}

EXPR_NODES: tuple[type, ...] = (
    Const, LabelConst, DimValue, PortRef, VarRef, Arith, Neg, Logic, Not, Compare, InRange, InLabels,
    Index, Call, SelfCall, Statistic, LabelQuantifier, BallQuantifier,
)


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of a node, for generic walks."""
    match expr:
        case Arith() | Logic():
            return (expr.left, expr.right)
        case Neg() | Not():
            return (expr.operand,)
        case Compare():
            return expr.operands + ((expr.tolerance,) if expr.tolerance is not None else ())
        case InRange():
            return (expr.value, expr.low, expr.high)
        case InLabels():
            return (expr.value,)
        case Index():
            return (expr.value, *(item.expr for item in expr.items if isinstance(item, IndexDynamic)))
        case Call():
            return expr.args + tuple(value for _, value in expr.options)
        case SelfCall():
            return expr.args
        case Statistic():
            return (expr.label,) if expr.label is not None else ()
        case LabelQuantifier():
            return (expr.body,)
        case BallQuantifier():
            return (expr.radius, expr.body)
        case _:
            return ()


def walk(expr: Expr):
    """Every node of an expression, parents before children."""
    yield expr
    for child in children(expr):
        yield from walk(child)


# ---------------------------------------------------------------- clauses and components


class Fragment(str, Enum):
    """Which backends can check a clause (LANGUAGE.md section 5)."""

    PER_SAMPLE = "per-sample"
    RELATIONAL = "relational"
    STATISTICAL = "statistical"
    COST = "cost"


@dataclass(frozen=True)
class Clause:
    """A typed `requires` or `ensures`; `origin` says which declaration wrote it."""

    name: str
    kind: str
    expr: Expr
    fragment: Fragment
    origin: str
    data: str | None = None
    confidence: float = 0.95
    span: Span = _span()


@dataclass(frozen=True)
class CostClause:
    """`params <= N`, `flops <= N per sample`, `latency <= T ms at batch N`."""

    name: str
    metric: str
    op: str
    limit: float
    origin: str
    unit: str | None = None
    batch: int = 1
    span: Span = _span()

    @property
    def fragment(self) -> Fragment:
        return Fragment.COST


@dataclass(frozen=True)
class Port:
    name: str
    direction: str
    type: TensorType
    span: Span = _span()


@dataclass(frozen=True)
class Interface:
    """An instantiated interface: its ports and its own contract."""

    name: str
    declaration: str
    args: tuple[LabelSet | Dim, ...]
    ports: tuple[Port, ...]
    clauses: tuple[Clause, ...]
    costs: tuple[CostClause, ...]
    span: Span = _span()

    @property
    def inputs(self) -> tuple[Port, ...]:
        return tuple(port for port in self.ports if port.direction == "input")

    @property
    def outputs(self) -> tuple[Port, ...]:
        return tuple(port for port in self.ports if port.direction == "output")

    def port(self, name: str) -> Port | None:
        return next((port for port in self.ports if port.name == name), None)


@dataclass(frozen=True)
class Module:
    """A module: its interface instantiated, plus clauses and costs of its own."""

    name: str
    interface: Interface
    clauses: tuple[Clause, ...]
    costs: tuple[CostClause, ...]
    binding: str | None
    file: str
    span: Span = _span()

    @property
    def all_clauses(self) -> tuple[Clause, ...]:
        return self.interface.clauses + self.clauses

    @property
    def all_costs(self) -> tuple[CostClause, ...]:
        return self.interface.costs + self.costs


@dataclass(frozen=True)
class Data:
    name: str
    input_type: TensorType
    labels: LabelSet
    binding: str | None
    file: str
    span: Span = _span()


# ---------------------------------------------------------------- compositions


@dataclass(frozen=True)
class PartRef:
    """A module or composition used as a part; `name` is how the spec names it."""

    name: str
    span: Span = _span()


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[CompNode, ...]
    span: Span = _span()


@dataclass(frozen=True)
class VoteNode:
    parts: tuple[CompNode, ...]
    labels: LabelSet
    overlap_max: bool = False
    span: Span = _span()


@dataclass(frozen=True)
class ReplaceNode:
    base: CompNode
    old: str
    new: str
    span: Span = _span()


CompNode = PartRef | Pipeline | VoteNode | ReplaceNode


@dataclass(frozen=True)
class Composition:
    """A composed module: its interface, how it is built, and clauses of its own.

    `parts` names every module and composition inside it, nested ones included.
    """

    name: str
    interface: Interface
    expr: CompNode
    clauses: tuple[Clause, ...]
    costs: tuple[CostClause, ...]
    file: str
    parts: tuple[str, ...] = ()
    span: Span = _span()

    @property
    def all_clauses(self) -> tuple[Clause, ...]:
        return self.interface.clauses + self.clauses

    @property
    def all_costs(self) -> tuple[CostClause, ...]:
        return self.interface.costs + self.costs


Component = Module | Composition


def import_scope(name: str) -> str:
    """The import aliases before a dotted component name (`a.voted` -> `a.`; `voted` -> ``): prefixed to
    the names inside an imported composition, it names them as the importing spec does."""
    head, dot, _ = name.rpartition(".")
    return head + dot


# ---------------------------------------------------------------- obligations (for the Z3 backend)


@dataclass(frozen=True)
class Implication:
    """A claim the checker could not settle by itself: `premise` implies `conclusion`.

    `kind` is `pipe` (a's ensures imply b's requires), `subtype-requires`,
    `subtype-ensures` (behavioural subtyping), `replace`, `interface` (a composition's parts keep
    the interface it declares), or `dims` (an equation to solve).
    """

    kind: str
    premise: str
    conclusion: str
    span: Span = _span()
    # The parts themselves, as the spec names them, for backends that prove the claim (the Z3 backend):
    # `a` and `b` of `a >> b`, or `new` and `old` of `replace(c, old, new)`; `composition` declares it.
    premise_node: CompNode | None = field(default=None, compare=False)
    conclusion_node: CompNode | None = field(default=None, compare=False)
    composition: str = ""
    # For `dims`: an equation between dims the front end could not solve (non-linear, or several unknowns).
    equation: tuple[Dim, Dim] | None = None


@dataclass(frozen=True)
class Spec:
    """One checked file with everything it declares, imports reachable by alias."""

    file: str
    name: str | None
    label_sets: dict[str, LabelSet]
    dims: dict[str, Dim]
    modules: dict[str, Module]
    compositions: dict[str, Composition]
    data: dict[str, Data]
    interfaces: dict[str, Interface]
    imports: dict[str, Spec]
    obligations: tuple[Implication, ...] = ()

    def component(self, name: str) -> Component | None:
        """A module or composition by name; `alias.name` looks into an import."""
        head, _, rest = name.partition(".")
        if rest:
            imported = self.imports.get(head)
            return imported.component(rest) if imported else None
        return self.modules.get(name) or self.compositions.get(name)

    def components(self) -> dict[str, Component]:
        return {**self.modules, **self.compositions}
