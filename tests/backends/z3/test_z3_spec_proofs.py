"""The Z3 spec proofs of `mdl check`: proved, refuted with a counter-model, unknown with a reason;
vacuity, `a >> b`, subtyping, `replace`, dims, and the interval abstraction of large tensors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mdl_lang.cli import main
from mdl_lang.report import Result, Verdict
from mdl_lang.semantics.checker import CheckResult, check_paths

REPO = Path(__file__).resolve().parents[3]
HEADER = "spec proofs\ndim B : batch\n"
Check = Callable[..., CheckResult]  # the `check` fixture of conftest.py


def codes(result: CheckResult) -> list[str]:
    return [diagnostic.code for diagnostic in result.diagnostics]


def proofs(result: CheckResult, kind: str | None = None) -> list[Result]:
    return [r for r in result.results if r.backend == "z3" and (kind is None or r.kind == kind)]


def pipe_spec(left_ensures: str, right_requires: str, width: int = 2, left_range: str = "in [0, 1]") -> str:
    """`a >> b` over vectors of `width` elements: a's ensures about (x, z), b's requires about z."""
    return f"""
interface A {{
  input x: Tensor[B, {width}] float32 {left_range}
  output z: Tensor[B, {width}] float32
  ensures {left_ensures}
}}
interface Bb {{
  input z: Tensor[B, {width}] float32
  output y: Tensor[B, 1] float32
  requires {right_requires}
}}
interface Whole {{
  input x: Tensor[B, {width}] float32 {left_range}
  output y: Tensor[B, 1] float32
}}
module a : A {{}}
module b : Bb {{}}
compose ab : Whole = a >> b
"""


def is_pipe(result: Result) -> bool:
    """A result of the `a >> b` check, not one of `ab` against its own interface (W0602-W0604)."""
    return "`a`'s ensures imply" in result.message or result.message.startswith("`a >> b`")


def pipe_verdicts(result: CheckResult) -> list[Verdict]:
    return [r.verdict for r in proofs(result) if r.component == "ab" and is_pipe(r)]


# ---------------------------------------------------------------- a >> b


def test_an_implication_that_holds_is_proved_and_prints_nothing(check: Check) -> None:
    result = check(pipe_spec("z == x / 2", "0 <= z <= 0.5 and sum(z) <= 1"))
    assert codes(result) == []
    assert pipe_verdicts(result) == [Verdict.PASS]


def test_a_refuted_implication_names_the_breaking_element_in_spec_terms(check: Check) -> None:
    result = check(pipe_spec("z[0] == 0.5 and z[1] == -0.5", "z >= 0"))
    assert codes(result) == ["E0602"]
    error = result.diagnostics[0]
    assert error.message == ("`a >> b`: the parts do not fit: z[1] = -0.5 satisfies `a`'s ensures but breaks "
                             "`b`'s `requires z >= 0`")
    assert error.span.line == 20  # the composition
    assert error.notes[0].span is not None and error.notes[0].span.line == 12  # the failing requires
    failed = [r for r in proofs(result) if r.verdict is Verdict.FAIL]
    assert failed[0].blame is not None and failed[0].blame.role.value == "composition"


def test_the_input_type_of_the_next_part_is_a_goal(check: Check) -> None:
    text = pipe_spec("z == x * 3", "finite(z)").replace(
        "input z: Tensor[B, 2] float32\n", "input z: Tensor[B, 2] float32 in [0, 2]\n")
    result = check(text)
    assert codes(result) == ["E0602"]
    assert "input type `z: Tensor[B, 2] float32 in [0, 2]`" in result.diagnostics[0].message


def test_the_requires_of_the_first_part_is_assumed(check: Check) -> None:
    text = pipe_spec("z == x - 0.5", "z >= 0", left_range="").replace(
        "  ensures z == x - 0.5", "  requires x >= 0.5\n  ensures z == x - 0.5")
    assert pipe_verdicts(check(text)) == [Verdict.PASS]


def test_non_linear_functions_give_unknown_with_the_reason(check: Check) -> None:
    result = check(pipe_spec("z == sigmoid(x)", "z >= 0.6"))
    assert codes(result) == ["W0601"]
    assert result.diagnostics[0].message.endswith("non-linear: `sigmoid`")
    assert pipe_verdicts(result) == [Verdict.UNKNOWN]


def test_known_facts_about_softmax_still_prove(check: Check) -> None:
    result = check(pipe_spec("z == softmax(x)", "sum(z) == 1 within 1e-6 and z >= 0 and z <= 1"))
    assert codes(result) == []
    assert pipe_verdicts(result) == [Verdict.PASS]


def test_a_timeout_is_unknown_never_proved(check: Check) -> None:
    hard = pipe_spec("z == x * x * x - x * x", "z * z * z <= 0.3", width=6, left_range="in [-3, 3]")
    result = check(hard, timeout_ms=1)
    # The claim is false: within 1 ms Z3 almost always gives up (unknown, saying why); on a rare
    # fast run it refutes it. It must never call it proved.
    [verdict] = pipe_verdicts(result)
    assert verdict in (Verdict.UNKNOWN, Verdict.FAIL)
    if verdict is Verdict.UNKNOWN:
        assert any("timeout" in diagnostic.message for diagnostic in result.diagnostics)


def test_identical_compositions_cost_one_query(check: Check) -> None:
    text = pipe_spec("z == x / 2", "z <= 0.5")
    text += "".join(f"compose ab{i} : Whole = a >> b\n" for i in range(20))
    from mdl_lang.backends.z3 import check_specs

    result = check(text)
    again = check_specs(list(result.specs.values()), result.sources)
    assert len([r for r in again.results if r.component.startswith("ab") and is_pipe(r)
                and r.verdict is Verdict.PASS]) == 21
    # One for the 21 pipes, one for the 21 compositions' inputs against `a`'s, one for the vacuity of `b`'s requires.
    assert again.prover.solver_calls == 3


# ---------------------------------------------------------------- vacuity


def test_a_requires_no_input_keeps_is_an_error_at_that_clause(check: Check) -> None:
    result = check("""
interface S {
  input x: Tensor[B, 3] float32 in [0, 1]
  output y: Tensor[B, 1] float32
  requires x[0] >= 0.5
  requires x[0] + x[1] <= 0.25
}
module s : S {}
""")
    assert codes(result) == ["E0601"]
    assert result.diagnostics[0].span.line == 8
    assert [note.span.line for note in result.diagnostics[0].notes if note.span] == [7]


def test_a_satisfiable_requires_passes(check: Check) -> None:
    result = check("""
interface S {
  input x: Tensor[B, 3] float32 in [0, 1]
  output y: Tensor[B, 1] float32
  requires x[0] >= 0.5 and mean(x) <= 0.5
}
module s : S {}
""")
    assert codes(result) == []
    assert [r.verdict for r in proofs(result)] == [Verdict.PASS]


# ---------------------------------------------------------------- subtyping and replace

SCORER = """
interface Scorer {
  input x: Tensor[B, 3] float32 in [0, 1]
  output y: Tensor[B, 2] float32 in [0, 1]
  requires x[1] >= 0.25
}
"""


def test_a_module_may_weaken_but_not_strengthen_requires(check: Check) -> None:
    weaker = check(SCORER + "module m : Scorer {\n  requires x[1] >= 0.1\n}\n")
    assert codes(weaker) == []
    assert Verdict.PASS in [r.verdict for r in proofs(weaker) if r.component == "m"]
    stronger = check(SCORER + "module m : Scorer {\n  requires x[1] >= 0.5\n}\n")
    assert codes(stronger) == ["E0603"]
    assert "x[1] = " in stronger.diagnostics[0].message
    assert "satisfies `Scorer`'s requires but breaks `requires x[1] >= 0.5`" in stronger.diagnostics[0].message


REPLACE = SCORER.replace("  requires x[1] >= 0.25\n", "") + """
interface Pair {
  input x: Tensor[B, 3] float32 in [0, 1]
  output y: Tensor[B, 2] float32 in [0, 1]
}
module old : Scorer {
  ensures y[0] <= 0.5
}
module new : Scorer {
  NEW
}
interface Tail {
  input y: Tensor[B, 2] float32 in [0, 1]
  output w: Tensor[B, 2] float32 in [0, 1]
}
module tail : Tail {}
compose c : Pair = old >> tail
compose r : Pair = replace(c, old, new)
"""


def test_replace_needs_a_behavioural_subtype(check: Check) -> None:
    good = check(REPLACE.replace("NEW", "ensures y[0] <= 0.25"))
    assert "E0604" not in codes(good)
    assert [r.verdict for r in proofs(good) if r.component == "new" and r.kind == "ensures"] == [Verdict.PASS]
    bad = check(REPLACE.replace("NEW", "ensures y[0] <= 0.75"))
    assert "E0604" in codes(bad)
    error = next(d for d in bad.diagnostics if d.code == "E0604")
    assert error.message.startswith("`new` is not a behavioural subtype of `old`: it ensures less: y[0] = ")
    asks_more = check(REPLACE.replace("NEW", "requires x[2] >= 0.5"))
    assert "requires more" in next(d for d in asks_more.diagnostics if d.code == "E0604").message


def test_the_repos_replace_is_proved_and_its_statistical_clause_kept_as_written() -> None:
    result = check_paths([REPO / "specs" / "digits_modules.mdl"], REPO / "specs")
    assert not [d for d in result.diagnostics if d.code.startswith(("E06", "W06"))]
    replaced = [r for r in proofs(result) if r.component == "m5_v2" and r.kind == "ensures"]
    assert {r.verdict for r in replaced} == {Verdict.PASS}
    assert any(r.fragment == "statistical" and "keeps `ensures" in r.message for r in replaced)


REPLACE_OUTSIDE = """
labels Two = {0, 1}
type In = Tensor[B, 2] float32 in [0, 1]
data d2 : (In, Two) { python "nowhere:data" }
interface P { input x: In  output y: Tensor[B, Two] float32 }
module old : P {
  ensures rob: forall x2 within 0.01 of x (linf): argmax(self(x2)) == argmax(y)
  ensures acc: accuracy(y) >= 0.9 on d2
  cost { params <= 10, latency <= 2 ms at batch 4 }
}
module new : P { NEW }
compose whole : P = old
compose swapped : P = replace(whole, old, new)
"""


def test_replace_compares_cost_bounds_and_leaves_what_it_cannot_compare_unknown(check: Check) -> None:
    weaker = check(REPLACE_OUTSIDE.replace("NEW", "cost { params <= 100 }"))
    assert codes(weaker) == ["E0604", "E0604", "W0601", "W0601"]
    assert [d.message for d in weaker.diagnostics[:2]] == [
        "`new` is not a behavioural subtype of `old`: it promises only `params <= 100`, which does not keep "
        "`params <= 10`",
        "`new` is not a behavioural subtype of `old`: it promises no latency bound, which does not keep "
        "`latency <= 2 ms at batch 4`",
    ]
    unknown = {r.clause: r.verdict for r in proofs(weaker) if r.component == "new" and r.fragment != "cost"}
    assert unknown == {"rob": Verdict.UNKNOWN, "acc": Verdict.UNKNOWN}
    stronger = check(REPLACE_OUTSIDE.replace("NEW", """
  ensures rob: forall x2 within 0.02 of x (linf): argmax(self(x2)) == argmax(y)
  ensures acc: accuracy(y) >= 0.95 on d2 with confidence 0.99
  cost { params <= 8, latency <= 1500 us at batch 4 }"""))
    assert codes(stronger) == []
    assert {r.verdict for r in proofs(stronger) if r.component == "new"} == {Verdict.PASS}
    other_batch = check(REPLACE_OUTSIDE.replace("NEW", "ensures rob: forall x2 within 0.01 of x (linf): "
                                                "argmax(self(x2)) == argmax(y)\n  ensures acc: accuracy(y) >= 0.9 "
                                                "on d2\n  cost { params <= 10, latency <= 1 ms at batch 8 }"))
    assert codes(other_batch) == ["W0601"] and "only at another batch" in other_batch.diagnostics[0].message


# ---------------------------------------------------------------- dims


DIMS = """
dim S, T
interface Grid {
  input x: Tensor[B, 4] float32
  output z: Tensor[B, S * T] float32
}
interface Sink {
  input z: Tensor[B, N] float32
  output y: Tensor[B, 1] float32
}
interface Whole {
  input x: Tensor[B, 4] float32
  output y: Tensor[B, 1] float32
}
module grid : Grid {}
module sink : Sink {}
compose g : Whole = grid >> sink
"""


def test_undecided_dim_equations_are_solved_over_positive_integers(check: Check) -> None:
    solvable = check(DIMS.replace("N", "6"))
    dims = [r for r in proofs(solvable, "dims") if r.clause.startswith("dims ")]
    assert [r.verdict for r in dims] == [Verdict.PASS]
    assert dims[0].message.startswith("the dims solve: S = ")


def test_a_binding_made_after_an_undecided_equation_still_counts(check: Check) -> None:
    # `16 == S * S` is left to Z3 (not linear); the interface then binds S to 5: with S = 4 forced, no solution.
    result = check("""
dim S
interface Sq { input x: Tensor[B, S * S] float32  output y: Tensor[B, S] float32 }
interface Id16 { input x: Tensor[B, 16] float32  output y: Tensor[B, 16] float32 }
interface C5 { input x: Tensor[B, 16] float32  output y: Tensor[B, 5] float32 }
module id16 : Id16 {}
module sq : Sq {}
compose g5 : C5 = id16 >> sq
""")
    assert codes(result) == ["E0605", "W0501"]
    assert result.diagnostics[0].message == "`S == 5` (output `y` of C5) has no solution in positive integers " \
        "together with `16 == S * S` (`id16 >> sq`)"
    assert [r.verdict for r in proofs(result, "dims")] == [Verdict.FAIL]


# ---------------------------------------------------------------- large tensors: the interval abstraction


def test_large_tensors_are_summarised_soundly(check: Check) -> None:
    def verdicts(requires: str) -> list[Verdict]:
        return pipe_verdicts(check(pipe_spec("z >= 0.5", requires, width=100)))

    assert verdicts("min(z) >= 0.25 and z >= 0.5") == [Verdict.PASS]
    assert verdicts("z[3] >= 0.5") == [Verdict.PASS]
    assert verdicts("z[3] >= 0.6") == [Verdict.UNKNOWN]  # an element alone is only between min and max
    assert verdicts("sum(z) >= 50 and mean(z) >= 0.5") == [Verdict.PASS]
    refuted = check(pipe_spec("z >= 0.5", "mean(z) >= 0.6", width=100))
    assert pipe_verdicts(refuted) == [Verdict.FAIL]
    assert "sum(z) = " in refuted.diagnostics[0].message


def test_an_elementwise_relation_between_large_tensors_is_unknown(check: Check) -> None:
    result = check(pipe_spec("z == x", "z >= 0", width=100))
    assert pipe_verdicts(result) == [Verdict.UNKNOWN]
    assert "too large" in result.diagnostics[0].message


# ---------------------------------------------------------------- free dims: every size, not the size tried


def free_pipe(left_ensures: str, right_requires: str) -> str:
    return "dim S\n" + pipe_spec(left_ensures, right_requires, width="S")  # type: ignore[arg-type]


def test_a_pipe_proved_only_for_the_size_tried_is_unknown_naming_the_dim(check: Check) -> None:
    # z in [0, 1]^S: sum(z) <= 3 holds for S = 3 (the size tried) but not for S = 4.
    result = check(free_pipe("0 <= z <= 1", "sum(z) <= 3"))
    assert pipe_verdicts(result) == [Verdict.UNKNOWN]
    assert codes(result) == ["W0601"]
    assert "it holds with `S` = 3, but `S` is free" in result.diagnostics[0].message
    # Refuted at S = 3, but S = 2 keeps it: not an error either.
    refuted = check(free_pipe("0 <= z <= 1", "sum(z) <= 2"))
    assert codes(refuted) == ["W0601"] and "with `S` = 3 it fails (" in refuted.diagnostics[0].message


def test_a_free_size_argument_that_covers_every_size_is_still_proved_or_refuted(check: Check) -> None:
    for requires in ("all(z >= 0)", "min(z) >= -1 and max(z) <= 1", "sum(z) >= 0", "mean(z) <= 1"):
        result = check(free_pipe("0 <= z <= 1", requires))
        assert (requires, pipe_verdicts(result), codes(result)) == (requires, [Verdict.PASS], [])
    # Only min and max read: a model is one of every size from 2 on, so a refutation holds whatever S is.
    everywhere = check(free_pipe("0 <= z <= 1", "max(z) <= 0.5"))
    assert codes(everywhere) == ["E0602"] and "max(z) = " in everywhere.diagnostics[0].message
    # `_` in b's input is sized by a's output (2 elements): nothing is free there.
    sized = check(pipe_spec("z[0] == 1 and z[1] == 0", "sum(z) == 1").replace(
        "input z: Tensor[B, 2] float32", "input z: Tensor[B, _] float32"))
    assert (pipe_verdicts(sized), codes(sized)) == ([Verdict.PASS], [])
    # The input x has a free size but no clause reads it: the refutation on z (2 elements) is exact.
    fixed = check("dim S\n" + pipe_spec("z[0] == 0.5 and z[1] == -0.5", "z >= 0").replace(
        "input x: Tensor[B, 2] float32 in [0, 1]", "input x: Tensor[B, S] float32 in [0, 1]"))
    assert codes(fixed) == ["E0602"]


def test_subtyping_and_vacuity_are_not_decided_by_the_size_tried(check: Check) -> None:
    result = check("""
dim S
interface Free { input x: Tensor[B, S] float32 in [0, 1]  output y: Tensor[B, S] float32 }
module m : Free { requires sum(x) <= 3 }
interface Wide { input x: Tensor[B, S] float32 in [0, 1]  output y: Tensor[B, S] float32  requires sum(x) >= 4 }
module w : Wide { }
interface Empty { input x: Tensor[B, S] float32  output y: Tensor[B, S] float32
                  requires max(x) <= 0.5 and min(x) >= 0.6 }
module e : Empty { }
""")
    # m strengthens the requires once S >= 4; w's requires is kept by x = ones for S >= 4; e's by none at any size.
    assert codes(result) == ["W0601", "W0601", "E0601"]
    subtype, vacuity = result.diagnostics[:2]
    assert "`m` is a behavioural subtype" in subtype.message and "`S` = 3" in subtype.message
    assert "with `S` = 3 no input keeps them, but `S` is free" in vacuity.message
    assert "no input satisfies `requires max(x) <= 0.5 and min(x) >= 0.6` of `e`" in result.diagnostics[2].message


# ---------------------------------------------------------------- the CLI


def test_json_lists_z3_results_and_unknown_exits_0_unless_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "spec.mdl"
    path.write_text(HEADER + pipe_spec("z == sigmoid(x)", "z >= 0.6"), encoding="utf-8")
    assert main(["check", str(path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    z3 = [r for r in report["results"] if r["backend"] == "z3"]
    # b: not vacuous; ab: the pipe unknown, its inputs as its interface admits them proved.
    assert {(r["module"], r["verdict"]) for r in z3} == {("ab", "unknown"), ("ab", "pass"), ("b", "pass")}
    assert report["summary"]["unknown"] >= 1
    assert main(["check", str(path), "--strict"]) == 1
    capsys.readouterr()
    assert main(["check", str(path), "--z3-timeout", "0"]) == 2


# ---------------------------------------------------------------- the encoder's coverage of the IR


def test_every_ir_node_and_built_in_has_a_handler_or_an_explicit_unsupported() -> None:
    from mdl_lang.backends.z3.encode import Encoder
    from mdl_lang.ir import EXPR_NODES
    from mdl_lang.semantics.clauses import BUILTIN_FUNCTIONS, STATISTICS

    assert [node.__name__ for node in EXPR_NODES if not hasattr(Encoder, f"emit_{node.__name__}")] == []
    relational = {"flip", "monotone"}  # only inside relational clauses, which this check leaves out
    missing = [name for name in BUILTIN_FUNCTIONS if not hasattr(Encoder, f"call_{name}")]
    assert sorted(missing) == sorted(relational | set(STATISTICS))


# ---------------------------------------------------------------- labels: quantifiers, label indexing, argmax

LABELLED = """
labels Digit = {0..3}
labels Low = {0, 1} within Digit
interface A {
  input x: Tensor[B, 2] float32 in [0, 1]
  output z: Tensor[B, Digit] float32 in [0, 1]
  ensures forall l in Digit: z[l] >= 0.1
  ensures argmax(z) in Low
}
interface Bb {
  input z: Tensor[B, Digit] float32
  output y: Tensor[B, 1] float32
  requires REQUIRES
}
interface Whole {
  input x: Tensor[B, 2] float32 in [0, 1]
  output y: Tensor[B, 1] float32
}
module a : A {}
module b : Bb {}
compose ab : Whole = a >> b
"""


def test_label_quantifiers_indexing_and_argmax_are_encoded_exactly(check: Check) -> None:
    def run(requires: str) -> CheckResult:
        return check(LABELLED.replace("REQUIRES", requires))

    assert pipe_verdicts(run("z[2] >= 0.05 and (exists l in Digit: z[l] >= 0.1)")) == [Verdict.PASS]
    assert pipe_verdicts(run("argmax(z) != 3 and z[0] >= z[3] or z[1] >= z[3]")) == [Verdict.PASS]
    refuted = run("forall l in Low: z[l] <= 0.9")
    assert pipe_verdicts(refuted) == [Verdict.FAIL]
    assert refuted.diagnostics[0].message.startswith("`a >> b`: the parts do not fit: z[0] = ")


def test_a_vote_before_a_stage_is_never_refuted_on_its_value_range_alone(check: Check) -> None:
    # Each part's winning score is at least 0.5 (two scores summing to 1) and the vote keeps the winner's
    # score, so `h` gets what it needs; Z3 sees only the vote's range [0, 1], which is not a counter-model.
    result = check("""
labels K = {0, 1}
labels J = {2, 3}
labels KJ = K | J
interface PK { input x: Tensor[B, 4] float32 in [0, 1]  output y: Tensor[B, K] float32 in [0, 1]
  ensures sum(y) == 1 within 1e-6 }
interface PJ { input x: Tensor[B, 4] float32 in [0, 1]  output y: Tensor[B, J] float32 in [0, 1]
  ensures sum(y) == 1 within 1e-6 }
interface Head { input s: Tensor[B, KJ] float32  output o: Tensor[B, 1] float32  requires max(s) >= 0.49 }
interface W { input x: Tensor[B, 4] float32 in [0, 1]  output o: Tensor[B, 1] float32 }
module pk : PK
module pj : PJ
module h : Head
compose c : W = vote(pk, pj) >> h
""")
    assert not any(diagnostic.code == "E0602" for diagnostic in result.diagnostics)
    assert any(diagnostic.code == "W0601" and "not any one part's" in diagnostic.message
               for diagnostic in result.diagnostics)
