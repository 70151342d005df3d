"""Imports with qualified names, the examples of LANGUAGE.md sections 3, 4 and 6, and `mdl_lang.load`."""

from __future__ import annotations

from pathlib import Path

import pytest

import mdl_lang
from mdl_lang import ir
from tests.syntax.examples import COMPOSITIONS, DECLARATIONS

COMMON = """
spec common

labels Digit = {0..9}
labels Even = {0, 2, 4, 6, 8} within Digit
dim B : batch
dim H = 8, W = 8
type Image = Tensor[B, 1, H, W] float32 in [0, 1]
type Scores[L] = Tensor[B, L] float32 in [0, 1]

interface Classifier[L] {
  input x: Image
  output y: Scores[L]
  requires finite(x)
  ensures accuracy(y) >= 0.5 on digits_test
}

data digits_test : (Image, Digit)
"""

USES_COMMON = """
spec user
import "common.mdl" as common

labels Round = {0, 6} | {8, 9} within common.Digit
labels Garment = {"tshirt", "trouser", "pullover"}
dim F = common.H * common.W

module cnn : common.Classifier[common.Digit] {
  ensures forall l in common.Even: y[l] >= 0
  ensures exists l in Round: y[l] <= 0.5
  ensures count(x > 0.5) <= F
  ensures recall(y, 3) >= 0.8 on common.digits_test
}

module garment_net : common.Classifier[Garment | other] {}

compose wider : common.Classifier[common.Digit | Garment] = vote(cnn, garment_net)
"""


def test_qualified_names_reach_the_imported_file(spec_of) -> None:
    spec = spec_of(USES_COMMON, common=COMMON)
    common = spec.imports["common"]
    assert common.name == "common"
    assert common.label_sets["Even"].labels == (0, 2, 4, 6, 8)
    assert spec.label_sets["Round"].labels == (0, 6, 8, 9)
    assert spec.dims["F"] == ir.DimConst(64)
    cnn = spec.modules["cnn"]
    assert cnn.interface.name == "Classifier[Digit]"
    assert cnn.interface.declaration == "Classifier"
    assert cnn.interface.args[0].labels == tuple(range(10))


def test_an_interface_clause_names_data_of_the_interface_file(spec_of) -> None:
    cnn = spec_of(USES_COMMON, common=COMMON).modules["cnn"]
    inherited = [c for c in cnn.all_clauses if c.origin == "interface Classifier" and c.data]
    assert [c.data for c in inherited] == ["digits_test"]
    own = [c for c in cnn.clauses if c.data]
    assert [c.data for c in own] == ["common.digits_test"]


def test_vote_over_an_imported_label_set_and_a_local_one(spec_of) -> None:
    wider = spec_of(USES_COMMON, common=COMMON).compositions["wider"]
    assert wider.expr.labels.labels == (*range(10), "tshirt", "trouser", "pullover")


def test_spec_component_finds_names_through_imports(spec_of) -> None:
    spec = spec_of('import "user.mdl" as user\n', user=USES_COMMON, common=COMMON)
    assert spec.component("user.cnn") is spec.imports["user"].modules["cnn"]
    assert spec.component("user.wider").name == "wider"
    assert spec.component("nothing") is None


# LANGUAGE.md sections 3, 4 and 6, with the modules section 6 composes declared.
SECTION_6_PARTS = """
# The modules that section 6 composes.
interface Preprocess {
  input x: Image
  output z: Image
  ensures 0 <= z <= 1
}

module normalize : Preprocess {}
module m0 : Classifier[{0} | other] {}
module m1 : Classifier[{1} | other] {}
module m2 : Classifier[{2} | other] {}
module m3 : Classifier[{3} | other] {}
module m4 : Classifier[{4} | other] {}
module m5 : Classifier[{5} | other] {
  ensures y[5] + y[other] <= 1
}
module m6 : Classifier[{6} | other] {}
module m7 : Classifier[{7} | other] {}
module m8 : Classifier[{8} | other] {}
module m9 : Classifier[{9} | other] {}
module m5_v2 : Classifier[{5} | other] {
  ensures y[5] + y[other] <= 1
  ensures recall(y, 5) >= 0.95 on digits_test
}
module garment_net : Classifier[Garment] {}
"""
LANGUAGE_EXAMPLE = "\n" + DECLARATIONS + SECTION_6_PARTS + "\n" + COMPOSITIONS

SHARED = """
spec common
labels Digit = {0..9}
"""


def test_language_reference_example_checks_clean(spec_of) -> None:
    spec = spec_of(LANGUAGE_EXAMPLE, common=SHARED)
    assert spec.name == "digits"
    assert set(spec.compositions) == {"pipeline", "voted", "wider", "repaired"}
    assert spec.dims["F"] == ir.DimConst(64)
    assert spec.dims["S"] == ir.DimVar("S")
    assert spec.data["digits_test"].binding == "examples.digits.data:test_split"
    voted = spec.compositions["voted"].expr
    assert [part.name for part in voted.parts] == [f"m{k}" for k in range(10)]
    assert voted.labels.labels == tuple(range(10))
    repaired = spec.compositions["repaired"]
    assert repaired.parts == ("voted", *(f"m{k}" if k != 5 else "m5_v2" for k in range(10)))
    assert [c.fragment for c in repaired.clauses] == [ir.Fragment.STATISTICAL]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_returns_the_checked_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "common.mdl", SHARED)
    spec = mdl_lang.load(write(tmp_path, "digits.mdl", LANGUAGE_EXAMPLE))
    assert isinstance(spec, mdl_lang.CheckedSpec)
    assert isinstance(spec, ir.Spec)
    assert spec.file == "digits.mdl"
    assert spec.component("cnn").binding == "examples.digits.models:load_cnn"
    assert spec.sources.line("digits.mdl", 2).startswith("spec digits")


def test_load_accepts_warnings(tmp_path: Path) -> None:
    spec = mdl_lang.load(write(tmp_path, "warned.mdl", "labels Round = {0, 6, 6}\n"))
    assert spec.label_sets["Round"].labels == (0, 6)


def test_load_raises_spec_error_with_the_rendered_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broken = "labels Digit = {9..0}\nlabels Round = {0, 6, 6}\ndim B : batch\ndim N : batch\n"
    path = write(tmp_path, "broken.mdl", broken)
    with pytest.raises(mdl_lang.SpecError) as raised:
        mdl_lang.load(path)
    error = raised.value
    assert [d.code for d in error.diagnostics] == ["E0202", "E0301"]
    assert str(error) == error.rendered
    assert error.rendered.startswith("error[E0202]: label range 9..0 is empty\n --> broken.mdl:1:17")
    assert error.rendered.endswith("2 errors found")
    assert "W0201" not in error.rendered


def test_load_raises_spec_error_for_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(mdl_lang.SpecError, match=r"error\[E0001\]"):
        mdl_lang.load(write(tmp_path, "syntax.mdl", "dim H = = 8\n"))


def test_load_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        mdl_lang.load(tmp_path / "absent.mdl")


def test_import_of_a_path_no_file_can_have_is_reported(diagnostics_of) -> None:
    diagnostics = diagnostics_of('import "\x00common.mdl" as common\nlabels Digit = {0..9}\n')
    assert [(d.code, d.message) for d in diagnostics] == [
        ("E0103", "cannot import '\\x00common.mdl': embedded null byte"),
    ]
