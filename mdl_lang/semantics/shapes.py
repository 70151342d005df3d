"""Shape algebra: broadcasting inside clauses, and dim equations across compositions.

Symbolic dims are solved here only where the answer is plain (one unknown in
a linear equation); anything harder is returned as undecided so that the Z3
backend can take it up later. A definite mismatch is never left undecided.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mdl_lang import ir

Shape = tuple[ir.Dim, ...]


def _definitely_differ(left: ir.Dim, right: ir.Dim) -> str | None:
    """Why two dims cannot be equal, or None when they are equal or may be."""
    if isinstance(left, (ir.DimAny, ir.DimEllipsis)) or isinstance(right, (ir.DimAny, ir.DimEllipsis)):
        return None
    if isinstance(left, ir.DimLabels) and isinstance(right, ir.DimLabels):
        if left.labels.opaque or right.labels.opaque or left.labels.labels == right.labels.labels:
            return None
        return f"axis labelled {left.labels.describe()} against {right.labels.describe()}"
    left_size, right_size = _size(left), _size(right)
    if left_size is not None and right_size is not None and left_size != right_size:
        return f"{_with_size(left, left_size)} against {_with_size(right, right_size)}"
    return None


def _with_size(dim: ir.Dim, size: int) -> str:
    return str(dim) if isinstance(dim, ir.DimConst) else f"{dim} of size {size}"


def _size(dim: ir.Dim) -> int | None:
    if isinstance(dim, ir.DimConst):
        return dim.value
    if isinstance(dim, ir.DimLabels) and not dim.labels.opaque:
        return len(dim.labels)
    return None


def broadcast(left: ir.ValueType, right: ir.ValueType) -> tuple[Shape, tuple] | str:
    """The (shape, axes) of an elementwise result, or a sentence saying why the shapes clash."""
    if left.is_scalar:
        return right.shape, right.axes
    if right.is_scalar:
        return left.shape, left.axes
    if any(isinstance(d, ir.DimEllipsis) for d in left.shape + right.shape):
        return (left.shape, left.axes) if len(left.shape) >= len(right.shape) else (right.shape, right.axes)
    length = max(len(left.shape), len(right.shape))
    left_shape, left_axes = _pad(left, length)
    right_shape, right_axes = _pad(right, length)
    shape, axes = [], []
    for a, b, a_axis, b_axis in zip(left_shape, right_shape, left_axes, right_axes, strict=True):
        if a == ir.DimConst(1) and b is not None:
            shape.append(b)
        elif b == ir.DimConst(1) or b is None:
            shape.append(a)
        else:
            reason = _definitely_differ(a, b)
            if reason is not None:
                return f"{ir.format_shape(left.shape)} against {ir.format_shape(right.shape)} ({reason})"
            shape.append(a if not isinstance(a, ir.DimAny) else b)
        axes.append(a_axis if a_axis is not None else b_axis)
    return tuple(shape), tuple(axes)


def _pad(value: ir.ValueType, length: int) -> tuple[list, list]:
    missing = length - len(value.shape)
    return [None] * missing + list(value.shape), [None] * missing + list(value.axes)


def dims_compatible(left: Shape, right: Shape) -> bool:
    """Whether two shapes may be equal (symbolic dims may turn out equal at run time)."""
    if any(isinstance(d, ir.DimEllipsis) for d in left + right):
        return True
    return len(left) == len(right) and all(_definitely_differ(a, b) is None for a, b in zip(left, right, strict=True))


def slice_length(dim: ir.Dim, item: ir.IndexSlice) -> ir.Dim:
    if item.start is None and item.stop is None:
        return dim
    if isinstance(dim, ir.DimConst):
        return ir.DimConst(len(range(dim.value)[item.start:item.stop]))
    return ir.DimAny()


# ---------------------------------------------------------------- dim equations


_RENAMED = re.compile(r"[A-Za-z0-9_.]+#\d+:")


def plain(text: str) -> str:
    """Text about renamed dims as the user wrote them: `w#1:S` (S in the first use of `w`) is shown as `S`."""
    return _RENAMED.sub("", text)


def rename_apart(dim: ir.Dim, prefix: str) -> ir.Dim:
    """The dim with its free symbolic dims renamed for one use of a part (`S` -> `a:S`)."""
    match dim:
        case ir.DimVar(batch=False):
            return ir.DimVar(f"{prefix}{dim.name}")
        case ir.DimBinary():
            return ir.DimBinary(dim.op, rename_apart(dim.left, prefix), rename_apart(dim.right, prefix))
    return dim


@dataclass(frozen=True)
class Linear:
    """sum(coefficient * var) + constant."""

    terms: dict[str, int]
    constant: int


def linear(dim: ir.Dim) -> Linear | None:
    """The linear form of a dim, or None when it is not linear (a product of unknowns, `//`)."""
    match dim:
        case ir.DimConst(value=value):
            return Linear({}, value)
        case ir.DimVar(name=name):
            return Linear({name: 1}, 0)
        case ir.DimLabels() if not dim.labels.opaque:
            return Linear({}, len(dim.labels))
        case ir.DimBinary(op="+" | "-" as op, left=left, right=right):
            a, b = linear(left), linear(right)
            if a is None or b is None:
                return None
            sign = 1 if op == "+" else -1
            terms = dict(a.terms)
            for name, coefficient in b.terms.items():
                terms[name] = terms.get(name, 0) + sign * coefficient
            return Linear({k: v for k, v in terms.items() if v}, a.constant + sign * b.constant)
        case ir.DimBinary(op="*", left=left, right=right):
            a, b = linear(left), linear(right)
            if a is None or b is None or (a.terms and b.terms):
                return None
            scale, form = (a.constant, b) if not a.terms else (b.constant, a)
            return Linear({k: v * scale for k, v in form.terms.items() if v * scale}, form.constant * scale)
    return None


@dataclass(frozen=True)
class DimProblem:
    """`kind` is `mismatch`, `no-solution` (definite errors) or `undecided` (left to Z3)."""

    kind: str
    message: str
    equation: tuple[ir.Dim, ir.Dim] | None = None  # for `undecided`: the equation left to Z3


@dataclass
class DimSolver:
    """Unifies the shapes met along one composition, binding its symbolic dims."""

    bindings: dict[str, ir.Dim] = field(default_factory=dict)

    def resolve(self, dim: ir.Dim) -> ir.Dim:
        match dim:
            case ir.DimVar(name=name) if name in self.bindings:
                return self.resolve(self.bindings[name])
            case ir.DimBinary():
                return fold_dim(ir.DimBinary(dim.op, self.resolve(dim.left), self.resolve(dim.right)))
        return dim

    def unify_shapes(self, left: Shape, right: Shape) -> list[DimProblem]:
        pairs = _align(left, right)
        if pairs is None:
            return [DimProblem("mismatch", f"{len(left)} axes against {len(right)}")]
        problems = []
        for a, b in pairs:
            problem = self.unify(a, b)
            if problem is not None:
                problems.append(problem)
        return problems

    def unify(self, left: ir.Dim, right: ir.Dim) -> DimProblem | None:
        a, b = self.resolve(left), self.resolve(right)
        if a == b or isinstance(a, ir.DimAny) or isinstance(b, ir.DimAny):
            return None
        if isinstance(a, ir.DimVar) and a.batch and isinstance(b, ir.DimVar) and b.batch:
            return None
        reason = _definitely_differ(a, b)
        if reason is not None:
            return DimProblem("mismatch", reason)
        if isinstance(a, ir.DimLabels) or isinstance(b, ir.DimLabels):
            if isinstance(a, ir.DimVar):
                return self._bind(a, b)
            if isinstance(b, ir.DimVar):
                return self._bind(b, a)
            return None
        for var, value in ((a, b), (b, a)):
            if isinstance(var, ir.DimVar) and not _occurs(var.name, value):
                return self._bind(var, value)
        return self._solve_linear(a, b)

    def _bind(self, var: ir.DimVar, value: ir.Dim) -> None:
        self.bindings[var.name] = value

    def _solve_linear(self, a: ir.Dim, b: ir.Dim) -> DimProblem | None:
        left, right = linear(a), linear(b)
        equation = plain(f"`{a} == {b}`")
        if left is None or right is None:
            return DimProblem("undecided", f"{equation} is not linear", (a, b))
        terms = dict(left.terms)
        for name, coefficient in right.terms.items():
            terms[name] = terms.get(name, 0) - coefficient
        terms = {k: v for k, v in terms.items() if v}
        constant = right.constant - left.constant
        if not terms:
            return None if constant == 0 else DimProblem("mismatch", f"{equation} never holds")
        if len(terms) > 1:
            return DimProblem("undecided", f"{equation} has several unknowns", (a, b))
        (name, coefficient), = terms.items()
        if constant % coefficient != 0 or constant // coefficient <= 0:
            return DimProblem(
                "no-solution", f"{equation} has no solution: `{name.split(':')[-1]}` would be "
                f"{constant}/{coefficient}, not a positive integer",
            )
        self.bindings[name] = ir.DimConst(constant // coefficient)
        return None


def _occurs(name: str, dim: ir.Dim) -> bool:
    match dim:
        case ir.DimVar():
            return dim.name == name
        case ir.DimBinary():
            return _occurs(name, dim.left) or _occurs(name, dim.right)
    return False


def _align(left: Shape, right: Shape) -> list[tuple[ir.Dim, ir.Dim]] | None:
    """Pairs of axes to unify; `...` on either side absorbs the axes the other has in its place."""
    left_dots = [i for i, d in enumerate(left) if isinstance(d, ir.DimEllipsis)]
    right_dots = [i for i, d in enumerate(right) if isinstance(d, ir.DimEllipsis)]
    if not left_dots and not right_dots:
        return list(zip(left, right, strict=True)) if len(left) == len(right) else None
    head = min(left_dots[0] if left_dots else len(left), right_dots[0] if right_dots else len(right))
    left_tail = len(left) - (left_dots[0] + 1 if left_dots else len(left))
    right_tail = len(right) - (right_dots[0] + 1 if right_dots else len(right))
    tail = min(left_tail, right_tail)
    pairs = list(zip(left[:head], right[:head], strict=True))
    if tail:
        pairs += list(zip(left[-tail:], right[-tail:], strict=True))
    return pairs


def fold_dim(dim: ir.Dim) -> ir.Dim:
    """Constant-fold dim arithmetic: `H * W` with H = W = 8 becomes 64."""
    if not isinstance(dim, ir.DimBinary):
        return dim
    left, right = fold_dim(dim.left), fold_dim(dim.right)
    if isinstance(left, ir.DimConst) and isinstance(right, ir.DimConst) and not (dim.op == "//" and right.value == 0):
        return ir.DimConst(ir.ARITHMETIC[dim.op](left.value, right.value))
    return ir.DimBinary(dim.op, left, right)
