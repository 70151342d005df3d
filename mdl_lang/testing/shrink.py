"""Shrinking a failing batch with batched calls: one failing sample, then simple values in place of its elements.

Hypothesis shrinks by replaying its choice sequence one candidate at a time;
a per-sample clause lets us do better, because the monitor names the samples
that fail and checks a whole batch of candidates in one call. So a failure is
cut to its first failing sample, and then every element is tried at once with
a simpler value (zero, then the value rounded to 1, 2, 3 decimals): each
candidate differs from the sample in one group of elements, the whole batch of
candidates is checked in one call, and the groups that keep the failure are
taken together (or, when together they do not fail, the first half of them,
and so on). A candidate counts only when it still keeps the component's
requires and still breaks the same clause, so the result is a real witness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Batch = dict[str, torch.Tensor]
StillFails = Callable[[Batch], torch.Tensor]
"""Per sample of a batch of candidates: True where it keeps the requires and breaks the same clause."""

MAX_GROUPS = 256
"""Candidates per call: an input with more elements is simplified in this many contiguous groups."""

MAX_CALLS = 60
"""The most batched calls one shrink may make; it stops with the simplest failing input found so far."""

DECIMALS = (1, 2, 3)
"""After zeros, values are rounded to this many decimals, fewest first: few distinct, short values."""


@dataclass
class _Budget:
    calls: int = MAX_CALLS

    def spend(self) -> bool:
        self.calls -= 1
        return self.calls >= 0


def shrink_batch(batch: Batch, failing: tuple[int, ...], batched: frozenset[str], still_fails: StillFails) -> Batch:
    """The simplest one-sample batch found that still fails, or `batch` itself when no single sample does."""
    budget = _Budget()
    single = _one_failing_sample(batch, failing, batched, still_fails, budget)
    if single is None:
        return batch
    for name in sorted(batched):
        single = _simplify_port(single, name, batched, still_fails, budget)
    return single


def _one_failing_sample(
    batch: Batch, failing: tuple[int, ...], batched: frozenset[str], still_fails: StillFails, budget: _Budget,
) -> Batch | None:
    """The first of the failing samples that fails on its own (all candidates checked in one call)."""
    candidates = failing[:MAX_GROUPS]
    if not candidates or not budget.spend():
        return None
    index = torch.tensor(candidates)
    stacked = {name: tensor[index] if name in batched else tensor for name, tensor in batch.items()}
    fails = still_fails(stacked)
    if not bool(fails.any()):
        return None
    chosen = int(fails.nonzero()[0, 0])
    return {name: tensor[chosen : chosen + 1] if name in batched else tensor for name, tensor in stacked.items()}


def _simplify_port(
    single: Batch, name: str, batched: frozenset[str], still_fails: StillFails, budget: _Budget,
) -> Batch:
    """Replace the elements of one input by simpler values wherever the failure survives it."""
    for target in _targets(single[name]):
        while budget.calls > 0:
            current = single[name][0]
            simpler = target(current)
            changed = (simpler != current) & ~(simpler.isnan() & current.isnan()) if current.is_floating_point() \
                else simpler != current
            positions = changed.flatten().nonzero().flatten()
            if positions.numel() == 0:
                break
            accepted = _accepted_groups(single, name, batched, simpler, positions, still_fails, budget)
            if accepted is None:
                break
            single = _with(single, name, _replaced(current, simpler, accepted)[None], batched)
    return single


def _targets(tensor: torch.Tensor) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The simpler values tried for every element, simplest first."""
    targets: list[Callable[[torch.Tensor], torch.Tensor]] = [torch.zeros_like]
    if tensor.is_floating_point():
        targets += [lambda value, digits=digits: value.double().round(decimals=digits).to(value.dtype)
                    for digits in DECIMALS]
    return targets


def _accepted_groups(
    single: Batch, name: str, batched: frozenset[str], simpler: torch.Tensor, positions: torch.Tensor,
    still_fails: StillFails, budget: _Budget,
) -> torch.Tensor | None:
    """The positions whose simpler values keep the failure when taken together, or None if none does."""
    groups = list(torch.tensor_split(positions, min(MAX_GROUPS, positions.numel())))
    if not budget.spend():
        return None
    current = single[name][0]
    candidates = torch.stack([_replaced(current, simpler, group) for group in groups])
    survivors = still_fails(_with(single, name, candidates, batched, repeat=len(groups)))
    kept = [group for group, survives in zip(groups, survivors.tolist(), strict=True) if survives]
    while kept:
        together = torch.cat(kept)
        if len(kept) == 1:
            return together
        if not budget.spend():
            return kept[0]
        if bool(still_fails(_with(single, name, _replaced(current, simpler, together)[None], batched))[0]):
            return together
        kept = kept[: len(kept) // 2]
    return None


def _replaced(current: torch.Tensor, simpler: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    flat = current.flatten().clone()
    flat[positions] = simpler.flatten()[positions]
    return flat.view_as(current)


def _with(single: Batch, name: str, tensor: torch.Tensor, batched: frozenset[str], repeat: int = 1) -> Batch:
    """The one-sample batch with input `name` replaced; the other batched inputs repeated to match."""
    out = {}
    for key, value in single.items():
        if key == name:
            out[key] = tensor
        elif key in batched and repeat > 1:
            out[key] = value.expand(repeat, *value.shape[1:])
        else:
            out[key] = value
    return out
