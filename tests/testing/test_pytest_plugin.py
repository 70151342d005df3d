"""The pytest plugin: `.mdl` files become one item per (component, clause), with blame reports as failures."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

# Imported here, before any in-process run: pytester drops the modules a run imported when it ends, and
# torch's C extension cannot be imported a second time in one process (it fails, then segfaults at exit).
import mdl_lang.testing  # noqa: F401

pytest_plugins = ["pytester"]
HERE = Path(__file__).parent


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(HERE / "fault_models.py", pytester.path / "fault_models.py")
    pytester.makefile(".mdl", contracts=textwrap.dedent("""
        labels Digit = {0..9}
        dim B : batch
        interface Scorer {
          input  x: Tensor[B, 8] float32 in [0, 1]
          output y: Tensor[B, Digit] float32
          ensures finite(y)
          ensures simplex: sum(y) == 1 within 1e-4
        }
        module zero_nan : Scorer { python "fault_models:zero_nan" }
        module healthy : Scorer { python "fault_models:healthy" }
        module unbound : Scorer
    """))
    return pytester


def test_items_per_clause_with_blame_reports(project: pytest.Pytester) -> None:
    result = project.runpytest("contracts.mdl", "--mdl-max-examples", "30", "-rs")
    # Each module's output type is an item too: it passes for both bound modules.
    result.assert_outcomes(passed=4, failed=2, skipped=3)
    result.stdout.fnmatch_lines(["*blame: zero_nan (module)*", "*no module to test*unbound*"])


def test_keyword_selection_and_last_failed(project: pytest.Pytester) -> None:
    project.runpytest("contracts.mdl", "--mdl-max-examples", "20")
    selected = project.runpytest("contracts.mdl", "-k", "healthy and simplex")
    selected.assert_outcomes(passed=1)
    rerun = project.runpytest("contracts.mdl", "--lf", "--mdl-max-examples", "20")
    rerun.assert_outcomes(failed=2)


def test_xdist_runs_the_items(project: pytest.Pytester) -> None:
    result = project.runpytest("contracts.mdl", "-n", "2", "--mdl-max-examples", "20")
    result.assert_outcomes(passed=4, failed=2, skipped=3)


def test_a_spec_with_errors_is_one_failing_item(pytester: pytest.Pytester) -> None:
    pytester.makefile(".mdl", broken="labels A = {1, 2\n")
    result = pytester.runpytest("broken.mdl")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*error\[E0002\].*"])


def test_a_spec_may_import_from_a_folder_above_its_own(pytester: pytest.Pytester) -> None:
    pytester.makefile(".mdl", common="dim B : batch\ntype T = Tensor[B, 2] float32\n")
    (pytester.path / "sub").mkdir()
    (pytester.path / "sub" / "use.mdl").write_text(
        'import "../common.mdl" as common\ninterface I {\n  input x: common.T\n  output y: common.T\n}\n'
    )
    result = pytester.runpytest("sub/use.mdl", "-p", "no:randomly")
    assert "E0104" not in result.stdout.str()
    result.assert_outcomes(failed=0, errors=0)


def test_a_binding_that_fails_is_one_line_not_a_traceback(pytester: pytest.Pytester) -> None:
    pytester.makefile(".mdl", broken=(
        "dim B : batch\ninterface I {\n  input x: Tensor[B, 2] float32\n  output y: Tensor[B, 2] float32\n}\n"
        'module m : I { python "no_such_module:make" }\n'
    ))
    result = pytester.runpytest("broken.mdl", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["*broken.mdl:6:1: cannot import `no_such_module`*"])
    assert "Traceback" not in result.stdout.str() and "importlib" not in result.stdout.str()
