"""Blame is decided per sample (LANGUAGE.md section 7): one batch may blame several parties for one clause."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.monitor import ContractViolation
from mdl_lang.report import Result, Role, Verdict

SPEC_TEXT = """
labels Two = {0, 1}
dim B : batch
type V = Tensor[B, 3] float32
interface Small {
  input x: V
  output y: V
  requires pos: all(x > 0)
  ensures small: max(y) < 10
}
module m : Small
interface Finite {
  input x: V
  output y: V
  ensures fin: finite(y)
}
interface NonNegative {
  input x: V
  output y: V
  requires nonneg: all(x >= 0)
}
interface Plain {
  input x: V
  output y: V
}
interface Bounded {
  input x: V
  output y: V
  requires big: all(x > -10)
}
module n : Finite
module h : NonNegative
module id : Plain
compose p : Plain = n >> h {
  ensures bounded: max(y) < 10
}
compose first : Bounded = h >> id
compose inner : Plain = h >> id
compose outer : Plain = id >> inner
interface Scores[L] {
  input x: V
  output y: Tensor[B, L] float32
}
interface PickyScores[L] {
  input x: V
  output y: Tensor[B, L] float32
  requires nonneg: all(x >= 0)
}
module zero : PickyScores[{0} | other]
module one : Scores[{1} | other]
compose voted : Scores[Two] = vote(zero, one)
interface FiniteScores[L] {
  input x: V
  output y: Tensor[B, L] float32
  ensures fin: finite(y)
}
interface Head {
  input x: Tensor[B, Two] float32
  output y: Tensor[B, Two] float32
  requires under: all(x < 5)
}
module fz : FiniteScores[{0} | other]
module fo : FiniteScores[{1} | other]
module head : Head
compose headed : Scores[Two] = vote(fz, fo) >> head
"""


class Times(nn.Module):
    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class NanOnFirst(nn.Module):
    """Keeps its input, but breaks `finite(y)` on sample 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[0, 0] = float("nan")
        return y


class Cleaned(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(x) * 1


class Score(nn.Module):
    """Two scores per sample: its own label's and `other`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0], -x[:, 0]], dim=1)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "per_sample.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path)


def failures(model, clause: str) -> list[Result]:
    return [r for r in model.reports if r.verdict is Verdict.FAIL and r.clause == clause]


def by_samples(results: list[Result]) -> dict[tuple[int, ...], Result]:
    return {r.witness.samples: r for r in results}


def test_an_ensures_is_blamed_per_sample_on_the_caller_or_the_module(spec):
    model = spec.bind("m", Times(20.0), mode="record", replay_dir=None)
    # Sample 0 breaks `pos` (and then `small`); sample 1 keeps `pos` and the module breaks `small`.
    model(torch.tensor([[-1.0, 1.0, 1.0], [1.0, 2.0, 1.0], [0.1, 0.1, 0.1]]))
    shares = by_samples(failures(model, "small"))
    assert set(shares) == {(0,), (1,)}
    assert shares[(0,)].blame.party == "caller" and shares[(0,)].blame.role is Role.CALLER
    assert shares[(1,)].blame.party == "m" and shares[(1,)].blame.role is Role.MODULE
    # Each share is explained at its own first sample: max(y) is 20 on sample 0, 40 on sample 1.
    assert dict(shares[(0,)].witness.values)["max(y)"] == "20"
    assert dict(shares[(1,)].witness.values)["max(y)"] == "40"
    assert "failed on 1 of 3 samples" in shares[(1,)].message


def test_a_reason_names_the_requires_that_broke_and_the_ensures_that_failed(spec):
    model = spec.bind("m", Times(20.0), mode="record", replay_dir=None)
    model(torch.tensor([[-1.0, 1.0, 1.0]]))
    (result,) = failures(model, "small")
    assert "requires `pos`" in result.blame.reason and "ensures `small`" in result.blame.reason
    assert "requires `small`" not in result.blame.reason


def test_a_downstream_requires_blames_the_upstream_part_only_where_its_ensures_failed(spec):
    model = spec.bind("p", parts={"n": NanOnFirst(), "h": Cleaned()}, mode="record", replay_dir=None)
    # n breaks `fin` on sample 0; sample 1 is negative where n kept its ensures: the parts do not fit.
    model(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [20.0, 1.0, 1.0]]))
    shares = by_samples(failures(model, "nonneg"))
    assert set(shares) == {(0,), (1,)}
    assert shares[(0,)].blame.party == "n" and shares[(0,)].blame.role is Role.MODULE
    assert "fin" in shares[(0,)].blame.reason
    assert shares[(1,)].blame.party == "p" and shares[(1,)].blame.role is Role.COMPOSITION
    assert "do not fit" in shares[(1,)].blame.reason


def test_a_composition_ensures_is_blamed_on_the_composition_where_every_part_held(spec):
    model = spec.bind("p", parts={"n": NanOnFirst(), "h": Times(1.0)}, mode="record", replay_dir=None)
    # Sample 0: n breaks `fin` and the NaN reaches the output (max(y) < 10 fails): n's fault there.
    # Sample 2: every part keeps its contract, yet max(y) is 20: the composition's.
    model(torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [20.0, 1.0, 1.0]]))
    shares = by_samples(failures(model, "bounded"))
    assert shares[(0,)].blame.party == "n"
    assert shares[(2,)].blame.party == "p" and shares[(2,)].blame.role is Role.COMPOSITION


def test_a_part_whose_requires_failed_is_not_blamed_for_the_composition_ensures(spec):
    model = spec.bind("p", parts={"n": Times(20.0), "h": Times(1.0)}, mode="record", replay_dir=None)
    # n keeps `fin`; h's requires fails on sample 0 (the parts do not fit), and the output breaks `bounded`.
    model(torch.tensor([[-1.0, 1.0, 1.0]]))
    (requires,) = failures(model, "nonneg")
    assert requires.blame.party == "p"
    (ensures,) = failures(model, "bounded")
    assert ensures.blame.party == "p" and ensures.blame.role is Role.COMPOSITION
    assert "nonneg" in ensures.blame.reason, "the reason says which failure it follows from"


def test_a_first_stage_requires_is_the_composition_s_fault_where_its_own_requires_held(spec):
    model = spec.bind("first", parts={"h": Times(), "id": Times()}, mode="record", replay_dir=None)
    # Sample 0 breaks `first`'s own `big` (and h's `nonneg`): the caller's. Sample 1 keeps `big`: `first`'s.
    model(torch.tensor([[-20.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]))
    assert [r.blame.party for r in failures(model, "big")] == ["caller"]
    shares = by_samples(failures(model, "nonneg"))
    assert shares[(0,)].blame.party == "caller" and "big" in shares[(0,)].blame.reason
    assert shares[(1,)].blame.party == "first" and shares[(1,)].blame.role is Role.COMPOSITION
    assert shares[(1,)].blame.path == ("first", "h")


def test_a_first_stage_requires_raises_blaming_the_composition(spec):
    model = spec.bind("inner", parts={"h": Times(), "id": Times()}, replay_dir=None)
    with pytest.raises(ContractViolation) as raised:
        model(torch.tensor([[-1.0, 1.0, 1.0]]))
    assert raised.value.result.blame.party == "inner"
    assert raised.value.result.blame.role is Role.COMPOSITION


def test_a_nested_composition_answers_for_its_own_first_stage(spec):
    model = spec.bind("outer", parts={"h": Times(), "id": Times()}, mode="record", replay_dir=None)
    model(torch.tensor([[-1.0, 1.0, 1.0]]))
    (result,) = failures(model, "nonneg")
    assert result.blame.party == "inner" and result.blame.path == ("outer", "inner", "h")


def test_a_vote_part_s_requires_is_the_composition_s_fault(spec):
    model = spec.bind("voted", parts={"zero": Score(), "one": Score()}, mode="record", replay_dir=None)
    model(torch.tensor([[-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    (result,) = failures(model, "nonneg")
    assert result.witness.samples == (0,)
    assert result.blame.party == "voted" and result.blame.role is Role.COMPOSITION


class Fixed(nn.Module):
    """The same scores for every call, whatever the input."""

    def __init__(self, rows: list[list[float]]) -> None:
        super().__init__()
        self.rows = torch.tensor(rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows.clone()


def test_a_stage_after_a_vote_blames_the_part_whose_ensures_failed_on_that_sample(spec):
    # fz claims 0 with inf on sample 0 (its `fin` fails) and with 7 on sample 1 (it holds), abstains on 2.
    fz = Fixed([[float("inf"), 0.0], [7.0, 0.0], [0.1, 0.9]])
    fo = Fixed([[0.5, 0.1]] * 3)
    model = spec.bind("headed", parts={"fz": fz, "fo": fo, "head": Times()}, mode="record", replay_dir=None)
    model(torch.ones(3, 3))
    shares = by_samples(failures(model, "under"))
    assert set(shares) == {(0,), (1,)}
    assert shares[(0,)].blame.party == "fz" and shares[(0,)].blame.role is Role.MODULE
    assert shares[(1,)].blame.party == "headed" and shares[(1,)].blame.role is Role.COMPOSITION
