"""Regression tests of the front-end audit: computed constants, deep nesting, clause names, `load`, imports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import mdl_lang
from mdl_lang import ir
from mdl_lang.cli import check_report
from mdl_lang.compiler import SpecError
from mdl_lang.semantics.checker import CheckResult, check_paths
from mdl_lang.syntax import parser
from mdl_lang.syntax.format import format_text

HEADER = """
labels Digit = {0..2}
dim B : batch
data d : (Tensor[B, 3] float32, Digit)
interface I {
  input x: Tensor[B, 3] float32
  output y: Tensor[B, Digit] float32
}
"""

PLAIN = """
dim B : batch
interface I {
  input x: Tensor[B, 3] float32
  output y: Tensor[B, 3] float32
  CLAUSE
}
module m : I
"""


def codes(diagnostics) -> list[str]:
    return [diagnostic.code for diagnostic in diagnostics]


@pytest.fixture
def result_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], CheckResult]:
    """`result_of(text)`: the check of `text` written byte for byte (no newline translation) as spec.mdl."""
    monkeypatch.chdir(tmp_path)

    def run(text: str) -> CheckResult:
        Path("spec.mdl").write_bytes(text.encode("utf-8"))
        return check_paths([Path("spec.mdl")])

    return run


# ---------------------------------------------------------------- constants that are no real number


@pytest.mark.parametrize("text", [
    "dim B : batch\ntype T = Tensor[B, 3] float32 in [0, (-8) ** 0.5]",
    "labels L = {0..(-8) ** 0.5}",
    HEADER + "module m : I { ensures accuracy(y) >= 0.5 on d with confidence (-1) ** 0.5 }",
    HEADER + "module m : I { cost { latency <= 1 ms at batch (-4) ** 0.5 } }",
    HEADER + "module m : I { ensures accuracy(y) >= (-1) ** 0.5 on d }",
    "dim B : batch\ntype T = Tensor[B, 3] float32 in [inf - inf, 1]",
    "dim B : batch\ntype T = Tensor[B, 3] float32 in [0 * inf, 1]",
], ids=["range", "label_range", "confidence", "at_batch", "statistic_bound", "nan_range", "nan_product"])
def test_a_constant_that_is_no_real_number_is_an_error_at_the_expression(diagnostics_of, text: str) -> None:
    found = diagnostics_of(text)
    assert codes(found) == ["E0314"]
    assert found[0].help
    line = text.splitlines()[found[0].span.line - 1]
    written = line[found[0].span.column - 1:found[0].span.end_column - 1]
    assert written in ("(-8) ** 0.5", "(-1) ** 0.5", "(-4) ** 0.5", "inf - inf", "0 * inf")


@pytest.mark.parametrize("cost", ["params <= 1e999", "latency <= inf ms"])
def test_an_infinite_cost_limit_is_an_error(diagnostics_of, cost: str) -> None:
    assert codes(diagnostics_of(HEADER + f"module m : I {{ cost {{ {cost} }} }}")) == ["E0314"]


def test_an_infinite_range_bound_is_still_allowed(spec_of) -> None:
    spec = spec_of("dim B : batch\ntype T = Tensor[B, 3] float32 in [-inf, 2 ** 0.5]")
    assert spec is not None


# ---------------------------------------------------------------- constants in clauses


@pytest.mark.parametrize(("clause", "code"), [
    ("ensures y[2 ** 3] >= 0", "E0306"),
    ("ensures y[1 - 5] >= 0", "E0306"),
    ("ensures y[2 ** -1] >= 0", "E0407"),
    ("ensures y[1 // 0] >= 0", "E0312"),
    ("ensures y == x within 0/0", "E0312"),
    ("ensures y == x within 1/0", "E0312"),
    ("ensures y == x within 1e999", "E0314"),
    ("ensures y == x within 1 - 2", "E0421"),
    ("ensures forall x2 within 0/0 of x: y[0] >= 0", "E0312"),
    ("requires x <= 0/0", "E0312"),
    ("requires x <= inf - inf", "E0314"),
    ("requires x[0] <= 10 ** 10 ** 10", "E0312"),
])
def test_computed_constants_in_clauses_are_checked_like_literals(diagnostics_of, clause: str, code: str) -> None:
    assert codes(diagnostics_of(PLAIN.replace("CLAUSE", clause))) == [code]


def test_a_computed_index_becomes_a_position(spec_of) -> None:
    module = spec_of(PLAIN.replace("CLAUSE", "ensures y[3 - 1] >= y[-(1 + 1)]")).modules["m"]
    compare = module.all_clauses[0].expr
    assert [operand.items for operand in compare.operands] == [(ir.IndexPosition(2),), (ir.IndexPosition(-2),)]


# ---------------------------------------------------------------- deep nesting


def test_z3_proves_a_sum_deeper_than_the_default_recursion_limit(diagnostics_of) -> None:
    terms = " + ".join(["x[0]"] * 400)
    assert diagnostics_of(PLAIN.replace("CLAUSE", f"requires {terms} >= 0")) == []


def test_a_clause_too_deep_for_the_z3_encoder_is_undecided_not_a_crash(
    diagnostics_of, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def too_deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("mdl_lang.backends.z3.check_specs", too_deep)
    found = diagnostics_of(PLAIN.replace("CLAUSE", "requires x >= 0\n  requires x[0] + x[1] + x[2] >= 0"))
    assert codes(found) == ["W0601"]
    assert (found[0].span.line, found[0].span.column) == (7, 3)  # the longest clause


def test_recursion_in_the_tree_builder_is_e0007(monkeypatch: pytest.MonkeyPatch) -> None:
    """lark wraps a RecursionError raised in a builder callback in a VisitError."""
    monkeypatch.setattr(parser, "NESTING_LIMIT", 1_000)
    text = PLAIN.replace("CLAUSE", "ensures " + " implies ".join(["y[0] >= 0"] * 2_000))
    assert codes(parser.parse(text).diagnostics) == ["E0007"]
    assert codes(format_text(text).diagnostics) == ["E0007"]


# ---------------------------------------------------------------- automatic clause names


def test_automatic_names_of_clauses_from_two_files_differ(spec_of) -> None:
    lib = "dim B : batch\ninterface I {\n  input x: Tensor[B, 4] float32\n  output y: Tensor[B, 4] float32\n" \
          "  requires x >= 0\n  ensures y >= 0\n}\nmodule local : I { ensures y <= 2 }\n"
    spec = spec_of('import "lib.mdl" as lib\n\n\nmodule m : lib.I {\n  requires x >= -1\n  ensures y <= 1\n}',
                   lib=lib)
    names = [clause.name for clause in spec.modules["m"].all_clauses]
    assert names == ["requires@lib:5:3", "ensures@lib:6:3", "requires@5:3", "ensures@6:3"]
    local = spec.imports["lib"].modules["local"]
    assert [clause.name for clause in local.all_clauses] == ["requires@5:3", "ensures@6:3", "ensures@8:20"]


# ---------------------------------------------------------------- load


LOAD_REFUTED = """
dim B : batch
interface Vac {
  input x: Tensor[B, 4] float32 in [0, 1]
  output y: Tensor[B, 4] float32
  requires x >= 2
}
module v : Vac
"""


def test_load_with_proofs_rejects_what_check_refutes(tmp_path: Path) -> None:
    (tmp_path / "spec.mdl").write_text(LOAD_REFUTED, encoding="utf-8")
    with pytest.raises(SpecError) as error:
        mdl_lang.load(tmp_path / "spec.mdl", prove=True)
    assert codes(error.value.diagnostics) == ["E0601"]
    assert codes(check_paths([tmp_path / "spec.mdl"]).diagnostics) == ["E0601"]
    assert "v" in mdl_lang.load(tmp_path / "spec.mdl", prove=False).modules


def test_load_with_proofs_accepts_an_undecided_proof(tmp_path: Path) -> None:
    (tmp_path / "spec.mdl").write_text(PLAIN.replace("CLAUSE", "requires x <= 1e999"), encoding="utf-8")
    assert codes(check_paths([tmp_path / "spec.mdl"]).diagnostics) == ["W0601"]
    assert "m" in mdl_lang.load(tmp_path / "spec.mdl", prove=True).modules


# ---------------------------------------------------------------- imports of files with errors


def test_a_file_whose_import_has_errors_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("broken.mdl").write_text("labels X = {1\n", encoding="utf-8")
    Path("middle.mdl").write_text('import "broken.mdl" as b\n', encoding="utf-8")
    Path("main.mdl").write_text('import "middle.mdl" as m\nlabels A = {1}\n', encoding="utf-8")
    result = check_paths([Path("main.mdl")])
    found = sorted((d.code, d.span.file, d.span.line) for d in result.diagnostics)
    assert found == [("E0002", "broken.mdl", 1), ("E0117", "main.mdl", 1), ("E0117", "middle.mdl", 1)]
    report = check_report(result, [Path("main.mdl")])
    assert report["results"] == [{"file": "main.mdl", "backend": "static", "verdict": "fail"}]
    assert report["summary"]["pass"] == 0


# ---------------------------------------------------------------- wrong acceptances


@pytest.mark.parametrize(("text", "where"), [
    ("dim B : batch\ntype Z = Tensor[B, 0] float32", (2, 20)),
    ("labels D = {0..9}\nlabels E = D - D\ndim B : batch\ntype Z = Tensor[B, E] float32", (4, 20)),
    ("dim B : batch\ntype S[L] = Tensor[B, L] float32\nlabels N = {}\ntype Z = S[N]", (4, 12)),
], ids=["zero", "empty_set", "empty_argument"])
def test_an_axis_of_size_zero_is_an_error(diagnostics_of, text: str, where: tuple[int, int]) -> None:
    found = diagnostics_of(text)
    assert [(d.code, d.span.line, d.span.column) for d in found] == [("E0302", *where)]


@pytest.mark.parametrize("text", [
    "dim B : batch\ntype T[L, L] = Tensor[B, L] float32",
    "dim B : batch\ninterface C[L, L] { input x: Tensor[B, L] float32\n  output y: Tensor[B, L] float32 }",
])
def test_a_generic_parameter_declared_twice_is_an_error(diagnostics_of, text: str) -> None:
    assert codes(diagnostics_of(text)) == ["E0102"]


@pytest.mark.parametrize("name", ["inf", "pi"])
def test_a_declaration_cannot_shadow_a_builtin_constant(diagnostics_of, name: str) -> None:
    assert codes(diagnostics_of(f"dim {name} = 3")) == ["E0106"]


@pytest.mark.parametrize("text", [
    "# page one\f\nlabels A = {1}\n\f\nlabels B = {1, 2} | @\n",
    "# a line\u2028separator\nlabels A = {\"x\u0085y\"}\nlabels B = {1, 2} | @\n",
    "labels A = {1}\nlabels B = {1, 2} | @\r\n",
], ids=["form_feed", "unicode_breaks", "crlf"])
def test_the_quoted_line_is_the_line_the_lexer_counted(result_of, text: str) -> None:
    result = result_of(text)
    (diagnostic,) = result.diagnostics
    source = result.sources.line(diagnostic.span.file, diagnostic.span.line)
    assert source is not None and source[diagnostic.span.column - 1] == "@"


def test_a_line_ended_by_a_lone_carriage_return_is_shown_with_spaces(result_of) -> None:
    result = result_of("labels A = {1}\rlabels B = {2} @\r")
    (diagnostic,) = result.diagnostics
    assert result.sources.line(diagnostic.span.file, 1) == "labels A = {1} labels B = {2} @"
    assert diagnostic.span.column == 31


def test_a_failed_import_is_one_error_not_one_per_use_of_its_alias(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "use.mdl").write_text(
        'import "missing.mdl" as lib\nmodule a : lib.I\nmodule b : lib.I\ncompose c : lib.I = a >> b\n'
    )
    checked = check_paths([Path("spec/use.mdl")])
    assert "E0101" not in codes(checked.diagnostics) and checked.has_errors
