"""The executable vote against a per-sample reference of the ESEC/FSE 2020 rule (LANGUAGE.md section 6)."""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import nn

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.composed import vote
from mdl_lang.semantics.checker import check_paths

SPEC = Path(__file__).parent / "specs" / "system.mdl"


def reference_decision(
    rows: list[list[float]], part_labels: list[ir.LabelSet], labels: ir.LabelSet,
) -> tuple[ir.Label, float]:
    """The rule written out for one sample, the slow and obvious way: the decided label and its score.

    Ties, which the paper leaves open, go to the label first in the vote's label order (as `argmax`).
    """
    claims = []
    for row, own in zip(rows, part_labels, strict=True):
        best = row.index(max(row))
        if own.labels[best] is not ir.OTHER:
            claims.append((row[best], own.labels[best]))
    if not claims and labels.has_other:
        return ir.OTHER, max(row[own.position(ir.OTHER)] for row, own in zip(rows, part_labels, strict=True))
    if not claims:
        claims = [
            (row[position], label)
            for row, own in zip(rows, part_labels, strict=True)
            for position, label in enumerate(own.labels) if label is not ir.OTHER
        ]
    top = max(score for score, _ in claims)
    tied = {label for score, label in claims if score == top}
    return next(label for label in labels.labels if label in tied), top


def decisions(scores: list[torch.Tensor], part_labels: list[ir.LabelSet], labels: ir.LabelSet) -> list[ir.Label]:
    return [
        reference_decision([part[sample].tolist() for part in scores], part_labels, labels)[0]
        for sample in range(scores[0].shape[0])
    ]


def voted_labels(output: torch.Tensor, labels: ir.LabelSet) -> list[ir.Label]:
    return [labels.labels[int(column)] for column in output.argmax(dim=-1)]


class Concern(nn.Module):
    """A random binary concern `{k} | other` producing (p_k, max_{j != k} p_j) from a softmax."""

    def __init__(self, label: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(10, 8, generator=generator))
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(x @ self.weight.T, dim=-1)
        own = probabilities[:, self.label]
        rest = torch.cat([probabilities[:, : self.label], probabilities[:, self.label + 1:]], dim=1).amax(dim=1)
        return torch.stack([own, rest], dim=1)


@pytest.mark.parametrize("seed", range(5))
def test_vote_matches_the_reference_rule(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = ir.LabelSet(tuple(range(10)))
    part_labels = [ir.LabelSet((k, ir.OTHER)) for k in range(10)]
    scores = []
    for _ in range(10):
        raw = torch.rand(500, 2, generator=generator)
        scores.append(raw / raw.sum(dim=1, keepdim=True))
    decided = vote(scores, tuple(part_labels), labels, 0.0)
    assert voted_labels(decided, labels) == decisions(scores, part_labels, labels)


def test_vote_without_other_always_claims_and_takes_the_highest():
    digits = ir.LabelSet((0, 1, 2))
    letters = ir.LabelSet(("a", "b"))
    union = ir.LabelSet((0, 1, 2, "a", "b"))
    first = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    second = torch.tensor([[0.4, 0.6], [0.95, 0.05]])
    decided = vote([first, second], (digits, letters), union, 0.0).argmax(dim=1)
    assert [union.labels[int(i)] for i in decided] == [0, "a"]


def test_bound_vote_composition_runs_the_rule_and_monitors_each_part():
    spec = mdl_lang.load(SPEC)
    parts = {f"m{k}": Concern(k, seed=k) for k in range(10)}
    voted = spec.bind("voted", parts=parts, mode="record", replay_dir=None)
    x = torch.rand(64, 8)
    output = voted(x)
    assert output.shape == (64, 10)
    scores = [parts[f"m{k}"](x).detach() for k in range(10)]
    part_labels = [ir.LabelSet((k, ir.OTHER)) for k in range(10)]
    labels = ir.LabelSet(tuple(range(10)))
    assert voted_labels(output, labels) == decisions(scores, part_labels, labels)
    # Each part's two scores sum to at most 1: its simplex clause fails, blamed on the part at its boundary.
    part_reports = [r for r in voted.reports if r.component != "voted"]
    assert part_reports and all(r.blame.path == ("voted", r.component) for r in part_reports)
    # The vote's own simplex then fails too; a part broke its contract first, so a part is blamed.
    own = [r for r in voted.reports if r.component == "voted"]
    assert own and all(r.blame.party in parts for r in own)


class Always(nn.Module):
    """A concern that claims its label on every input, with score 0.99."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.99, 0.01]]).expand(x.shape[0], 2)


def test_replace_runs_the_new_part_in_the_old_ones_place():
    spec = mdl_lang.load(SPEC)
    parts = {f"m{k}": Concern(k, seed=k) for k in range(10) if k != 5}
    parts["m5_v2"] = Always()
    repaired = spec.bind("repaired", parts=parts, mode="record", replay_dir=None)
    decided = repaired(torch.rand(32, 8)).argmax(dim=1)
    assert (decided == 5).all(), "the replacement claims with the highest score everywhere"
    with pytest.raises(mdl_lang.BindError, match="m5"):
        spec.bind("repaired", parts={**parts, "m5": Concern(5, seed=5)})


# ------------------------------------------------------------ the rule on random ballots, ties included

SCORES = st.sampled_from([0.0, 0.25, 0.5, 1.0])  # few values: ties with each other and with the floor


@st.composite
def ballots(draw) -> tuple[list[torch.Tensor], list[ir.LabelSet], ir.LabelSet, float | None]:
    """Parts with and without `other`, disjoint or overlapping, and a vote over their labels in any order."""
    overlap = draw(st.booleans())
    free = list(range(6))
    part_labels = []
    for _ in range(draw(st.integers(1, 4))):
        pool = range(6) if overlap else free
        if not pool:
            break
        own = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        free = [label for label in free if label not in own]
        if draw(st.booleans()):
            own.insert(draw(st.integers(0, len(own))), ir.OTHER)
        part_labels.append(ir.LabelSet(tuple(own)))
    union = list(dict.fromkeys(label for own in part_labels for label in own.own_labels))
    order = draw(st.permutations(union))
    labels = ir.LabelSet((*order, ir.OTHER) if draw(st.booleans()) else tuple(order))
    batch = draw(st.integers(1, 5))
    scores = [
        torch.tensor(draw(st.lists(st.lists(SCORES, min_size=len(own), max_size=len(own)), min_size=batch,
                                   max_size=batch)))
        for own in part_labels
    ]
    return scores, part_labels, labels, draw(st.sampled_from([0.0, None]))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ballots())
def test_vote_agrees_with_the_reference_on_random_ballots(ballot):
    scores, part_labels, labels, floor = ballot
    output = vote(scores, tuple(part_labels), labels, floor)
    assert output.shape == (scores[0].shape[0], len(labels))
    assert voted_labels(output, labels) == decisions(scores, part_labels, labels)
    assert torch.isfinite(output).all() and (output <= 1).all()
    # With the range's bottom as the floor, scores in [0, 1] stay in [0, 1]; without one, a label out of the
    # running scores just below the sample's lowest score.
    lowest = torch.stack([part.amin(dim=-1) for part in scores]).amin(dim=0, keepdim=True).T
    below = torch.nextafter(lowest, torch.tensor(-1.0))
    assert (output >= (0.0 if floor is not None else below)).all()
    for sample, row in enumerate(output):
        rows = [part[sample].tolist() for part in scores]
        label, score = reference_decision(rows, part_labels, labels)
        # The decided label keeps its score, unless at the range's bottom it has to rise just above it.
        raised = float(torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))) if floor is not None else score
        assert float(row[labels.position(label)]) in (score, raised)


# ------------------------------------------------------------ the audit's cases


class Const(nn.Module):
    """The same scores for every sample."""

    def __init__(self, row: list[float]) -> None:
        super().__init__()
        self.register_buffer("row", torch.tensor([row]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row.expand(x.shape[0], -1).clone()


class Lambda(nn.Module):
    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def load_text(tmp_path: Path, text: str) -> mdl_lang.CheckedSpec:
    path = tmp_path / "vote.mdl"
    path.write_text(text)
    return mdl_lang.load(path)


def test_an_abstaining_owner_does_not_lower_a_label_another_owner_claims():
    zero, one = ir.LabelSet((0, ir.OTHER)), ir.LabelSet((1, ir.OTHER))
    # `a` claims 0 with 0.6, `a2` (also owning 0) abstains, `b` claims 1 with 0.55: 0 wins.
    scores = [torch.tensor([[0.6, 0.4]]), torch.tensor([[0.3, 0.7]]), torch.tensor([[0.55, 0.45]])]
    output = vote(scores, (zero, zero, one), ir.LabelSet((0, 1)), 0.0)
    assert output.tolist() == [[pytest.approx(0.6), pytest.approx(0.55)]]


def test_a_single_claim_at_the_bottom_of_the_range_still_wins():
    # `a` and `b` abstain, `d` has no `other` and claims 2 with 0, the floor, tied with the lowered labels.
    scores = [torch.tensor([[0.2, 0.8]]), torch.tensor([[0.1, 0.9]]), torch.tensor([[0.0, 0.0]])]
    part_labels = (ir.LabelSet((0, ir.OTHER)), ir.LabelSet((1, ir.OTHER)), ir.LabelSet((2, 3)))
    output = vote(scores, part_labels, ir.LabelSet((0, 1, 2, 3)), 0.0)
    assert int(output.argmax()) == 2
    assert (output >= 0).all() and (output <= 1).all()


def test_scores_at_the_lowest_float_stay_finite_and_the_decision_keeps_the_argmax():
    lowest = torch.finfo(torch.float32).min
    # `a` claims 0; `b` abstains and scores its label 1 at the lowest float32, below which nothing is finite.
    scores = [torch.tensor([[1.0, 0.0]]), torch.tensor([[lowest, 0.0]])]
    part_labels = (ir.LabelSet((0, ir.OTHER)), ir.LabelSet((1, ir.OTHER)))
    output = vote(scores, part_labels, ir.LabelSet((0, 1)))
    assert torch.isfinite(output).all() and int(output.argmax()) == 0
    # Nobody claims, and the highest own score is the lowest float itself: the decision is raised above it.
    scores = [torch.tensor([[lowest, 0.0]]), torch.tensor([[lowest, 0.0]])]
    output = vote(scores, part_labels, ir.LabelSet((0, 1)))
    assert torch.isfinite(output).all() and int(output.argmax()) == 0


PER_CLASS = """
labels Digit = {0..2}
dim B : batch
type Image = Tensor[B, 4] float32 in [0, 1]
"""


def test_a_vote_over_scores_without_a_range_keeps_them_finite(tmp_path):
    spec = load_text(tmp_path, PER_CLASS + """
type Scores[L] = Tensor[B, L] float32
interface Classifier[L] {
  input  x: Image
  output y: Scores[L]
  requires finite(x)
  ensures  finite(y)
}
module m0 : Classifier[{0} | other]
module m1 : Classifier[{1} | other]
module m2 : Classifier[{2} | other]
compose voted : Classifier[Digit] = vote(m0, m1, m2)
""")
    parts = {"m0": Const([2.0, -1.0]), "m1": Const([-1.0, 2.0]), "m2": Const([-1.0, 2.0])}
    voted = spec.bind("voted", parts=parts, mode="record", replay_dir=None)
    output = voted(torch.zeros(3, 4))
    assert voted.reports == []
    below = float(torch.nextafter(torch.tensor(-1.0), torch.tensor(-2.0)))
    assert output.tolist() == [[2.0, below, below]] * 3, "abstaining labels score just below the lowest score"


def test_a_vote_in_a_pipeline_lowers_to_the_bottom_of_its_own_range(tmp_path):
    spec = load_text(tmp_path, PER_CLASS + """
type P[L] = Tensor[B, L] float32 in [0, 1]
interface C[L] {
  input x: Image
  output y: P[L]
}
interface H {
  input x: Tensor[B, 3] float32
  output y: Tensor[B, 3] float32 in [-5, 5]
  requires pos: all(x >= 0)
}
interface Top {
  input x: Image
  output y: Tensor[B, 3] float32 in [-5, 5]
}
module a : C[{0} | other]
module b : C[{1} | other]
module c : C[{2} | other]
module h : H
compose v : C[Digit] = vote(a, b, c)
compose top : Top = v >> h
compose inline : Top = vote(a, b, c) >> h
""")

    class Identity(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1

    parts = {"a": Const([0.9, 0.1]), "b": Const([0.2, 0.8]), "c": Const([0.3, 0.7])}
    for name in ("top", "inline"):
        composed = spec.bind(name, parts={**parts, "h": Identity()}, mode="record", replay_dir=None)
        assert composed(torch.zeros(2, 4)).tolist() == [[pytest.approx(0.9), 0.0, 0.0]] * 2, name
        assert composed.reports == [], name


OTHER_VOTE = PER_CLASS + """
type P[L] = Tensor[B, L] float32 in [0, 1]
interface C[L] {
  input x: Image
  output y: P[L]
}
module a : C[{0} | other]
module b : C[{1} | other]
module c : C[{2} | other]
compose ab : C[{1, 0} | other] = vote(a, b)
compose all3 : C[Digit] = vote(ab, c)
"""


def test_a_vote_typed_with_other_abstains_when_no_part_claims(tmp_path):
    spec = load_text(tmp_path, OTHER_VOTE)
    abstaining = {"a": Const([0.45, 0.55]), "b": Const([0.2, 0.8])}
    ab = spec.bind("ab", parts=abstaining, mode="record", replay_dir=None)
    # Columns in the interface's order {1, 0, other}; `other` scores the parts' highest `other`.
    assert ab(torch.zeros(1, 4)).tolist() == [[pytest.approx(0.2), pytest.approx(0.45), pytest.approx(0.8)]]
    assert ab.reports == []
    # Once `a` claims, `b`'s labels are out of the running and `other` scores as `a` does.
    claiming = spec.bind("ab", parts={**abstaining, "a": Const([0.6, 0.4])}, replay_dir=None)
    assert claiming(torch.zeros(1, 4)).tolist() == [[0.0, pytest.approx(0.6), pytest.approx(0.4)]]
    # As a part of another vote, `ab` abstains too: `c` is the single claimer.
    all3 = spec.bind("all3", parts={**abstaining, "c": Const([0.4, 0.3])}, mode="record", replay_dir=None)
    assert int(all3(torch.zeros(1, 4)).argmax()) == 2
    assert all3.reports == []


def test_an_inline_vote_scores_in_the_label_order_of_the_stage_it_feeds(tmp_path):
    text = PER_CLASS + """
labels Low = {0, 2} within Digit
labels High = {1} within Digit
type P[L] = Tensor[B, L] float32 in [0, 1]
interface C[L] {
  input x: Image
  output y: P[L]
}
interface Head {
  input s: P[Digit]
  output y: P[Digit]
  requires s in [0, 1]
}
interface Full {
  input x: Image
  output y: P[Digit]
}
module low : C[Low | other]
module high : C[High | other]
module head : Head
compose headed : Full = vote(low, high) >> head
"""
    path = tmp_path / "inline.mdl"
    path.write_text(text)
    assert check_paths([path]).diagnostics == []  # the vote's order {0, 2, 1} follows `Digit`; Z3 knows its range
    spec = mdl_lang.load(path)
    parts = {"low": Const([0.1, 0.7, 0.2]), "high": Const([0.9, 0.1]), "head": nn.Identity()}
    output = spec.bind("headed", parts=parts, replay_dir=None)(torch.zeros(1, 4))
    assert output.argmax(dim=1).tolist() == [1] and output[0, 1] == 0.9  # column 1 is label 1, as in `Digit`


def test_a_bound_composition_lists_the_clauses_its_monitor_leaves_out(tmp_path):
    spec = load_text(tmp_path, PER_CLASS + """
type P[L] = Tensor[B, L] float32 in [0, 1]
interface C[L] {
  input x: Image
  output y: P[L]
}
data held : (Image, Digit) { python "held:data" }
module m0 : C[{0} | other]
module m1 : C[{1, 2} | other]
compose voted : C[Digit] = vote(m0, m1) {
  ensures accuracy(y) >= 0.9 on held
}
""")
    voted = spec.bind("voted", parts={"m0": Const([0.2, 0.8]), "m1": Const([0.1, 0.7, 0.2])}, replay_dir=None)
    [skipped] = voted.boundary.skipped
    assert skipped.clause.kind == "ensures" and "mdl test" in skipped.reason


def test_parts_named_like_module_methods_bind_and_run(tmp_path):
    spec = load_text(tmp_path, PER_CLASS + """
interface Step {
  input  x: Image
  output y: Image
}
module half : Step
module cpu : Step
module keys : Step
compose chain : Step = half >> cpu >> keys
""")
    parts = {"half": Lambda(lambda x: x / 2), "cpu": Lambda(lambda x: x + 0.25), "keys": Lambda(lambda x: x * 1)}
    chain = spec.bind("chain", parts=parts, mode="record", replay_dir=None)
    assert chain(torch.ones(2, 4)).tolist() == [[0.75] * 4] * 2 and chain.reports == []
    state = chain.state_dict()
    chain.load_state_dict(state)


def test_an_exception_out_of_a_part_says_which_part_raised_it(tmp_path):
    spec = load_text(tmp_path, PER_CLASS + """
interface Step {
  input  x: Image
  output y: Image
}
module ok : Step
module broken : Step
compose chain : Step = ok >> broken
""")

    def fail(x):
        raise ValueError("bad weights")

    chain = spec.bind("chain", parts={"ok": Lambda(lambda x: x), "broken": Lambda(fail)}, replay_dir=None)
    with pytest.raises(ValueError, match="bad weights") as raised:
        chain(torch.ones(2, 4))
    assert getattr(raised.value, "__notes__", None) == ["mdl: raised inside the part chain > broken"]
