"""Clauses the fast path need not read: they hold, float rounding included, whenever a check it reads passes.

`sum(softmax(v))` is 1 for every finite `v`, and the float computation of it
stays within a few units of rounding of 1. So a clause such as
`sum(softmax(y)) == 1 within 1e-5` follows from the `finite` refinement of
`y`, which the fast path reads anyway: when `y` is finite the clause holds,
and when it is not the call goes to the slow path, which evaluates every
clause element by element, this one included. Reading it too would only
repeat, at four operations a call, what is already known.

The rounding bound is for softmax computed in float32 or float64 (what a
clause sees of float16 and bfloat16 ports too) by any of the usual
algorithms: the largest score subtracted, exponentials summed in any order,
each divided by the sum, or the exponential of the score less the log of the
sum. With the unit roundoff `u` and `n` classes, the sum of the rounded
quotients is within `(2n + 5) u` of 1 (n-1 roundings in each of the two
sums, two in each exponential and division, which the quotients share in
proportion); the bound used is four times that.
"""

from __future__ import annotations

import math

import torch

from mdl_lang import ir
from mdl_lang.backends.torch.constants import Constant
from mdl_lang.backends.torch.readings import rounded

_UNIT_ROUNDOFF = 2.0**-24
"""float32's unit roundoff: the coarsest precision a clause computes in (float16 and bfloat16 are widened)."""

_MARGIN = 4.0


def softmax_sum_error(classes: int) -> float:
    """How far the computed `sum(softmax(v))` of `classes` finite scores may lie from 1."""
    return _MARGIN * (2 * classes + 5) * _UNIT_ROUNDOFF


def implied_by_finite(expr: ir.Expr, finite_ports: dict[str, int]) -> bool:
    """Whether the clause `expr` holds whenever the ports in `finite_ports` are finite.

    `finite_ports` maps each port checked finite on the fast path, with one
    float axis per sample, to that axis' static size. The clause must compare
    `sum(softmax(PORT))` with constants: `== c within t`, `<`, `<=`, `>`, `>=`
    or `in [lo, hi]`, true on the whole interval the computed sum can take, as
    a float32 and as a float64 clause compares (each with the spec's numbers
    rounded to its dtype, and the distance of `within` rounded once more).
    """
    if isinstance(expr, ir.InRange):
        low, high = Constant.of(expr.low), Constant.of(expr.high)
        interval = _softmax_sum_interval(expr.value, finite_ports)
        return (None not in (low, high, interval)
                and all(_holds(interval, ">=", bound) for bound in _as_compared(low))
                and all(_holds(interval, "<=", bound) for bound in _as_compared(high)))
    if not isinstance(expr, ir.Compare) or len(expr.ops) != 1:
        return False
    (op,), (left, right) = expr.ops, expr.operands
    interval = _softmax_sum_interval(left, finite_ports)
    if interval is None:
        left, right, op = right, left, _MIRRORED.get(op, op)
        interval = _softmax_sum_interval(left, finite_ports)
    number = Constant.of(right)
    if interval is None or number is None:
        return False
    if expr.tolerance is None:
        return op in _MIRRORED and all(_holds(interval, op, bound) for bound in _as_compared(number))
    tolerance = Constant.of(expr.tolerance)
    if op != "==" or tolerance is None:
        return False
    low, high = interval
    return all(
        max(high - centre, centre - low) * (1 + 2 * _UNIT_ROUNDOFF) <= radius
        for centre, radius in zip(_as_compared(number), _as_compared(tolerance), strict=True)
    )


_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _holds(interval: tuple[float, float], op: str, number: float) -> bool:
    """Whether `value <op> number` holds for every value in the interval."""
    low, high = interval
    return {"<": high < number, "<=": high <= number, ">": low > number, ">=": low >= number}[op]


def _as_compared(number: Constant) -> tuple[float, float]:
    """A spec's number as a float32 clause and a float64 clause compare with it."""
    return rounded(number, torch.float32), rounded(number, torch.float64)


def _softmax_sum_interval(expr: ir.Expr, finite_ports: dict[str, int]) -> tuple[float, float] | None:
    """Where `sum(softmax(PORT))` of a port checked finite lies, float rounding included; None for other expressions."""
    if not (isinstance(expr, ir.Call) and expr.function == "sum" and len(expr.args) == 1 and not expr.options):
        return None
    (inner,) = expr.args
    if not (isinstance(inner, ir.Call) and inner.function == "softmax" and len(inner.args) == 1 and not inner.options):
        return None
    (port,) = inner.args
    if not isinstance(port, ir.PortRef) or port.port not in finite_ports:
        return None
    error = softmax_sum_error(finite_ports[port.port])
    return 1.0 - error, 1.0 + error


def finite_range(value_range: tuple[float, float] | None) -> bool:
    """Whether a value range rejects NaN and the infinities: both bounds finite as compared.

    A range is compared in the value's dtype (at least float32 for a clause), so a bound beyond
    float32's largest value (`1e39`) is infinite there and lets infinities through.
    """
    return value_range is not None and all(
        math.isfinite(rounded(Constant(bound), torch.float32)) for bound in value_range
    )


def finite_ports(ports: tuple[ir.Port, ...]) -> dict[str, int]:
    """The ports whose every element the fast path checks finite, with one float axis of static size per sample:
    that size by port name."""
    found = {}
    for port in ports:
        tensor = port.type
        dims = tensor.sample_dims
        if not (tensor.finite or finite_range(tensor.value_range)) or tensor.dtype not in ir.FLOAT_DTYPES \
                or len(dims) != 1:
            continue
        size = _static_size(dims[0])
        if size is not None:
            found[port.name] = size
    return found


def _static_size(dim: ir.Dim) -> int | None:
    if isinstance(dim, ir.DimLabels):
        return len(dim.labels.labels)
    if isinstance(dim, ir.DimConst):
        return dim.value
    return None
