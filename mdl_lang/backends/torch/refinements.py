"""Port types checked on real tensors: shape with symbolic dims, dtype, value range, `finite`.

Shapes and dtypes are properties of the whole call (a wrong shape blames the
whole batch); ranges and `finite` hold per sample, so they yield masks like
clauses do. Symbolic dims bind at their first use in a call and must agree
at every later use, across inputs and outputs, as in jaxtyping.
"""

from __future__ import annotations

import math
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
        if problem:
            return f"axis {axis}: {problem if problem != 'later' else f'{dim} cannot be solved from sizes given'}"
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
                return None
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
    """Bind the one unknown of `a*S + c == size`; anything else waits for other axes."""
    unknowns = _unknowns(dim, bound)
    if len(unknowns) != 1:
        return "later"
    name = unknowns.pop()
    for candidate in (1, 2):
        bound[name] = candidate
        value = dim_size(dim, bound)
        del bound[name]
        if value is None:
            return "later"
        if candidate == 1:
            first = value
    slope, intercept = value - first, 2 * first - value
    if slope == 0 or (size - intercept) % slope or (size - intercept) // slope <= 0:
        return f"no positive {name} makes {dim} equal {size}"
    bound[name] = (size - intercept) // slope
    return None if dim_size(dim, bound) == size else f"no positive {name} makes {dim} equal {size}"


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
