"""scikit-learn's 8x8 digits for the modular workflows: one fixed split, small MLPs, a fast deterministic trainer.

The data ship inside scikit-learn, so `mdl demo` and the example specs need no
download. Everything here is seeded: the split is fixed (stratified, 30% held
out, seed 0), a model's initial weights come from its own seed, and training is
full-batch Adam on the CPU, which gives the same weights on every run of the
same torch build. A model ends in `Softmax`, so its scores are probabilities in
[0, 1], the output type every part of a `vote` shares; training reads the
logits before the softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
TEST_FRACTION = 0.5
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    """Images (N, 1, 8, 8) float32 in [0, 1] and int64 labels, for training and for testing."""

    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class Training:
    """How a model was trained: what the training cost accounting needs."""

    samples: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int


@cache
def digits_split() -> DigitsSplit:
    """The fixed split of `load_digits()`: 1,257 training and 540 test images, every class in both."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    train_index, test_index = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=labels.numpy(),
    )
    train_index, test_index = torch.as_tensor(train_index), torch.as_tensor(test_index)
    return DigitsSplit(images[train_index], labels[train_index], images[test_index], labels[test_index])


def train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and labels, for `data ... { python "mdl_lang.modular.digits:train_split" }`."""
    split = digits_split()
    return split.train_inputs, split.train_labels


def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images and labels, for `data ... { python "mdl_lang.modular.digits:test_split" }`."""
    split = digits_split()
    return split.test_inputs, split.test_labels


def mlp(hidden: Sequence[int], seed: int = 0) -> nn.Sequential:
    """Flatten -> (Linear -> ReLU) per hidden width -> Linear(10) -> Softmax, initialised from `seed`."""
    if not hidden or any(width < 1 for width in hidden):
        raise ValueError(f"an MLP needs at least one hidden layer of positive width, got {tuple(hidden)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Flatten()]
        width = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers += [nn.Linear(width, CLASSES), nn.Softmax(dim=1)]
        return nn.Sequential(*layers)


def logits_of(model: nn.Sequential) -> nn.Module:
    """The model without its final Softmax: what cross-entropy is computed on."""
    if not isinstance(model[-1], nn.Softmax):
        raise ValueError("the model must end in nn.Softmax; its logits are the layers before it")
    return model[:-1]


def train(
    model: nn.Sequential,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 200,
    learning_rate: float = 0.01,
    batch_size: int | None = None,
    seed: int = 0,
) -> Training:
    """Adam on cross-entropy, in place; full-batch by default (deterministic, under a second for an MLP).

    With `batch_size`, minibatches are shuffled by a generator seeded with `seed`.
    """
    logits = logits_of(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    size = len(labels) if batch_size is None else batch_size
    generator = torch.Generator().manual_seed(seed)
    model.train()
    # Gradients on even when called under `torch.no_grad()` (a factory that trains on first use).
    with torch.enable_grad():
        for _ in range(epochs):
            shuffled = size < len(labels)
            order = torch.randperm(len(labels), generator=generator) if shuffled else torch.arange(len(labels))
            for start in range(0, len(labels), size):
                batch = order[start:start + size]
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(logits(inputs[batch]), labels[batch])
                loss.backward()
                optimizer.step()
    model.eval()
    return Training(len(labels), epochs, size, learning_rate, seed)


def predictions(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """argmax of the model's scores, without gradients."""
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of samples whose argmax is their label."""
    return (predictions(model, inputs) == labels).float().mean().item()


def recall(predicted: torch.Tensor, labels: torch.Tensor, label: int) -> float:
    """The fraction of the samples of `label` predicted as `label`."""
    mask = labels == label
    if not bool(mask.any()):
        raise ValueError(f"no sample of class {label} to measure recall on")
    return (predicted[mask] == label).float().mean().item()


def under_represented(
    inputs: torch.Tensor, labels: torch.Tensor, label: int, fraction: float, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set with only `fraction` of the samples of `label` kept (at least one), chosen by `seed`."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the fraction of samples kept must be in (0, 1], got {fraction}")
    own = torch.nonzero(labels == label).flatten()
    kept = max(1, round(fraction * len(own)))
    chosen = own[torch.randperm(len(own), generator=torch.Generator().manual_seed(seed))[:kept]]
    keep = torch.cat((torch.nonzero(labels != label).flatten(), chosen)).sort().values
    return inputs[keep], labels[keep]
