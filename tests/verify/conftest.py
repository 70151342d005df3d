"""Fixtures of the verifier's tests: a digits MLP trained once per session, and an independent attack."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mdl_lang.threads import one_thread


@pytest.fixture(autouse=True)
def single_thread():
    """The tensors of these tests are small: threads only add overhead on a shared machine."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits, inputs scaled to [0, 1] and flattened to 64 features."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data / 16.0, dtype=torch.float32), torch.tensor(data.target)


@pytest.fixture(scope="session")
def digits_mlp(digits) -> nn.Sequential:
    """A 64-16-10 ReLU MLP trained for a few seconds (full-batch Adam, fixed seed)."""
    torch.manual_seed(0)
    inputs, labels = digits
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    with one_thread():  # session fixtures run before the per-test `single_thread`
        for _ in range(150):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(inputs[:1500]), labels[:1500]).backward()
            optimiser.step()
    accuracy = (model(inputs[1500:]).argmax(1) == labels[1500:]).float().mean()
    assert accuracy > 0.85, f"the fixture MLP did not train (accuracy {accuracy:.2f})"
    return model.eval()


@pytest.fixture(scope="session")
def independent_attack():
    """The attack below, as a fixture (the test folders are not packages)."""
    return _independent_attack


def _independent_attack(model: nn.Module, point: torch.Tensor, eps: float, label: int, restarts: int = 64,
                       steps: int = 100, seed: int = 1) -> torch.Tensor | None:
    """A PGD attack written apart from `mdl_lang.verify.attack` (cross-entropy loss, own step rule):
    a point of the eps-ball intersected with [0, 1] whose argmax differs from `label`, or None."""
    generator = torch.Generator().manual_seed(seed)
    low = (point - eps).clamp(0, 1)
    high = (point + eps).clamp(0, 1)
    x = low + torch.rand(restarts, point.numel(), generator=generator) * (high - low)
    target = torch.full((restarts,), label)
    for step in range(steps):
        x = x.detach().requires_grad_(True)
        logits = model(x)
        wrong = logits.argmax(1) != label
        if bool(wrong.any()):
            return x[wrong][0].detach()
        loss = nn.functional.cross_entropy(logits, target)
        (gradient,) = torch.autograd.grad(loss, x)
        size = eps * (0.5 if step < steps // 2 else 0.1)
        x = torch.minimum(torch.maximum(x + size * gradient.sign(), low), high)
    with torch.no_grad():
        wrong = model(x).argmax(1) != label
    return x[wrong][0].detach() if bool(wrong.any()) else None
