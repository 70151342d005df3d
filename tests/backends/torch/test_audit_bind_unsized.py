"""A clause reading a dim that no port of its phase has in its shape is skipped, with the reason.

A call gives sizes only to the dims of its ports' shapes, and a requires is
checked before the call, when only the inputs' are known: such a clause
would be undecided on every call, so the monitor lists it in
`boundary.skipped` instead, as it does the clauses another backend checks.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mdl_lang

SPEC_TEXT = """
dim B : batch
dim F
dim S
dim C
interface Free {
  input  x: Tensor[B, F] float32
  output y: Tensor[B, F] float32
  output z: Tensor[B, C] float32
  requires sized: sum(x) <= F * 100
  requires later: sum(x) <= C * 100
  ensures free: sum(y) <= S
  ensures both: sum(y) <= S * C
  ensures wide: sum(z) <= C * F
}
module free : Free
"""


class _Two(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(x.shape[0], 2)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    path = tmp_path_factory.mktemp("unsized") / "unsized.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path).bind("free", _Two(), mode="record", replay_dir=None)


def test_clauses_on_dims_no_port_sizes_are_skipped_with_the_reason(monitored) -> None:
    skipped = {entry.clause.name: entry.reason for entry in monitored.boundary.skipped}
    assert skipped == {
        "later": "no input port's shape has C: no call gives it a size",
        "free": "no input or output port's shape has S: no call gives it a size",
        "both": "no input or output port's shape has S: no call gives it a size",
    }


def test_the_other_clauses_still_run_and_nothing_is_undecided(monitored) -> None:
    monitored.reports.clear()
    monitored(torch.zeros(2, 3))
    assert monitored.reports == []
    monitored(torch.full((2, 3), 200.0))  # sum(x) = 600 > F * 100 = 300
    assert [report.clause for report in monitored.reports] == ["sized"]
