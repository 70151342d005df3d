"""Ports the monitor must read as LANGUAGE.md means them: narrow integers, and ports without the batch axis.

A clause is about one sample (section 5). A port typed without the batch
dimension (a weight vector, a threshold) is the same for every sample of the
call, and a spec's numbers mean what they say whatever the tensor's dtype:
`x >= -1` holds for every uint8, though torch would compare with -1 cast to 255.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.monitor import ContractViolation

SPEC_TEXT = """
dim B : batch
dim N = 3
interface Bytes {
  input  x: Tensor[B, 4] uint8 in [-1, 300]
  output y: Tensor[B, 4] uint8
  requires above: all(x >= -1)
  requires small_sum: sum(x) + 0 <= 1020
  ensures same: y == x
}
module bytes : Bytes
interface Scale {
  input  x: Tensor[B, N] float32
  input  w: Tensor[N] float32 in [0, 10]
  output y: Tensor[B, N] float32
  requires positive: w[0] > 0
  ensures scaled: y == x * w within 1e-6
}
module scale : Scale
"""


class _Scale(nn.Module):
    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("ports") / "ports.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path)


def test_numbers_do_not_wrap_on_narrow_integers(spec) -> None:
    model = spec.bind("bytes", nn.Identity(), mode="record", replay_dir=None)
    x = torch.tensor([[255, 255, 255, 255], [0, 0, 0, 0], [1, 2, 3, 4]], dtype=torch.uint8)
    assert model(x) is x
    assert model.reports == []  # -1 and 300 wrap to 255 and 44 in uint8 arithmetic


def test_a_port_without_the_batch_axis_is_checked_for_every_call(spec) -> None:
    model = spec.bind("scale", _Scale(), replay_dir=None)
    x = torch.ones(2, 3)
    torch.testing.assert_close(model(x, torch.tensor([1.0, 2.0, 3.0])), x * torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ContractViolation) as raised:
        model(x, torch.tensor([0.0, 2.0, 3.0]))
    result = raised.value.result
    assert result.clause == "positive" and result.blame.role.value == "caller"
    assert result.witness.samples == (0, 1)  # the shared input breaks the clause for every sample of the call


def test_a_range_on_a_port_without_the_batch_axis_counts_samples_not_elements(spec) -> None:
    model = spec.bind("scale", _Scale(), mode="record", replay_dir=None)
    model(torch.ones(4, 3), torch.tensor([1.0, 20.0, 3.0]))
    [report] = model.reports
    assert report.clause == "w in [0, 10]" and report.witness.samples == (0, 1, 2, 3)
