"""A clause implied by a check the fast path reads is not read again, and the implication holds in floats.

`sum(softmax(y)) == 1 within t` follows from `finite(y)` when `t` covers the
rounding of the computed sum (`identities.softmax_sum_error`). These tests
hold torch's softmax, in both layouts the monitor computes it, to that bound
on finite scores chosen to be hard (huge, tiny, equal, subnormal), decide
which clauses the rule covers, and check that an implied clause is still
found failing on the slow path.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import mdl_lang
from mdl_lang.backends.torch import identities
from mdl_lang.backends.torch.boundary import Boundary
from mdl_lang.backends.torch.predicates import softmax

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _largest_error(scores: torch.Tensor) -> float:
    """max over rows of |sum(softmax(row)) - 1|, computed as the monitor computes it."""
    return float((softmax(scores).sum(-1) - 1).abs().max())


@settings(max_examples=300, deadline=None)
@given(
    row=st.lists(st.floats(-FLOAT32_MAX, FLOAT32_MAX, width=32), min_size=1, max_size=300),
    rows=st.sampled_from([1, 3, 1024]),  # 1024 rows take the monitor's moved-axis softmax
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_the_computed_sum_of_a_softmax_stays_within_the_bound(row, rows, dtype) -> None:
    scores = torch.tensor(row, dtype=dtype).expand(rows, len(row)).contiguous()
    assert _largest_error(scores) <= identities.softmax_sum_error(len(row))


@pytest.mark.parametrize("classes", [1, 2, 3, 7, 10, 100, 333, 1000, 4096])
@pytest.mark.parametrize("layout", ["rows", "moved"])
def test_equal_and_spread_scores_stay_within_the_bound(classes, layout) -> None:
    generator = torch.Generator().manual_seed(classes)
    rows = 2048 if layout == "moved" else 2
    equal = torch.zeros(rows, classes)
    # Rows from a spread of 1e-30 to the largest float32s: from near-equal scores to one that takes all.
    spread = torch.randn(rows, classes, generator=generator, dtype=torch.float64) * torch.logspace(
        -30, 38, rows, dtype=torch.float64).unsqueeze(1)
    for scores in (equal, spread, _finite_as(spread, torch.float32), _finite_as(spread, torch.float16).float(),
                   _finite_as(spread, torch.bfloat16).float()):
        assert _largest_error(scores) <= identities.softmax_sum_error(classes)


def _finite_as(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    largest = float(torch.finfo(dtype).max)
    return scores.clamp(-largest, largest).to(dtype)


SPEC = """
labels Digit = {{0..9}}
dim B : batch
dim K
interface Scores {{
  input  x: Tensor[B, 4] float32
  output y: {output}
  ensures {clause}
}}
module m : Scores
"""

FINITE_SCORES = "Tensor[B, Digit] float32 finite"


@pytest.mark.parametrize(("output", "clause", "implied"), [
    (FINITE_SCORES, "sum(softmax(y)) == 1 within 1e-4", True),
    (FINITE_SCORES, "sum(softmax(y)) == 1 within 1e-5", True),
    (FINITE_SCORES, "1 == sum(softmax(y)) within 1e-4", True),
    (FINITE_SCORES, "sum(softmax(y)) in [0.999, 1.001]", True),
    (FINITE_SCORES, "sum(softmax(y)) <= 1.001", True),
    (FINITE_SCORES, "0.5 < sum(softmax(y))", True),
    (FINITE_SCORES, "sum(softmax(y)) == 1 within 1e-7", False),  # within float rounding: computed
    (FINITE_SCORES, "sum(softmax(y)) <= 1", False),
    (FINITE_SCORES, "sum(softmax(y)) == 2 within 0.5", False),
    (FINITE_SCORES, "sum(softmax(y * 2)) == 1 within 1e-4", False),  # y * 2 may overflow
    (FINITE_SCORES, "0.5 < sum(softmax(y)) < 2", False),  # chained: not recognised, read as before
    ("Tensor[B, Digit] float32 in [-5, 5]", "sum(softmax(y)) == 1 within 1e-4", True),
    ("Tensor[B, Digit] float16 finite", "sum(softmax(y)) == 1 within 1e-4", True),
    ("Tensor[B, Digit] float32", "sum(softmax(y)) == 1 within 1e-4", False),  # not checked finite
    ("Tensor[B, Digit] float finite", "sum(softmax(y)) == 1 within 1e-4", False),  # any float dtype
    ("Tensor[B, K] float32 finite", "sum(softmax(y)) == 1 within 1e-4", False),  # classes unknown
    ("Tensor[B, 3, Digit] float32 finite", "sum(softmax(y)) == 3 within 1e-4", False),  # rows per sample
    ("Tensor[B, 5000] float32 finite", "sum(softmax(y)) == 1 within 1e-4", False),  # bound above 1e-4
])
def test_which_clauses_a_finite_port_implies(tmp_path, output, clause, implied) -> None:
    path = tmp_path / "scores.mdl"
    path.write_text(SPEC.format(output=output, clause=clause))
    spec = mdl_lang.load(path)
    boundary = Boundary("m", spec.component("m"), spec.sources)
    (check,) = (check for check in boundary.ensures if check.clause is not None)
    assert check.implied is implied


class _Operations(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


class _Scores(nn.Module):
    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores


@pytest.fixture
def implied_spec(tmp_path):
    path = tmp_path / "scores.mdl"
    path.write_text(SPEC.format(output=FINITE_SCORES, clause="simplex: sum(softmax(y)) == 1 within 1e-4"))
    return mdl_lang.load(path)


def test_an_implied_clause_is_not_read_on_a_passing_call(implied_spec) -> None:
    monitored = implied_spec.bind("m", _Scores(torch.randn(256, 10)), replay_dir=None)
    with _Operations() as operations:
        monitored(torch.zeros(256, 4))
    assert not any("softmax" in name for name in operations.names), operations.names


def test_an_implied_clause_still_fails_where_its_port_is_not_finite(implied_spec) -> None:
    scores = torch.randn(6, 10)
    scores[2, 3] = float("nan")
    scores[4, 0] = float("inf")
    monitored = implied_spec.bind("m", _Scores(scores), mode="record", replay_dir=None)
    monitored(torch.zeros(6, 4))
    failed = {result.clause: result.witness.samples for result in monitored.reports}
    assert failed == {"finite(y)": (2, 4), "simplex": (2, 4)}
