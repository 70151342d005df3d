"""Regressions from the `mdl test` / `mdl replay` audit: balls kept inside the requires, output types tested,
composition blame of statistical and cost clauses, malformed data sets, and replays that re-check what failed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import mdl_lang
from mdl_lang.cli import main
from mdl_lang.replay import replay
from mdl_lang.report import Role, Verdict
from mdl_lang.testing import ContractTester, TestSettings, clause_items

SPEC = """
dim B : batch
labels Two = {0, 1}
type In = Tensor[B, 2] float32 in [0, 1]
interface Cls { input x: In  output y: Tensor[B, Two] float32 }
interface Half {
  input x: In
  output y: Tensor[B, Two] float32
  requires x[0] <= 0.5
}
interface Pre { input x: In  output y: Tensor[B, 2] float32 }
interface Head { input x: Tensor[B, 2] float32  output y: Tensor[B, Two] float32 }
interface Part[L] { input x: In  output y: Tensor[B, L] float32 in [0, 1] }
interface Voted { input x: In  output y: Tensor[B, Two] float32 in [0, 1] }

data noisy : (In, Two) { python "audit_models:noisy" }
data clean : (In, Two) { python "audit_models:clean" }

# every admissible x2 has x2[0] <= 0.5 < 0.55, so the argmax never changes
module thresh : Half {
  python "audit_models:thresh"
  ensures robust: forall x2 within 0.1 of x (linf): argmax(self(x2)) == argmax(y)
}
module wrong_shape : Cls { python "audit_models:three_outputs"  ensures y[0] <= 100 }
module wrong_dtype : Cls { python "audit_models:float64_outputs"  ensures y[0] <= 100 }
module no_clause : Cls { python "audit_models:three_outputs" }

module pre : Pre { python "audit_models:identity" }
module head : Head { python "audit_models:diff" }
compose pipe : Cls = pre >> head {
  ensures acc: accuracy(y) >= 0.9 on noisy
  cost { params <= 11 }
}

module p0 : Part[{0} | other] { python "audit_models:p0"  ensures recall(y, 0) >= 0.9 on clean }
module p1g : Part[{1} | other] { python "audit_models:p1_good"  ensures recall(y, 1) >= 0.9 on clean }
module p1b : Part[{1} | other] { python "audit_models:p1_bad"  ensures rec1: recall(y, 1) >= 0.9 on clean }
compose vgood : Voted = vote(p0, p1g)
compose broke : Voted = replace(vgood, p1g, p1b) { ensures acc: accuracy(y) >= 0.95 on clean }

module diff : Cls {
  python "audit_models:diff"
  ensures confbad: abs(y[0]) >= 0.2 implies forall x2 within 0.11 of x (linf): argmax(self(x2)) == argmax(y)
}
"""

BAD_DATA_SPEC = """
dim B : batch
labels Two = {0, 1}
type In = Tensor[B, 2] float32 in [0, 1]
interface Cls { input x: In  output y: Tensor[B, Two] float32 }
data dd : (In, Two) { python "audit_models:FACTORY" }
module diff : Cls { python "audit_models:diff"  ensures acc: accuracy(y) >= 0.9 on dd }
"""

NESTED_SPEC = """
labels D = {0, 1}
dim B : batch
type In = Tensor[B, 2] float32 in [0, 1]
interface C[L] { input x: In  output y: Tensor[B, L] float32 in [0, 1] }
module m0 : C[{0} | other] { python "audit_models:part0" }
module m1 : C[{1} | other] { python "audit_models:part1" }
module m1_v2 : C[{1} | other] { python "audit_models:part1_over" }
compose v : C[D] = vote(m0, m1)
compose r : C[D] = replace(v, m1, m1_v2)
"""

MODELS = '''
import torch
from torch import nn


def _linear(weight, bias):
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return nn.Sequential(layer).eval()  # `mdl verify` reads a Sequential of layers


def diff():
    return _linear([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0])


def identity():
    return _linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])


def thresh():
    return _linear([[-1.0, 0.0], [1.0, 0.0]], [0.55, -0.55])


def three_outputs():
    return nn.Linear(2, 3).eval()


class Float64(nn.Module):
    def forward(self, x):
        return torch.stack([x[:, 0] - x[:, 1], x[:, 1] - x[:, 0]], -1).double()


def float64_outputs():
    return Float64()


def p0():
    return nn.Sequential(_linear([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0]), nn.Softmax(dim=-1))


def p1_good():
    return nn.Sequential(_linear([[-1.0, 1.0], [1.0, -1.0]], [0.0, 0.0]), nn.Softmax(dim=-1))


def p1_bad():
    return nn.Sequential(_linear([[-1.0, 1.0], [1.0, -1.0]], [-0.4, 0.4]), nn.Softmax(dim=-1))


def clean():
    x = torch.rand(400, 2, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 1] > x[:, 0]).long()


def noisy():
    x, y = clean()
    flip = torch.rand(len(y), generator=torch.Generator().manual_seed(5)) < 0.3
    return x, torch.where(flip, 1 - y, y)


def bad_labels():
    x, y = clean()
    y[0] = 7
    return x, y


def inputs_n1():
    x, y = clean()
    return x[:, :1], y


def labels_n1():
    x, y = clean()
    return x, y[:, None]


def inputs_float64():
    x, y = clean()
    return x.double(), y


def count_mismatch():
    x, y = clean()
    return x, y[:10]


def out_of_range():
    x, y = clean()
    return x * 5, y


class Part(nn.Module):
    def __init__(self, k, scale=1.0):
        super().__init__()
        self.k, self.scale = k, scale

    def forward(self, x):
        s = x[:, self.k]
        return torch.stack([s * self.scale, 1 - s], 1)


def part0():
    return Part(0)


def part1():
    return Part(1)


def part1_over():
    return Part(1, 2.0)
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "audit.mdl").write_text(textwrap.dedent(SPEC))
    (tmp_path / "nested.mdl").write_text(textwrap.dedent(NESTED_SPEC))
    (tmp_path / "audit_models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def spec(project):
    return mdl_lang.load(project / "audit.mdl")


def run(spec, component: str, clause: str, replay_dir=None):
    tester = ContractTester(spec, TestSettings(seed=0, replay_dir=replay_dir))
    (item,) = [item for item in clause_items(spec, component) if item.name == clause]
    return tester.run_item(item), tester


# ---------------------------------------------------------------- T1: x2 stays inside the requires


def test_ball_points_that_break_the_requires_are_no_counterexample(spec):
    result, _ = run(spec, "thresh", "robust")
    assert result.verdict is Verdict.PASS, result.message


# ---------------------------------------------------------------- T2: output types are tested items


@pytest.mark.parametrize(("module", "problem"), [("wrong_shape", "shape"), ("wrong_dtype", "dtype")])
def test_a_wrong_output_type_fails_with_blame_on_the_module(spec, module, problem):
    result, _ = run(spec, module, "type of y")
    assert result.verdict is Verdict.FAIL and problem in result.message
    assert result.blame.party == module and result.blame.role is Role.MODULE


def test_a_module_without_clauses_still_has_its_output_type_tested(project, capsys):
    assert main(["test", "audit.mdl", "--module", "no_clause", "--max-examples", "5"]) == 1
    assert "`y` has shape" in capsys.readouterr().out


# ---------------------------------------------------------------- T7: composition blame


def test_a_pipelines_own_statistical_clause_blames_the_composition(spec):
    result, _ = run(spec, "pipe", "acc")
    assert result.verdict is Verdict.FAIL
    assert (result.blame.party, result.blame.role) == ("pipe", Role.COMPOSITION)


def test_a_compositions_cost_blames_the_composition(spec):
    (item,) = [item for item in clause_items(spec, "pipe") if item.backend == "cost"]
    result = ContractTester(spec, TestSettings(replay_dir=None)).run_item(item)
    assert result.verdict is Verdict.FAIL
    assert (result.blame.party, result.blame.role) == ("pipe", Role.COMPOSITION)


def test_a_replace_of_a_named_vote_blames_the_failing_part(spec):
    result, _ = run(spec, "broke", "acc")
    assert result.verdict is Verdict.FAIL
    assert (result.blame.party, result.blame.role) == ("p1b", Role.MODULE)
    assert result.blame.path == ("broke", "p1b")


# ---------------------------------------------------------------- T8: data sets of the wrong form


@pytest.mark.parametrize(("factory", "problem"), [
    ("bad_labels", "not positions of Two"),
    ("inputs_n1", "has shape [400, 1]"),
    ("labels_n1", "labels of shape [400, 1]"),
    ("inputs_float64", "expected dtype float32"),
    ("count_mismatch", "labels of shape [10]"),
    ("out_of_range", "outside Tensor[B, 2] float32 in [0, 1]"),
])
def test_a_data_set_of_the_wrong_form_is_an_error_at_its_declaration(project, factory, problem):
    (project / "bad.mdl").write_text(textwrap.dedent(BAD_DATA_SPEC).replace("FACTORY", factory))
    spec = mdl_lang.load(project / "bad.mdl")
    result, tester = run(spec, "diff", "acc")
    assert result.verdict is Verdict.UNKNOWN and problem in result.message
    (diagnostic,) = tester.diagnostics
    assert diagnostic.code == "E0419" and diagnostic.is_error
    assert (diagnostic.span.line, diagnostic.span.column) == (6, 1), "at the `data` declaration"
    assert main(["test", "bad.mdl"]) == 1


# ---------------------------------------------------------------- replay: what ran, from anywhere, at x2


def _nested_failure(project, folder: str) -> str:
    spec = mdl_lang.load("nested.mdl")
    import audit_models

    model = spec.bind("r", parts={"m0": audit_models.part0(), "m1_v2": audit_models.part1_over()},
                      mode="record", replay_dir=folder)
    model(torch.tensor([[0.1, 0.9]]))
    return next(r.witness.replay for r in model.reports if r.component == "v")


def test_replay_inside_a_replace_never_claims_the_failure_is_gone(project):
    file = Path(_nested_failure(project, "reports"))
    assert replay(file).reproduced  # the monitor records where `v` ran: inside `r`, with `m1` replaced
    saved = torch.load(file, weights_only=True)
    del saved["path"]  # a file that does not say where its component ran
    torch.save(saved, file)
    outcome = replay(file)
    assert outcome.verdict is Verdict.UNKNOWN and "`r` runs `v` with parts replaced" in outcome.text


def test_replay_rebuilds_a_component_at_its_recorded_path(project):
    file = Path(_nested_failure(project, "reports"))
    saved = torch.load(file, weights_only=True)
    torch.save({**saved, "path": ["r", "v"]}, file)
    outcome = replay(file)
    assert outcome.reproduced, outcome.text
    assert "of `v` failed" in outcome.text


def test_replay_finds_a_relative_spec_from_another_folder(project, monkeypatch):
    file = (project / _nested_failure(project, "reports")).resolve()
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    saved = torch.load(file, weights_only=True)
    assert Path(saved["spec"]).is_absolute()
    torch.save({**saved, "spec": "nested.mdl"}, file)  # relative to the folder it was written from
    assert replay(file).reproduced


def test_a_robustness_refutation_of_mdl_verify_replays_at_its_centre_and_point(project, capsys, monkeypatch):
    torch.save(torch.tensor([[0.6, 0.4]]), project / "points.pt")
    assert main(["verify", "audit.mdl", "--module", "diff", "--points", "points.pt", "--replay-dir", "out"]) == 1
    saved = torch.load(project / "out" / "diff-confbad-point0-verify.pt", weights_only=True)
    assert set(saved["inputs"]) == {"x", "x2"} and Path(saved["spec"]).is_absolute()
    capsys.readouterr()
    monkeypatch.chdir(project / "out")
    assert main(["replay", "diff-confbad-point0-verify.pt"]) == 1
    assert "fails again at the saved point" in capsys.readouterr().out


def test_a_saved_point_that_breaks_the_requires_is_reported_as_none(spec, project):
    torch.save({
        "schema": "mdl-replay/1", "spec": "audit.mdl", "component": "thresh", "clause": "robust", "kind": "ensures",
        "samples": [0], "inputs": {"x": torch.tensor([[0.5, 0.5]]), "x2": torch.tensor([[0.58, 0.5]])},
    }, project / "thresh.pt")
    outcome = replay(project / "thresh.pt")
    assert not outcome.reproduced and "breaks a requires" in outcome.text


def test_a_relational_replay_without_the_searched_point_is_unknown(project):
    torch.save({
        "schema": "mdl-replay/1", "spec": "audit.mdl", "component": "diff", "clause": "confbad", "kind": "ensures",
        "samples": [0], "inputs": {"x": torch.tensor([[0.9, 0.1]])},
    }, project / "diff.pt")
    outcome = replay(project / "diff.pt")
    assert outcome.verdict is Verdict.UNKNOWN and "holds no searched point" in outcome.text
