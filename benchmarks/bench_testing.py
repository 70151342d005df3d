"""Finding seeded faults: `mdl test` against a plain per-sample hypothesis test, in the same run.

For each seeded fault of tests/testing/faults.mdl (a module that returns NaN on an
all-zero row; one that returns NaN on about one sample in a hundred; a classifier
that is not robust at the stated eps) it times the search
to the first confirmed, shrunk counterexample and reports the witness's size, for
`mdl test` (batched generation, vectorised checks, a gradient attack for the
relational clause) and for the test a user would write by hand with hypothesis:
one sample per example drawn with `hypothesis.extra.numpy.arrays`, the clause
checked in Python, the ball sampled at random.

    python benchmarks/bench_testing.py [--seeds 5]

Target: every fault found within the default budget (100 examples per clause, 20
for relational clauses), and at least 10x faster than the per-sample baseline on
the batched cases. Needs numpy (in the dev extra).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import mdl_lang
from mdl_lang.report import Verdict
from mdl_lang.testing import ContractTester, TestSettings, clause_items

FAULTS = Path(__file__).resolve().parents[1] / "tests" / "testing"
sys.path.insert(0, str(FAULTS))
import fault_models  # noqa: E402 - the seeded modules live beside the spec that binds them

BUDGET = 100
EPS = 0.1


def mdl_search(spec, component: str, clause_prefix: str, run_seed: int) -> tuple[float, bool, int]:
    """Seconds to a confirmed shrunk counterexample, whether one was found, and its size in samples."""
    (item,) = [i for i in clause_items(spec, component) if i.name.startswith(clause_prefix)][:1]
    tester = ContractTester(spec, TestSettings(seed=run_seed, replay_dir=None))
    tester._raw(component)  # bind the module before the clock starts
    start = time.perf_counter()
    result = tester.run_item(item)
    elapsed = time.perf_counter() - start
    found = result.verdict is Verdict.FAIL
    return elapsed, found, len(result.witness.samples) if found and result.witness else 0


class _Found(Exception):
    pass


def baseline_search(property_: Callable, strategy, run_seed: int) -> tuple[float, bool, int]:
    """The hand-written per-sample hypothesis test: seconds to its shrunk failure, found, size (1 sample)."""
    test = seed(run_seed)(settings(
        max_examples=BUDGET, database=None, deadline=None, suppress_health_check=list(HealthCheck),
    )(given(strategy)(property_)))
    start = time.perf_counter()
    try:
        test()
    except _Found:
        return time.perf_counter() - start, True, 1
    return time.perf_counter() - start, False, 0


def nan_property(model: torch.nn.Module) -> Callable:
    def property_(x: np.ndarray) -> None:
        with torch.no_grad():
            y = model(torch.from_numpy(x)[None])
        if not torch.isfinite(y).all():
            raise _Found

    return property_


def robust_property(model: torch.nn.Module) -> Callable:
    def property_(pair: tuple[np.ndarray, np.ndarray]) -> None:
        x, delta = (torch.from_numpy(part)[None] for part in pair)
        if 0.3 < float(x[0, 0]) < 0.7:
            return  # the requires `away`: this sample is not the caller's to give
        with torch.no_grad():
            x2 = (x + delta.clamp(-EPS, EPS)).clamp(0, 1)
            if model(x).argmax(1) != model(x2).argmax(1):
                raise _Found

    return property_


def unit(shape: int) -> st.SearchStrategy:
    return arrays(np.float32, (shape,), elements=st.floats(0, 1, width=32))


def ball(shape: int) -> st.SearchStrategy:
    radius = float(np.float32(EPS))
    return st.tuples(unit(shape), arrays(np.float32, (shape,), elements=st.floats(-radius, radius, width=32)))


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--seeds", type=int, default=5)
    args = options.parse_args()
    torch.set_num_threads(1)
    spec = mdl_lang.load(FAULTS / "faults.mdl")
    cases = [
        ("NaN on a zero row", "zero_nan", "ensures@", lambda: nan_property(fault_models.zero_nan()), unit(8)),
        ("NaN on a rare input", "rare_nan", "ensures@", lambda: nan_property(fault_models.rare_nan()), unit(8)),
        ("not robust at eps 0.1", "brittle", "robust", lambda: robust_property(fault_models.brittle()), ball(2)),
    ]
    print(f"budget {BUDGET} examples per clause; {args.seeds} seeds; torch 1 thread")
    print("s/find: the time of all runs over the faults found (a run that finds nothing costs its whole budget)")
    print(f"{'fault':<22}{'mdl s/find':>11}{'found':>7}{'witness':>9}{'baseline s/find':>16}{'found':>7}{'ratio':>8}")
    for label, component, clause, baseline, strategy in cases:
        mdl = [mdl_search(spec, component, clause, s) for s in range(args.seeds)]
        plain = [baseline_search(baseline(), strategy, s) for s in range(args.seeds)]
        mdl_found = sum(f for _, f, _ in mdl)
        plain_found = sum(f for _, f, _ in plain)
        mdl_cost = sum(t for t, _, _ in mdl) / max(mdl_found, 1)
        plain_cost = sum(t for t, _, _ in plain) / max(plain_found, 1)
        witness = statistics.median(w for _, f, w in mdl if f) if mdl_found else 0
        print(f"{label:<22}{mdl_cost:>11.3f}{mdl_found:>4}/{args.seeds}{witness:>9.0f}"
              f"{plain_cost:>16.3f}{plain_found:>4}/{args.seeds}{plain_cost / mdl_cost:>7.1f}x")


if __name__ == "__main__":
    main()
