"""Reports leave the process: mdl-report/1 JSON, `mdl blame` on it, and `mdl replay` of saved inputs."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

import mdl_lang
from mdl_lang.cli import main
from mdl_lang.report import Report, Result, render_result

SPEC = textwrap.dedent("""
    labels Digit = {0..9}
    dim B : batch
    interface Classifier {
      input  x: Tensor[B, 4] float32 in [0, 1]
      output y: Tensor[B, Digit] float32
      ensures scores: finite(y)
    }
    module broken : Classifier { python "models:broken" }
    module unbound : Classifier
""")

MODELS = textwrap.dedent("""
    import torch

    class Broken(torch.nn.Module):
        def forward(self, x):
            y = torch.zeros(x.shape[0], 10)
            return torch.where(x[:, :1] > 0.5, torch.full_like(y, float("nan")), y)

    def broken():
        return Broken()
""")


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "spec.mdl").write_text(SPEC)
    (tmp_path / "models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def failing_run(project):
    import models

    spec = mdl_lang.load(project / "spec.mdl")
    model = spec.bind("broken", models.broken(), mode="record", replay_dir=project / "reports")
    x = torch.tensor([[0.9, 0, 0, 0], [0.1, 0, 0, 0], [0.7, 0, 0, 0]])
    model(x)
    return model.reports


def test_json_round_trip_keeps_blame_and_witness(project):
    (result,) = failing_run(project)
    document = Report("monitor", [result]).to_json()
    assert document["schema"] == "mdl-report/1"
    assert document["summary"] == {"pass": 0, "fail": 1, "unknown": 0, "skip": 0}
    entry = document["results"][0]
    assert entry["verdict"] == "fail" and entry["backend"] == "monitor"
    assert entry["blame"] == {
        "party": "broken", "role": "module", "path": ["broken"],
        "reason": "ensures `scores` failed while its requires held",
    }
    assert entry["witness"]["samples"] == [0, 2]
    restored = Result.from_json(json.loads(json.dumps(entry)))
    assert restored.blame == result.blame
    assert restored.witness.samples == result.witness.samples


def test_mdl_blame_renders_a_saved_report(project, capsys):
    results = failing_run(project)
    (project / "report.json").write_text(Report("monitor", results).dumps())
    assert main(["blame", "report.json"]) == 1
    text = capsys.readouterr().out
    assert "blame: broken (module)" in text
    assert "samples: 0, 2" in text
    assert "spec.mdl:7:" in text


def test_mdl_blame_rejects_what_is_not_a_report(project, capsys):
    (project / "bad.json").write_text("{not json")
    assert main(["blame", "bad.json"]) == 2
    assert "not a JSON report" in capsys.readouterr().err
    assert main(["blame", "missing.json"]) == 2


def test_mdl_replay_reproduces_the_failure(project, capsys):
    (result,) = failing_run(project)
    saved = torch.load(result.witness.replay, weights_only=True)
    assert saved["inputs"]["x"].shape == (2, 4)
    assert main(["replay", result.witness.replay]) == 1
    out = capsys.readouterr().out
    assert "blame: broken (module)" in out and "samples: 0, 1" in out


def test_mdl_replay_without_a_binding_explains_the_one_liner(project, capsys):
    spec = mdl_lang.load(project / "spec.mdl")
    model = spec.bind("unbound", torch.nn.Identity(), mode="record", replay_dir=project / "reports")
    model(torch.rand(2, 4) + 2)
    replay = model.reports[0].witness.replay
    assert main(["replay", replay]) == 2
    err = capsys.readouterr().err
    assert "no `python \"...\"` binding" in err and "spec.bind(" in err


def test_a_relational_counterexample_from_mdl_test_replays(tmp_path, capsys):
    from pathlib import Path

    from mdl_lang.testing import ContractTester, TestSettings

    faults = Path(__file__).parent / "testing" / "faults.mdl"
    spec = mdl_lang.load(faults)
    tester = ContractTester(spec, TestSettings(replay_dir=tmp_path))
    [result] = [r for r in tester.run("brittle") if r.clause == "robust"]
    assert result.verdict.value == "fail" and result.witness.replay
    assert main(["replay", result.witness.replay, "--spec", str(faults)]) == 1
    out = capsys.readouterr().out
    assert "`robust` of `brittle` fails again" in out and "distance" in out
    assert "blame: brittle (module)" in out  # a replayed failure is shown as every failure is


def replay_json(argv: list[str], capsys) -> tuple[int, dict]:
    """`mdl replay ... --format json`: the exit code and the one object printed."""
    status = main(["replay", *argv, "--format", "json"])
    return status, json.loads(capsys.readouterr().out)


def test_mdl_replay_json_reports_the_reproduced_failure_with_blame_and_witness(project, capsys):
    (result,) = failing_run(project)
    status, document = replay_json([result.witness.replay], capsys)
    assert status == 1
    assert document["schema"] == "mdl-report/1" and document["command"] == "replay"
    assert document["summary"] == {"pass": 0, "fail": 1, "unknown": 0, "skip": 0}
    (entry,) = document["results"]
    assert (entry["module"], entry["clause"], entry["backend"], entry["verdict"]) == (
        "broken", "scores", "monitor", "fail")
    assert entry["blame"]["party"] == "broken" and entry["blame"]["role"] == "module"
    assert entry["witness"]["samples"] == [0, 1]
    # The text is the same Result rendered: JSON and text cannot disagree.
    assert main(["replay", result.witness.replay]) == 1
    assert capsys.readouterr().out.strip() == render_result(Result.from_json(entry)).strip()


def test_mdl_replay_json_says_pass_when_the_failure_is_gone(project, capsys):
    (result,) = failing_run(project)
    saved = torch.load(result.witness.replay, weights_only=True)
    torch.save({**saved, "inputs": {"x": torch.zeros(2, 4)}}, project / "fixed.pt")
    status, document = replay_json(["fixed.pt"], capsys)
    assert status == 0
    assert document["summary"] == {"pass": 1, "fail": 0, "unknown": 0, "skip": 0}
    (entry,) = document["results"]
    assert entry["verdict"] == "pass" and entry["clause"] == "scores" and entry["line"] == 7
    assert "now holds on the saved inputs" in entry["message"] and "blame" not in entry


def test_mdl_replay_json_of_a_relational_counterexample(tmp_path, capsys):
    from pathlib import Path

    from mdl_lang.testing import ContractTester, TestSettings

    faults = Path(__file__).parent / "testing" / "faults.mdl"
    tester = ContractTester(mdl_lang.load(faults), TestSettings(replay_dir=tmp_path))
    [result] = [r for r in tester.run("brittle") if r.clause == "robust"]
    status, document = replay_json([result.witness.replay, "--spec", str(faults)], capsys)
    assert status == 1
    (entry,) = document["results"]
    assert (entry["module"], entry["clause"], entry["verdict"], entry["fragment"]) == (
        "brittle", "robust", "fail", "relational")
    assert entry["blame"]["party"] == "brittle"
    assert "linf distance of x2 from x" in entry["witness"]["values"]
    assert document["summary"]["fail"] == 1


def test_mdl_replay_json_of_a_missing_file_is_one_object_with_an_error(project, capsys):
    status, document = replay_json(["missing.pt"], capsys)
    assert status == 2
    assert document["command"] == "replay" and document["results"] == []
    assert "no such replay file: missing.pt" in document["error"]


def test_mdl_replay_json_of_a_spec_that_no_longer_checks_lists_its_diagnostics(project, capsys):
    (result,) = failing_run(project)
    (project / "spec.mdl").write_text(SPEC.replace("Digit]", "Digits]"))
    status, document = replay_json([result.witness.replay], capsys)
    assert status == 1
    assert document["results"] == [] and document["diagnostics"][0]["severity"] == "error"


def test_mdl_replay_of_a_clause_the_spec_no_longer_has_is_unknown_not_gone(project, capsys):
    (result,) = failing_run(project)
    (project / "spec.mdl").write_text(SPEC.replace("ensures scores:", "ensures renamed:"))
    status, document = replay_json([result.witness.replay], capsys)
    assert status == 0
    (entry,) = document["results"]
    assert entry["verdict"] == "unknown" and "has no check `scores`" in entry["message"]
