"""The KMNIST-1 vote with one module damaged: its class's recall drops and `mdl test` blames that part.

Reads ../shared/data/fse20-kmnist1 (or MDL_KMNIST_DIR) and fails loudly if it is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mdl_lang
from mdl_lang.bindings import parts_for
from mdl_lang.report import Role, Verdict
from mdl_lang.testing import ContractTester, TestSettings, clause_items

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kmnist():
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(REPO)
    from examples.kmnist import fixtures

    yield mdl_lang.load(REPO / "specs" / "kmnist.mdl"), fixtures
    monkeypatch.undo()


def damaged_copy(fixtures, label: int) -> torch.nn.Module:
    """The paper's module for `label` with Gaussian noise (one standard deviation) on every weight."""
    module = fixtures.load_module(label)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * parameter.std())
    return module


def vote_results(spec, parts):
    tester = ContractTester(spec, TestSettings(replay_dir=None))
    tester.provide("voted", parts=parts)
    items = [item for item in clause_items(spec, "voted") if item.backend == "stat"]
    return {item.name: tester.run_item(item) for item in items}


def test_the_healthy_vote_keeps_its_statistical_clauses(kmnist):
    spec, _ = kmnist
    results = vote_results(spec, parts_for(spec, spec.component("voted")))
    assert {r.verdict for r in results.values()} == {Verdict.PASS}, [r.message for r in results.values()]


def test_a_damaged_module_is_blamed_for_the_votes_recall(kmnist):
    spec, fixtures = kmnist
    parts = parts_for(spec, spec.component("voted"))
    parts["module3"] = damaged_copy(fixtures, 3)
    results = vote_results(spec, parts)
    per_class = results["per_class"]
    assert per_class.verdict is Verdict.FAIL and per_class.backend == "stat"
    assert per_class.blame.party == "module3"
    assert per_class.blame.role is Role.MODULE
    assert per_class.blame.path == ("voted", "module3")
    assert any(name.startswith("recall(y, 3)") for name, _ in per_class.witness.values)
