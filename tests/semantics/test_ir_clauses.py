"""The IR of clauses: their fragment, their typed expression, label indices resolved to positions, and costs."""

from __future__ import annotations

import pytest

from mdl_lang import ir

PRELUDE = """
labels Digit = {0..9}
labels Garment = {"tshirt", "trouser", "pullover"}
dim B : batch
dim H = 8, W = 8
type Image = Tensor[B, 1, H, W] float32 in [0, 1]
type Scores[L] = Tensor[B, L] float32 in [0, 1]

interface Classifier[L] {
  input x: Image
  output y: Scores[L]
  requires finite(x)
  ensures finite(y)
}

data digits_test : (Image, Digit)
"""

MODULES = PRELUDE + """
module cnn : Classifier[Digit] {
  python "examples.digits.models:load_cnn"
  ensures calibrated: sum(softmax(y)) == 1 within 1e-5
  ensures 0 <= y <= 1
  ensures flipped: self(flip(x, dim=-1)) == y within 1e-4
  ensures robust: forall x2 within 0.02 of x (linf): argmax(self(x2)) == argmax(y)
  ensures robust_l2: forall x2 within 0.1 of x (l2): argmax(self(x2)) == argmax(y)
  ensures monotone(y[3], x[0, 2, 2])
  ensures accurate: accuracy(y) >= 0.93 on digits_test with confidence 0.9
  ensures recall(y, 5) >= 0.8 on digits_test
  ensures per_class: forall l in Digit: precision(y, l) >= 0.85 on digits_test
  ensures majority: forall l in Digit: y[l] > 0.5 implies argmax(y) == l
  ensures x[0, 2:6, :] >= 0
  cost { params <= 50k, flops <= 2M per sample, latency <= 5 ms at batch 32 }
}

module m5 : Classifier[{5} | other] {
  ensures concern: y[5] + y[other] <= 1 + 1e-5
  ensures abstains: argmax(y) == other implies y[other] >= y[5]
  cost { latency <= 500 us, params < 1.5k }
}

module garment_net : Classifier[Garment] {
  ensures trousers: y["trouser"] <= 1
  cost { latency <= 2 s at batch 1 }
}
"""


@pytest.fixture
def modules(spec_of) -> dict[str, ir.Module]:
    return spec_of(MODULES).modules


def clause(module: ir.Module, name: str) -> ir.Clause:
    return next(c for c in module.all_clauses if c.name == name)


def test_interface_clauses_come_first_and_keep_their_origin(modules) -> None:
    cnn = modules["cnn"]
    assert [c.kind for c in cnn.interface.clauses] == ["requires", "ensures"]
    assert {c.origin for c in cnn.interface.clauses} == {"interface Classifier"}
    assert {c.origin for c in cnn.clauses} == {"module cnn"}
    assert cnn.all_clauses[:2] == cnn.interface.clauses
    assert cnn.binding == "examples.digits.models:load_cnn"


def test_unnamed_clauses_are_named_by_their_position(modules) -> None:
    cnn = modules["cnn"]
    unnamed = [c for c in cnn.clauses if c.name.startswith("ensures@")]
    assert [c.name for c in unnamed[:1]] == [f"ensures@{unnamed[0].span.line}:{unnamed[0].span.column}"]
    assert all(c.span.line == int(c.name.split("@")[1].split(":")[0]) for c in unnamed)


def test_per_sample_clause(modules) -> None:
    calibrated = clause(modules["cnn"], "calibrated")
    assert calibrated.fragment is ir.Fragment.PER_SAMPLE
    expr = calibrated.expr
    assert isinstance(expr, ir.Compare) and expr.ops == ("==",)
    assert expr.tolerance == ir.Const(1e-5, ir.REAL)
    total, one = expr.operands
    assert isinstance(total, ir.Call) and total.function == "sum"
    assert isinstance(total.args[0], ir.Call) and total.args[0].function == "softmax"
    assert one == ir.Const(1, ir.INT)


def test_chained_comparison_is_elementwise_over_the_scores(modules) -> None:
    chained = next(c for c in modules["cnn"].clauses if isinstance(c.expr, ir.Compare) and c.expr.ops == ("<=", "<="))
    assert chained.fragment is ir.Fragment.PER_SAMPLE
    assert chained.expr.type.element is ir.Element.BOOL
    assert chained.expr.type.shape == (ir.DimLabels(ir.LabelSet(tuple(range(10)))),)


def test_self_makes_a_clause_relational(modules) -> None:
    flipped = clause(modules["cnn"], "flipped")
    assert flipped.fragment is ir.Fragment.RELATIONAL
    self_call = flipped.expr.operands[0]
    assert isinstance(self_call, ir.SelfCall) and self_call.output == "y"
    (flip,) = self_call.args
    assert flip.function == "flip" and flip.options[0][0] == "dim"
    assert flip.options[0][1].value == -1


def test_ball_quantifier(modules) -> None:
    robust = clause(modules["cnn"], "robust")
    assert robust.fragment is ir.Fragment.RELATIONAL
    ball = robust.expr
    assert isinstance(ball, ir.BallQuantifier)
    assert (ball.var, ball.center, ball.norm) == ("x2", "x", "linf")
    assert ball.radius == ir.Const(0.02, ir.REAL)
    assert clause(modules["cnn"], "robust_l2").expr.norm == "l2"


def test_monotone_is_relational(modules) -> None:
    monotone = next(
        c for c in modules["cnn"].clauses if isinstance(c.expr, ir.Call) and c.expr.function == "monotone"
    )
    assert monotone.fragment is ir.Fragment.RELATIONAL
    score, pixel = monotone.expr.args
    assert score.items == (ir.IndexPosition(3, 3),)
    assert pixel.items == (ir.IndexPosition(0), ir.IndexPosition(2), ir.IndexPosition(2))


def test_statistical_clause_with_data_and_confidence(modules) -> None:
    accurate = clause(modules["cnn"], "accurate")
    assert accurate.fragment is ir.Fragment.STATISTICAL
    assert (accurate.data, accurate.confidence) == ("digits_test", 0.9)
    statistic = accurate.expr.operands[0]
    assert isinstance(statistic, ir.Statistic)
    assert (statistic.metric, statistic.output, statistic.label) == ("accuracy", "y", None)


def test_statistic_of_one_label_and_the_default_confidence(modules) -> None:
    recall = next(
        c for c in modules["cnn"].clauses
        if isinstance(c.expr, ir.Compare) and isinstance(c.expr.operands[0], ir.Statistic)
        and c.expr.operands[0].metric == "recall"
    )
    assert recall.confidence == 0.95
    label = recall.expr.operands[0].label
    assert isinstance(label, ir.LabelConst) and label.label == 5


def test_statistic_of_a_quantified_label(modules) -> None:
    per_class = clause(modules["cnn"], "per_class")
    assert per_class.fragment is ir.Fragment.STATISTICAL
    quantifier = per_class.expr
    assert isinstance(quantifier, ir.LabelQuantifier)
    assert (quantifier.quantifier, quantifier.var, quantifier.labels.labels) == ("forall", "l", tuple(range(10)))
    statistic = quantifier.body.operands[0]
    assert statistic.metric == "precision"
    assert isinstance(statistic.label, ir.VarRef) and statistic.label.name == "l"


def test_quantified_label_indexes_dynamically(modules) -> None:
    majority = clause(modules["cnn"], "majority")
    implication = majority.expr.body
    assert isinstance(implication, ir.Logic) and implication.op == "implies"
    score = implication.left.operands[0]
    (item,) = score.items
    assert isinstance(item, ir.IndexDynamic)
    assert item.labels.labels == tuple(range(10))
    argmax_equals = implication.right
    assert argmax_equals.operands[0].type.element is ir.Element.LABEL


def test_slices_on_plain_axes(modules) -> None:
    sliced = next(c for c in modules["cnn"].clauses if isinstance(c.expr, ir.Compare)
                  and isinstance(c.expr.operands[0], ir.Index) and len(c.expr.operands[0].items) == 3)
    index = sliced.expr.operands[0]
    assert index.items == (ir.IndexPosition(0), ir.IndexSlice(2, 6), ir.IndexSlice(None, None))
    assert index.type.shape == (ir.DimConst(4), ir.DimConst(8))


def test_label_indices_resolve_to_positions_in_declaration_order(modules) -> None:
    concern = clause(modules["m5"], "concern")
    five, other = concern.expr.operands[0].left, concern.expr.operands[0].right
    assert five.items == (ir.IndexPosition(0, 5),)
    assert other.items == (ir.IndexPosition(1, ir.OTHER),)
    trousers = clause(modules["garment_net"], "trousers")
    assert trousers.expr.operands[0].items == (ir.IndexPosition(1, "trouser"),)


def test_other_as_a_compared_label(modules) -> None:
    abstains = clause(modules["m5"], "abstains")
    compared = abstains.expr.left
    label = compared.operands[1]
    assert isinstance(label, ir.LabelConst) and label.label is ir.OTHER
    assert label.type.labels.position(label.label) == 1


def test_costs_with_suffixes_and_units(modules) -> None:
    params, flops, latency = modules["cnn"].costs
    assert (params.metric, params.op, params.limit) == ("params", "<=", 50_000)
    assert (flops.metric, flops.limit) == ("flops", 2_000_000)
    assert (latency.metric, latency.limit, latency.unit, latency.batch) == ("latency", 5.0, "ms", 32)
    assert {cost.fragment for cost in modules["cnn"].costs} == {ir.Fragment.COST}


def test_latency_is_kept_in_milliseconds(modules) -> None:
    microseconds, params = modules["m5"].costs
    assert (microseconds.limit, microseconds.unit, microseconds.batch) == (0.5, "ms", 1)
    assert (params.op, params.limit) == ("<", 1500)
    (seconds,) = modules["garment_net"].costs
    assert (seconds.limit, seconds.batch) == (2000.0, 1)


def test_every_node_keeps_a_span_in_the_file(modules) -> None:
    for module in modules.values():
        for item in module.clauses:
            assert item.span.file == "spec.mdl"
            for node in ir.walk(item.expr):
                assert node.span.file == "spec.mdl", node
