"""The batched shrinker: one failing sample, simple values, requires kept, a bounded number of calls."""

from __future__ import annotations

import torch

from mdl_lang.testing.shrink import MAX_CALLS, shrink_batch

BATCHED = frozenset({"x"})


def _counting(fails):
    calls = []

    def still_fails(batch):
        calls.append(batch["x"].shape[0])
        return fails(batch["x"])

    return still_fails, calls


def test_rare_failure_shrinks_to_one_sample_of_zeros_and_short_decimals() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 8, generator=generator)
    x[17, 3], x[17, 5] = 0.937_41, 0.043_2
    still_fails, calls = _counting(lambda x: (x[:, 3] > 0.9) & (x[:, 5] < 0.1))
    failing = tuple(int(i) for i in ((x[:, 3] > 0.9) & (x[:, 5] < 0.1)).nonzero().flatten())

    shrunk = shrink_batch({"x": x}, failing, BATCHED, still_fails)["x"]

    assert shrunk.shape == (1, 8)
    assert bool(still_fails({"x": shrunk})[0])
    others = [i for i in range(8) if i != 3]
    assert torch.equal(shrunk[0, others], torch.zeros(7))
    # 0.93741 rounded to one decimal (0.9) no longer fails; to two (0.94) it does.
    assert shrunk[0, 3] == torch.tensor(0.94)
    assert len(calls) <= MAX_CALLS


def test_requires_keep_values_away_from_zero() -> None:
    # The failure is x[1] > 0.5; the requires (part of still_fails) is x[0] >= 0.25.
    x = torch.tensor([[0.3333, 0.7777, 0.1234]])
    still_fails, _ = _counting(lambda x: (x[:, 1] > 0.5) & (x[:, 0] >= 0.25))
    shrunk = shrink_batch({"x": x}, (0,), BATCHED, still_fails)["x"]
    assert torch.allclose(shrunk, torch.tensor([[0.3, 0.8, 0.0]]))


def test_no_failing_single_sample_keeps_the_batch() -> None:
    # Fails only as a whole batch (e.g. a clause over the batch): no sample fails alone.
    x = torch.rand(4, 3)
    still_fails, _ = _counting(lambda x: torch.full((x.shape[0],), x.shape[0] == 4))
    batch = {"x": x}
    assert shrink_batch(batch, (0, 1), BATCHED, still_fails) is batch


def test_large_inputs_are_simplified_in_groups_within_the_call_budget() -> None:
    x = torch.rand(2, 3, 32, 32) + 0.01
    still_fails, calls = _counting(lambda x: x[:, 0, 5, 7] > 0.0)
    shrunk = shrink_batch({"x": x}, (1,), BATCHED, still_fails)["x"]
    assert shrunk.shape == (1, 3, 32, 32)
    assert bool(still_fails({"x": shrunk})[0])
    assert int((shrunk != 0).sum()) < x[1].numel() // 100
    assert len(calls) <= MAX_CALLS + 1
    assert max(calls[1:]) <= 256


def test_unbatched_inputs_are_left_alone_and_other_batched_inputs_follow() -> None:
    x, w = torch.rand(3, 4), torch.rand(4)
    z = torch.rand(3, 2)
    seen = []

    def still_fails(batch):
        seen.append((batch["z"].shape[0], batch["w"].shape))
        assert batch["z"].shape[0] == batch["x"].shape[0]
        return batch["x"][:, 0] > -1

    shrunk = shrink_batch({"x": x, "w": w, "z": z}, (2,), frozenset({"x", "z"}), still_fails)
    assert torch.equal(shrunk["w"], w)
    assert shrunk["x"].shape == (1, 4) and shrunk["z"].shape == (1, 2)
    assert all(shape == (4,) for _, shape in seen)
