"""`corners`: one batch of range ends, zeros and midpoints, tried before any search."""

from __future__ import annotations

import torch
from torch import nn

from mdl_lang.strategies import corners
from mdl_lang.testing import ContractTester, TestSettings
from tests.backends.hypothesis.test_strategies import component


def test_each_sample_holds_one_simple_value_per_input(load_spec):
    module = component(load_spec, """
  input x: Tensor[B, S, S * 2] float32 in [-1, 3]
  input k: Tensor[B, 3] int64 in [2, 9]
  input w: Tensor[4] float32 in [0.5, 1]
""")
    batch = corners(module)
    x, k, w = batch["x"], batch["k"], batch["w"]
    assert x.shape == (4, 1, 2) and k.shape[0] == 4 and w.shape == (4,)
    # nearest zero, low, high, middle; each sample constant across its elements
    assert x.flatten(1).tolist() == [[0.0, 0.0], [-1.0, -1.0], [3.0, 3.0], [1.0, 1.0]]
    assert {int(v) for v in k.flatten()} == {2, 9, 6}
    assert torch.equal(w, torch.full((4,), 0.5))


def test_derived_dims_take_their_smallest_positive_sizes(load_spec):
    module = component(load_spec, "  input x: Tensor[B, S - 4] float32 in [0, 1]")
    assert corners(module)["x"].shape == (3, 1)  # S = 5; three distinct values in [0, 1]


class _CrashOnZeroRows(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == 0).all(dim=1).any()):
            raise ZeroDivisionError("a row of zeros")
        return torch.softmax(x, dim=1)


def test_a_crash_at_a_corner_is_reported_with_the_corner_batch(load_spec, tmp_path):
    spec = load_spec("dim B : batch\ninterface I {\n  input x: Tensor[B, 3] float32 in [0, 1]\n"
                     "  output y: Tensor[B, 3] float32\n  ensures finite(y)\n}\nmodule m : I\n")
    tester = ContractTester(spec, TestSettings(max_examples=5, replay_dir=None))
    tester.provide("m", _CrashOnZeroRows())
    failed = [r for r in tester.run("m") if r.verdict.value == "fail"]
    # Every item that runs the module fails on the crash: the clause and the output type alike.
    assert {r.clause for r in failed} == {"ensures@5:3", "type of y"}
    for result in failed:
        assert "ZeroDivisionError" in result.message
        assert result.blame.party == "m" and result.blame.role.value == "module"
