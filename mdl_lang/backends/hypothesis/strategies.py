"""Hypothesis strategies that draw one batch of inputs for a component, from its port types and requires.

One example is a dict from input port name to tensor (batch axis first) with
one batch size and one binding of every symbolic dim shared by all ports.

Each tensor costs a handful of drawn choices whatever its size, so a batch of
8x64 floats draws as fast as a scalar, and shrinking works on those few
choices: a tensor is up to eight drawn *levels* placed by a seeded pattern,
or, *spread*, random points between those levels. Hypothesis shrinks the
spread away, the levels toward one, and that one toward zero (or the end of
the range nearest it), so a shrunk failure is a batch of one sample holding
one or two distinct values. Levels are drawn by `st.floats`/`st.integers`
within the bounds, which reach both ends exactly.

Requires that `narrowing` reads as bounds hold by construction. The others
filter: the caller's `keep` marks the samples that satisfy them, the rest are
dropped, and a batch left empty is rejected. `RequiresStats` counts what each
clause rejects; when most drawn samples are rejected, drawing stops with
`StarvedRequires` naming the clause, rather than starving a test silently.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import hypothesis
import hypothesis.strategies as st
import torch
from hypothesis.strategies import SearchStrategy

from mdl_lang import ir
from mdl_lang.backends.hypothesis.narrowing import Bound, InputPlan, PortBounds, PortPlan, input_plan

Example = dict[str, torch.Tensor]
Keep = Callable[[Example], torch.Tensor]
KeepNames = Callable[[Example], Mapping[str, torch.Tensor]]
Number = TypeVar("Number", int, float)

UNBOUNDED_MAGNITUDE = 10
"""A float or integer port with no bound at all is drawn in [-10, 10]; one bound only extends to the default's end."""

MAX_LEVELS = 8
"""At most this many distinct values in a tensor drawn as levels."""

MAX_BINDINGS = 10_000
"""The most combinations of dim sizes enumerated to find those that keep every derived dim positive."""

BATCH = "<batch>"
"""The key of the batch size in a binding of dims: every `dim B : batch` shares it."""

_FLOAT_DTYPES = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
}

_INTEGER_DTYPES: dict[str, tuple[torch.dtype, tuple[int, int], tuple[int, int]]] = {
    # dtype: (torch dtype, the widest range ever drawn, the range drawn when nothing bounds the port)
    "int64": (torch.int64, (-(2**62), 2**62), (-UNBOUNDED_MAGNITUDE, UNBOUNDED_MAGNITUDE)),
    "int32": (torch.int32, (-(2**31), 2**31 - 1), (-UNBOUNDED_MAGNITUDE, UNBOUNDED_MAGNITUDE)),
    "uint8": (torch.uint8, (0, 255), (0, 255)),
    "bool": (torch.bool, (0, 1), (0, 1)),
}

_SEEDS = st.integers(0, 2**32 - 1)
_NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])


class StarvedRequires(Exception):
    """A filtering requires rejected so many drawn samples that testing would starve; names the clause."""

    def __init__(self, clause: str, rate: float, drawn: int) -> None:
        super().__init__(clause, rate, drawn)
        self.clause = clause
        self.rate = rate
        self.drawn = drawn

    def __str__(self) -> str:
        return (
            f"requires `{self.clause}` rejected {self.rate:.0%} of the first {self.drawn} drawn samples; "
            "drawing stops here rather than test almost nothing. Only bounds on every element of an input "
            "(`all(x >= 0)`, `x in [lo, hi]`) narrow what is drawn; a bound on one element (`x[0] >= 0.99`) "
            "or a relation filters. Give the input's type a range that keeps it, widen it, or draw that input "
            "yourself"
        )


class UnsatisfiableRequires(ValueError):
    """An input port's type and narrowed requires leave no value of its dtype to draw."""


class UnfilteredRequires(ValueError):
    """The component has requires that drawing cannot guarantee, and no `keep` was given to filter by them."""


@dataclass
class RequiresStats:
    """How many drawn samples each filtering requires rejected, shared by every example of one strategy.

    After the first `after` examples (batches), if more than `max_rejected` of
    their samples were rejected, the strategy raises `StarvedRequires` for the
    clause that rejected most, and keeps raising it, so that hypothesis shrinks
    and reports it consistently. The rule counts batches, not samples, because
    the samples of one batch share their levels, and hypothesis starts with
    simple batches: 30 batches are past both, yet before hypothesis' own
    health check gives up on 50 rejected examples. Pass your own to read the
    counts or tune the rule.
    """

    after: int = 30
    max_rejected: float = 0.9
    examples: int = 0
    drawn: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    starved: StarvedRequires | None = None

    def rejection_rate(self, clause: str | None = None) -> float:
        """The fraction of drawn samples rejected by `clause`, or by any clause when None."""
        if not self.drawn:
            return 0.0
        rejected = self.drawn - self.kept if clause is None else self.rejected.get(clause, 0)
        return rejected / self.drawn

    def record(self, kept: torch.Tensor, rejected: Mapping[str, torch.Tensor]) -> None:
        """Count one batch: `kept` per sample, `rejected[clause]` True per sample that clause rejected."""
        self.examples += 1
        self.drawn += kept.numel()
        self.kept += int(kept.sum())
        for clause, mask in rejected.items():
            self.rejected[clause] = self.rejected.get(clause, 0) + int(mask.sum())
        if self.examples == self.after and self.rejection_rate() > self.max_rejected:
            worst = max(self.rejected, key=self.rejected.__getitem__)
            self.starved = StarvedRequires(worst, self.rejection_rate(worst), self.drawn)

    def raise_if_starved(self) -> None:
        if self.starved is not None:
            raise StarvedRequires(self.starved.clause, self.starved.rate, self.starved.drawn)


def inputs(
    target: ir.Component | ir.Spec,
    name: str | None = None,
    *,
    batch: tuple[int, int] = (1, 8),
    dim_range: tuple[int, int] = (1, 6),
    keep: Keep | None = None,
    keep_names: KeepNames | None = None,
    nonfinite: bool = False,
    stats: RequiresStats | None = None,
) -> SearchStrategy[Example]:
    """Batches of inputs for a component: every input port, shapes, dtypes, ranges and requires kept.

    `target` is a module or composition, or a spec with the component's `name`.
    The batch size is drawn in `batch`, free symbolic dims, `_` and the axes
    `...` stands for (0 to 2 of them) in `dim_range`; derived dims (`S * 2`)
    follow, and bindings that make one non-positive are never drawn.

    Requires that are not bounds on an input filter each batch:
    `keep(batch)` returns a bool mask [N], True per sample that satisfies them
    all; `keep_names(batch)` returns one such mask per clause name, which lets
    a starved run name the clause (with both, `keep` decides and `keep_names`
    only counts). A component with filtering requires needs one of them.

    `keep` also applies, when given, to a component whose requires all narrow.
    `stats` collects the counts and holds the starvation rule (a fresh
    `RequiresStats` per strategy when not given).

    Values are finite and within the port's range and narrowed bounds; a port
    with no range, bound or `finite` is drawn in [-10, 10], or, with
    `nonfinite=True`, may also hold NaN, inf and -inf.
    """
    component = _component(target, name)
    _check_range("batch", batch)
    _check_range("dim_range", dim_range)
    plan = input_plan(component)
    if plan.filtering and keep is None and keep_names is None:
        raise UnfilteredRequires(
            f"`{component.name}` has requires that drawing cannot guarantee: "
            f"{', '.join(f'`{clause}`' for clause in plan.filtering)}; pass keep= (a bool mask [N] per batch, "
            "e.g. from the torch backend's compiled clauses) or keep_names= (one mask per clause)"
        )
    ports = tuple(_port_draw(port, nonfinite) for port in plan.ports)
    sample_filter = None
    if keep is not None or keep_names is not None:
        batched = frozenset(port.name for port in ports if port.batched)
        sample_filter = _SampleFilter(plan, keep, keep_names, stats or RequiresStats(), batched)
    return _batches(ports, _bindings(ports, batch, dim_range), dim_range, sample_filter)


def corners(target: ir.Component | ir.Spec, name: str | None = None, *, dim_range: tuple[int, int] = (1, 6)) -> Example:
    """One batch of the simplest inputs, to try before any search: per sample, every element of each
    input at one value: its range's low end, its high end, the value nearest zero, the midpoint.

    Faults sit at such values (a row of zeros, a saturated input) more often than between them,
    and one batch checks them all in one call. Symbolic dims take their smallest sizes that keep
    every derived dim positive; `_` and `...` take `dim_range`'s low end and no axes. The batch
    may break a filtering requires: the caller drops those samples, as it does for drawn ones.
    """
    component = _component(target, name)
    _check_range("dim_range", dim_range)
    ports = tuple(_port_draw(port, nonfinite=False) for port in input_plan(component).ports)
    levels = [_corner_levels(port) for port in ports]
    count = max(len(values) for values in levels)
    names = sorted({name for port in ports for dim in port.dims for name in _dim_names(dim)} - {BATCH})
    derived = {dim for port in ports for dim in port.dims if isinstance(dim, ir.DimBinary)}
    ranges = {name: dim_range for name in names}
    constrained = sorted({name for dim in derived for name in _dim_names(dim)} - {BATCH})
    binding = {name: dim_range[0] for name in names}
    if constrained:
        binding.update(_positive_bindings(constrained, ranges, {d for d in derived if BATCH not in _dim_names(d)})[0])
    binding[BATCH] = count
    example = {}
    for port, values in zip(ports, levels, strict=True):
        shape = tuple(dim_range[0] if isinstance(dim, ir.DimAny) else _dim_size(dim, binding)
                      for dim in port.dims if not isinstance(dim, ir.DimEllipsis))
        tensor = torch.tensor(values, dtype=port.source).to(port.dtype)
        if port.batched:
            tensor = tensor[torch.arange(count) % len(values)]
            example[port.name] = tensor.view(count, *([1] * (len(shape) - 1))).expand(shape).clone()
        else:
            example[port.name] = tensor[0].expand(shape).clone()
    return example


def _corner_levels(port: _PortDraw) -> list[float]:
    """The range's ends, its value nearest zero and its midpoint, each once, nearest zero first."""
    nearest_zero = min(max(0, port.low), port.high)
    middle = (port.low + port.high) / 2
    values = [nearest_zero, port.low, port.high, round(middle) if port.integer else middle]
    return list(dict.fromkeys(values))


def _component(target: ir.Component | ir.Spec, name: str | None) -> ir.Component:
    """The component a call to `inputs` names, either given directly or by name in a spec."""
    if not isinstance(target, ir.Spec):
        if name is not None:
            raise TypeError("`name` picks a component of a spec; pass the spec, or the component alone")
        return target
    component = target.component(name) if name is not None else None
    if component is None:
        raise ValueError(f"`{target.file}` declares no module or composition {name!r}")
    return component


def _check_range(what: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not 1 <= low <= high:
        raise ValueError(f"{what} must be (low, high) with 1 <= low <= high, got {bounds}")


# ---------------------------------------------------------------- ports


@dataclass(frozen=True)
class _PortDraw:
    """One input port made ready to draw: its dims, dtype and the closed range of its values in that dtype.

    `low` and `high` are exact values of the dtype (Python floats or ints);
    levels are drawn as float64 or int64 (`source`) and cast, which rounds
    monotonically and so stays in range.
    """

    name: str
    dims: tuple[ir.Dim, ...]
    batched: bool
    dtype: torch.dtype
    integer: bool
    low: float
    high: float
    elements: SearchStrategy[float] | SearchStrategy[int]

    @property
    def source(self) -> torch.dtype:
        return torch.int64 if self.integer else torch.float64


def _port_draw(plan: PortPlan, nonfinite: bool) -> _PortDraw:
    """Round the port's bounds into its dtype (`float` or none means float32) and fix what its levels are."""
    port_type = plan.port.type
    dtype_name = port_type.dtype if port_type.dtype in ir.DTYPES else "float32"
    integer = dtype_name in _INTEGER_DTYPES
    if integer:
        dtype, limits, default = _INTEGER_DTYPES[dtype_name]
        low, high = _integer_range(plan.bounds, limits, default)
    else:
        dtype = _FLOAT_DTYPES[dtype_name]
        low, high = _float_range(plan.bounds, dtype)
    if low > high:
        clauses = f" and requires {', '.join(f'`{clause}`' for clause in plan.clauses)}" if plan.clauses else ""
        raise UnsatisfiableRequires(
            f"input `{plan.name}`: no {dtype_name} value satisfies its type {port_type.describe()}{clauses}"
        )
    elements = _elements(integer, low, high, nonfinite and plan.bounds.unbounded)
    return _PortDraw(plan.name, port_type.dims, port_type.has_batch, dtype, integer, low, high, elements)


def _elements(
    integer: bool, low: float, high: float, nonfinite: bool,
) -> SearchStrategy[float] | SearchStrategy[int]:
    """The strategy of one level: any value of the range, its ends included, and NaN/inf when allowed."""
    if integer:
        return st.integers(int(low), int(high))
    finite = st.floats(low, high, allow_nan=False, allow_infinity=False)
    return st.one_of(finite, _NONFINITE) if nonfinite else finite


def _float_range(bounds: PortBounds, dtype: torch.dtype) -> tuple[float, float]:
    """The closed range of `dtype` values inside every bound, compared as torch compares them.

    torch compares a tensor with a Python number in the tensor's dtype, so each
    bound is first rounded to that dtype; a strict bound then steps one value past it.
    """
    info = torch.finfo(dtype)
    low = max((_rounded(bound, dtype, math.inf) for bound in bounds.lows), default=None)
    high = min((_rounded(bound, dtype, -math.inf) for bound in bounds.highs), default=None)
    default = (-float(UNBOUNDED_MAGNITUDE), float(UNBOUNDED_MAGNITUDE))
    return _drawing_range(low, high, default, (info.min, info.max))


def _rounded(bound: Bound, dtype: torch.dtype, inward: float) -> float:
    """The bound as a value of `dtype`; a strict one moves to the next value toward `inward`."""
    value = torch.tensor(bound.value, dtype=torch.float64).to(dtype)
    if bound.strict:
        value = torch.nextafter(value, torch.tensor(inward, dtype=dtype))
    return float(value)


def _integer_range(
    bounds: PortBounds, limits: tuple[int, int], default: tuple[int, int],
) -> tuple[int, int]:
    """The closed range of integers inside every bound (`x > 2.5` starts at 3, `x < 3` ends at 2)."""
    lows = (math.floor(b.value) + 1 if b.strict else math.ceil(b.value) for b in bounds.lows)
    highs = (math.ceil(b.value) - 1 if b.strict else math.floor(b.value) for b in bounds.highs)
    return _drawing_range(max(lows, default=None), min(highs, default=None), default, limits)


def _drawing_range(
    low: Number | None, high: Number | None, default: tuple[Number, Number], limits: tuple[Number, Number],
) -> tuple[Number, Number]:
    """The interval to draw in: the bounds where given, the default range's ends where not, within `limits`.

    A missing end that the default would put on the wrong side of the given
    one moves to the given end plus the default's width instead (`x >= 100`
    draws in [100, 120]).
    """
    default_low, default_high = default
    width = default_high - default_low
    if low is None:
        low = default_low if high is None or default_low <= high else high - width
    if high is None:
        high = default_high if default_high >= low else low + width
    return max(low, limits[0]), min(high, limits[1])


# ---------------------------------------------------------------- dims


def _dim_names(dim: ir.Dim) -> set[str]:
    """The symbolic dims a dim depends on, the batch dim as `BATCH`."""
    match dim:
        case ir.DimVar(batch=True):
            return {BATCH}
        case ir.DimVar(name=name):
            return {name}
        case ir.DimBinary(left=left, right=right):
            return _dim_names(left) | _dim_names(right)
    return set()


_DIM_ARITHMETIC: dict[str, Callable[[int, int], int]] = {
    "+": int.__add__, "-": int.__sub__, "*": int.__mul__, "//": int.__floordiv__,
}


def _dim_size(dim: ir.Dim, binding: Mapping[str, int]) -> int:
    """The size of a fixed or symbolic dim once its names are bound (`_` and `...` are drawn elsewhere)."""
    match dim:
        case ir.DimConst(value=value):
            return value
        case ir.DimLabels(labels=labels):
            return len(labels)
        case ir.DimVar(batch=True):
            return binding[BATCH]
        case ir.DimVar(name=name):
            return binding[name]
        case ir.DimBinary(op=op, left=left, right=right):
            return _DIM_ARITHMETIC[op](_dim_size(left, binding), _dim_size(right, binding))
    raise TypeError(f"{dim} has no size of its own")


def _positive(dim: ir.Dim, binding: Mapping[str, int]) -> bool:
    """Whether a derived dim and every part of it are positive (checking parts first avoids `// 0`)."""
    if isinstance(dim, ir.DimBinary) and not (_positive(dim.left, binding) and _positive(dim.right, binding)):
        return False
    return _dim_size(dim, binding) > 0


def _bindings(
    ports: tuple[_PortDraw, ...], batch: tuple[int, int], dim_range: tuple[int, int],
) -> SearchStrategy[dict[str, int]]:
    """One size per symbolic dim (the batch under `BATCH`), never one that makes a derived dim non-positive.

    Dims that appear in derived dims are drawn together from the list of
    combinations that keep every derived dim positive, so nothing is redrawn
    or rejected; the list starts at the smallest sizes, where shrinking goes.
    """
    derived = {dim for port in ports for dim in port.dims if isinstance(dim, ir.DimBinary)}
    names = sorted({name for port in ports for dim in port.dims for name in _dim_names(dim)})
    ranges = {name: batch if name == BATCH else dim_range for name in names}
    constrained = sorted({name for dim in derived for name in _dim_names(dim)})
    plain = st.fixed_dictionaries({name: st.integers(*ranges[name]) for name in names if name not in constrained})
    if not constrained:
        return plain
    solved = st.sampled_from(_positive_bindings(constrained, ranges, derived))
    return st.tuples(plain, solved).map(lambda parts: {**parts[0], **parts[1]})


def _positive_bindings(
    names: list[str], ranges: Mapping[str, tuple[int, int]], derived: set[ir.DimBinary],
) -> list[dict[str, int]]:
    count = math.prod(high - low + 1 for low, high in (ranges[name] for name in names))
    shown = ", ".join(sorted(str(dim) for dim in derived))
    if count > MAX_BINDINGS:
        raise ValueError(f"{count} combinations of sizes for {', '.join(names)} (in {shown}); narrow dim_range")
    sizes = itertools.product(*(range(ranges[name][0], ranges[name][1] + 1) for name in names))
    bindings = [dict(zip(names, combination, strict=True)) for combination in sizes]
    valid = [binding for binding in bindings if all(_positive(dim, binding) for dim in derived)]
    if not valid:
        raise ValueError(f"no sizes of {', '.join(names)} in their ranges {dict(ranges)} make {shown} positive")
    return valid


def _shape(
    draw: st.DrawFn, dims: tuple[ir.Dim, ...], binding: Mapping[str, int], dim_range: tuple[int, int],
) -> tuple[int, ...]:
    """A concrete shape: bound dims by the binding, `_` and each axis of `...` drawn in `dim_range`."""
    shape: list[int] = []
    for dim in dims:
        if isinstance(dim, ir.DimAny):
            shape.append(draw(st.integers(*dim_range)))
        elif isinstance(dim, ir.DimEllipsis):
            shape.extend(draw(st.lists(st.integers(*dim_range), max_size=2)))
        else:
            shape.append(_dim_size(dim, binding))
    return tuple(shape)


# ---------------------------------------------------------------- tensors and batches


def _draw_tensor(draw: st.DrawFn, port: _PortDraw, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of the port's dtype and range from a few choices: levels, a seed, and whether to spread.

    Each element picks one of the levels by a seeded pattern; spread, it takes
    instead a random point between two levels, which gives many distinct values
    yet stays within the levels, so the levels' shrinking shrinks it too and
    dropping the spread keeps a failure that the levels cause.
    """
    levels = draw(st.lists(port.elements, min_size=1, max_size=MAX_LEVELS))
    spread = draw(st.booleans())
    generator = torch.Generator().manual_seed(draw(_SEEDS))
    values = torch.tensor(levels, dtype=port.source).to(port.dtype)
    first = values[torch.randint(len(levels), shape, generator=generator)]
    if not spread:
        return first
    second = values[torch.randint(len(levels), shape, generator=generator)]
    work = torch.float64 if port.integer else port.dtype
    between = torch.lerp(first.to(work), second.to(work), torch.rand(shape, generator=generator, dtype=work))
    if port.integer:
        between = between.round_()
    # Rounding may step past a level at an end of the range; infinities clamp to the ends, NaN stays NaN.
    return between.clamp_(port.low, port.high).to(port.dtype)


@dataclass(frozen=True)
class _SampleFilter:
    """Drops the samples of a batch that break a filtering requires, counting rejections per clause."""

    plan: InputPlan
    keep: Keep | None
    keep_names: KeepNames | None
    stats: RequiresStats
    batched: frozenset[str]

    def select(self, example: Example, size: int) -> Example:
        self.stats.raise_if_starved()
        clause_masks = {
            clause: _checked_mask(mask, size, f"keep_names(...)[{clause!r}]")
            for clause, mask in (self.keep_names(example) if self.keep_names is not None else {}).items()
        }
        if self.keep is not None:
            kept = _checked_mask(self.keep(example), size, "keep(...)")
        else:
            kept = functools.reduce(torch.logical_and, clause_masks.values(), torch.ones(size, dtype=torch.bool))
        if clause_masks:
            rejected = {clause: ~mask for clause, mask in clause_masks.items()}
        else:
            rejected = {", ".join(self.plan.filtering) or "keep": ~kept}
        self.stats.record(kept, rejected)
        self.stats.raise_if_starved()
        hypothesis.assume(bool(kept.any()))
        return {name: tensor[kept] if name in self.batched else tensor for name, tensor in example.items()}


def _checked_mask(mask: object, size: int, source: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (size,):
        shown = f"{mask.dtype} {list(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{source} must return a bool tensor of shape [{size}] (one per sample), got {shown}")
    return mask.cpu()


@st.composite
def _batches(
    draw: st.DrawFn,
    ports: tuple[_PortDraw, ...],
    bindings: SearchStrategy[dict[str, int]],
    dim_range: tuple[int, int],
    sample_filter: _SampleFilter | None,
) -> Example:
    binding = draw(bindings)
    example = {port.name: _draw_tensor(draw, port, _shape(draw, port.dims, binding, dim_range)) for port in ports}
    if sample_filter is None:
        return example
    return sample_filter.select(example, binding.get(BATCH, 1))
