"""Inputs a module changes in place, and ranges too wide for their dtype: the verdict is the one on the call as made.

The slow path reads the inputs after the call. A module that overwrites its
input (`x.mul_(255)`) must not turn requires that held into the caller's
fault, nor hide requires that failed; the fast path's readings of the
inputs as given decide. An ensures that reads an input reads it as it is
after the call, whatever its dtype, on both paths.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.boundary import Boundary

SPEC = """
labels L = {0..3}
dim B : batch
type Unit = Tensor[B, 4] float32 in [0, 1]
interface Scale {
  input  x: Unit
  output y: Unit
}
module scale : Scale
module first : Scale
module second : Scale
compose pipe : Scale = first >> second

interface Tenth {
  input  x: Tensor[B, 4] float32 in [0, 10]
  output z: Tensor[B, 4] float32 in [0, 1]
}
module tenth : Tenth
module shrink : Tenth
module after : Tenth
compose shrunk : Tenth = shrink >> stretch >> after

interface Stretch {
  input  z: Tensor[B, 4] float32 in [0, 1]
  output x: Tensor[B, 4] float32 in [0, 10]
}
module stretch : Stretch

interface Logits {
  input  x: Tensor[B, L] float32 finite
  output y: Tensor[B, L] float32 finite
  ensures simplex: sum(softmax(x)) == 1 within 1e-5
}
module logits : Logits

interface Copy16 {
  input  x: Tensor[B, 4] float16
  output y: Tensor[B, 4] float16
  ensures same: y == x within 0.01
}
module copy16 : Copy16

interface Wide {
  input  x: Tensor[B, L] float32
  output y: Tensor[B, L] float32 in [-1e39, 1e39] finite
}
module wide : Wide
interface WideScores {
  input  x: Tensor[B, L] float32
  output y: Tensor[B, L] float32 in [-1e39, 1e39]
  ensures simplex: sum(softmax(y)) == 1 within 1e-5
}
module wide_scores : WideScores
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "in_place.mdl"
    path.write_text(SPEC)
    return mdl_lang.load(path)


class Lambda(nn.Module):
    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def _blamed(monitored) -> dict[tuple[str, str], tuple[str, str]]:
    return {(result.component, result.clause): (result.blame.party, result.blame.role.value)
            for result in monitored.reports}


def test_a_module_that_breaks_its_valid_input_in_place_is_blamed_not_the_caller(spec) -> None:
    monitored = spec.bind("scale", Lambda(lambda x: x.mul_(255)), mode="record", replay_dir=None)
    monitored(torch.full((2, 4), 0.5))
    assert _blamed(monitored) == {("scale", "y in [0, 1]"): ("scale", "module")}


def test_inside_a_pipeline_the_part_that_overwrote_its_input_is_blamed(spec) -> None:
    pipe = spec.bind("pipe", parts={"first": Lambda(lambda x: x * 1), "second": Lambda(lambda x: x.mul_(255))},
                     mode="record", replay_dir=None)
    pipe(torch.full((2, 4), 0.5))
    assert _blamed(pipe) == {("second", "y in [0, 1]"): ("second", "module"),
                             ("pipe", "y in [0, 1]"): ("second", "module")}


def test_a_composition_input_overwritten_by_its_first_part_keeps_the_verdict_of_the_call(spec) -> None:
    def sneaky(x):
        z = x / 10
        x.mul_(100)  # the caller's valid x, now out of every range
        return z

    shrunk = spec.bind("shrunk", parts={"shrink": Lambda(sneaky), "stretch": Lambda(lambda z: z * 10),
                                        "after": Lambda(lambda x: x / 10)}, mode="record", replay_dir=None)
    shrunk(torch.full((3, 4), 5.0))
    assert shrunk.reports == []


def test_bad_data_hidden_by_an_in_place_change_is_still_the_callers(spec) -> None:
    shrunk = spec.bind("shrunk", parts={"shrink": Lambda(lambda x: x.div_(10)), "stretch": Lambda(lambda z: z * 10),
                                        "after": Lambda(lambda x: x / 10)}, mode="record", replay_dir=None)
    x = torch.full((3, 4), 5.0)
    x[0, 0] = 12.0  # out of [0, 10]; the first part divides it into range before the checks read it again
    shrunk(x)
    assert {party for party, _ in _blamed(shrunk).values()} == {"caller"}
    assert ("shrunk", "x in [0, 10]") in _blamed(shrunk)


def test_an_ensures_on_an_input_reads_it_after_the_call_for_every_dtype(spec) -> None:
    def copy_then_scribble(x):
        y = x.clone()
        x.mul_(2).add_(1)
        return y

    monitored = spec.bind("copy16", Lambda(copy_then_scribble), mode="record", replay_dir=None)
    monitored(torch.zeros(2, 4, dtype=torch.float16))
    assert _blamed(monitored) == {("copy16", "same"): ("copy16", "module")}


def test_an_implied_clause_about_an_input_is_read_after_the_call(spec) -> None:
    def poison(x):
        x[0, 0] = float("nan")
        return torch.zeros_like(x)

    monitored = spec.bind("logits", Lambda(poison), mode="record", replay_dir=None)
    monitored(torch.zeros(2, 4))
    assert ("logits", "simplex") in _blamed(monitored)
    boundary = Boundary("logits", spec.component("logits"), spec.sources)
    (simplex,) = (check for check in boundary.ensures if check.name == "simplex")
    assert not simplex.implied


@pytest.mark.parametrize("name", ["wide", "wide_scores"])
def test_a_range_beyond_float32_does_not_stand_for_finite(spec, name) -> None:
    def infinite(x):
        y = x.clone()
        y[0, 0] = float("inf")
        return y

    monitored = spec.bind(name, Lambda(infinite), mode="record", replay_dir=None)
    monitored(torch.zeros(2, 4))
    failed = {result.clause: result.witness.samples for result in monitored.reports}
    assert failed == ({"finite(y)": (0,)} if name == "wide" else {"simplex": (0,)})


def test_no_replay_is_saved_of_inputs_the_module_has_overwritten(spec, tmp_path) -> None:
    def halve_then_break(x):
        x.div_(2)
        return x * 8  # 2.0: out of [0, 1]

    monitored = spec.bind("scale", Lambda(halve_then_break), mode="record", replay_dir=tmp_path / "replays")
    monitored(torch.full((2, 4), 0.5))
    (result,) = monitored.reports
    assert (result.clause, result.blame.party) == ("y in [0, 1]", "scale")
    assert result.witness.replay is None, "the saved x would be 0.25, not the 0.5 the module was given"
    kept = spec.bind("scale", Lambda(lambda x: x * 4), mode="record", replay_dir=tmp_path / "replays")
    kept(torch.full((2, 4), 0.5))
    assert kept.reports[0].witness.replay is not None
