"""A failure found from a seed is found again from that seed; saved examples load back exactly."""

from __future__ import annotations

import pytest
import torch

from mdl_lang.strategies import find_counterexample, inputs, load_example, save_example

SPEC = """
dim B : batch
dim S
interface I {
  input  x: Tensor[B, S, 8] float32 in [-1, 1]
  input  k: Tensor[B, 3] int64 in [0, 9]
  output y: Tensor[B, 8] float32
}
module m : I
"""


def violated(batch: dict[str, torch.Tensor]) -> bool:
    """A stand-in for a failing clause that needs a larger example than the simplest."""
    return batch["x"].shape[1] >= 2 and bool((batch["x"] < -0.3).any()) and bool((batch["k"] == 7).any())


def test_the_same_seed_finds_the_same_shrunk_example(load_spec):
    strategy = inputs(load_spec(SPEC), "m")
    first = find_counterexample(strategy, violated, seed=1234)
    again = find_counterexample(inputs(load_spec(SPEC), "m"), violated, seed=1234)
    assert first is not None
    assert again is not None
    assert first.keys() == again.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)


def test_no_counterexample_is_none(load_spec):
    strategy = inputs(load_spec(SPEC), "m")
    assert find_counterexample(strategy, lambda batch: bool((batch["x"] > 1).any()), seed=0, max_examples=20) is None


def test_a_saved_example_loads_back_exactly(load_spec, tmp_path):
    example = find_counterexample(inputs(load_spec(SPEC), "m"), violated, seed=7)
    path = save_example(tmp_path / "reports" / "m-requires.pt", example)
    loaded = load_example(path)
    assert loaded.keys() == example.keys()
    assert all(torch.equal(loaded[name], example[name]) for name in example)
    assert loaded["x"].dtype == torch.float32
    assert loaded["k"].dtype == torch.int64


def test_a_file_that_holds_no_example_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="does not hold an example"):
        load_example(path)
