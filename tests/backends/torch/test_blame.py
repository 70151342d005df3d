"""One test per row of the blame table (LANGUAGE.md section 7), on a composed system with a seeded fault."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.monitor import ContractViolation
from mdl_lang.report import Role, Verdict

SPEC = Path(__file__).parent / "specs" / "system.mdl"


class Normalizer(nn.Module):
    """Maps [0, 1]^16 to [0, 1]^8; `shift` moves the output down by that much."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 8)
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(x)) - self.shift


class Classifier(nn.Module):
    """Softmax scores over `classes`; `fault` seeds NaN in every other row or a flat (unconfident) output."""

    def __init__(self, classes: int = 10, fault: str | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(8, classes)
        self.fault = fault

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x)
        if self.fault == "flat":
            logits = logits * 0
        scores = torch.softmax(logits, dim=-1)
        if self.fault == "nan":
            every_other_row = (torch.arange(x.shape[0], device=x.device) % 2 == 0).unsqueeze(1)
            scores = torch.where(every_other_row, torch.full_like(scores, float("nan")), scores)
        return scores


@pytest.fixture(scope="module")
def spec():
    return mdl_lang.load(SPEC)


def bind_pipeline(spec, name="pipeline", normalizer=None, classifier=None, mode="raise"):
    first = "shifter" if name == "loose_pipeline" else "normalize"
    parts = {first: normalizer or Normalizer(), "classify": classifier or Classifier()}
    return spec.bind(name, parts=parts, mode=mode, replay_dir=None)


def inputs(batch: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 16, generator=generator)


def only_failure(model):
    failures = [r for r in model.reports if r.verdict is Verdict.FAIL]
    assert failures, "expected a contract violation"
    return failures


def test_caller_passes_data_out_of_range(spec):
    model = bind_pipeline(spec)
    with pytest.raises(ContractViolation) as raised:
        model(inputs() * 3)
    result = raised.value.result
    assert result.blame.party == "caller"
    assert result.blame.role is Role.CALLER
    assert result.blame.path == ("pipeline",)
    assert result.clause == "x in [0, 1]"
    assert result.kind == "requires"
    assert len(result.witness.samples) > 0


def test_upstream_module_whose_ensures_fails_is_blamed_twice(spec):
    model = bind_pipeline(spec, normalizer=Normalizer(shift=0.6), mode="record")
    model(inputs())
    failures = only_failure(model)
    own = [r for r in failures if r.component == "normalize"]
    downstream = [r for r in failures if r.component == "classify"]
    assert own[0].clause == "tight"
    assert own[0].blame.party == "normalize" and own[0].blame.role is Role.MODULE
    assert own[0].blame.path == ("pipeline", "normalize")
    # The classifier's requires broke on that output: blame stays with the normalizer.
    assert downstream[0].kind == "requires" and downstream[0].clause == "nonnegative"
    assert downstream[0].blame.party == "normalize"
    assert downstream[0].blame.role is Role.MODULE
    assert "tight" in downstream[0].blame.reason


def test_upstream_module_raises_at_its_own_clause(spec):
    model = bind_pipeline(spec, normalizer=Normalizer(shift=0.6))
    with pytest.raises(ContractViolation) as raised:
        model(inputs())
    assert raised.value.result.blame.party == "normalize"
    assert raised.value.result.clause == "tight"


def test_parts_that_keep_their_contracts_but_do_not_fit(spec):
    model = bind_pipeline(spec, name="loose_pipeline", normalizer=Normalizer(shift=0.6))
    with pytest.raises(ContractViolation) as raised:
        model(inputs())
    result = raised.value.result
    assert result.component == "classify" and result.clause == "nonnegative"
    assert result.blame.party == "loose_pipeline"
    assert result.blame.role is Role.COMPOSITION
    assert result.blame.path == ("loose_pipeline", "classify")
    assert "do not fit" in result.blame.reason


def test_module_producing_nan(spec):
    model = bind_pipeline(spec, classifier=Classifier(fault="nan"))
    with pytest.raises(ContractViolation) as raised:
        model(inputs())
    result = raised.value.result
    assert result.blame.party == "classify"
    assert result.blame.role is Role.MODULE
    assert result.blame.path == ("pipeline", "classify")
    assert result.kind == "ensures" and "finite(y)" in result.message
    assert "NaN" in str(raised.value)


def test_composition_clause_fails_while_all_parts_hold(spec):
    model = bind_pipeline(spec, classifier=Classifier(fault="flat"), mode="record")
    model(inputs())
    failures = only_failure(model)
    assert [r.clause for r in failures] == ["confident"]
    result = failures[0]
    assert result.blame.party == "pipeline"
    assert result.blame.role is Role.COMPOSITION
    assert result.blame.path == ("pipeline",)
    assert result.witness.values, "the report shows the clause's sub-expressions"


def test_module_bound_alone_blames_caller_and_module(spec):
    classifier = spec.bind("classify", Classifier(fault="nan"), mode="record", replay_dir=None)
    classifier(-inputs()[:, :8])
    requires = [r for r in classifier.reports if r.kind == "requires"]
    assert requires and requires[0].blame.party == "caller"
    classifier.reports.clear()
    classifier(inputs()[:, :8])
    assert classifier.reports[0].blame.party == "classify"


def test_no_false_blame_over_a_thousand_random_batches(spec):
    pipeline = bind_pipeline(spec, mode="record")
    classify = spec.bind("classify", Classifier(), mode="record", replay_dir=None)
    generator = torch.Generator().manual_seed(7)
    for _ in range(1000):
        batch = int(torch.randint(1, 65, (1,), generator=generator))
        x = torch.rand(batch, 16, generator=generator)
        pipeline(x)
        classify(torch.rand(batch, 8, generator=generator))
    assert pipeline.reports == [] and classify.reports == []


def test_warn_mode_warns_and_off_mode_is_silent(spec):
    model = bind_pipeline(spec, mode="warn")
    with pytest.warns(UserWarning, match="caller"):
        model(inputs() * 3)
    reported = len(model.reports)
    # The composition and its first part both check the caller's data; both blame the caller.
    assert reported == 2 and {r.blame.party for r in model.reports} == {"caller"}
    with mdl_lang.monitor_mode("off"):
        model(inputs() * 3)
    assert len(model.reports) == reported


def test_sampling_checks_one_call_in_n(spec):
    model = spec.bind("pipeline", parts={"normalize": Normalizer(), "classify": Classifier()},
                      mode="record", every=3, replay_dir=None)
    for _ in range(6):
        model(inputs() * 3)
    checked_calls = {r.witness.samples for r in model.reports if r.component == "pipeline"}
    assert len([r for r in model.reports if r.component == "pipeline"]) == 2
    assert checked_calls
