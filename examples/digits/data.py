"""Zero-argument data factories for the digits specs: `python "examples.digits.data:test_split"` and its kin.

Every split is the fixed one of `mdl_lang.modular.digits` (stratified, 30% held
out, seed 0); labels are the digits themselves, the positions of `{0..9}`.
"""

from __future__ import annotations

import torch

from mdl_lang.modular import digits


def train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """1,257 training images, (N, 1, 8, 8) float32 in [0, 1], and their labels."""
    return digits.train_split()


def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """540 held-out images, (N, 1, 8, 8) float32 in [0, 1], and their labels."""
    return digits.test_split()


def flat_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images as feature vectors, (N, 64) float32 in [0, 1]: the `Flat` type of pipeline.mdl."""
    images, labels = digits.test_split()
    return images.flatten(start_dim=1), labels


def raw_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images as load_digits() stores them, (N, 64) float64 in [0, 16]: the `Raw` type."""
    images, labels = digits.test_split()
    # The split holds the pixels divided by 16; multiplying back is exact (integers up to 16).
    return (images.flatten(start_dim=1).to(torch.float64) * 16).round(), labels
