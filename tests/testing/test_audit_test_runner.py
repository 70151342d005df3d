"""`mdl test` on modules that raise, in training mode, on empty or unloadable data sets.

A module that raises is a failure blamed on it in every backend (relational,
cost, statistical), never an internal error; modules are tested in eval mode
and their flags restored; a data set with no samples gives `unknown`; a data
binding that cannot be imported leaves the module's other verdicts reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.bindings import BindingError
from mdl_lang.replay import replay
from mdl_lang.report import Role, Verdict
from mdl_lang.testing import (
    ContractTester,
    ContractTestFailure,
    PartlyUntested,
    TestSettings,
    check_contracts,
    clause_items,
)

HEADER = """
labels C = {0..1}
dim B : batch
type In = Tensor[B, 2] float32 in [0, 1]
interface D { input x: In  output y: Tensor[B, C] float32 }
"""


class Raiser(nn.Module):
    """Raises on every call: whatever backend runs it meets the exception."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom")


def _spec(tmp_path: Path, body: str, data: str = "") -> mdl_lang.CheckedSpec:
    """A spec of HEADER and `body`; `data` is the source of a data binding module `data_<folder>` beside it."""
    module = f"data_{tmp_path.name}"
    if data:
        (tmp_path / f"{module}.py").write_text(data)
    path = tmp_path / "audit.mdl"
    path.write_text(HEADER + body.replace("DATA", module))
    return mdl_lang.load(path)


def _tester(spec: mdl_lang.CheckedSpec, name: str, module: nn.Module) -> ContractTester:
    tester = ContractTester(spec, TestSettings(max_examples=5, relational_examples=3, replay_dir=None))
    tester.provide(name, module)
    return tester


def _by_clause(results) -> dict:
    return {result.clause: result for result in results}


SAMPLES = """
import torch
def data():
    x = torch.rand(20, 2, generator=torch.Generator().manual_seed(0))
    return x, x.argmax(-1)
def empty():
    return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
"""


@pytest.mark.parametrize(("clause", "backend"), [
    ("ensures rel: self(x) == y within 1e-6", "pbt"),
    ("ensures mono: monotone(y[0], x[0])", "pbt"),
    ("ensures acc: accuracy(y) >= 0.5 on d", "stat"),
    ("cost { flops <= 100 per sample }", "cost"),
    ("cost { latency <= 100 ms at batch 4 }", "cost"),
])
def test_a_module_that_raises_fails_the_clause_and_is_blamed(tmp_path, clause, backend) -> None:
    spec = _spec(tmp_path, f'data d : (In, C) {{ python "DATA:data" }}\nmodule r : D {{ {clause} }}\n', SAMPLES)
    results = _tester(spec, "r", Raiser()).run("r")
    (result,) = [r for r in results if not r.clause.startswith("type of")]
    assert result.verdict is Verdict.FAIL and result.backend == backend
    assert result.message == "`r` raised ValueError"
    assert result.blame.party == "r" and result.blame.role is Role.MODULE and "boom" in result.blame.reason


def test_check_contracts_reports_a_module_that_raises_in_a_relational_clause(tmp_path) -> None:
    spec = _spec(tmp_path, "module r : D { ensures rel: self(x) == y within 1e-6 }\n")
    with pytest.raises(ContractTestFailure) as failure:
        check_contracts(spec, "r", Raiser(), settings=TestSettings(max_examples=3, relational_examples=2,
                                                                   replay_dir=None))
    assert _by_clause(failure.value.results)["rel"].verdict is Verdict.FAIL


def test_an_empty_data_set_is_unknown(tmp_path) -> None:
    spec = _spec(tmp_path, 'data e : (In, C) { python "DATA:empty" }\n'
                           "module m : D { ensures acc: accuracy(y) >= 0.5 on e }\n", SAMPLES)
    result = _by_clause(_tester(spec, "m", nn.Identity()).run("m"))["acc"]
    assert result.verdict is Verdict.UNKNOWN and "empty" in result.message


class DropoutNet(nn.Module):
    """The identity in eval mode; in training mode Dropout zeroes (and rescales) outputs at random."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x)


class BatchNormNet(nn.Module):
    """BatchNorm with fixed statistics: in training mode it fails on a batch of one and updates them."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def test_a_module_in_training_mode_is_tested_in_eval_mode_and_its_flags_restored(tmp_path) -> None:
    spec = _spec(tmp_path, "module drop : D { ensures det: self(x) == y within 1e-6 }\n"
                           "module norm : D { ensures fin: all(y > -1000) }\n")
    dropout, norm = DropoutNet().train(), BatchNormNet().train()
    norm.norm.eval()  # a mix of flags, each to be restored as it was
    before = norm.norm.running_mean.clone()
    tester = _tester(spec, "drop", dropout)
    tester.provide("norm", norm)
    results = {**_by_clause(tester.run("drop")), **_by_clause(tester.run("norm"))}
    assert {name: result.verdict for name, result in results.items()} == {
        "type of y": Verdict.PASS, "det": Verdict.PASS, "fin": Verdict.PASS,
    }
    assert dropout.training and dropout.drop.training and norm.training and not norm.norm.training
    assert torch.equal(norm.norm.running_mean, before)


def test_batch_norm_statistics_are_not_changed_by_a_test_run(tmp_path) -> None:
    spec = _spec(tmp_path, "module norm : D { ensures fin: all(y > -1000) }\n")
    norm = BatchNormNet().train()
    check_contracts(spec, "norm", norm, settings=TestSettings(max_examples=5, replay_dir=None))
    assert norm.training and norm.norm.training
    assert torch.equal(norm.norm.running_mean, torch.zeros(2)) and int(norm.norm.num_batches_tracked) == 0


def test_an_unloadable_data_binding_keeps_the_modules_other_verdicts(tmp_path) -> None:
    spec = _spec(tmp_path, 'data good : (In, C) { python "DATA:data" }\n'
                           'data broken : (In, C) { python "DATA:nosuch" }\n'
                           "module m : D {\n  ensures bad: y[0] <= 0.5\n  ensures ok: accuracy(y) >= 0.1 on good\n"
                           "  ensures lost: accuracy(y) >= 0.1 on broken\n}\n",
                 SAMPLES)
    with pytest.raises(PartlyUntested) as untested:
        _tester(spec, "m", nn.Identity()).run("m")
    results = _by_clause(untested.value.results)
    assert {name: result.verdict for name, result in results.items()} == {
        "type of y": Verdict.PASS, "bad": Verdict.FAIL, "ok": Verdict.PASS, "lost": Verdict.UNKNOWN,
    }
    assert "nosuch" in str(untested.value) and "nosuch" in results["lost"].message
    # One clause run alone (a pytest item) is the environment error itself, never a skip.
    (lost,) = [item for item in clause_items(spec, "m") if item.name == "lost"]
    with pytest.raises(BindingError, match="nosuch"):
        _tester(spec, "m", nn.Identity()).run_item(lost)


CENTRED = """
import torch
from torch import nn
class Centred(nn.Module):
    def forward(self, x):
        return x - x.mean(0, keepdim=True)
def centred():
    return Centred()
"""


def test_the_replay_of_a_failure_that_needs_its_batch_holds_the_whole_batch(tmp_path) -> None:
    spec = _spec(tmp_path, 'interface I { input x: In  output y: Tensor[B, 2] float32 }\n'
                           'module centred : I { python "DATA:centred"  ensures nn: y >= 0 }\n', CENTRED)
    tester = ContractTester(spec, TestSettings(max_examples=5, replay_dir=tmp_path / "reports"))
    result = _by_clause(tester.run("centred"))["nn"]
    assert result.verdict is Verdict.FAIL
    assert "the whole batch" in dict(result.witness.values)["replay holds"]
    assert replay(Path(result.witness.replay)).result.verdict is Verdict.FAIL
