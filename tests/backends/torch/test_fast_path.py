"""The monitor's fast path decides exactly as its slow path, for less: tensor constants, cheap whole-batch forms.

The fast path reduces every check to whole-batch statistics, read back by one
host sync per call and tested in Python; the slow path (per-sample masks) runs
only when a test fails. These tests hold the two to the same answer on inputs
chosen to sit on the edges (bounds rounded to float32, NaN, infinities, empty
batches), and check the pieces that make the fast path cheap: constants
cached as tensors with the same bits as Python numbers, NaN-propagating
extremes, the short-row softmax, no session on a pass.
"""

from __future__ import annotations

import math
import operator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import mdl_lang
from mdl_lang import blame
from mdl_lang.backends.torch import monitor
from mdl_lang.backends.torch.boundary import Boundary
from mdl_lang.backends.torch.constants import Constant
from mdl_lang.backends.torch.predicates import CallContext, softmax
from mdl_lang.backends.torch.readings import CloseReader, Readings, read_finite, stacked

SPEC_TEXT = """
labels Digit = {0..9}
dim B : batch
interface Edges {
  input  x: Tensor[B, 4] float in [0, 0.1] finite
  input  s: Tensor[B] float
  output y: Tensor[B, Digit] float finite
  requires scaled: s * 2 - 1 <= 0.3
  requires above: 0.1 < s + 1
  ensures simplex: sum(softmax(y)) == 1 within 1e-4
  ensures bounded: finite(y) and max(y) - min(y) < 1e6
  ensures near: y[0] == x[0] within 0.25 * 2
  ensures count(y > -1e30) >= 1
}
module edges : Edges
interface Half {
  input  x: Tensor[B, 4] float16
  output y: Tensor[B, 4] float16 finite
  ensures y == x within 0.01
}
module half : Half
"""

EDGE = 0.1  # as float32, 0.1 rounds up: the bound of `x in [0, 0.1]` rounds the same way on both paths


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "fast.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path)


@pytest.fixture(scope="module")
def boundary(spec) -> Boundary:
    return Boundary("edges", spec.component("edges"), spec.sources)


def _inputs(x_value: float, s_value: float, batch: int = 3, dtype=torch.float32) -> dict[str, torch.Tensor]:
    x = torch.full((batch, 4), 0.05, dtype=dtype)
    s = torch.zeros(batch, dtype=dtype)
    if batch:
        x[-1, -1] = x_value
        s[-1] = s_value
    return {"x": x, "s": s}


def _slow_holds(boundary: Boundary, phase: str, values: dict[str, torch.Tensor]) -> bool:
    return not boundary.violations(phase, values, {})


EDGE_INPUTS = [
    (0.05, 0.0), (EDGE, 0.0), (math.nextafter(EDGE, 1.0), 0.0), (0.0, 0.0), (-0.0, 0.0), (-1e-45, 0.0),
    (math.nan, 0.0), (math.inf, 0.0), (-math.inf, 0.0), (0.05, 0.65), (0.05, 0.6500001), (0.05, -0.9),
    (0.05, -0.9000001), (0.05, math.nan),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("x_value", "s_value"), EDGE_INPUTS)
def test_fast_requires_decide_as_the_slow_path(boundary, dtype, x_value, s_value) -> None:
    values = _inputs(x_value, s_value, dtype=dtype)
    readings = boundary.fast_requires(values).readings
    assert readings is not None and readings.holds() == _slow_holds(boundary, "requires", values)


@pytest.mark.parametrize("case", ["ok", "nan", "inf", "far", "wide", "empty", "huge"])
def test_fast_ensures_decide_as_the_slow_path(boundary, case) -> None:
    batch = 0 if case == "empty" else 300
    values = _inputs(0.05, 0.0, batch=batch)
    y = torch.randn(batch, 10)
    if batch:
        y[:, 0] = values["x"][:, 0]
    if case == "nan":
        y[7, 3] = math.nan
    elif case == "inf":
        y[0, 0] = -math.inf
    elif case == "far":
        y[5, 0] = 2.0
    elif case == "wide":
        y[9, 4] = 1e7
    elif case == "huge":
        y[:, 1:] = 3e38  # finite, though their sum overflows
    call = boundary.fast_requires(values)
    assert call.readings is not None and call.readings.holds()
    fast = boundary.fast_ensures(call, (y,)) and call.readings.holds()
    slow = _slow_holds(boundary, "ensures", {**values, "y": y})
    if case == "huge":
        assert slow is False  # `max(y) - min(y)` overflows to inf: the clause fails on both paths
    assert fast == slow


def test_an_overflowing_sum_of_finite_values_only_takes_the_slow_path(tmp_path) -> None:
    path = tmp_path / "big.mdl"
    path.write_text("dim B : batch\ninterface Big {\n  input x: Tensor[B, 600] float\n"
                    "  output y: Tensor[B, 600] float finite\n}\nmodule big : Big\n")
    model = mdl_lang.load(path).bind("big", nn.Identity(), mode="record", replay_dir=None)
    x = torch.full((2, 600), 3e38)
    assert not _finite(x)  # the fast form is conservative ...
    assert model(x) is x
    assert model.reports == []  # ... and the slow path finds every element finite


def test_low_precision_outputs_are_type_checked_as_returned(spec) -> None:
    model = spec.bind("half", nn.Identity(), replay_dir=None)
    x = torch.rand(5, 4).half()
    assert model(x) is x
    assert model(x) is x  # second call: from the signature cache
    with pytest.raises(monitor.ContractViolation, match="dtype float16"):
        model(x.float())


def test_a_passing_call_makes_no_session(boundary) -> None:
    def no_session() -> monitor.Session:
        raise AssertionError("a passing call should not need a session")

    values = _inputs(0.05, 0.0)
    y = torch.zeros(3, 10)
    y[:, 0] = values["x"][:, 0]
    raw, outcome = monitor.run_part(boundary, lambda: y, values, blame.caller(("edges",)), ("edges",), no_session)
    assert raw is y and outcome.failed_ensures == () and not outcome.bad_input
    made: list[monitor.Session] = []

    def session() -> monitor.Session:
        made.append(monitor.Session(monitor.MonitorOptions("record", replay_dir=None), boundary.sources, []))
        return made[-1]

    bad = _inputs(math.nan, 0.0)
    monitor.run_part(boundary, lambda: y, bad, blame.caller(("edges",)), ("edges",), session)
    assert len(made) == 1 and made[0].sink and made[0].sink[0].clause == "finite(x)"


OPERATIONS = [operator.add, operator.sub, operator.mul, operator.lt, operator.le, operator.eq, operator.ne,
              operator.ge, operator.gt]
NUMBERS = [0, 1, 7, 255, 300, -1, 2**40, 0.1, 1e-4, 1 / 3, 2.5, 65520, 1e40, -1e40, 1e-46]
SAMPLES = {
    torch.float32: torch.tensor([0.1, 1e-4, 16.0, 0.0, -0.0, 1 / 3, math.nan, math.inf, -math.inf, 2.5, 1e-45]),
    torch.float64: torch.tensor([0.1, 1e-4, 16.0, 0.0, 1 / 3, math.nan, -math.inf, 2.5], dtype=torch.float64),
    torch.int64: torch.arange(-5, 300, 7),
    torch.int32: torch.arange(-5, 300, 7, dtype=torch.int32),
    torch.uint8: torch.arange(0, 256, 5, dtype=torch.uint8),
    torch.bool: torch.tensor([True, False]),
    torch.float16: torch.tensor([0.1, 1e-4, 16.0, 1 / 3, math.nan, math.inf, 2.5, 65504.0]).half(),
    torch.bfloat16: torch.tensor([0.1, 1e-4, 16.0, 1 / 3, math.nan, math.inf, 2.5, 3e38]).bfloat16(),
}


@pytest.mark.parametrize("dtype", list(SAMPLES))
def test_a_constant_gives_the_bits_of_the_python_number(dtype) -> None:
    for value in (SAMPLES[dtype], SAMPLES[dtype][:1].reshape(())):
        for number in NUMBERS:
            constant = Constant(number)
            for operation in OPERATIONS:
                try:
                    expected = operation(value, number)
                except (RuntimeError, OverflowError):
                    continue
                for got, want in ((operation(value, constant.against(value)), expected),
                                  (operation(constant.against(value), value), operation(number, value))):
                    assert got.dtype == want.dtype and got.shape == want.shape, (dtype, number, operation)
                    assert torch.equal(got.nan_to_num(), want.nan_to_num()), (dtype, number, operation)
    assert Constant(3).against(2.0) == 3  # against a number it stays a number


def _finite(value: torch.Tensor) -> bool:
    readings = Readings()
    read_finite(value, readings)
    return readings.holds()


def _close(left: torch.Tensor, right: torch.Tensor, tolerance: float) -> bool:
    readings = Readings()
    CloseReader(Constant(tolerance)).read(left, right, readings)
    return readings.holds()


@pytest.mark.parametrize("size", [1, 10, 256, 257, 5000])
def test_whole_batch_forms_propagate_nan_and_infinity(size) -> None:
    values = torch.randn(size)
    assert _finite(values) and _close(values, values.clone(), 0)
    for bad in (math.nan, math.inf, -math.inf):
        spoiled = values.clone()
        spoiled[size // 2] = bad
        assert not _finite(spoiled)
        assert not _close(spoiled, values, 1e30)
    edge = values + 0.25
    assert _close(edge, values, 0.25 + 1e-6)
    assert not _close(edge, values, 0.2)
    assert _close(torch.empty(0), torch.empty(0), 0)


def test_readings_of_mixed_dtypes_are_read_back_exactly() -> None:
    readings = Readings()
    readings.add_verdict(torch.tensor(True))
    read_finite(torch.tensor([1.0, 2.0]), readings)
    big = torch.tensor([2.0**60 + 2.0**8], dtype=torch.float64)  # not a float32: the stack must widen, not round
    CloseReader(Constant(2.0**60)).read(big, torch.tensor([2.0**60], dtype=torch.float64), readings)
    assert readings.holds()
    assert stacked(readings.statistics) == [True, 2.0, 256.0]
    CloseReader(Constant(255.0)).read(big, torch.tensor([2.0**60], dtype=torch.float64), readings)
    assert not readings.holds()
    assert stacked(readings.statistics)[-1] == 256.0
    verdicts = Readings()
    verdicts.add_verdict(True)
    assert verdicts.holds()
    verdicts.add_verdict(False)
    assert not verdicts.holds()


@pytest.mark.parametrize("shape", [(1, 10), (256, 10), (4096, 3), (64, 5, 10), (32, 100)])
def test_softmax_matches_torch_in_the_original_layout(shape) -> None:
    scores = torch.randn(*shape) * 20
    result = softmax(scores)
    assert result.shape == scores.shape
    torch.testing.assert_close(result, torch.softmax(scores, dim=-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(result.sum(dim=-1), torch.ones(shape[:-1]), rtol=0, atol=1e-5)


class _ShiftRow(nn.Module):
    """Adds 0.05 to every element of row 1 only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = torch.zeros_like(x)
        shift[1] = 0.05
        return x + shift


def test_a_tolerance_computed_per_sample_applies_to_each_sample(tmp_path) -> None:
    path = tmp_path / "tolerance.mdl"
    path.write_text("dim B : batch\ninterface Near {\n  input x: Tensor[B, 4] float32 in [0, 1]\n"
                    "  output y: Tensor[B, 4] float32\n  ensures near: y == x within max(x) / 10\n}\n"
                    "module near : Near\n")
    spec = mdl_lang.load(path)
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0.9, 0.9, 0.9, 0.9]])
    exact = spec.bind("near", nn.Identity(), mode="record", replay_dir=None)
    exact(x)
    assert exact.reports == []
    # Row 1 moves by 0.05 > 0.04 = max(x) / 10; a shift of row 2 by 0.05 would be within its 0.09.
    shifted = spec.bind("near", _ShiftRow(), mode="record", replay_dir=None)
    shifted(x)
    [report] = shifted.reports
    assert report.verdict.value == "fail" and report.witness.samples == (1,)


FORMS_TEXT = """
dim B : batch
interface Forms {
  input  x: Tensor[B, 3] float
  input  n: Tensor[B, 3] int64
  output y: Tensor[B, 3] float
  requires upper: max(x) <= 0.1
  requires lower: 0.1 < min(x) + 1
  requires ranged: x[0] in [-0.5, 0.1]
  requires strict: x > -1e-45
  requires ints: n <= 7
  requires int_range: n[1] in [0, 7.5]
  ensures near: sum(y) == 0.3 within 1e-7
  ensures near_left: 0.3 == y[1] within 0.05
  ensures close: y == x within 0.1
  ensures equal: y[2] == 0.1
}
module forms : Forms
"""

EDGES = [0.0, -0.0, 0.1, 0.3, 0.05, 0.35, -0.5, -1e-45, 1e-45, math.nextafter(0.1, 1.0), math.nextafter(0.1, 0.0),
         0.1 + 1e-7, 0.3 - 1e-7, 0.2, 1e30, -1e30, math.nan, math.inf, -math.inf]
NEAR_EDGE = {"near", "near_left"}
"""Readers that may fail a value on the very edge that the per-sample check passes (never the other way)."""


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> Boundary:
    path = tmp_path_factory.mktemp("forms") / "forms.mdl"
    path.write_text(FORMS_TEXT)
    spec = mdl_lang.load(path)
    return Boundary("forms", spec.component("forms"), spec.sources)


@settings(max_examples=300, deadline=None)
@given(
    batch=st.integers(0, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    data=st.data(),
)
def test_each_fast_reader_never_passes_what_its_mask_fails(forms, batch, dtype, data) -> None:
    def tensor(elements, kind):
        return torch.tensor(data.draw(st.lists(st.lists(elements, min_size=3, max_size=3), min_size=batch,
                                               max_size=batch)), dtype=kind).reshape(batch, 3)

    x = tensor(st.sampled_from(EDGES), dtype)
    y = tensor(st.sampled_from(EDGES), dtype)
    n = tensor(st.integers(-3, 10), torch.int64)
    ctx = CallContext({"x": x, "n": n, "y": y}, {"B": batch}, batch)
    for check in [*forms.requires, *forms.ensures]:
        readings = Readings()
        check.read(ctx, readings)
        fast, slow = readings.holds(), bool(check.mask(ctx).all())
        assert slow or not fast, (check.name, x, y, n)
        if check.name not in NEAR_EDGE:
            assert fast == slow, (check.name, x, y, n)


def test_readings_on_different_devices_are_read_one_by_one(monkeypatch) -> None:
    def different_devices(tensors):
        raise RuntimeError("Expected all tensors to be on the same device")

    readings = Readings()
    read_finite(torch.tensor([1.0, 2.0]), readings)
    readings.add_verdict(torch.tensor(True))
    monkeypatch.setattr(torch, "stack", different_devices)
    assert stacked(readings.statistics) == [2.0, True]
    read_finite(torch.tensor([1.0, math.nan]), readings)
    assert math.isnan(stacked(readings.statistics)[-1])
