"""The IR of compositions: `>>` flattened into pipelines, votes, replace, and dims solved across parts."""

from __future__ import annotations

import pytest

from mdl_lang import ir
from mdl_lang.semantics.shapes import DimSolver

PRELUDE = """
labels Digit = {0..9}
labels Garment = {"tshirt", "trouser", "pullover"}
dim B : batch
dim H = 8, W = 8
dim S
type Image = Tensor[B, 1, H, W] float32 in [0, 1]
type Scores[L] = Tensor[B, L] float32 in [0, 1]

interface Classifier[L] {
  input x: Image
  output y: Scores[L]
}

interface Map {
  input x: Image
  output z: Image
}
"""

COMPOSITIONS = PRELUDE + """
module normalize : Map {}
module denoise : Map {}
module cnn : Classifier[Digit] {}
module garment_net : Classifier[Garment] {}
module low : Classifier[{0..4} | other] {}
module high : Classifier[{5..9} | other] {}
module high_v2 : Classifier[{5..9} | other] {}

compose pipeline : Classifier[Digit] = normalize >> denoise >> cnn
compose nested : Classifier[Digit] = normalize >> (denoise >> cnn)
compose experts : Classifier[Digit] = vote(low, high)
compose wider : Classifier[Digit | Garment] = vote(cnn, garment_net)
compose both : Classifier[Digit] = vote(cnn, experts, overlap=max)
compose repaired : Classifier[Digit] = replace(experts, high, high_v2) {
  ensures sum(y) <= 10
}
compose cleaned : Classifier[Digit] = normalize >> replace(pipeline, denoise, normalize)
"""


@pytest.fixture
def compositions(spec_of) -> dict[str, ir.Composition]:
    return spec_of(COMPOSITIONS).compositions


def test_pipe_is_flattened_into_one_pipeline(compositions) -> None:
    for name in ("pipeline", "nested"):
        node = compositions[name].expr
        assert isinstance(node, ir.Pipeline)
        assert [stage.name for stage in node.stages] == ["normalize", "denoise", "cnn"]
    assert compositions["pipeline"].parts == ("normalize", "denoise", "cnn")


def test_vote_scores_the_union_of_the_parts_own_labels(compositions) -> None:
    vote = compositions["experts"].expr
    assert isinstance(vote, ir.VoteNode)
    assert [part.name for part in vote.parts] == ["low", "high"]
    assert vote.labels.labels == tuple(range(10))
    assert not vote.overlap_max


def test_vote_over_two_label_sets(compositions) -> None:
    wider = compositions["wider"]
    assert wider.expr.labels.labels == (*range(10), "tshirt", "trouser", "pullover")
    (labels,) = wider.interface.args
    assert labels.labels == wider.expr.labels.labels


def test_vote_with_overlap_and_a_composition_as_part(compositions) -> None:
    both = compositions["both"]
    assert both.expr.overlap_max
    assert both.expr.labels.labels == tuple(range(10))
    assert both.parts == ("cnn", "experts", "low", "high")


def test_replace_names_the_new_part(compositions) -> None:
    repaired = compositions["repaired"]
    node = repaired.expr
    assert isinstance(node, ir.ReplaceNode)
    assert (node.old, node.new) == ("high", "high_v2")
    assert isinstance(node.base, ir.PartRef) and node.base.name == "experts"
    assert repaired.parts == ("experts", "low", "high_v2")
    assert [c.origin for c in repaired.clauses] == ["composition repaired"]


def test_replace_inside_a_pipeline(compositions) -> None:
    cleaned = compositions["cleaned"].expr
    assert isinstance(cleaned, ir.Pipeline)
    first, replaced = cleaned.stages
    assert first.name == "normalize"
    assert isinstance(replaced, ir.ReplaceNode) and replaced.old == "denoise"


def test_compositions_leave_obligations_for_the_prover(spec_of) -> None:
    obligations = spec_of(COMPOSITIONS).obligations
    kinds = [(o.kind, o.premise, o.conclusion) for o in obligations]
    assert ("pipe", "denoise ensures", "cnn requires") in kinds
    assert ("replace", "high_v2 contract", "high contract") in kinds


WIDEN = PRELUDE + """
interface Widen {
  input x: Tensor[B, S]
  output z: Tensor[B, S * 2] float32 in [0, 1]
}

interface Head[N] {
  input x: Tensor[B, N] float32
  output y: Scores[Digit]
}

interface FlatClassifier[N] {
  input x: Tensor[B, N]
  output y: Scores[Digit]
}

module widen : Widen {}
module head8 : Head[8] {}
module head7 : Head[7] {}
"""


def test_symbolic_dim_is_solved_across_a_pipe(spec_of) -> None:
    spec = spec_of(WIDEN + "compose widened : FlatClassifier[4] = widen >> head8\n")
    assert isinstance(spec.compositions["widened"].expr, ir.Pipeline)


def test_solved_dim_must_agree_with_the_interface(diagnostics_of) -> None:
    diagnostics = diagnostics_of(WIDEN + "compose widened : FlatClassifier[5] = widen >> head8\n")
    assert [d.code for d in diagnostics] == ["E0510"]
    assert "input `x` of FlatClassifier[5]" in diagnostics[0].message


def test_odd_size_has_no_solution(diagnostics_of) -> None:
    diagnostics = diagnostics_of(WIDEN + "compose widened : FlatClassifier[S] = widen >> head7\n")
    assert [d.code for d in diagnostics] == ["E0511"]
    assert diagnostics[0].message.startswith("`S * 2 == 7` has no solution")


def test_solver_binds_one_unknown_of_a_linear_equation() -> None:
    solver = DimSolver()
    twice = ir.DimBinary("*", ir.DimVar("S"), ir.DimConst(2))
    assert solver.unify(twice, ir.DimConst(8)) is None
    assert solver.bindings == {"S": ir.DimConst(4)}
    assert solver.resolve(twice) == ir.DimConst(8)
    problem = DimSolver().unify(twice, ir.DimConst(7))
    assert problem is not None and problem.kind == "no-solution"


def test_each_use_of_a_part_binds_its_dims_afresh(spec_of) -> None:
    spec = spec_of(PRELUDE + """
interface Same {
  input x: Tensor[B, S] float32
  output z: Tensor[B, S] float32
}
interface Pair {
  input x: Tensor[B, 3] float32
  output z: Tensor[B, 3] float32
}
module same : Same {}
compose twice : Pair = same >> same
""")
    assert [stage.name for stage in spec.compositions["twice"].expr.stages] == ["same", "same"]
