"""Cost clauses measured on a bound module: parameter count, FLOPs per sample, latency.

Each measurement runs the module the way a cost is meant (no gradients, in
evaluation mode, restored afterwards) and compares the result with the
clause's limit. A count the tools cannot trust (no FLOPs seen for a module
with parameters) is `unknown`, never a pass.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mdl_lang import ir
from mdl_lang.backends.torch.predicates import evaluate_dim

FLOP_BATCH = 8
"""FLOPs are counted on a batch of this size and divided by it, so per-batch overheads average out."""

Example = Callable[[int], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class CostVerdict:
    """The verdict on one cost clause: what was measured, against which limit, and how."""

    verdict: str
    measured: float
    limit: float
    unit: str
    detail: str


def measure_cost(
    cost: ir.CostClause, module: nn.Module, example: Example, *, repeats: int = 30, warmup: int = 5,
) -> CostVerdict:
    """Measure `cost.metric` of `module` and compare it with the clause's limit.

    `example(batch)` returns the module's inputs for a batch of that size.
    """
    if cost.metric == "params":
        return _params_verdict(cost, module)
    if cost.metric == "flops":
        return _flops_verdict(cost, module, example)
    if cost.metric == "latency":
        if repeats < 1 or warmup < 0:
            raise ValueError(f"latency needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
        return _latency_verdict(cost, module, example(cost.batch), repeats, warmup)
    raise ValueError(f"unknown cost metric `{cost.metric}`; expected params, flops or latency")


def count_parameters(module: nn.Module) -> int:
    """Every parameter element once: `parameters()` skips a tensor shared between submodules after its first use."""
    return sum(parameter.numel() for parameter in module.parameters())


def flops_per_sample(module: nn.Module, example: Example) -> float:
    """FLOPs of one forward pass per sample, as torch's FlopCounterMode counts them."""
    inputs = example(FLOP_BATCH)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), evaluation_mode(module), counter:
        module(*inputs)
    return counter.get_total_flops() / FLOP_BATCH


def latency_samples(module: nn.Module, inputs: tuple[torch.Tensor, ...], repeats: int, warmup: int) -> list[float]:
    """Wall-clock milliseconds of `repeats` calls, after `warmup` untimed calls that fill caches and pick kernels."""
    timings = []
    with torch.no_grad(), evaluation_mode(module):
        for _ in range(warmup):
            module(*inputs)
        _synchronize(inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            module(*inputs)
            _synchronize(inputs)
            timings.append((time.perf_counter() - start) * 1e3)
    return timings


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Run in eval mode and restore each submodule's flag: measuring must not update BatchNorm statistics."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.train(False)
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def _synchronize(inputs: tuple[torch.Tensor, ...]) -> None:
    """CUDA calls return before the kernels finish; wait for them so the clock measures the work."""
    for device in {tensor.device for tensor in inputs if tensor.device.type == "cuda"}:
        torch.cuda.synchronize(device)


def _params_verdict(cost: ir.CostClause, module: nn.Module) -> CostVerdict:
    count = count_parameters(module)
    detail = f"{count:,} parameters (a parameter shared between submodules counts once)"
    return _compared(cost, float(count), "params", detail)


def _flops_verdict(cost: ir.CostClause, module: nn.Module, example: Example) -> CostVerdict:
    flops = flops_per_sample(module, example)
    how = (
        f"counted by torch's FlopCounterMode on a batch of {FLOP_BATCH}: matrix multiplications and convolutions "
        "at 2 FLOPs per multiply-add; elementwise operations (activations, normalisation, additions) are not counted"
    )
    if flops == 0 and count_parameters(module) > 0:
        detail = f"no FLOPs were counted although the module has parameters, so the count says nothing; {how}"
        return CostVerdict("unknown", 0.0, cost.limit, "FLOPs", detail)
    return _compared(cost, flops, "FLOPs", f"{flops:,.0f} FLOPs per sample, {how}")


def _latency_verdict(
    cost: ir.CostClause, module: nn.Module, inputs: tuple[torch.Tensor, ...], repeats: int, warmup: int,
) -> CostVerdict:
    timings = latency_samples(module, inputs, repeats, warmup)
    median = statistics.median(timings)
    detail = (
        f"median {median:.4f} ms of {repeats} calls at batch {cost.batch} after {warmup} warm-up calls "
        f"(fastest {min(timings):.4f} ms, slowest {max(timings):.4f} ms)"
    )
    return _compared(cost, median, "ms", detail)


def _compared(cost: ir.CostClause, measured: float, unit: str, detail: str) -> CostVerdict:
    if cost.op == "<=":
        holds = measured <= cost.limit
    elif cost.op == "<":
        holds = measured < cost.limit
    else:
        raise ValueError(f"a cost limit is written with `<=` or `<`, not `{cost.op}`")
    return CostVerdict("pass" if holds else "fail", measured, cost.limit, unit, detail)


# ---------------------------------------------------------------- example inputs


def example_inputs(ports: tuple[ir.Port, ...], batch: int, dims: int = 8) -> tuple[torch.Tensor, ...]:
    """One deterministic tensor per port, of its type: enough to measure shape-level costs.

    Free symbolic dims (and `_`) take the size `dims`, derived dims are
    evaluated from them, label-set axes have their set's size and `...` adds
    no axis. Every element is the midpoint of the port's value range (0.5
    without one), cast to its dtype (float32 when the type says `float` or none).
    """
    return tuple(_example_tensor(port, batch, dims) for port in ports)


def _example_tensor(port: ir.Port, batch: int, dims: int) -> torch.Tensor:
    tensor_type = port.type
    shape = _example_shape(port, batch, dims)
    middle = sum(tensor_type.value_range) / 2 if tensor_type.value_range is not None else 0.5
    dtype = torch.float32 if tensor_type.dtype in (None, ir.ANY_FLOAT) else getattr(torch, tensor_type.dtype)
    return torch.full(shape, middle, dtype=torch.float64).to(dtype)


def _names(dims) -> set[str]:
    """Every symbolic dim name a shape uses, inside arithmetic too."""
    names: set[str] = set()
    for dim in dims:
        if isinstance(dim, ir.DimVar):
            names.add(dim.name)
        elif isinstance(dim, ir.DimBinary):
            names |= _names((dim.left, dim.right))
    return names


def _example_shape(port: ir.Port, batch: int, dims: int) -> tuple[int, ...]:
    sizes = {name: dims for name in _names(port.type.dims)}
    sizes.update({dim.name: batch for dim in port.type.dims if isinstance(dim, ir.DimVar) and dim.batch})
    shape = []
    for dim in port.type.dims:
        if isinstance(dim, ir.DimEllipsis):
            continue
        size = dims if isinstance(dim, ir.DimAny) else evaluate_dim(dim, sizes)
        if size < 1:
            raise ValueError(
                f"port `{port.name}`: dimension `{dim}` has size {size} when free dims are {dims}; pick another `dims`"
            )
        shape.append(size)
    return tuple(shape)
