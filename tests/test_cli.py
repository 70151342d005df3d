"""`mdl check` as a user runs it: text and mdl-report/1 JSON output, and the exit codes of LANGUAGE.md section 8.

Most tests call `mdl_lang.cli.main` in-process (fast); two run the command in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mdl_lang.cli import main

REPO = Path(__file__).resolve().parents[1]
CASES = Path("tests/golden/cases")

CLEAN = """\
labels Digit = {0..9}
dim B : batch
type Image = Tensor[B, 64] float32 in [0, 1]
type Scores[L] = Tensor[B, L] float32 in [0, 1]

interface Classifier[L] {
  input x: Image
  output y: Scores[L]
  ensures sum(y) == 1 within 1e-5
}

module cnn : Classifier[Digit] {}
"""

# A label listed twice: a warning and nothing else.
WARNING_ONLY = CLEAN + "labels Round = {0, 6, 8, 9, 6}\n"

DIAGNOSTIC_FIELDS = {"code", "severity", "message", "file", "line", "column"}


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def spec_file(folder: Path, text: str, name: str = "spec.mdl") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["check", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.usefixtures("in_repo")
def test_json_report_has_the_schema_and_the_diagnostic_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, str(CASES / "multi_three_errors.mdl"))
    assert code == 1
    assert report["schema"] == "mdl-report/1"
    assert report["command"] == "check"
    diagnostics = report["diagnostics"]
    assert [d["code"] for d in diagnostics] == ["E0308", "E0204", "E0504"]
    for diagnostic in diagnostics:
        assert diagnostic.keys() >= DIAGNOSTIC_FIELDS
        assert diagnostic["severity"] == "error"
        assert diagnostic["file"] == "tests/golden/cases/multi_three_errors.mdl"
        assert isinstance(diagnostic["line"], int) and isinstance(diagnostic["column"], int)
    assert (diagnostics[1]["line"], diagnostics[1]["column"]) == (23, 13)
    assert report["results"] == [
        {"file": "tests/golden/cases/multi_three_errors.mdl", "backend": "static", "verdict": "fail"},
    ]
    assert report["summary"] == {"pass": 0, "fail": 1, "unknown": 0, "skip": 0}


@pytest.mark.usefixtures("in_repo")
def test_json_notes_and_help_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = run_json(capsys, str(CASES / "names_type_argument_kind.mdl"))
    (diagnostic,) = report["diagnostics"]
    assert diagnostic["help"].startswith("pass a label set")
    assert diagnostic["notes"][0]["line"] == 9


def test_clean_spec_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(spec_file(tmp_path, CLEAN))]) == 0
    assert capsys.readouterr().out == "checked 1 file: no problems found\n"


def test_clean_spec_json_has_no_diagnostics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, str(spec_file(tmp_path, CLEAN)))
    assert code == 0
    assert report["diagnostics"] == []
    assert report["summary"]["pass"] == 1


@pytest.mark.usefixtures("in_repo")
def test_spec_error_exits_1_and_prints_the_rendered_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(CASES / "names_duplicate.mdl")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("error[E0102]: `Digit` is declared twice\n")
    assert out.endswith("1 error found\n")


def test_warnings_alone_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(spec_file(tmp_path, WARNING_ONLY))]) == 0
    assert "warning[W0201]" in capsys.readouterr().out


def test_warnings_exit_1_with_strict(tmp_path: Path) -> None:
    assert main(["check", "--strict", str(spec_file(tmp_path, WARNING_ONLY))]) == 1


@pytest.mark.usefixtures("in_repo")
def test_undecided_dims_are_an_unknown_verdict_that_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, str(CASES / "compose_dim_undecided.mdl"))
    assert code == 0
    assert report["results"][0]["verdict"] == "unknown"
    assert main(["check", "--strict", str(CASES / "compose_dim_undecided.mdl")]) == 1


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "absent.mdl")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_bad_flag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--no-such-flag", str(spec_file(tmp_path, CLEAN))]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_bad_format_and_missing_paths_exit_2(tmp_path: Path) -> None:
    assert main(["check", "--format", "xml", str(spec_file(tmp_path, CLEAN))]) == 2
    assert main(["check"]) == 2


def test_root_that_is_not_a_folder_exits_2(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, CLEAN)
    assert main(["check", "--root", str(tmp_path / "nowhere"), str(spec)]) == 2


def test_folder_is_searched_and_every_file_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file(tmp_path, CLEAN, "a.mdl")
    spec_file(tmp_path, "labels Digit = {9..0}\n", "b.mdl")
    code, report = run_json(capsys, str(tmp_path))
    assert code == 1
    assert [d["code"] for d in report["diagnostics"]] == ["E0202"]
    assert sorted(r["verdict"] for r in report["results"]) == ["fail", "pass"]


def test_root_flag_widens_the_spec_root(tmp_path: Path) -> None:
    shared = spec_file(tmp_path, "labels Digit = {0..9}\n", "shared.mdl")
    inner = tmp_path / "inner"
    inner.mkdir()
    spec = spec_file(inner, f'import "../{shared.name}" as shared\nlabels Even = {{0, 2}} within shared.Digit\n')
    assert main(["check", str(spec)]) == 1
    assert main(["check", "--root", str(tmp_path), str(spec)]) == 0


def test_subprocess_prints_json_and_exits_1() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mdl_lang.cli", "check", "--format", "json", str(CASES / "labels_empty_range.mdl")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 1, completed.stderr
    report = json.loads(completed.stdout)
    assert report["schema"] == "mdl-report/1"
    assert [(d["code"], d["line"], d["column"]) for d in report["diagnostics"]] == [("E0202", 5, 17)]


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path) -> None:
    """`mdl check --format json | head -1`: the pipe closes early; no traceback, no 'internal error'."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "mdl_lang.cli", "check", "--format", "json", str(REPO / "specs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    reader.stdout.close()  # the reader goes away before anything is written
    _, error = reader.communicate(timeout=120)
    assert b"internal error" not in error and b"Traceback" not in error, error.decode()


def test_mdl_blame_rejects_a_result_without_its_verdict(tmp_path, capsys) -> None:
    report = {"schema": "mdl-report/1", "results": [{"module": "m", "clause": "c", "file": "a.mdl", "line": 3}]}
    (tmp_path / "partial.json").write_text(json.dumps(report))
    assert main(["blame", str(tmp_path / "partial.json")]) == 2
    assert "malformed result" in capsys.readouterr().err


def test_witness_values_are_json_numbers_where_they_are_numbers() -> None:
    from mdl_lang.report import Witness, _witness_from_json

    witness = Witness((3,), (("recall(5)", "0.41"), ("n", "7"), ("ok", "False"), ("y", "f32[2] cpu"), ("z", "nan")))
    entry = witness.to_json()
    assert entry["values"] == {"recall(5)": 0.41, "n": 7, "ok": False, "y": "f32[2] cpu", "z": "nan"}
    assert json.loads(json.dumps(entry)) == entry
    assert _witness_from_json(entry).values == witness.values


def test_mdl_blame_shows_the_diagnostics_of_a_failed_run(tmp_path, capsys) -> None:
    report = {"schema": "mdl-report/1", "command": "test", "results": [],
              "diagnostics": [{"code": "E0002", "severity": "error", "message": "unexpected end", "file": "a.mdl",
                               "line": 3, "column": 1, "help": "close the interface"}]}
    (tmp_path / "failed.json").write_text(json.dumps(report))
    assert main(["blame", str(tmp_path / "failed.json")]) == 1
    out = capsys.readouterr().out
    assert "error[E0002]: unexpected end" in out and "a.mdl:3:1" in out and "every result passed" not in out


def test_a_spec_that_does_not_check_exits_1_from_every_command(tmp_path, capsys) -> None:
    broken = tmp_path / "broken.mdl"
    broken.write_text("interface I {\n  input x: Tensor[B, 2]\n")
    assert main(["export", str(broken), "--module", "m", "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "error[" in capsys.readouterr().err


def test_bad_test_flags_are_usage_errors_before_any_work(tmp_path, capsys) -> None:
    spec = tmp_path / "ok.mdl"
    spec.write_text("dim B : batch\ninterface I {\n  input x: Tensor[B, 2] float32\n"
                    "  output y: Tensor[B, 2] float32\n}\n")
    assert main(["test", str(spec), "--max-examples", "0"]) == 2
    assert "--max-examples must be a positive" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert main(["test", str(spec), "--replay-dir", str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_json_output_is_one_object_even_for_a_usage_error(tmp_path, capsys) -> None:
    assert main(["check", str(tmp_path / "missing.mdl"), "--format", "json"]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["schema"] == "mdl-report/1" and document["command"] == "check"
    assert "missing.mdl" in document["error"] and "missing.mdl" in captured.err


def test_mdl_blame_reads_what_mdl_check_writes(tmp_path, capsys) -> None:
    broken = tmp_path / "broken.mdl"
    broken.write_text("labels L = {1..0}\n")
    assert main(["check", str(broken), "--format", "json"]) == 1
    (tmp_path / "check.json").write_text(capsys.readouterr().out)
    assert main(["blame", str(tmp_path / "check.json")]) == 1
    assert "error[" in capsys.readouterr().out


BOUND_AND_BROKEN = """\
dim B : batch
interface I {
  input  x: Tensor[B, 2] float32
  output y: Tensor[B, 2] float32
  ensures y == x within 1e-6
}
module broken : I { python "no_such_module:make" }
module same : I { python "identity_factory:make" }
"""


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_binding_that_cannot_be_imported_does_not_stop_the_others(tmp_path, capsys, output) -> None:
    (tmp_path / "identity_factory.py").write_text("from torch import nn\n\ndef make():\n    return nn.Identity()\n")
    spec = spec_file(tmp_path, BOUND_AND_BROKEN)
    assert main(["test", str(spec), "--max-examples", "5", "--format", output]) == 2
    captured = capsys.readouterr()
    assert "spec.mdl:7:1: cannot import `no_such_module`" in captured.err
    if output == "json":
        document = json.loads(captured.out)
        assert "no_such_module" in document["error"]
        results = {(result["module"], result["verdict"]) for result in document["results"]}
        assert ("same", "pass") in results and not any(module == "broken" for module, _ in results)
    else:
        assert "passed" in captured.out


def test_mdl_blame_of_a_report_without_results_says_there_is_nothing_to_blame(tmp_path, capsys) -> None:
    (tmp_path / "empty.json").write_text(json.dumps({"schema": "mdl-report/1"}))
    assert main(["blame", str(tmp_path / "empty.json")]) == 0
    assert "malformed" not in capsys.readouterr().err


def test_mdl_blame_refuses_another_schema_and_counts_a_diagnostic_without_severity_as_shown(tmp_path, capsys) -> None:
    (tmp_path / "other.json").write_text(json.dumps({"schema": "other/9"}))
    assert main(["blame", str(tmp_path / "other.json")]) == 2
    assert "not an mdl-report/1 report" in capsys.readouterr().err
    report = {"schema": "mdl-report/1", "results": [],
              "diagnostics": [{"code": "E0101", "message": "unknown name", "file": "a.mdl", "line": 1, "column": 1}]}
    (tmp_path / "partial.json").write_text(json.dumps(report))
    assert main(["blame", str(tmp_path / "partial.json")]) == 1
    assert "error[E0101]" in capsys.readouterr().out


def test_mdl_replay_of_a_file_that_is_not_a_replay_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "fake.pt").write_text("not a tensor")
    assert main(["replay", str(tmp_path / "fake.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not an mdl replay file" in err and len(err.splitlines()) == 1


DATA_BROKEN = """\
labels C = {0..2}
dim B : batch
type In = Tensor[B, 3] float32 in [0, 1]
interface D { input x: In  output y: Tensor[B, C] float32 }
data broken : (In, C) { python "factories_d:nosuch" }
module a : D {
  python "factories_d:lin"
  ensures big: y[0] >= 10
  ensures accuracy(y) >= 0.1 on broken
}
"""


def test_a_data_set_that_cannot_be_imported_keeps_the_modules_other_verdicts(tmp_path, capsys) -> None:
    (tmp_path / "factories_d.py").write_text("from torch import nn\n\ndef lin():\n    return nn.Linear(3, 3)\n")
    spec = spec_file(tmp_path, DATA_BROKEN)
    assert main(["test", str(spec), "--max-examples", "5", "--format", "json"]) == 2
    captured = capsys.readouterr()
    verdicts = {result["clause"]: result["verdict"] for result in json.loads(captured.out)["results"]}
    assert verdicts["big"] == "fail" and "unknown" in verdicts.values()
    assert "nosuch" in captured.err
