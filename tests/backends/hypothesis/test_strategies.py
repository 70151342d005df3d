"""Drawn batches keep a component's types and requires, shrink to simple values, and stay fast."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from random import Random

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from torch import nn

import mdl_lang
from mdl_lang import ir
from mdl_lang.strategies import (
    RequiresStats,
    StarvedRequires,
    UnfilteredRequires,
    UnsatisfiableRequires,
    inputs,
)
from tests.backends.hypothesis.drawing import drawn, reaches

HEADER = """
labels Digit = {0..9}
dim B : batch
dim S
"""


def component(load_spec, ports: str, clauses: str = "") -> ir.Module:
    """A module `m` with the given input ports (one output port is added) and requires."""
    spec = load_spec(f"{HEADER}interface I {{\n{ports}\n  output out: Tensor[B, 2]\n{clauses}\n}}\nmodule m : I\n")
    return spec.component("m")


# ---------------------------------------------------------------- shapes


def test_ports_sharing_a_dim_agree_on_it_and_on_the_batch(load_spec):
    module = component(load_spec, """
  input x: Tensor[B, S, S * 2] float32
  input z: Tensor[B, S] float32
  input w: Tensor[B, S // 2 + 1] float32
""")
    for batch in drawn(inputs(module)):
        x, z, w = batch["x"], batch["z"], batch["w"]
        size = x.shape[1]
        assert 1 <= x.shape[0] <= 8
        assert x.shape[0] == z.shape[0] == w.shape[0]
        assert 1 <= size <= 6
        assert x.shape[2] == 2 * size
        assert z.shape[1] == size
        assert w.shape[1] == size // 2 + 1


def test_derived_dims_that_would_not_be_positive_are_never_drawn(load_spec):
    module = component(load_spec, "  input x: Tensor[B, S - 4] float32")
    strategy = inputs(module)
    assert {batch["x"].shape[1] for batch in drawn(strategy)} <= {1, 2}
    assert reaches(strategy, lambda batch: batch["x"].shape[1] == 2)


def test_no_size_in_range_that_keeps_a_derived_dim_positive_is_an_error(load_spec):
    module = component(load_spec, "  input x: Tensor[B, S - 10] float32")
    with pytest.raises(ValueError, match=r"S - 10"):
        inputs(module)
    assert drawn(inputs(module, dim_range=(11, 12)), 5)[0]["x"].shape[1] in (1, 2)


def test_constant_label_any_and_ellipsis_axes_take_their_sizes(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 3, Digit, _, ...] float32")
    strategy = inputs(module, batch=(2, 4), dim_range=(1, 3))
    for batch in drawn(strategy):
        shape = batch["x"].shape
        assert 2 <= shape[0] <= 4
        assert shape[1:3] == (3, 10)
        assert 4 <= len(shape) <= 6
        assert all(1 <= size <= 3 for size in shape[3:])
    assert reaches(strategy, lambda batch: batch["x"].dim() == 6)
    assert reaches(strategy, lambda batch: batch["x"].dim() == 4)


def test_the_batch_size_range_is_kept(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 4] float32")
    assert {batch["x"].shape[0] for batch in drawn(inputs(module, batch=(3, 3)), 10)} == {3}
    with pytest.raises(ValueError, match="batch"):
        inputs(module, batch=(0, 4))


# ---------------------------------------------------------------- dtypes and values


@pytest.mark.parametrize(
    ("written", "dtype", "low", "high"),
    [
        ("float32", torch.float32, -10, 10),
        ("float", torch.float32, -10, 10),
        ("", torch.float32, -10, 10),
        ("float16", torch.float16, -10, 10),
        ("bfloat16", torch.bfloat16, -10, 10),
        ("float64", torch.float64, -10, 10),
        ("int64", torch.int64, -10, 10),
        ("int32", torch.int32, -10, 10),
        ("uint8", torch.uint8, 0, 255),
        ("bool", torch.bool, 0, 1),
    ],
)
def test_dtypes_come_from_the_type_with_their_default_ranges(load_spec, written, dtype, low, high):
    module = component(load_spec, f"  input x: Tensor[B, 8] {written}")
    strategy = inputs(module)
    for batch in drawn(strategy, 30):
        x = batch["x"]
        assert x.dtype == dtype
        assert bool(torch.isfinite(x.double()).all())
        assert low <= x.double().min() and x.double().max() <= high
    assert reaches(strategy, lambda batch: batch["x"].double().max() == high)


def test_values_stay_in_the_range_and_reach_both_ends_exactly(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 16] float32 in [-1, 2.5]")
    strategy = inputs(module)
    for batch in drawn(strategy):
        assert bool(((batch["x"] >= -1) & (batch["x"] <= 2.5)).all())
    assert reaches(strategy, lambda batch: bool((batch["x"] == -1).any()))
    assert reaches(strategy, lambda batch: bool((batch["x"] == 2.5).any()))


def test_an_end_that_is_not_a_value_of_the_dtype_is_compared_as_torch_compares_it(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 16] float16 in [0, 0.1]")
    strategy = inputs(module)
    for batch in drawn(strategy):
        assert bool(((batch["x"] >= 0) & (batch["x"] <= 0.1)).all())
    assert reaches(strategy, lambda batch: bool((batch["x"] == torch.tensor(0.1, dtype=torch.float16)).any()))


def test_integer_ranges_are_kept_and_reached(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 16] int64 in [-3, 5]")
    strategy = inputs(module)
    assert all(bool(((b["x"] >= -3) & (b["x"] <= 5)).all()) for b in drawn(strategy))
    assert reaches(strategy, lambda batch: bool((batch["x"] == -3).any()))
    assert reaches(strategy, lambda batch: bool((batch["x"] == 5).any()))


def test_values_are_finite_unless_nonfinite_is_asked_for_an_unbounded_port(load_spec):
    module = component(load_spec, """
  input free: Tensor[B, 8]
  input finite_type: Tensor[B, 8] finite
  input ranged: Tensor[B, 8] in [-100, 100]
""")
    for batch in drawn(inputs(module)):
        assert all(bool(torch.isfinite(tensor).all()) for tensor in batch.values())
    allowing = inputs(module, nonfinite=True)
    for batch in drawn(allowing):
        assert bool(torch.isfinite(batch["finite_type"]).all())
        assert bool(torch.isfinite(batch["ranged"]).all())
    assert reaches(allowing, lambda batch: bool(batch["free"].isnan().any()))
    assert reaches(allowing, lambda batch: bool((batch["free"] == math.inf).any()))
    assert reaches(allowing, lambda batch: bool((batch["free"] == -math.inf).any()))


# ---------------------------------------------------------------- requires


def test_a_linear_requires_narrows_the_drawing_without_filtering(load_spec):
    module = component(
        load_spec, "  input x: Tensor[B, 16] float32 in [0, 1]", "  requires at_least_half: all(x >= 0.5)",
    )
    stats = RequiresStats()
    strategy = inputs(module, stats=stats)
    for batch in drawn(strategy):
        assert bool((batch["x"] >= 0.5).all())
        assert bool((batch["x"] <= 1).all())
    assert reaches(strategy, lambda batch: bool((batch["x"] == 0.5).any()))
    assert stats.drawn == 0


def test_strict_requires_exclude_their_bound(load_spec):
    module = component(load_spec, """
  input x: Tensor[B, 8] float32
  input k: Tensor[B, 8] int64
""", """
  requires x > 0 and x < 1
  requires 2 < k < 5
""")
    strategy = inputs(module)
    for batch in drawn(strategy):
        assert bool(((batch["x"] > 0) & (batch["x"] < 1)).all())
        assert set(batch["k"].unique().tolist()) <= {3, 4}
    assert reaches(strategy, lambda batch: bool((batch["k"] == 3).any()))
    assert reaches(strategy, lambda batch: bool((batch["k"] == 4).any()))


def test_narrowed_requires_hold_as_the_torch_monitor_checks_them(load_spec):
    spec = load_spec(f"""{HEADER}
interface I {{
  input x: Tensor[B, 8] float16 in [0, 1]
  output y: Tensor[B, 8] float16
  requires all(x > 0.1)
  requires 0.2 <= x <= 0.7
  requires x in [0.15, 0.65]
  requires x >= 0.3 and x <= 0.9
  requires -x >= -0.6
  requires not any(x > 0.55)
  requires x < 1 - 0.45 + 0.001
  requires finite(x)
}}
module m : I
""")
    monitored = spec.bind("m", nn.Identity(), mode="raise", replay_dir=None)
    for batch in drawn(inputs(spec, "m"), 100):
        monitored(batch["x"])


def test_a_strict_bound_starts_at_the_next_value_of_the_dtype(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 8] float16", "  requires x > 0.1 and x <= 0.2")
    strategy = inputs(module)
    bound = torch.tensor(0.1, dtype=torch.float16)
    next_value = torch.nextafter(bound, torch.tensor(1.0, dtype=torch.float16))
    assert all(bool((batch["x"] > 0.1).all()) for batch in drawn(strategy))
    assert reaches(strategy, lambda batch: bool((batch["x"] == next_value).any()))


def test_a_filtering_requires_drops_the_samples_keep_rejects(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 4] float32 in [-1, 1]", "  requires positive: sum(x) > 0")
    stats = RequiresStats()
    strategy = inputs(module, keep=lambda batch: batch["x"].sum(dim=1) > 0, stats=stats)
    for batch in drawn(strategy):
        assert batch["x"].shape[0] >= 1
        assert bool((batch["x"].sum(dim=1) > 0).all())
    assert 0 < stats.kept < stats.drawn
    assert stats.rejection_rate("positive") == stats.rejection_rate()


def test_a_filtering_requires_without_keep_is_an_error_naming_it(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 4] float32", "  requires positive: sum(x) > 0")
    with pytest.raises(UnfilteredRequires, match="`positive`"):
        inputs(module)


def test_a_requires_that_rejects_almost_everything_stops_drawing_naming_it(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 4] float32", "  requires exact: sum(x) == 123.456")
    strategy = inputs(module, keep=lambda batch: batch["x"].sum(dim=1) == 123.456)

    @settings(database=None, deadline=None, max_examples=100)
    @given(strategy)
    def run(batch):
        pass

    with pytest.raises(StarvedRequires, match="`exact`") as raised:
        run()
    assert raised.value.clause == "exact"
    assert raised.value.rate > 0.9
    assert "a bound on one element (`x[0] >= 0.99`)" in str(raised.value), "the hint says what narrows"


def test_keep_names_blames_the_clause_that_starves(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 4] float32 in [0, 1]", """
  requires easy: sum(x) >= 0
  requires exact: sum(x) == 123.456
""")
    strategy = inputs(module, keep_names=lambda batch: {
        "easy": batch["x"].sum(dim=1) >= 0, "exact": batch["x"].sum(dim=1) == 123.456,
    })
    with pytest.raises(StarvedRequires, match="`exact`"):
        find(strategy, lambda batch: False, settings=settings(database=None, max_examples=100))


def test_a_keep_that_returns_no_mask_per_sample_is_an_error(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 4] float32", "  requires positive: sum(x) > 0")
    strategy = inputs(module, keep=lambda batch: bool((batch["x"].sum(dim=1) > 0).all()))
    with pytest.raises(TypeError, match=r"bool tensor of shape \["):
        drawn(strategy, 5)


def test_requires_that_leave_no_value_are_reported_with_the_port_and_clause(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 4] float32 in [0, 1]", "  requires big: all(x >= 2)")
    with pytest.raises(UnsatisfiableRequires, match=r"`x`.*`big`"):
        inputs(module)


def test_a_spec_and_a_component_name_select_the_component(load_spec):
    spec = load_spec(f"{HEADER}interface I {{\n  input x: Tensor[B, 3]\n  output y: Tensor[B, 3]\n}}\nmodule m : I\n")
    assert drawn(inputs(spec, "m"), 5)[0]["x"].shape[1] == 3
    with pytest.raises(ValueError, match="no module or composition 'missing'"):
        inputs(spec, "missing")
    with pytest.raises(TypeError, match="name"):
        inputs(spec.component("m"), "m")


# ---------------------------------------------------------------- shrinking and speed


def test_a_failure_shrinks_to_one_sample_of_few_distinct_values(load_spec):
    module = component(load_spec, "  input x: Tensor[B, S, 64] float32")
    found = find(
        inputs(module), lambda batch: batch["x"].max() > 0.5, settings=settings(database=None), random=Random(0),
    )
    assert tuple(found["x"].shape) == (1, 1, 64)
    assert found["x"].unique().numel() <= 2


def test_a_batch_of_eight_by_sixty_four_floats_draws_fast(load_spec):
    module = component(load_spec, "  input x: Tensor[B, 64] float32")
    strategy = inputs(module, batch=(8, 8))
    count = 0

    @settings(database=None, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def run(batch):
        nonlocal count
        count += 1

    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    assert count == 200
    assert elapsed < 3.0, f"{count / elapsed:.0f} examples/s"


# ---------------------------------------------------------------- the shipped specs

SPECS = sorted((Path(__file__).parents[3] / "specs").glob("*.mdl"))


def accept_all(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.ones(next(iter(batch.values())).shape[0], dtype=torch.bool)


def rank_fits(tensor: torch.Tensor, dims: tuple[ir.Dim, ...]) -> bool:
    """Whether a tensor has as many axes as its dims, `...` standing for zero to two of them."""
    if any(isinstance(dim, ir.DimEllipsis) for dim in dims):
        return len(dims) - 1 <= tensor.dim() <= len(dims) + 1
    return tensor.dim() == len(dims)


@pytest.mark.parametrize("path", SPECS, ids=[path.name for path in SPECS])
def test_every_component_of_the_shipped_specs_draws_inputs_of_its_types(path):
    spec = mdl_lang.load(path)
    for name, part in spec.components().items():
        ports = {port.name: port.type for port in part.interface.inputs}
        for batch in drawn(inputs(part, keep=accept_all), 5):
            assert batch.keys() == ports.keys(), name
            assert all(rank_fits(tensor, ports[port].dims) for port, tensor in batch.items()), name


def test_the_backend_imports_no_other_backend_and_narrowing_imports_neither_torch_nor_hypothesis():
    script = (
        "import sys\n"
        "import mdl_lang.backends.hypothesis.narrowing\n"
        "assert 'torch' not in sys.modules and 'hypothesis' not in sys.modules, 'narrowing loads torch/hypothesis'\n"
        "import mdl_lang.strategies\n"
        "assert not [name for name in sys.modules if name.startswith('mdl_lang.backends.torch')], 'torch backend'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
