"""Port shapes whose dims are not linear in their unknown: `C // 2`, `C * C` (LANGUAGE.md section 3).

A symbolic dim binds at its first use in a call. An axis sized by an
expression binds the expression's one unknown when exactly one positive
value fits; when several fit (`C // 2` of size 3: C is 6 or 7) the axis is
accepted and the equation is checked once another axis binds the name; only
an axis no value fits is an error, and a failed attempt leaves nothing bound.
Shape checks are shared by the monitor and `mdl test`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.refinements import check_call_shape
from mdl_lang.report import Verdict
from mdl_lang.testing import ContractTester, TestSettings

SPEC_TEXT = """
dim B : batch
dim C
dim H
dim W
interface Half {
  input  x: Tensor[B, C // 2] float32
  output y: Tensor[B, C // 2] float32
  ensures same: y == x
}
module half : Half
interface Square {
  input  x: Tensor[B, C * C] float32
  output y: Tensor[B, C * C] float32
}
module square : Square
interface Odd {
  input  x: Tensor[B, 2 * C + 1] float32
  output y: Tensor[B, 2 * C + 1] float32
}
module odd : Odd
interface Widen {
  input  x: Tensor[B, C // 2] float32
  output y: Tensor[B, C] float32
  ensures wide: sum(y) <= C * 100
}
module widen : Widen
interface Narrow {
  input  x: Tensor[B, C] float32
  output y: Tensor[B, C // 2] float32
}
module narrow : Narrow
interface Root {
  input  x: Tensor[B, C * C] float32
  output y: Tensor[B, C] float32
}
module root : Root
interface Grid {
  input  x: Tensor[B, H * W] float32
  output y: Tensor[B, H, W] float32
}
module grid : Grid
"""


class _Repeat(nn.Module):
    """`y` is `x` repeated `times` along its features, plus `extra` zero features."""

    def __init__(self, times: int, extra: int = 0) -> None:
        super().__init__()
        self.times, self.extra = times, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.repeat(1, self.times), x.new_zeros(x.shape[0], self.extra)], dim=1)


class _LastFeatureMoved(nn.Module):
    """`y` is `x` except its last feature, moved when there are two or more: a fault only wider inputs show."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        if x.shape[1] >= 2:
            y[:, -1] += 1
        return y


class _Columns(nn.Module):
    """`y` has `width` columns."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.width)


class _Grid(nn.Module):
    """`y` is zeros of shape [batch, height, width]."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.height, self.width)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("dims") / "dims.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path)


def _messages(spec, name: str, module: nn.Module, width: int) -> list[str]:
    monitored = spec.bind(name, module, mode="record", replay_dir=None)
    monitored(torch.ones(2, width))
    return [report.message for report in monitored.reports]


def _bind(spec, name: str, port: int, width: int) -> tuple[object, dict[str, int]]:
    bound: dict[str, int] = {}
    problem = check_call_shape(spec.component(name).interface.inputs[port], torch.zeros(2, width), bound)
    return problem, bound


@pytest.mark.parametrize("name, width", [("half", 3), ("half", 4), ("square", 16), ("square", 9), ("odd", 7)])
def test_an_axis_some_value_fits_is_accepted(spec, name: str, width: int) -> None:
    assert _messages(spec, name, nn.Identity(), width) == []


@pytest.mark.parametrize("name, width, bound", [("square", 16, {"B": 2, "C": 4}), ("odd", 7, {"B": 2, "C": 3})])
def test_the_one_value_that_fits_is_bound(spec, name: str, width: int, bound: dict[str, int]) -> None:
    assert _bind(spec, name, 0, width) == (None, bound)


@pytest.mark.parametrize("name, width", [("square", 15), ("square", 7), ("odd", 8)])
def test_an_axis_no_value_fits_is_rejected_and_binds_nothing(spec, name: str, width: int) -> None:
    problem, bound = _bind(spec, name, 0, width)
    assert "no positive C makes" in problem.message
    assert bound == {"B": 2}
    messages = _messages(spec, name, nn.Identity(), width)
    assert len(messages) == 2 and all("no positive C" in message for message in messages)


def test_several_values_fitting_bind_none(spec) -> None:
    problem, bound = _bind(spec, "half", 0, 3)
    assert problem is None and "C" not in bound


def test_the_equation_is_checked_once_another_port_binds_the_name(spec) -> None:
    assert _messages(spec, "widen", _Repeat(2), 3) == []  # C = 6, C // 2 = 3
    assert _messages(spec, "widen", _Repeat(2, extra=1), 3) == []  # C = 7, C // 2 = 3 as well
    (message,) = _messages(spec, "widen", _Repeat(2, extra=2), 3)  # C = 8 makes C // 2 = 4
    assert "C=8 makes C // 2 = 4" in message


def test_a_clause_reads_the_dim_bound_by_the_later_port(spec) -> None:
    monitored = spec.bind("widen", _Repeat(2, extra=1), mode="record", replay_dir=None)
    monitored(torch.full((2, 3), 150.0))  # sum(y) = 900 > C * 100 = 700
    (report,) = monitored.reports
    assert (report.clause, report.verdict) == ("wide", Verdict.FAIL)


@pytest.mark.parametrize("width, problems", [(2, 0), (3, 1)])
def test_a_dim_bound_first_is_used_non_linearly_by_a_later_port(spec, width: int, problems: int) -> None:
    assert len(_messages(spec, "narrow", _Columns(width), 5)) == problems  # C = 5: C // 2 = 2


@pytest.mark.parametrize("width, problems", [(3, 0), (4, 1)])
def test_a_dim_bound_non_linearly_is_used_alone_by_a_later_port(spec, width: int, problems: int) -> None:
    assert len(_messages(spec, "root", _Columns(width), 9)) == problems  # C * C = 9: C = 3


@pytest.mark.parametrize("height, width, problems", [(3, 4, 0), (4, 3, 0), (3, 5, 1)])
def test_two_unknowns_wait_for_the_port_that_binds_them(spec, height: int, width: int, problems: int) -> None:
    messages = _messages(spec, "grid", _Grid(height, width), 12)
    assert len(messages) == problems
    assert all("H=3, W=5 makes H * W = 15, where another axis of this call is 12" in text for text in messages)


def test_mdl_test_checks_every_width_it_draws(spec) -> None:
    """`mdl test` drew widths the shape check rejected as the caller's fault, so the ensures went unchecked."""
    tester = ContractTester(spec, TestSettings(seed=0, max_examples=10, replay_dir=None))
    tester.provide("half", nn.Identity())
    assert [result.verdict for result in tester.run("half", only={"same"})] == [Verdict.PASS]
    tester.provide("half", _LastFeatureMoved())
    (result,) = tester.run("half", only={"same"})
    assert result.verdict is Verdict.FAIL, result.message
