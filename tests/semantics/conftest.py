"""Check spec text written into a temporary spec root, for the IR tests of this folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mdl_lang import ir
from mdl_lang.diagnostics import Diagnostic, render_all
from mdl_lang.semantics.checker import CheckResult, check_paths

DiagnosticsOf = Callable[..., list[Diagnostic]]
SpecOf = Callable[..., ir.Spec]


def check_text(root: Path, text: str, files: dict[str, str]) -> CheckResult:
    """Write `text` as `spec.mdl` (and `files` as `<name>.mdl`) under `root`, the working folder, and check it."""
    for name, content in files.items():
        (root / f"{name}.mdl").write_text(content, encoding="utf-8")
    (root / "spec.mdl").write_text(text, encoding="utf-8")
    return check_paths([Path("spec.mdl")], root=root)


@pytest.fixture
def diagnostics_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DiagnosticsOf:
    """`diagnostics_of(text, common="...")`: every diagnostic of the spec (and of `common.mdl`)."""
    monkeypatch.chdir(tmp_path)
    return lambda text, **files: check_text(tmp_path, text, files).diagnostics


@pytest.fixture
def spec_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SpecOf:
    """`spec_of(text, common="...")`: the IR of a spec that must check without any diagnostic."""
    monkeypatch.chdir(tmp_path)

    def run(text: str, **files: str) -> ir.Spec:
        result = check_text(tmp_path, text, files)
        assert not result.diagnostics, render_all(result.diagnostics, result.sources)
        return result.specs["spec.mdl"]

    return run
