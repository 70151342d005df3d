"""Seeded faults found by `mdl test` with the right blame and a small witness; correct modules pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mdl_lang
from mdl_lang.report import Role, Verdict
from mdl_lang.testing import ContractTester, TestSettings, check_contracts, clause_items

HERE = Path(__file__).parent
SPEC = HERE / "faults.mdl"


@pytest.fixture(scope="module")
def spec():
    return mdl_lang.load(SPEC)


def run(spec, component: str, clause: str, seed: int = 0, replay_dir=None):
    tester = ContractTester(spec, TestSettings(seed=seed, replay_dir=replay_dir))
    (item,) = [item for item in clause_items(spec, component) if item.name == clause]
    return tester.run_item(item), tester


def named(component: str, prefix: str, spec) -> str:
    return next(item.name for item in clause_items(spec, component) if item.name.startswith(prefix))


def test_nan_on_an_all_zero_row_is_found_and_shrunk(spec, tmp_path):
    clause = named("zero_nan", "ensures@", spec)
    result, _ = run(spec, "zero_nan", clause, replay_dir=tmp_path)
    assert result.verdict is Verdict.FAIL
    assert result.backend == "pbt"
    assert result.blame.party == "zero_nan" and result.blame.role is Role.MODULE
    saved = torch.load(result.witness.replay, weights_only=True)["inputs"]["x"]
    assert saved.shape[0] <= 2, "the witness is shrunk to one or two samples"
    assert (saved == 0).all(dim=1).any(), "the witness holds the all-zero row"


@pytest.mark.parametrize("seed", range(20))
def test_no_false_failures_on_a_correct_module(spec, seed):
    tester = ContractTester(spec, TestSettings(seed=seed, max_examples=30, replay_dir=None))
    results = tester.run("healthy")
    assert {r.verdict for r in results} <= {Verdict.PASS, Verdict.SKIP}, [r.message for r in results]


def test_a_classifier_that_is_not_robust_at_the_stated_eps(spec, tmp_path):
    result, _ = run(spec, "brittle", "robust", replay_dir=tmp_path)
    assert result.verdict is Verdict.FAIL
    assert result.blame.party == "brittle" and result.blame.role is Role.MODULE
    saved = torch.load(result.witness.replay, weights_only=True)["inputs"]
    assert set(saved) >= {"x", "x2"}
    assert (saved["x2"] - saved["x"]).abs().max() <= 0.1 + 1e-6
    assert ((saved["x2"] >= 0) & (saved["x2"] <= 1)).all()


@pytest.mark.parametrize("seed", range(3))
def test_a_classifier_that_is_robust_passes(spec, seed):
    result, _ = run(spec, "sturdy", "robust", seed=seed)
    assert result.verdict is Verdict.PASS, result.message


def test_a_cost_limit_exceeded(spec):
    result, _ = run(spec, "heavy", "params")
    assert result.verdict is Verdict.FAIL and result.backend == "cost"
    assert result.blame.party == "heavy"
    assert dict(result.witness.values)["measured"].startswith("90")
    entry = result.witness.to_json()["values"]
    assert isinstance(entry["measured"], (int, float)) and isinstance(entry["limit"], (int, float))


def test_a_clause_outside_every_backends_reach_is_an_error(spec):
    clause = next(item.name for item in clause_items(spec, "unmeasured") if item.backend == "stat")
    result, tester = run(spec, "unmeasured", clause)
    assert result.verdict is Verdict.UNKNOWN
    (diagnostic,) = tester.diagnostics
    assert diagnostic.code == "E0419" and diagnostic.is_error
    assert "nowhere" in diagnostic.message


def test_check_contracts_raises_with_the_blame_report(spec):
    import fault_models

    with pytest.raises(AssertionError, match="blame: zero_nan"):
        check_contracts(spec, "zero_nan", fault_models.zero_nan())
    results = check_contracts(spec, "healthy", fault_models.healthy())
    assert all(r.verdict is not Verdict.FAIL for r in results)
