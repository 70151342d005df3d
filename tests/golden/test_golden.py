"""Golden tests of the checker's diagnostics.

Each file of `cases/` is a small spec with one fault (a few for the `multi_` cases).
Its leading comment lists every diagnostic it must produce, one `# expect:` line each:

    # expect: E0204 19:13                       code, line and column in this file
    # expect: E0105 4:1 lib/cycle_partner.mdl   ... or in another file under cases/

and `expected/<name>.txt` holds the text `mdl check` prints for it. The text is only
rewritten by `pytest tests/golden --update-goldens`; review that diff like code.
`cases/lib/` holds files the import cases import; they are not cases themselves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdl_lang.diagnostics import CODES, render_all
from mdl_lang.semantics.checker import CheckResult, check_paths

GOLDEN = Path(__file__).resolve().parent
REPO = GOLDEN.parents[1]
CASES = GOLDEN / "cases"
EXPECTED = GOLDEN / "expected"
CASE_FILES = sorted(CASES.glob("*.mdl"))
EXPECT_LINE = re.compile(r"# expect: (?P<code>[EW]\d{4}) (?P<line>\d+):(?P<column>\d+)(?: (?P<file>\S+))?")

# Codes of CODES that no spec can produce, each with the reason. Every other code
# must be expected by some case (test_every_code_has_a_case).
UNPRODUCIBLE: dict[str, str] = {}


@dataclass(frozen=True, order=True)
class Expected:
    """One diagnostic: the file relative to cases/, its code and where its caret starts."""

    file: str
    code: str
    line: int
    column: int


def header_expectations(case: Path) -> list[Expected]:
    """The `# expect:` lines of a case's leading comment block."""
    expected = []
    # Bytes decoded leniently: one case is deliberately not UTF-8.
    for line in case.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        match = EXPECT_LINE.fullmatch(line.rstrip())
        if match:
            file = match["file"] or case.name
            expected.append(Expected(file, match["code"], int(match["line"]), int(match["column"])))
    return expected


def check_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> CheckResult:
    """Check a case from the repository root, so reports show `tests/golden/cases/<name>.mdl`."""
    monkeypatch.chdir(REPO)
    return check_paths([case.relative_to(REPO)], root=CASES.relative_to(REPO))


def found_diagnostics(result: CheckResult) -> list[Expected]:
    cases = CASES.relative_to(REPO)
    return sorted(
        Expected(os.path.relpath(d.span.file, cases), d.code, d.span.line, d.span.column)
        for d in result.diagnostics
    )


@pytest.mark.parametrize("case", CASE_FILES, ids=lambda case: case.stem)
def test_diagnostics_are_the_ones_the_header_expects(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = header_expectations(case)
    assert expected, f"{case.name} has no `# expect:` line: a case must produce a diagnostic"
    result = check_case(case, monkeypatch)
    assert found_diagnostics(result) == sorted(expected)
    assert all(diagnostic.help for diagnostic in result.diagnostics), "every diagnostic says how to fix it"


@pytest.mark.parametrize("case", CASE_FILES, ids=lambda case: case.stem)
def test_rendered_text_matches_the_golden_file(
    case: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:
    result = check_case(case, monkeypatch)
    text = render_all(result.diagnostics, result.sources) + "\n"
    golden = EXPECTED / f"{case.stem}.txt"
    if request.config.getoption("--update-goldens"):
        golden.write_text(text, encoding="utf-8")
        return
    assert golden.is_file(), f"{golden.name} is missing: run `pytest tests/golden --update-goldens` and review it"
    assert text == golden.read_text(encoding="utf-8")


def test_every_golden_file_belongs_to_a_case() -> None:
    cases = {case.stem for case in CASE_FILES}
    orphans = sorted(path.name for path in EXPECTED.glob("*.txt") if path.stem not in cases)
    assert not orphans, f"golden files without a case (delete them): {orphans}"


def test_every_code_has_a_case() -> None:
    covered = {expected.code for case in CASE_FILES for expected in header_expectations(case)}
    assert set(UNPRODUCIBLE) <= set(CODES), "UNPRODUCIBLE names codes that CODES does not have"
    assert not covered & set(UNPRODUCIBLE), "a code listed as unproducible has a case: remove it from UNPRODUCIBLE"
    missing = sorted(set(CODES) - covered - set(UNPRODUCIBLE))
    assert not missing, f"codes with no golden case: {missing}"
    unknown = sorted(covered - set(CODES))
    assert not unknown, f"cases expect codes that CODES does not define: {unknown}"
