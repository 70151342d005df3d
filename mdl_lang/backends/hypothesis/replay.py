"""Failures that replay: a search that finds the same shrunk example for the same seed, and saved examples.

A failure is replayed two ways. From its seed: `find_counterexample` runs
hypothesis with that seed and no example database, so the same strategy,
predicate and seed generate, and shrink to, the same example (`@seed` alone
is not enough while a database replays earlier failures first, and
`strategy.example()` takes no seed). From its tensors: `save_example` writes
the shrunk batch with `torch.save`, and `load_example` reads it back with
`weights_only=True`, so loading runs no pickled code.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import hypothesis
import torch
from hypothesis.errors import NoSuchExample
from hypothesis.strategies import SearchStrategy

Drawn = TypeVar("Drawn")


def find_counterexample(
    strategy: SearchStrategy[Drawn],
    violates: Callable[[Drawn], bool],
    *,
    seed: int,
    max_examples: int = 100,
) -> Drawn | None:
    """The shrunk example on which `violates` is true, or None when none of `max_examples` is.

    Deterministic: the same strategy, predicate and seed give the same example,
    so a report that records the seed can be replayed by calling this again.
    An exception raised by `violates` or by the strategy (`StarvedRequires`)
    propagates after shrinking.
    """
    settings = hypothesis.settings(database=None, max_examples=max_examples, deadline=None)
    try:
        return hypothesis.find(strategy, violates, settings=settings, random=random.Random(seed))
    except NoSuchExample:
        return None


def save_example(path: str | Path, example: Mapping[str, torch.Tensor]) -> Path:
    """Write one example (port name to tensor) to `path`, creating its folder; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: tensor.detach().cpu() for name, tensor in example.items()}, target)
    return target


def load_example(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an example `save_example` wrote; raises ValueError for a file that holds anything else."""
    loaded = torch.load(Path(path), weights_only=True)
    if not isinstance(loaded, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in loaded.items()
    ):
        raise ValueError(f"{path} does not hold an example (a dict of port name to tensor)")
    return loaded
