"""Monitor overhead: monitored against unmonitored calls, and against two peers doing the same checks.

For an MLP (64-256-256-10) and a small CNN on 8x8 digits, at batch 1 and 256 on
the CPU, each call is checked for shape, dtype, value range, finiteness and a
simplex clause (`sum(softmax(y)) == 1 within 1e-4`). The same checks are written
with jaxtyping + beartype (shapes and dtypes by annotation, values by hand) and
with icontract (pre- and postconditions as lambdas). Every variant is timed in
the same run, round-robin; the columns are medians over the rounds, and the
monitor's ratio (`mdl x`) and added time (`+us`) the medians of each round's
ratio and difference to the unmonitored call timed just before it.

    python benchmarks/bench_monitor.py [--calls 2000] [--rounds 7] [--clock wall|cpu]

`--clock cpu` times with this thread's CPU time instead of the wall clock: on
a machine shared with other work it leaves out the time others run, so the
ratios hold steadier (cache misses others cause still count).

The simplex clause follows from `y`'s `finite` refinement, float rounding
included, so the monitor reads only the latter (mdl_lang/backends/torch/
identities.py). `--compute-implied` turns that rule off, to show what
computing the clause on every call costs.

Targets: at batch 256 the monitor adds at most 5%; at batch 1 at most 25 us per
call; per call it is cheaper than both peers. Needs the benchmark-only packages
jaxtyping, beartype and icontract (`pip install jaxtyping beartype icontract`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import icontract
import torch
from beartype import beartype
from jaxtyping import Float, jaxtyped
from torch import Tensor, nn

import mdl_lang
from mdl_lang.backends.torch import identities

SPEC = """
labels Digit = {0..9}
dim B : batch
interface Flat {
  input  x: Tensor[B, 64] float32 in [0, 16] finite
  output y: Tensor[B, Digit] float32 finite
  ensures simplex: sum(softmax(y)) == 1 within 1e-4
}
interface Image {
  input  x: Tensor[B, 1, 8, 8] float32 in [0, 16] finite
  output y: Tensor[B, Digit] float32 finite
  ensures simplex: sum(softmax(y)) == 1 within 1e-4
}
module mlp : Flat
module cnn : Image
"""


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


def values_ok(x: Tensor) -> bool:
    return bool(torch.isfinite(x).all() and (x >= 0).all() and (x <= 16).all())


def simplex_ok(y: Tensor) -> bool:
    return bool(torch.isfinite(y).all() and ((torch.softmax(y, -1).sum(-1) - 1).abs() <= 1e-4).all())


def jaxtyping_mlp(model: nn.Module) -> Callable[[Tensor], Tensor]:
    @jaxtyped(typechecker=beartype)
    def checked(x: Float[Tensor, "batch 64"]) -> Float[Tensor, "batch 10"]:
        assert values_ok(x), "x out of range or not finite"
        y = model(x)
        assert simplex_ok(y), "y is not finite scores"
        return y

    return checked


def jaxtyping_cnn(model: nn.Module) -> Callable[[Tensor], Tensor]:
    @jaxtyped(typechecker=beartype)
    def checked(x: Float[Tensor, "batch 1 8 8"]) -> Float[Tensor, "batch 10"]:
        assert values_ok(x), "x out of range or not finite"
        y = model(x)
        assert simplex_ok(y), "y is not finite scores"
        return y

    return checked


def icontract_checked(model: nn.Module, sample_shape: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    @icontract.require(lambda x: x.dtype == torch.float32 and tuple(x.shape[1:]) == sample_shape)
    # icontract binds a condition's arguments by parameter name, hence the lambdas.
    @icontract.require(lambda x: values_ok(x))  # noqa: PLW0108
    @icontract.ensure(lambda x, result: result.dtype == torch.float32 and result.shape == (x.shape[0], 10))
    @icontract.ensure(lambda result: simplex_ok(result))  # noqa: PLW0108
    def checked(x: Tensor) -> Tensor:
        return model(x)

    return checked


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def per_call_seconds(function: Callable[[Tensor], Tensor], x: Tensor, calls: int, clock: Callable[[], float]) -> float:
    start = clock()
    for _ in range(calls):
        function(x)
    return (clock() - start) / calls


def measure(
    variants: dict[str, Callable], x: Tensor, calls: int, rounds: int, clock: Callable[[], float],
) -> dict[str, list[float]]:
    """Per-call times of each variant, one per round, the variants interleaved round by round."""
    for function in variants.values():
        per_call_seconds(function, x, max(10, calls // 20), clock)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, function in variants.items():
            samples[name].append(per_call_seconds(function, x, calls, clock))
    return samples


def added(samples: dict[str, list[float]], name: str) -> tuple[float, float]:
    """What `name` adds to the plain call: the median over rounds of its ratio and of its difference.

    Each round times the plain call and the checked one back to back, so a
    round's ratio and difference share its conditions; their medians hold
    where the machine's speed drifts between rounds more than the monitor costs.
    """
    pairs = list(zip(samples["plain"], samples[name], strict=True))
    return statistics.median(b / a for a, b in pairs), statistics.median(b - a for a, b in pairs)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--calls", type=int, default=2000, help="calls per round at batch 1")
    options.add_argument("--rounds", type=int, default=7)
    options.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                         help="wall clock, or this thread's CPU time (steadier on a loaded machine)")
    options.add_argument("--compute-implied", action="store_true",
                         help="compute the simplex clause on every call, though `finite` implies it")
    args = options.parse_args()
    if args.compute_implied:
        identities.implied_by_finite = lambda expr, finite_ports: False
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.mdl"
        path.write_text(SPEC)
        spec = mdl_lang.load(path)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, CPU; median of {args.rounds} rounds, "
          f"{args.clock} clock{', implied clauses computed' if args.compute_implied else ''}")
    print(f"{'model':<5}{'batch':>6}{'plain us':>10}{'mdl us':>9}{'mdl x':>7}{'+us':>8}"
          f"{'jaxtyping us':>14}{'icontract us':>14}")
    for name, build, shape in (("mlp", mlp, (64,)), ("cnn", cnn, (1, 8, 8))):
        model = build().eval()
        monitored = spec.bind(name, model, replay_dir=None)
        peer = jaxtyping_mlp(model) if name == "mlp" else jaxtyping_cnn(model)
        variants = {
            "plain": model, "mdl": monitored, "jaxtyping": peer, "icontract": icontract_checked(model, shape),
        }
        for batch in (1, 256):
            x = torch.rand(batch, *shape) * 16
            calls = args.calls if batch == 1 else max(50, args.calls // 20)
            with torch.no_grad():
                samples = measure(variants, x, calls, args.rounds, CLOCKS[args.clock])
            times = {variant: statistics.median(values) for variant, values in samples.items()}
            ratio, difference = added(samples, "mdl")
            print(f"{name:<5}{batch:>6}{times['plain'] * 1e6:>10.1f}{times['mdl'] * 1e6:>9.1f}{ratio:>7.3f}"
                  f"{difference * 1e6:>8.1f}{times['jaxtyping'] * 1e6:>14.1f}{times['icontract'] * 1e6:>14.1f}")


if __name__ == "__main__":
    main()
