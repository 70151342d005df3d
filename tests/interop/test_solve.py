"""`verify_cases`: a joint pass, then one query per unsafe case; verdicts combine as a disjunction."""

from __future__ import annotations

import pytest
import torch

from mdl_lang.interop import solve
from mdl_lang.verify.network import Affine, Network, Relu
from mdl_lang.verify.query import LinearConstraint, Outcome, Query


def _network() -> Network:
    """y0 = relu(x0 - x1), y1 = 0.5."""
    first = Affine(0, torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    second = Affine(2, torch.tensor([[1.0], [0.0]], dtype=torch.float64), torch.tensor([0.0, 0.5], dtype=torch.float64))
    return Network((2,), (first, Relu(1), second), 3, ("fc1", "relu", "fc2"))


def _query(high: float) -> Query:
    """Unsafe: y0 >= 1, or y0 <= -1 (never: y0 is a ReLU)."""
    cases = ((LinearConstraint.less_equal(2, {0: -1.0}, -1.0),), (LinearConstraint.less_equal(2, {0: 1.0}, -1.0),))
    return Query(torch.zeros(2, dtype=torch.float64), torch.full((2,), high, dtype=torch.float64), cases, name="q")


@pytest.fixture
def joint_undecided(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The joint pass answers unknown, so the per-case path runs; records how many cases each call had."""
    calls: list[int] = []
    real = solve.verify_query

    def fake(network: Network, query: Query, **options: object) -> Outcome:
        calls.append(len(query.unsafe))
        if len(query.unsafe) > 1:
            return Outcome("unknown", "joint pass undecided (test)")
        return real(network, query, **options)

    monkeypatch.setattr(solve, "verify_query", fake)
    return calls


def test_every_case_proved_on_its_own(joint_undecided: list[int]) -> None:
    outcome = solve.verify_cases(_network(), _query(0.75), timeout_s=10)
    assert outcome.verdict == "proved" and outcome.reason == "each of the 2 unsafe cases proved on its own"
    assert joint_undecided == [2, 1, 1]


def test_first_refuted_case_refutes_with_its_point(joint_undecided: list[int]) -> None:
    outcome = solve.verify_cases(_network(), _query(1.0), timeout_s=10)
    assert outcome.verdict == "refuted" and outcome.reason.startswith("unsafe case 1: ")
    assert outcome.counterexample is not None and outcome.counterexample.tolist() == [1.0, 0.0]
    assert joint_undecided == [2, 1]


def test_joint_pass_settles_easy_queries_alone() -> None:
    outcome = solve.verify_cases(_network(), _query(0.75), timeout_s=10)
    assert outcome.verdict == "proved" and "unsafe cases" not in outcome.reason
