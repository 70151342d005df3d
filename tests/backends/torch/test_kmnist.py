"""The ESEC/FSE 2020 KMNIST-1 fixtures bound through mdl: the paper's figures, and the input precondition.

Reads ../shared/data/fse20-kmnist1 (or MDL_KMNIST_DIR) and fails loudly if it is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mdl_lang
from mdl_lang.backends.torch.monitor import ContractViolation
from mdl_lang.bindings import module_for, parts_for
from mdl_lang.report import Role

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "specs" / "kmnist.mdl"
PAPER_MODEL_CORRECT = 7602
PAPER_VOTE_CORRECT = 7603
SUMMATION_SLACK = 3


@pytest.fixture(scope="module")
def kmnist(request):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(REPO)
    request.addfinalizer(monkeypatch.undo)
    from examples.kmnist import fixtures

    spec = mdl_lang.load(SPEC)
    inputs, labels = fixtures.test_split()
    return spec, inputs, labels


def correct(model, inputs: torch.Tensor, labels: torch.Tensor) -> int:
    with torch.no_grad():
        return sum(
            int((model(inputs[start:start + 1000]).argmax(dim=1) == labels[start:start + 1000]).sum())
            for start in range(0, len(inputs), 1000)
        )


def test_model_through_mdl_gives_the_papers_accuracy(kmnist):
    spec, inputs, labels = kmnist
    model = spec.bind("kmnist", module_for(spec.component("kmnist"), spec.file), mode="record", replay_dir=None)
    count = correct(model, inputs, labels)
    print(f"KMNIST-1 model through mdl: {count / 100:.2f}% (paper 76.02%)")
    assert abs(count - PAPER_MODEL_CORRECT) <= SUMMATION_SLACK
    assert model.reports == []


def test_voted_modules_through_mdl_give_the_papers_accuracy(kmnist):
    spec, inputs, labels = kmnist
    voted = spec.bind("voted", parts=parts_for(spec, spec.component("voted")), mode="record", replay_dir=None)
    count = correct(voted, inputs, labels)
    print(f"KMNIST-1 vote of the ten modules through mdl: {count / 100:.2f}% (paper 76.03%)")
    assert abs(count - PAPER_VOTE_CORRECT) <= SUMMATION_SLACK
    assert voted.reports == [], "no part breaks its contract on the data it was made for"


def test_inputs_scaled_to_unit_range_are_the_callers_fault(kmnist):
    spec, inputs, _ = kmnist
    voted = spec.bind("voted", parts=parts_for(spec, spec.component("voted")), replay_dir=None)
    with pytest.raises(ContractViolation) as raised:
        voted(inputs[:100] * 255)
    result = raised.value.result
    assert result.kind == "requires"
    assert result.blame.party == "caller" and result.blame.role is Role.CALLER
    assert result.blame.path == ("voted",)
    assert result.clause.startswith("x in [0, 0.00392")
    assert len(result.witness.samples) == 100
