"""Port types checked on real tensors: shape with symbolic dims, dtype, value range, `finite`.

Shapes and dtypes are properties of the whole call (a wrong shape blames the
whole batch); ranges and `finite` hold per sample, so they yield masks like
clauses do. Symbolic dims bind at their first use in a call and must agree
at every later use, across inputs and outputs, as in jaxtyping. An axis
sized by an expression (`C // 2`, `H * W`) binds its one unknown when a
single value fits, and otherwise waits for an axis that binds the names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mdl_lang import ir

_FLOATING = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
TORCH_DTYPES = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "bool": torch.bool,
}


@dataclass(frozen=True)
class CallProblem:
    """A fault of the whole call (shape, dtype, a value that is not a tensor)."""

    port: str
    message: str


def describe_tensor(tensor: torch.Tensor) -> str:
    """`f32[32, 10] cpu` — a summary, never the contents."""
    short = str(tensor.dtype).replace("torch.", "").replace("float", "f").replace("int", "i")
    return f"{short}[{', '.join(str(s) for s in tensor.shape)}] {tensor.device.type}"


def summarize(value: torch.Tensor | float | int | bool) -> str:
    """A value as a report shows it: numbers plainly, tensors by shape, range and NaN count."""
    if not isinstance(value, torch.Tensor):
        return repr(value)
    if value.numel() == 1:
        item = value.reshape(()).item()
        return f"{item:.6g}" if isinstance(item, float) else repr(item)
    text = describe_tensor(value)
    if value.numel() == 0 or value.dtype == torch.bool:
        if value.dtype == torch.bool:
            text += f", {int(value.sum())} of {value.numel()} true"
        return text
    data = value.detach().double()
    finite = data[torch.isfinite(data)]
    if finite.numel():
        text += f", min {finite.min().item():.4g} max {finite.max().item():.4g}"
    nans = int(torch.isnan(data).sum())
    infs = int(torch.isinf(data).sum())
    if nans:
        text += f", {nans} NaN"
    if infs:
        text += f", {infs} inf"
    return text


def check_call_shape(port: ir.Port, value: object, bound: dict[str, int]) -> CallProblem | None:
    """Check one port's shape and dtype, binding its symbolic dims into `bound`."""
    if not isinstance(value, torch.Tensor):
        return CallProblem(port.name, f"`{port.name}` should be a tensor, got {type(value).__name__}")
    expected = port.type
    problem = _dtype_problem(expected.dtype, value)
    if problem:
        return CallProblem(port.name, f"`{port.name}`: {problem}")
    problem = _shape_problem(expected.dims, tuple(value.shape), bound)
    if problem:
        bound_text = ", ".join(f"{name}={size}" for name, size in bound.items())
        suffix = f" (dims bound so far: {bound_text})" if bound_text else ""
        return CallProblem(
            port.name, f"`{port.name}` has shape [{', '.join(map(str, value.shape))}], expected "
            f"{ir.format_shape(expected.dims)}: {problem}{suffix}",
        )
    return None


def _dtype_problem(expected: str | None, value: torch.Tensor) -> str | None:
    if expected is None:
        return None
    if expected == ir.ANY_FLOAT:
        return None if value.dtype in _FLOATING else f"expected a floating dtype, got {value.dtype}"
    wanted = TORCH_DTYPES[expected]
    return None if value.dtype == wanted else f"expected dtype {expected}, got {str(value.dtype).replace('torch.', '')}"


def _shape_problem(dims: tuple[ir.Dim, ...], shape: tuple[int, ...], bound: dict[str, int]) -> str | None:
    dots = [i for i, dim in enumerate(dims) if isinstance(dim, ir.DimEllipsis)]
    if dots:
        head, tail = dims[: dots[0]], dims[dots[0] + 1:]
        if len(shape) < len(head) + len(tail):
            return f"at least {len(head) + len(tail)} axes expected, {len(shape)} given"
        pairs = list(zip(head, shape[: len(head)], strict=True))
        if tail:
            pairs += list(zip(tail, shape[len(shape) - len(tail):], strict=True))
    else:
        if len(shape) != len(dims):
            return f"{len(dims)} axes expected, {len(shape)} given"
        pairs = list(zip(dims, shape, strict=True))
    deferred = []
    for axis, (dim, size) in enumerate(pairs):
        problem = _bind(dim, size, bound)
        if problem == "later":
            deferred.append((axis, dim, size))
        elif problem:
            return f"axis {axis}: {problem}"
    for axis, dim, size in deferred:
        problem = _bind(dim, size, bound)
        if problem == "later":
            problem = _pend(dim, size, bound)
        if problem:
            return f"axis {axis}: {problem}"
    return None


def _bind(dim: ir.Dim, size: int, bound: dict[str, int]) -> str | None:
    match dim:
        case ir.DimAny():
            return None
        case ir.DimConst(value=value):
            return None if value == size else f"expected {value}, got {size}"
        case ir.DimLabels(labels=labels):
            if labels.opaque or len(labels) == size:
                return None
            return f"expected {len(labels)} (one per label of {labels.describe()}), got {size}"
        case ir.DimVar(name=name):
            if name not in bound:
                bound[name] = size
                return _settle(bound)
            return None if bound[name] == size else f"`{name}` is {bound[name]} elsewhere in this call, here {size}"
        case ir.DimBinary():
            value = dim_size(dim, bound)
            if value is None:
                return _solve_one(dim, size, bound)
            return None if value == size else f"expected {dim} = {value}, got {size}"
    return None


def dim_size(dim: ir.Dim, bound: dict[str, int]) -> int | None:
    """The size a dim has under the call's bound dims, or None while one of its names is unbound."""
    match dim:
        case ir.DimConst(value=value):
            return value
        case ir.DimVar(name=name):
            return bound.get(name)
        case ir.DimLabels(labels=labels):
            return len(labels)
        case ir.DimBinary(op=op, left=left, right=right):
            a, b = dim_size(left, bound), dim_size(right, bound)
            if a is None or b is None:
                return None
            if op == "//":
                return a // b if b else None
            return {"+": a + b, "-": a - b, "*": a * b}[op]
    return None


def _solve_one(dim: ir.Dim, size: int, bound: dict[str, int]) -> str | None:
    """Solve `dim == size` for its one unknown name; with several unknowns, wait for other axes.

    The name is bound only when exactly one positive value fits: `C // 2`
    of size 3 leaves C at 6 or 7, so the equation is kept pending (`_pend`)
    and checked once another axis binds C. No value fitting is the error.
    """
    unknowns = _unknowns(dim, bound)
    if len(unknowns) != 1:
        return "later"
    name = unknowns.pop()
    fits = _fitting(dim, name, size, bound)
    if not fits:
        return f"no positive {name} makes {dim} equal {size}"
    if len(fits) > 1:
        return _pend(dim, size, bound)
    bound[name] = fits[0]
    return _settle(bound)


_PENDING: dict[str, ir.Dim] = {}
"""The dims of equations accepted before their names were bound, by the text that keys them in a call's dims.

A call's dims are a plain name-to-size dict (copied from inputs to outputs,
shown in reports), so an equation waiting for its names is kept there under
its text, `C // 2=3`, which no dim name can be; this table reads it back.
"""


def _pend(dim: ir.Dim, size: int, bound: dict[str, int]) -> str | None:
    """Accept `dim == size` while several values of its names fit; `_settle` checks it once they are bound."""
    key = str(dim)
    if bound.get(key, size) != size:
        return f"{dim} is {bound[key]} elsewhere in this call, here {size}"
    _PENDING.setdefault(key, dim)
    bound[key] = size
    return None


def _settle(bound: dict[str, int]) -> str | None:
    """Check the pending equations whose names are all bound now, dropping those that hold."""
    for key in [key for key in bound if key in _PENDING]:
        value = dim_size(_PENDING[key], bound)
        if value is None:
            continue
        if value != bound[key]:
            names = ", ".join(f"{name}={bound[name]}" for name in sorted(dim_names(_PENDING[key])))
            return f"{names} makes {key} = {value}, where another axis of this call is {bound[key]}"
        del bound[key]
    return None


_LIMIT = 1 << 40
"""Past any tensor's size: where the search of a monotone dim's unknown gives up."""

_SCAN_LIMIT = 1 << 16
"""The most values tried for the unknown of a dim that is not monotone in it."""


def _fitting(dim: ir.Dim, name: str, size: int, bound: dict[str, int]) -> list[int]:
    """Positive values of `name` that make `dim` equal `size`: none, the one, or two of several.

    A dim monotone in its unknown (every linear one, `C // 2`, `C * C`) is
    searched by bisection; any other is tried value by value up to a limit
    that grows with the size and with the divisors a `//` brings.
    """
    def at(value: int) -> int | None:
        return _at(dim, name, value, bound)

    direction = _direction(dim, name, bound)
    if direction is None:
        limit = min(_SCAN_LIMIT, 2 * (abs(size) + 2) * _divisors(dim, bound))
        return [value for value in range(1, limit + 1) if at(value) == size][:2]
    if direction == 0:
        return [1, 2] if at(1) == size else []
    first = _first(lambda value: direction * at(value) >= direction * size)
    if first is None or at(first) != size:
        return []
    return [first, first + 1] if at(first + 1) == size else [first]


def _first(reached: Callable[[int], bool]) -> int | None:
    """The least positive integer where a monotone test turns true (doubling, then bisection); None past `_LIMIT`."""
    high = 1
    while not reached(high):
        if high >= _LIMIT:
            return None
        high *= 2
    low = high // 2 + 1 if high > 1 else 1
    while low < high:
        middle = (low + high) // 2
        if reached(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _at(dim: ir.Dim, name: str, value: int, bound: dict[str, int]) -> int | None:
    return dim_size(dim, {**bound, name: value})


def _direction(dim: ir.Dim, name: str, bound: dict[str, int]) -> int | None:
    """How `dim` moves as `name` grows over the positive integers (the other names bound).

    1: never down, -1: never up, 0: does not depend on it, None: unknown.
    """
    match dim:
        case ir.DimVar(name=other):
            return 1 if other == name else 0
        case ir.DimBinary(op=op, left=left, right=right):
            a, b = _direction(left, name, bound), _direction(right, name, bound)
            if a is None or b is None:
                return None
            if op == "+":
                return _same_way(a, b)
            if op == "-":
                return _same_way(a, -b)
            if op == "//":
                divisor = dim_size(right, bound) if b == 0 else None
                return a * _sign(divisor) if divisor else None
            return _product_direction(left, right, (a, b), name, bound)
    return 0


def _same_way(a: int, b: int) -> int | None:
    """The direction of a sum of two terms moving in directions `a` and `b`."""
    if a in (0, b):
        return b
    return a if b == 0 else None


def _product_direction(
    left: ir.Dim, right: ir.Dim, directions: tuple[int, int], name: str, bound: dict[str, int],
) -> int | None:
    """A product turns with a constant factor's sign; two growing factors that start non-negative grow."""
    a, b = directions
    if a == 0 or b == 0:
        factor = dim_size(left if a == 0 else right, bound)
        return None if factor is None else (a or b) * _sign(factor)
    starts = (_at(left, name, 1, bound), _at(right, name, 1, bound))
    if a == b == 1 and all(start is not None and start >= 0 for start in starts):
        return 1
    return None


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _divisors(dim: ir.Dim, bound: dict[str, int]) -> int:
    """The product of the known divisors of `dim`'s `//`: how far past the size its unknown may reach."""
    if not isinstance(dim, ir.DimBinary):
        return 1
    own = abs(dim_size(dim.right, bound) or 1) if dim.op == "//" else 1
    return own * _divisors(dim.left, bound) * _divisors(dim.right, bound)


def dim_names(dim: ir.Dim) -> set[str]:
    """The symbolic dims a dim is written with (`C` for `C // 2`)."""
    return _unknowns(dim, {})


def _unknowns(dim: ir.Dim, bound: dict[str, int]) -> set[str]:
    match dim:
        case ir.DimVar(name=name):
            return set() if name in bound else {name}
        case ir.DimBinary(left=left, right=right):
            return _unknowns(left, bound) | _unknowns(right, bound)
    return set()


def sample_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as one row per sample; an empty batch too, where `reshape(0, -1)` is ambiguous."""
    return tensor.reshape(tensor.shape[0], math.prod(tensor.shape[1:]))


def range_mask(tensor: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """True per sample whose every element lies in [low, high] (NaN lies nowhere)."""
    flat = sample_rows(tensor)
    if flat.shape[1] == 0:
        return torch.ones(tensor.shape[0], dtype=torch.bool, device=tensor.device)
    low_ok = flat.amin(dim=1) >= low
    high_ok = flat.amax(dim=1) <= high
    # amin/amax propagate NaN, and NaN compares false: a NaN sample fails both.
    return low_ok & high_ok


def finite_mask(tensor: torch.Tensor) -> torch.Tensor:
    """True per sample with no NaN and no infinity."""
    if not tensor.is_floating_point():
        return torch.ones(tensor.shape[0], dtype=torch.bool, device=tensor.device)
    return torch.isfinite(sample_rows(tensor)).all(dim=1)
