"""Cost clauses: parameter counts, FLOPs per sample, latency, and example inputs from port types."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.cost import example_inputs, measure_cost

SPEC = """
labels Digit = {{0..9}}
dim B : batch
dim S
dim H = 3
type Flat = Tensor[B, 64] float32 in [-1, 1]
interface Classifier {{
  input  x: Flat
  output y: Tensor[B, Digit] float32
}}
interface Shapes {{
  input  a: Tensor[B, S * 2, H, Digit] uint8 in [0, 255]
  input  b: Tensor[B, _, ..., S] float
  input  c: Tensor[S - 1] float64 in [2, 4]
  input  d: Tensor[B, 2]
  output y: Tensor[B, Digit] float32
}}
module m : Classifier {{
  cost {{ {costs} }}
}}
module shapes : Shapes {{ }}
"""


def costs(tmp_path: Path, text: str) -> dict[str, ir.CostClause]:
    """The cost clauses of module `m` in a spec whose cost block is `text`, by metric."""
    path = tmp_path / "spec.mdl"
    path.write_text(SPEC.format(costs=text), encoding="utf-8")
    return {cost.metric: cost for cost in mdl_lang.load(path).component("m").all_costs}


def flat_inputs(batch: int) -> tuple[torch.Tensor, ...]:
    return (torch.zeros(batch, 64),)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class TiedLayers(nn.Module):
    """Two layers sharing one weight matrix: a shared parameter is one parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(64, 64, bias=False)
        self.second = nn.Linear(64, 64, bias=False)
        self.second.weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


class Scaled(nn.Module):
    """A parameter used only elementwise: FlopCounterMode sees no matmul or convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


# ---------------------------------------------------------------- params


def test_params_counts_every_weight_and_bias(tmp_path):
    clauses = costs(tmp_path, "params <= 2410")
    result = measure_cost(clauses["params"], mlp(), flat_inputs)
    assert (result.verdict, result.limit, result.unit) == ("pass", 2410, "params")
    assert result.measured == 64 * 32 + 32 + 32 * 10 + 10
    assert "2,410 parameters" in result.detail


def test_a_strict_limit_fails_at_equality(tmp_path):
    assert measure_cost(costs(tmp_path, "params < 2410")["params"], mlp(), flat_inputs).verdict == "fail"


def test_shared_parameters_count_once(tmp_path):
    result = measure_cost(costs(tmp_path, "params <= 5k")["params"], TiedLayers(), flat_inputs)
    assert (result.verdict, result.measured) == ("pass", 64 * 64)


# ---------------------------------------------------------------- flops


def test_flops_of_a_linear_layer_are_two_per_multiply_add(tmp_path):
    clauses = costs(tmp_path, "flops <= 1280 per sample")
    result = measure_cost(clauses["flops"], nn.Linear(64, 10), flat_inputs)
    assert (result.verdict, result.measured, result.unit) == ("pass", 2 * 64 * 10, "FLOPs")
    assert "elementwise operations" in result.detail and "not counted" in result.detail
    strict = costs(tmp_path, "flops < 1280 per sample")["flops"]
    assert measure_cost(strict, nn.Linear(64, 10), flat_inputs).verdict == "fail"


def test_flops_of_an_mlp_add_up_its_layers(tmp_path):
    result = measure_cost(costs(tmp_path, "flops <= 1M per sample")["flops"], mlp(), flat_inputs)
    assert result.measured == 2 * (64 * 32 + 32 * 10)


def test_no_flops_counted_for_a_parametrised_module_is_unknown(tmp_path):
    result = measure_cost(costs(tmp_path, "flops <= 1k per sample")["flops"], Scaled(), flat_inputs)
    assert result.verdict == "unknown"
    assert "no FLOPs were counted" in result.detail


def test_measuring_restores_training_mode_and_batchnorm_statistics(tmp_path):
    module = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8))
    module.train()
    before = module[1].running_mean.clone()
    measure_cost(costs(tmp_path, "flops <= 1k per sample")["flops"], module, lambda batch: (torch.randn(batch, 64),))
    assert module.training and module[1].training
    assert torch.equal(module[1].running_mean, before)


# ---------------------------------------------------------------- latency


def test_latency_is_a_positive_median_and_a_tiny_limit_fails(tmp_path):
    batches: list[int] = []

    def inputs(batch: int) -> tuple[torch.Tensor, ...]:
        batches.append(batch)
        return flat_inputs(batch)

    clauses = costs(tmp_path, "latency <= 10 s at batch 4, params <= 1")
    relaxed = measure_cost(clauses["latency"], mlp(), inputs, repeats=5, warmup=1)
    assert (relaxed.verdict, relaxed.unit, relaxed.limit) == ("pass", "ms", 10_000)
    assert relaxed.measured > 0
    assert batches == [4]
    assert "of 5 calls at batch 4 after 1 warm-up calls" in relaxed.detail
    tiny = costs(tmp_path, "latency <= 0.000001 us at batch 4")["latency"]
    assert measure_cost(tiny, mlp(), inputs, repeats=3, warmup=0).verdict == "fail"


def test_latency_needs_at_least_one_timed_call(tmp_path):
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_cost(costs(tmp_path, "latency <= 1 ms")["latency"], mlp(), flat_inputs, repeats=0)


# ---------------------------------------------------------------- example inputs


def test_example_inputs_follow_each_port_type(tmp_path):
    path = tmp_path / "spec.mdl"
    path.write_text(SPEC.format(costs=""), encoding="utf-8")
    ports = mdl_lang.load(path).component("shapes").interface.inputs
    a, b, c, d = example_inputs(ports, batch=5, dims=4)
    assert (a.shape, a.dtype) == ((5, 8, 3, 10), torch.uint8)
    assert bool((a == 127).all())
    assert (b.shape, b.dtype) == ((5, 4, 4), torch.float32)
    assert (c.shape, c.dtype) == ((3,), torch.float64)
    assert bool((c == 3.0).all())
    assert (d.shape, d.dtype) == ((5, 2), torch.float32)
    assert bool((d == 0.5).all())
    assert all(torch.equal(x, y) for x, y in zip(example_inputs(ports, 5, 4), (a, b, c, d), strict=True))


def test_a_derived_dim_without_a_positive_size_is_an_error(tmp_path):
    path = tmp_path / "spec.mdl"
    path.write_text(SPEC.format(costs=""), encoding="utf-8")
    ports = mdl_lang.load(path).component("shapes").interface.inputs
    with pytest.raises(ValueError, match=r"port `c`: dimension `S - 1` has size 0"):
        example_inputs(ports, batch=2, dims=1)


def test_example_inputs_drive_a_cost_measurement(tmp_path):
    path = tmp_path / "spec.mdl"
    path.write_text(SPEC.format(costs="flops <= 1280 per sample"), encoding="utf-8")
    module = mdl_lang.load(path).component("m")
    result = measure_cost(
        module.all_costs[0], nn.Linear(64, 10), lambda batch: example_inputs(module.interface.inputs, batch),
    )
    assert (result.verdict, result.measured) == ("pass", 1280)
