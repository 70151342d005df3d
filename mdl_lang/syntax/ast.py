"""The syntax tree of a .mdl file: frozen dataclasses, one per construct.

Every node carries a `span`, excluded from equality so that a tree compares
equal to the tree of its formatted text (`parse(fmt(tree)) == tree`).
Parentheses leave no node: the formatter puts back those precedence needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mdl_lang.span import NO_SPAN, Span


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


# ---------------------------------------------------------------- names


@dataclass(frozen=True)
class Identifier:
    name: str
    span: Span = _span()


@dataclass(frozen=True)
class QualifiedName:
    """`name` or `alias.name` (a declaration reached through an import)."""

    parts: tuple[str, ...]
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    """A numeric literal kept as written (`1e-3`, `10k`); `value` decodes it."""

    text: str
    span: Span = _span()

    @property
    def suffix(self) -> str:
        return self.text[-1] if self.text[-1] in SUFFIX_SCALE else ""

    @property
    def value(self) -> int | float:
        body = self.text[:-1] if self.suffix else self.text
        scale = SUFFIX_SCALE.get(self.suffix, 1)
        if body.isdigit():
            return int(body) * scale
        return float(body) * scale

    @property
    def is_integer(self) -> bool:
        return isinstance(self.value, int)


SUFFIX_SCALE = {"k": 1_000, "M": 1_000_000, "G": 1_000_000_000}


@dataclass(frozen=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True)
class Name:
    id: str
    span: Span = _span()


@dataclass(frozen=True)
class SelfRef:
    """`self`: the module under contract, callable on another input."""

    span: Span = _span()


@dataclass(frozen=True)
class OtherLabel:
    """`other`: the built-in label of everything outside a module's own labels."""

    span: Span = _span()


@dataclass(frozen=True)
class Wildcard:
    """`_`: a dimension of any size."""

    span: Span = _span()


@dataclass(frozen=True)
class EllipsisDims:
    """`...`: any number of dimensions (in a shape) or of axes (in an index)."""

    span: Span = _span()


@dataclass(frozen=True)
class LabelRange:
    """`lo..hi` inside a label-set literal: every integer from lo to hi."""

    low: Expr
    high: Expr
    span: Span = _span()


@dataclass(frozen=True)
class LabelSetLiteral:
    items: tuple[Expr | LabelRange, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Binary:
    """A binary operator: `+ - * / // ** |` and `and or implies`."""

    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Unary:
    """Unary `-` or `not`."""

    op: str
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Compare:
    """A comparison chain `a < b <= c`, optionally `within TOL` (absolute)."""

    operands: tuple[Expr, ...]
    ops: tuple[str, ...]
    tolerance: Expr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class InInterval:
    value: Expr
    low: Expr
    high: Expr
    span: Span = _span()


@dataclass(frozen=True)
class InLabels:
    value: Expr
    labels: Expr
    span: Span = _span()


@dataclass(frozen=True)
class KeywordArg:
    name: Identifier
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    func: Expr
    args: tuple[Expr | KeywordArg, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Slice:
    start: Expr | None
    stop: Expr | None
    span: Span = _span()


@dataclass(frozen=True)
class Index:
    value: Expr
    items: tuple[Expr | Slice, ...]
    span: Span = _span()


@dataclass(frozen=True)
class LabelQuantifier:
    """`forall l in L: P` or `exists l in L: P`."""

    quantifier: str
    var: Identifier
    domain: Expr
    body: Expr
    span: Span = _span()


@dataclass(frozen=True)
class BallQuantifier:
    """`forall x2 within EPS of x (linf): P`."""

    var: Identifier
    radius: Expr
    center: Name
    norm: Identifier | None
    body: Expr
    span: Span = _span()


Expr = (
    Number | String | Name | SelfRef | OtherLabel | Wildcard | EllipsisDims | LabelSetLiteral
    | Binary | Unary | Compare | InInterval | InLabels | Call | Index | LabelQuantifier | BallQuantifier
)


# ---------------------------------------------------------------- types


@dataclass(frozen=True)
class TensorType:
    dims: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True)
class TypeRef:
    name: QualifiedName
    args: tuple[Expr, ...] = ()
    span: Span = _span()


@dataclass(frozen=True)
class FlagRefinement:
    """A word after a type: a dtype (`float32`) or `finite`."""

    name: Identifier
    span: Span = _span()


@dataclass(frozen=True)
class RangeRefinement:
    low: Expr
    high: Expr
    span: Span = _span()


Refinement = FlagRefinement | RangeRefinement


@dataclass(frozen=True)
class TypeExpr:
    head: TensorType | TypeRef
    refinements: tuple[Refinement, ...] = ()
    span: Span = _span()


# ---------------------------------------------------------------- members


@dataclass(frozen=True)
class Port:
    direction: str
    name: Identifier
    type: TypeExpr
    span: Span = _span()


@dataclass(frozen=True)
class Binding:
    """`python "pkg.mod:factory"`."""

    target: str
    span: Span = _span()


@dataclass(frozen=True)
class DataBinding:
    """`on DATA [with confidence C]` after a statistical clause."""

    data: QualifiedName
    confidence: Expr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class Clause:
    kind: str
    name: Identifier | None
    expr: Expr
    data: DataBinding | None = None
    span: Span = _span()


@dataclass(frozen=True)
class CostItem:
    metric: str
    op: str
    value: Expr
    per_sample: bool = False
    unit: str | None = None
    batch: Expr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class CostBlock:
    items: tuple[CostItem, ...]
    span: Span = _span()


Member = Port | Binding | Clause | CostBlock


# ---------------------------------------------------------------- compositions


@dataclass(frozen=True)
class CompRef:
    name: QualifiedName
    span: Span = _span()


@dataclass(frozen=True)
class Pipe:
    left: CompExpr
    right: CompExpr
    span: Span = _span()


@dataclass(frozen=True)
class Vote:
    parts: tuple[CompExpr, ...]
    overlap: Identifier | None = None
    span: Span = _span()


@dataclass(frozen=True)
class Replace:
    base: CompExpr
    old: QualifiedName
    new: QualifiedName
    span: Span = _span()


CompExpr = CompRef | Pipe | Vote | Replace


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class SpecName:
    name: Identifier
    span: Span = _span()


@dataclass(frozen=True)
class Import:
    path: str
    alias: Identifier
    span: Span = _span()


@dataclass(frozen=True)
class LabelsDecl:
    name: Identifier
    value: Expr
    parent: Expr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class DimItem:
    """One name of a `dim` line: `B : batch`, `H = 8` or a free `S`."""

    name: Identifier
    kind: str
    value: Expr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class DimDecl:
    items: tuple[DimItem, ...]
    span: Span = _span()


@dataclass(frozen=True)
class TypeDecl:
    name: Identifier
    params: tuple[Identifier, ...]
    value: TypeExpr
    span: Span = _span()


@dataclass(frozen=True)
class InterfaceDecl:
    name: Identifier
    params: tuple[Identifier, ...]
    members: tuple[Member, ...]
    span: Span = _span()


@dataclass(frozen=True)
class ModuleDecl:
    name: Identifier
    interface: TypeRef
    members: tuple[Member, ...] = ()
    span: Span = _span()


@dataclass(frozen=True)
class DataDecl:
    name: Identifier
    input_type: TypeExpr
    labels: Expr
    binding: Binding | None = None
    span: Span = _span()


@dataclass(frozen=True)
class ComposeDecl:
    name: Identifier
    interface: TypeRef
    expr: CompExpr
    members: tuple[Member, ...] = ()
    span: Span = _span()


Decl = Import | LabelsDecl | DimDecl | TypeDecl | InterfaceDecl | ModuleDecl | DataDecl | ComposeDecl


@dataclass(frozen=True)
class Comment:
    """A `#` comment, kept so that `mdl fmt` can put it back."""

    text: str
    span: Span = _span()


@dataclass(frozen=True)
class SpecFile:
    spec: SpecName | None
    decls: tuple[Decl, ...]
    comments: tuple[Comment, ...] = ()
    span: Span = _span()
