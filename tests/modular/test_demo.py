"""`mdl demo`: the shortened run end to end, the specs it leaves behind, the KMNIST-1 step and usage errors.

The KMNIST-1 step reads ../shared/data/fse20-kmnist1 (or MDL_KMNIST_DIR) and fails loudly if it is missing;
the end-to-end run points `--kmnist` at an empty folder, which the demo must skip and still succeed.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.kmnist import fixtures
from mdl_lang.cli import main
from mdl_lang.modular.demo import PAPER_KMNIST, compose_kmnist


@dataclass(frozen=True)
class DemoRun:
    status: int
    output: str
    out: Path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo")
    missing = tmp_path_factory.mktemp("no-kmnist")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(["demo", "--quick", "--out", str(out), "--kmnist", str(missing)])
    return DemoRun(status, output.getvalue(), out)


def test_the_quick_demo_succeeds_with_every_check_held(demo_run: DemoRun):
    assert demo_run.status == 0, demo_run.output
    assert "FAILED" not in demo_run.output
    assert re.search(r"all \d+ checks held", demo_run.output)
    assert float(re.search(r"demo finished in ([\d.]+)s", demo_run.output).group(1)) < 120
    for step in range(1, 7):
        assert f"\n== {step}. " in demo_run.output


def test_the_demo_checks_its_spec_and_composes_as_well_as_the_model(demo_run: DemoRun):
    assert demo_run.output.count("checked: no problems") == 3
    model, composed = re.search(r"model (\d+\.\d+)%, composed (\d+\.\d+)%", demo_run.output).groups()
    assert abs(float(model) - float(composed)) < 1.0


def test_the_blame_report_names_the_under_represented_class(demo_run: DemoRun):
    assert "contract violation: at 95% confidence the bound of recall(y, 5) does not clear its threshold" in (
        demo_run.output
    )
    assert "blame: m5 (module)" in demo_run.output
    assert "path: voted > m5" in demo_run.output
    assert "blame: m" not in demo_run.output.replace("blame: m5 (module)", "")


def test_the_repair_restores_recall_and_reports_the_training_avoided(demo_run: DemoRun):
    rows = dict(re.findall(r"\| (voted \(faulty modules\)|repaired \(m5 replaced\)) +\| [\d.]+% +\| ([\d.]+)% ",
                           demo_run.output))
    assert float(rows["repaired (m5 replaced)"]) > float(rows["voted (faulty modules)"]) + 10
    retrain = re.search(r"retrain the whole model: +([\d.]+ \w?FLOP)", demo_run.output).group(1)
    repair = re.search(r"decompose \+ replace: +([\d.]+ \w?FLOP)", demo_run.output).group(1)
    assert retrain.endswith("GFLOP") and repair.endswith("MFLOP")
    assert "training cost avoided" in demo_run.output


def test_missing_kmnist_fixtures_are_skipped_by_name(demo_run: DemoRun):
    assert re.search(r"KMNIST-1 fixtures not found at .*no-kmnist.*: skipped", demo_run.output)


def test_the_specs_left_behind_check_format_and_test_on_their_own(demo_run: DemoRun, tmp_path: Path, capsys):
    specs = sorted(demo_run.out.glob("*_vote.mdl"))
    assert [spec.name for spec in specs] == ["digits_vote.mdl", "faulty_vote.mdl", "repaired_vote.mdl"]
    assert main(["check", str(demo_run.out)]) == 0
    # The modules are those `mdl decompose` writes (best-rival channel), read back by `load_module`.
    for folder in ("healthy", "faulty"):
        manifest = json.loads((demo_run.out / folder / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["channel"] == "max" and len(manifest["modules"]) == 10
    assert "load_module(HERE / \"healthy/m5.pt\")" in (demo_run.out / "repaired_vote_modules.py").read_text()
    assert main(["fmt", "--check", *map(str, specs)]) == 0
    capsys.readouterr()
    # Through the written factories (the spec's `python` bindings), not through parts given in Python.
    status = main(["test", str(demo_run.out / "faulty_vote.mdl"), "--module", "voted", "--max-examples", "5",
                   "--replay-dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert status == 1, output
    assert "blame: m5 (module)" in output


def test_kmnist_composes_to_the_papers_figures(tmp_path: Path):
    try:
        folder = fixtures.fixture_folder()
    except FileNotFoundError as error:
        pytest.fail(f"the KMNIST-1 fixtures (shared/data/fse20-kmnist1) are required by this test: {error}")
    outcome = compose_kmnist(folder, tmp_path)
    assert outcome.samples == 10_000
    assert (round(outcome.model_accuracy, 4), round(outcome.composed_accuracy, 4)) == PAPER_KMNIST
    assert main(["check", str(tmp_path / "kmnist_vote.mdl")]) == 0


@pytest.mark.parametrize("arguments", [["--fault-class", "12"], ["--out", __file__]])
def test_bad_options_are_usage_errors(arguments: list[str], capsys):
    assert main(["demo", *arguments]) == 2
    assert "mdl: error:" in capsys.readouterr().err


def test_a_kmnist_folder_named_on_purpose_must_exist(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "out"), "--kmnist", str(tmp_path / "nowhere")]) == 2
    assert "--kmnist" in capsys.readouterr().err


def small_kmnist_fixtures(folder: Path, *, images: tuple[int, ...] = (4, 28, 28), labels: int = 4,
                          model_inputs: int = 784) -> Path:
    """KMNIST-1 fixtures of the right names and, unless told otherwise, the right form: zero-weight
    Flatten-Dense(10, softmax) models and a few blank images, enough for the step to run in no time."""
    import numpy as np

    from tests.interop.test_keras_h5 import dense, write_keras_file

    flatten = {"class_name": "Flatten", "config": {"name": "flatten", "data_format": "channels_last"}}
    zeros = {"kernel": np.zeros((784, 10), np.float32), "bias": np.zeros(10, np.float32)}
    for name in ("kmnist.h5", *(f"module{k}.h5" for k in range(10))):
        weights = zeros if name != "kmnist.h5" else {**zeros, "kernel": np.zeros((model_inputs, 10), np.float32)}
        write_keras_file(folder / name, [flatten, dense("out", 10, "softmax")], {"out": weights})
    np.savez(folder / "kmnist-test-imgs.npz", np.zeros(images, np.uint8))
    np.savez(folder / "kmnist-test-labels.npz", np.arange(labels) % 10)
    return folder


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"images": (4, 32, 32)}, "kmnist-test-imgs.npz holds images of shape (4, 32, 32), expected (N, 28, 28)"),
        ({"labels": 3}, "kmnist-test-labels.npz holds labels of shape (3,), expected one for each of the 4 images"),
        ({"model_inputs": 12}, "kmnist.h5 does not run on a 28x28 KMNIST image"),
    ],
    ids=["32x32-images", "fewer-labels", "12-input-model"],
)
def test_kmnist_fixtures_of_the_wrong_form_are_a_failed_step(tmp_path: Path, capsys, form, message):
    from mdl_lang.modular.demo import Checks, DemoSettings, _kmnist

    kmnist = small_kmnist_fixtures(tmp_path, **form)
    checks = Checks()
    _kmnist(DemoSettings(tmp_path, 0, True, 5, kmnist), checks)
    assert checks.failed == ["KMNIST-1 fixtures load"]
    assert message in capsys.readouterr().out


def test_small_kmnist_fixtures_of_the_right_form_compose(tmp_path: Path):
    outcome = compose_kmnist(small_kmnist_fixtures(tmp_path), tmp_path)
    assert outcome.samples == 4
