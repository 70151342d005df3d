"""A composition against its own interface (W0602-W0604): its requires and input types must give its first
parts what they need, its parts' contracts must establish its ensures and output types, and its parts' dims
its declared shapes. Warnings, blamed on the composition; proved, refuted with a counter-model, or unknown."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mdl_lang.backends.z3.solve import Answer, dims_follow
from mdl_lang.cli import main
from mdl_lang.diagnostics import Diagnostic
from mdl_lang.ir import DimBinary, DimVar
from mdl_lang.report import Result, Role, Verdict
from mdl_lang.semantics.checker import CheckResult, check_paths

HEADER = """spec interfaces
dim B : batch
dim S, T
interface Narrow {
  input x: Tensor[B, S] float32 in [0, 5]
  output z: Tensor[B, S] float32 in [0, 1]
}
interface Wide {
  input x: Tensor[B, S] float32 in [0, 10]
  output z: Tensor[B, S] float32 in [0, 1]
}
interface Loose {
  input x: Tensor[B, S] float32 in [0, 10]
  output z: Tensor[B, S] float32 in [0, 3]
}
module n : Narrow {}
module w : Wide {}
module lo : Loose {}
"""
Check = Callable[..., CheckResult]  # the `check` fixture of conftest.py


def warnings(result: CheckResult, code: str) -> list[Diagnostic]:
    return [diagnostic for diagnostic in result.diagnostics if diagnostic.code == code]


def results(result: CheckResult, component: str, kind: str) -> list[Result]:
    return [r for r in result.results if r.backend == "z3" and r.component == component and r.kind == kind]


# ---------------------------------------------------------------- entry: the composition's inputs


def test_a_first_stage_that_reads_less_than_the_interface_admits_is_a_warning_blamed_on_the_composition(
        check: Check) -> None:
    result = check("compose c : Wide = n >> w\n")
    [warning] = warnings(result, "W0602")
    assert warning.message == ("`c` admits inputs its part `n` rejects: max(x) = 6 satisfies `c`'s requires and "
                               "input types but breaks `n`'s input type `x: Tensor[B, S] float32 in [0, 5]`")
    assert not result.has_errors, "a warning: the composition can still be bound and watched"
    [failed] = [r for r in results(result, "c", "requires") if r.verdict is Verdict.FAIL]
    assert failed.blame is not None and failed.blame.role is Role.COMPOSITION and failed.blame.party == "c"
    assert failed.blame.path == ("c", "n")


def test_a_single_part_and_every_part_of_a_vote_are_first_parts(check: Check) -> None:
    text = """
labels Digit = {0..9}
interface Head[L] {
  input x: Tensor[B, S] float32 in [0, 1]
  output y: Tensor[B, L] float32 in [0, 1]
}
interface HeadN[L] {
  input x: Tensor[B, S] float32 in [0, 0.5]
  output y: Tensor[B, L] float32 in [0, 1]
}
module lowp : HeadN[{0..4} | other] {}
module highp : Head[{5..9} | other] {}
compose single : Wide = n
compose voted : Head[Digit] = vote(lowp, highp)
"""
    result = check(text)
    assert sorted((w.message.split("`")[1], w.message.split("`")[3]) for w in warnings(result, "W0602")) == [
        ("single", "n"), ("voted", "lowp")]


def test_the_composition_s_own_requires_narrow_what_it_admits(check: Check) -> None:
    result = check("compose c : Wide = n >> w {\n  requires all(x <= 5)\n}\n")
    assert result.diagnostics == []
    entry = [r for r in results(result, "c", "requires") if r.message.startswith("`c`'s requires")]
    assert [r.verdict for r in entry] == [Verdict.PASS]


def test_a_nested_composition_is_a_part_with_its_own_interface(check: Check) -> None:
    result = check("compose inner : Narrow = n\ncompose outer : Wide = inner >> w\n")
    assert [w.message.split("`")[1:4:2] for w in warnings(result, "W0602")] == [["outer", "inner"]]


def test_an_undecided_entry_is_unknown_never_hidden(check: Check) -> None:
    text = """
interface Squashed {
  input x: Tensor[B, 2] float32
  output z: Tensor[B, 2] float32
  requires sigmoid(x) >= 0.6
}
interface Needs {
  input x: Tensor[B, 2] float32
  output z: Tensor[B, 2] float32
  requires x >= 0.5
}
module needs : Needs {}
compose c : Squashed = needs
"""
    result = check(text)
    [entry] = [d for d in warnings(result, "W0601") if "imply `needs`'s `requires x >= 0.5`" in d.message]
    assert entry.message.endswith("non-linear: `sigmoid`")
    assert not warnings(result, "W0602")
    assert [r.verdict for r in results(result, "c", "requires") if "`needs`" in r.message] == [Verdict.UNKNOWN]


# ---------------------------------------------------------------- exit: what the composition promises


def test_a_last_stage_that_promises_less_than_the_interface_is_a_warning(check: Check) -> None:
    result = check("compose c : Wide = w >> lo\n")
    [warning] = warnings(result, "W0603")
    assert warning.message == ("`c`'s parts do not establish what it promises: max(z) = 2 satisfies the contracts "
                               "of `w >> lo` but breaks `c`'s output type `z: Tensor[B, S] float32 in [0, 1]`")
    [failed] = [r for r in results(result, "c", "ensures") if r.verdict is Verdict.FAIL]
    assert failed.blame is not None and failed.blame.role is Role.COMPOSITION and failed.blame.path == ("c",)


def test_the_composition_s_own_ensures_are_goals(check: Check) -> None:
    result = check("compose c : Wide = n >> w {\n  requires all(x <= 5)\n  ensures big: max(z) >= 0.5\n}\n")
    [warning] = warnings(result, "W0603")
    assert "`c`'s `ensures big: max(z) >= 0.5`" in warning.message
    assert warning.notes[0].span is not None and warning.notes[0].span.line == HEADER.count("\n") + 3


def test_every_stage_of_the_chain_is_a_premise_so_an_ensures_about_the_input_is_proved(check: Check) -> None:
    text = """
interface Half {
  input x: Tensor[B, 4] float32 in [0, 1]
  output z: Tensor[B, 4] float32 in [0, 1]
  ensures z == x / 2
}
interface Double {
  input z: Tensor[B, 4] float32 in [0, 1]
  output y: Tensor[B, 4] float32 in [0, 2]
  ensures y == z * 2
}
interface Round {
  input x: Tensor[B, 4] float32 in [0, 1]
  output y: Tensor[B, 4] float32 in [0, 1]
  ensures lossless: y == x
}
module half : Half {}
module double : Double {}
compose round : Round = half >> double
"""
    result = check(text)
    assert result.diagnostics == []
    assert [r.verdict for r in results(result, "round", "ensures")] == [Verdict.PASS, Verdict.PASS]


def test_a_vote_s_output_only_keeps_its_range_so_other_ensures_are_skipped_never_refuted(check: Check) -> None:
    text = """
labels Digit = {0..9}
interface Head[L] {
  input x: Tensor[B, S] float32 in [0, 1]
  output y: Tensor[B, L] float32 in [0, 1]
  ensures sum(y) == 1 within 1e-4
}
module lowp : Head[{0..4} | other] {}
module highp : Head[{5..9} | other] {}
compose v : Head[Digit] = vote(lowp, highp) {
  ensures conf: max(y) >= 0.15
}
"""
    result = check(text)
    assert result.diagnostics == []
    verdicts = {r.clause: r.verdict for r in results(result, "v", "ensures")}
    assert verdicts["type of y"] is Verdict.PASS  # the parts' shared range is the vote's
    assert verdicts["conf"] is Verdict.SKIP
    assert list(verdicts.values()).count(Verdict.SKIP) == 2  # and the interface's sum


def test_a_replaced_part_is_read_by_its_replacement_s_contract(check: Check) -> None:
    text = """
module n_sharp : Narrow { ensures max(z) <= 0.5 }
compose c : Narrow = n {
  ensures max(z) <= 0.5
}
compose r : Narrow = replace(c, n, n_sharp) {
  ensures max(z) <= 0.5
}
"""
    result = check(text)
    assert [w.message.split("`")[1] for w in warnings(result, "W0603")] == ["c"]
    assert all(r.verdict is Verdict.PASS for r in results(result, "r", "ensures"))


# ---------------------------------------------------------------- shapes


def test_a_dim_the_last_part_chooses_does_not_establish_the_declared_output_shape(check: Check) -> None:
    text = """
interface Any {
  input x: Tensor[B, S] float32
  output z: Tensor[B, T] float32
}
interface Keep {
  input x: Tensor[B, T] float32
  output z: Tensor[B, T] float32
}
interface Same {
  input x: Tensor[B, S] float32
  output z: Tensor[B, S] float32
}
module a : Any {}
module k : Keep {}
compose c : Same = a >> k
"""
    result = check(text)
    [warning] = warnings(result, "W0604")
    assert warning.message.startswith("`c`'s parts do not always produce its declared output shape: with ")
    assert warning.message.endswith("(output `z` of Same) fails")
    [failed] = [r for r in results(result, "c", "dims") if r.verdict is Verdict.FAIL]
    assert failed.blame is not None and failed.blame.role is Role.COMPOSITION


def test_a_first_part_of_one_width_does_not_admit_every_width(check: Check) -> None:
    text = """
interface Five {
  input x: Tensor[B, 5] float32
  output z: Tensor[B, 5] float32
}
interface Same {
  input x: Tensor[B, S] float32
  output z: Tensor[B, S] float32
}
module five : Five {}
compose c : Same = five
"""
    [warning] = warnings(check(text), "W0604")
    assert warning.message == ("`c` admits input shapes its parts reject: with S = 1, which its interface admits, "
                               "no sizes of the dims of `five` fit both its inputs and its connections")


def test_dims_that_follow_from_the_input_and_dims_only_the_interface_outputs_name_are_proved(check: Check) -> None:
    text = """
interface Dup {
  input x: Tensor[B, S] float32
  output z: Tensor[B, S * 2] float32
}
interface Half {
  input x: Tensor[B, S] float32
  output z: Tensor[B, S // 2] float32
}
interface Same {
  input x: Tensor[B, S] float32
  output z: Tensor[B, S] float32
}
interface Grow {
  input x: Tensor[B, S] float32
  output z: Tensor[B, T] float32
}
module dup : Dup {}
module half : Half {}
compose same : Same = dup >> half
compose grow : Grow = dup
"""
    result = check(text)
    assert [d.code for d in result.diagnostics] == ["W0501"]  # `(S * 2) // 2 == S`: the front end leaves it
    assert [r.verdict for r in results(result, "same", "dims")] == [Verdict.PASS, Verdict.PASS, Verdict.PASS]
    assert [r.verdict for r in results(result, "grow", "dims")] == [Verdict.PASS, Verdict.PASS]


def test_quantified_dims_are_never_proved_when_z3_cannot_tell() -> None:
    n, s, t = DimVar("N"), DimVar("a#1:S"), DimVar("a#1:T")
    cube = DimBinary("*", DimBinary("*", s, s), s)
    wanted = [(n, DimBinary("+", cube, DimBinary("*", t, DimBinary("*", t, t))))]  # N == S^3 + T^3
    outcome, _ = dims_follow([], wanted, frozenset({"a#1:S", "a#1:T"}), timeout_ms=1)
    assert outcome.answer in (Answer.UNKNOWN, Answer.REFUTED)


# ---------------------------------------------------------------- the repository's own specs


def test_the_repository_specs_keep_their_interfaces() -> None:
    result = check_paths([Path(__file__).resolve().parents[3] / "specs"])
    assert [d.code for d in result.diagnostics] == []
    assert not [r for r in result.results if r.verdict in (Verdict.FAIL, Verdict.UNKNOWN)]


# ---------------------------------------------------------------- warnings do not stop `mdl test`


def test_mdl_test_runs_a_composition_with_a_warning_and_blames_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "interface_parts.py").write_text(
        "from torch import nn\n\nclass Scale(nn.Module):\n    def __init__(self, k):\n        super().__init__()\n"
        "        self.k = k\n\n    def forward(self, x):\n        return (x / self.k).clamp(0, 1)\n\n"
        "def narrow():\n    return Scale(5)\n\ndef wide():\n    return Scale(10)\n")
    spec = tmp_path / "spec.mdl"
    spec.write_text(HEADER.replace("module n : Narrow {}", 'module n : Narrow { python "interface_parts:narrow" }')
                    .replace("module w : Wide {}", 'module w : Wide { python "interface_parts:wide" }')
                    + "compose c : Wide = n >> w\n", encoding="utf-8")
    status = main(["test", str(spec), "--module", "c", "--max-examples", "5", "--format", "json",
                   "--replay-dir", str(tmp_path / "replays")])
    document = json.loads(capsys.readouterr().out)
    assert [d["code"] for d in document["diagnostics"]] == ["W0602"]
    failed = [r for r in document["results"] if r["verdict"] == "fail"]
    assert status == 1 and failed, "the test ran: inputs above 5 break `n`'s input type"
    assert {r["blame"]["party"] for r in failed} == {"c"}


def test_a_compositions_relational_ensures_is_listed_as_skipped_not_left_out(check: Check) -> None:
    result = check("""
compose c : Wide = w {
  ensures steady: forall x2 within 0.01 of x (linf): self(x2) == z within 0.1
}
""")
    [skipped] = [r for r in results(result, "c", "ensures") if r.clause == "steady"]
    assert skipped.verdict is Verdict.SKIP and "mdl test" in skipped.message
