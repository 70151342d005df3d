"""The fast path's verdict: whole-batch statistics of a call's checks, decided by one host sync.

A fast check does not compare on the device. It reduces its tensors to a few
0-dim statistics (the smallest and largest value, the largest distance, a
sum) and names the Python test each must pass. After the module has run, the
statistics of both phases are stacked and read back at once, and the tests
run on Python floats. On the small tensors of a monitor a comparison, a
conjunction or a sync costs as much as the reduction itself, so this halves
the operations a call adds.

A test compares in the precision of its statistic: against a float32
statistic the spec's number is rounded to float32 first, as torch rounds a
Python number against a float32 tensor. Statistics of other dtypes (integers,
which a float32 stack would round) are compared on the device and read as
booleans. NaN propagates through every reduction used here and fails every
test, as it fails each element's comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from mdl_lang import ir
from mdl_lang.backends.torch.constants import Constant, Value

if TYPE_CHECKING:
    from mdl_lang.backends.torch.predicates import CallContext

Test = Callable[[float], bool]
Reader = Callable[["CallContext", "Readings"], None]
"""A compiled fast check: reads the call's values and leaves statistics and tests in the readings."""

PYTHON_TESTED = (torch.float32, torch.float64)
"""Dtypes whose statistics are read back and tested in Python; exactly, since a float64 holds both."""

_SMALL = 256
"""Up to this many elements on the CPU, the largest magnitude is one `vector_norm(ord=inf)` (cheaper
than `abs` then `amax`); beyond it that kernel is the slower. Elsewhere `abs().amax()`, as measured."""


class Readings:
    """The statistics a call's fast checks left, with their tests; `holds()` syncs once and decides.

    Readers extend the two lists in step, straight, to keep the fast path free of calls.
    `failed_at` is the number of tests read before the first verdict already known
    false (None: there is none); `values` keeps what `holds()` read back when it
    failed, so that `passed` can tell which phase failed without another sync.
    """

    __slots__ = ("failed_at", "statistics", "tests", "values")

    def __init__(self) -> None:
        self.statistics: list[torch.Tensor] = []
        self.tests: list[Test] = []
        self.failed_at: int | None = None
        self.values: list[float] | None = None

    def add_verdict(self, verdict: torch.Tensor | bool) -> None:
        """A verdict already reached: a 0-dim bool tensor on the device, or a Python bool.

        A false Python verdict takes a test of its own, so that `failed_at`
        places it on the right side of the count of a call's requires tests.
        """
        if isinstance(verdict, torch.Tensor):
            self.statistics.append(verdict)
            self.tests.append(bool)
        elif not verdict:
            if self.failed_at is None:
                self.failed_at = len(self.tests)
            self.statistics.append(_FALSE)
            self.tests.append(bool)

    def holds(self) -> bool:
        """Whether every test passes: the one host sync of a monitored call."""
        if self.failed_at is not None:
            return False
        statistics = self.statistics
        if not statistics:
            return True
        values = _read_back(statistics)
        for test, value in zip(self.tests, values, strict=False):
            if not test(value):
                self.values = values
                return False
        return True

    def passed(self, count: int) -> bool:
        """Whether the first `count` tests pass: those of a call's requires, read before its ensures.

        Asked on the failure path only; it reads back what `holds()` has not.
        """
        if self.failed_at is not None and self.failed_at < count:
            return False
        if self.values is not None:
            values = self.values
        else:
            values = _read_back(self.statistics[:count]) if count and self.statistics else []
        return all(test(value) for test, value in zip(self.tests[:count], values[:count], strict=True))


_FALSE = torch.tensor(False)
"""The statistic of a verdict already known false."""


def _read_back(statistics: list[torch.Tensor]) -> list[float]:
    """The statistics as Python numbers.

    On the CPU there is nothing to wait for, and reading each alone costs a
    third of stacking them; elsewhere they are read in one host sync.
    """
    if statistics[0].is_cpu:  # and the rest with it, but for a module that moves its outputs: read alike
        return _each(statistics)
    return stacked(statistics)


def stacked(statistics: list[torch.Tensor]) -> list[float]:
    """The statistics read back in one host sync, however many there are (widened to their common dtype)."""
    try:
        return torch.stack(statistics).tolist()
    except RuntimeError:  # statistics on different devices: a module that moves its outputs
        return _each(statistics)


def _each(statistics: list[torch.Tensor]) -> list[float]:
    return [statistic.item() for statistic in statistics]


def rounded(constant: Constant, dtype: torch.dtype) -> float:
    """A number of the spec as a statistic of `dtype` is compared with it: rounded to that dtype."""
    return float(torch.tensor(float(constant.value), dtype=dtype))


def _bound_test(op: str, bound: float) -> Test:
    # `value <= bound` is `bound >= value`: the bound's own method, with no Python frame of ours per call.
    return getattr(bound, _REVERSED[op])


_REVERSED = {"<": "__gt__", "<=": "__ge__", ">": "__lt__", ">=": "__le__"}


class _TestsByDtype:
    """A reader's Python tests, made once per dtype of its statistics; None for a dtype tested on the device."""

    __slots__ = ("_make", "_tests")

    def __init__(self, make: Callable[[torch.dtype], tuple[Test, ...]]) -> None:
        self._make = make
        self._tests: dict[torch.dtype, tuple[Test, ...] | None] = {}

    def __call__(self, dtype: torch.dtype) -> tuple[Test, ...] | None:
        try:
            return self._tests[dtype]
        except KeyError:
            tests = self._tests[dtype] = self._make(dtype) if dtype in PYTHON_TESTED else None
            return tests


class BoundReader:
    """`value <op> number` for every element (`op` one of < <= > >=): the largest or smallest element decides."""

    __slots__ = ("_largest", "number", "op", "tests")

    def __init__(self, op: str, number: Constant) -> None:
        self.op, self.number = op, number
        self._largest = op in ("<", "<=")
        self.tests = _TestsByDtype(self.make)

    def make(self, dtype: torch.dtype) -> tuple[Test, ...]:
        return (_bound_test(self.op, rounded(self.number, dtype)),)

    def read(self, value: Value, readings: Readings) -> None:
        compare = ir.COMPARISONS[self.op]
        if not isinstance(value, torch.Tensor):
            readings.add_verdict(compare(value, self.number.value))
            return
        if value.numel() == 0:
            return
        tests = self.tests(value.dtype)
        if tests is None:
            readings.add_verdict(compare(value, self.number.against(value)).all())
            return
        readings.statistics.append(value.amax() if self._largest else value.amin())
        readings.tests += tests


class RangeReader:
    """`low <= value <= high` for every element: the smallest and the largest decide."""

    __slots__ = ("high", "low", "tests")

    def __init__(self, low: Constant, high: Constant) -> None:
        self.low, self.high = low, high
        self.tests = _TestsByDtype(self.make)

    def make(self, dtype: torch.dtype) -> tuple[Test, ...]:
        return _bound_test(">=", rounded(self.low, dtype)), _bound_test("<=", rounded(self.high, dtype))

    def read(self, value: Value, readings: Readings) -> None:
        if not isinstance(value, torch.Tensor):
            readings.add_verdict(self.low.value <= value <= self.high.value)
            return
        if value.numel() == 0:
            return
        extremes = torch.aminmax(value)
        tests = self.tests(value.dtype)
        if tests is None:
            smallest, largest = extremes
            readings.add_verdict((smallest >= self.low.against(smallest)) & (largest <= self.high.against(largest)))
            return
        readings.statistics += extremes
        readings.tests += tests


class CloseReader:
    """`|left - right| <= tolerance` for every element: the largest distance decides."""

    __slots__ = ("tests", "tolerance")

    def __init__(self, tolerance: Constant) -> None:
        self.tolerance = tolerance
        self.tests = _TestsByDtype(self.make)

    def make(self, dtype: torch.dtype) -> tuple[Test, ...]:
        return (_bound_test("<=", rounded(self.tolerance, dtype)),)

    def read(self, left: Value, right: Value, readings: Readings) -> None:
        difference = left - right
        if not isinstance(difference, torch.Tensor):
            readings.add_verdict(abs(difference) <= self.tolerance.value)
            return
        if difference.numel() == 0:
            return
        largest = largest_magnitude(difference)
        tests = self.tests(largest.dtype)
        if tests is None:
            readings.add_verdict(largest <= self.tolerance.against(largest))
            return
        readings.statistics.append(largest)
        readings.tests += tests


class NearReader:
    """`value == number within tolerance`, both constants: the batch's smallest and largest value decide.

    Tested in Python as `|v - number| <= tolerance`, exact in float64, where the
    device rounds `v - number` to float32 first: a distance the device would
    find too large is too large here too, so this never passes what the
    per-sample check fails (it may fail a rare value on the very edge that the
    slow path then finds passing, which costs time, not a report).
    """

    __slots__ = ("_close", "number", "tests", "tolerance")

    def __init__(self, number: Constant, tolerance: Constant) -> None:
        self.number, self.tolerance = number, tolerance
        self._close = CloseReader(tolerance)
        self.tests = _TestsByDtype(self.make)

    def make(self, dtype: torch.dtype) -> tuple[Test, ...]:
        test = _near_test(rounded(self.number, dtype), rounded(self.tolerance, dtype))
        return test, test

    def read(self, value: Value, readings: Readings) -> None:
        tests = self.tests(value.dtype) if isinstance(value, torch.Tensor) else None
        if tests is None:
            self._close.read(value, self.number.against(value), readings)
            return
        if value.numel() == 0:
            return
        readings.statistics += torch.aminmax(value)
        readings.tests += tests


def _near_test(number: float, tolerance: float) -> Test:
    return lambda value: abs(value - number) <= tolerance


def read_finite(value: Value, readings: Readings) -> None:
    """No element is NaN or infinite.

    The largest magnitude (small tensors on the CPU) or the sum is finite only
    if every element is: one reduction where `isfinite` and `all` cost several.
    A sum of finite values that overflows fails here too, and only sends the
    call to the slow path, which checks element by element.
    """
    if not isinstance(value, torch.Tensor):
        readings.add_verdict(math.isfinite(value))
        return
    if not value.is_floating_point() or value.numel() == 0:
        return
    statistic = torch.linalg.vector_norm(value, math.inf) if value.numel() <= _SMALL and value.is_cpu else value.sum()
    readings.statistics.append(statistic)
    readings.tests.append(math.isfinite)


def largest_magnitude(value: torch.Tensor) -> torch.Tensor:
    """max |x| as a 0-dim tensor; NaN when any element is NaN (both ways propagate it)."""
    if value.numel() <= _SMALL and value.is_cpu and value.is_floating_point():
        return torch.linalg.vector_norm(value, math.inf)
    return value.abs().amax()
