"""Running torch on one intra-op thread for a while, then giving the caller's setting back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_thread() -> Iterator[None]:
    """Small tensors run faster on one thread than on many that wait for each other (the verifier
    measured 10x on a loaded 2-core machine), and training on one thread gives the same weights
    everywhere; the caller's thread count is restored afterwards, whatever happens inside."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
