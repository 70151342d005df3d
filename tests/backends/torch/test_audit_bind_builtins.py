"""Built-ins the monitor evaluates with per-sample bounds and on sample-independent numbers.

`clamp(v, lo, hi)` takes per-sample bounds (`min(x)`, a number of each
sample) against a value of more axes, aligned after the batch axis like any
binary operation. The elementwise built-ins apply to dims and literals too
(`sqrt(F)`), with torch's meaning: the square root of a negative number is
NaN, which fails its comparison rather than leaving the clause undecided.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mdl_lang

SPEC_TEXT = """
dim B : batch
dim F
interface Between {
  input  x: Tensor[B, F] float32
  output y: Tensor[B, F] float32
  ensures within_range: clamp(y, min(x), max(x)) == y within 1e-6
  ensures capped: all(clamp(y, 0, max(x)) == y)
  ensures floored: all(clamp(y, min(x), 100) == y)
}
module between : Between
interface Numbers {
  input  x: Tensor[B, F] float32
  output y: Tensor[B, F] float32
  ensures nrm: norm(y, 2) <= sqrt(F) + 1
  ensures four: sqrt(4) == 2 within 1e-12
  ensures others: exp(0) + abs(-2) + relu(-3) + sigmoid(0) + clamp(F, 0, 1) == 4.5 within 1e-12
  ensures growth: exp(log(F)) == F within 1e-9
}
module numbers : Numbers
interface Negative {
  input  x: Tensor[B, F] float32
  output y: Tensor[B, F] float32
  ensures root: sum(y) <= sqrt(0 - F)
  ensures logged: sum(y) >= log(0 - F)
}
module negative : Negative
"""


class _Shift(nn.Module):
    """Moves every element of the samples in `rows` by `offset`."""

    def __init__(self, rows: list[int], offset: float) -> None:
        super().__init__()
        self.rows, self.offset = rows, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[self.rows] += self.offset
        return y


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("builtins") / "builtins.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path)


def _verdicts(spec, name: str, module: nn.Module, x: torch.Tensor) -> dict[str, tuple[str, tuple[int, ...]]]:
    monitored = spec.bind(name, module, mode="record", replay_dir=None)
    monitored(x)
    return {r.clause: (r.verdict.value, tuple(r.witness.samples)) for r in monitored.reports}


@pytest.mark.parametrize("batch, features", [(2, 3), (3, 3), (4, 1), (1, 5)])
def test_clamp_to_per_sample_bounds_holds_on_an_identity(spec, batch: int, features: int) -> None:
    x = torch.arange(batch * features, dtype=torch.float32).reshape(batch, features)
    assert _verdicts(spec, "between", nn.Identity(), x) == {}


@pytest.mark.parametrize("batch", [3, 4])
def test_clamp_to_per_sample_bounds_blames_only_the_samples_outside(spec, batch: int) -> None:
    x = torch.arange(batch * 3, dtype=torch.float32).reshape(batch, 3)
    verdicts = _verdicts(spec, "between", _Shift([1], 0.5), x)
    assert verdicts["within_range"] == ("fail", (1,))
    assert verdicts["capped"] == ("fail", (1,))
    assert "floored" not in verdicts


def test_a_number_bound_and_a_per_sample_bound_mix(spec) -> None:
    x = torch.tensor([[-1.0, 2.0], [1.0, 2.0]])
    verdicts = _verdicts(spec, "between", nn.Identity(), x)
    assert verdicts == {"capped": ("fail", (0,))}  # -1 is below the bound 0 of sample 0 only


def test_elementwise_built_ins_take_dims_and_literals(spec) -> None:
    assert _verdicts(spec, "numbers", nn.Identity(), torch.full((2, 4), 0.5)) == {}  # norm 1 <= sqrt(4) + 1
    verdicts = _verdicts(spec, "numbers", nn.Identity(), torch.tensor([[0.5] * 4, [2.0] * 4]))
    assert verdicts == {"nrm": ("fail", (1,))}  # norm 4 > 3


def test_a_negative_root_or_logarithm_is_nan_and_fails(spec) -> None:
    verdicts = _verdicts(spec, "negative", nn.Identity(), torch.zeros(2, 3))
    assert verdicts == {"root": ("fail", (0, 1)), "logged": ("fail", (0, 1))}
