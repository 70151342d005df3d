"""Helpers for the hypothesis backend's tests: examples as a test sees them, and reachability."""

from __future__ import annotations

from collections.abc import Callable

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import SearchStrategy

from mdl_lang.strategies import find_counterexample

Batch = dict[str, torch.Tensor]


def drawn(strategy: SearchStrategy[Batch], count: int = 60) -> list[Batch]:
    """`count` examples as hypothesis generates them for a test, without a database."""
    seen: list[Batch] = []

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def collect(batch: Batch) -> None:
        seen.append(batch)

    collect()
    return seen


def reaches(strategy: SearchStrategy[Batch], condition: Callable[[Batch], bool]) -> bool:
    """Whether some example satisfies `condition` within a few hundred tries (seeded, so the answer is stable)."""
    return find_counterexample(strategy, condition, seed=0, max_examples=500) is not None
