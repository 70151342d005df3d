"""Modules with seeded faults (and healthy twins) for the `mdl test` fault tests."""

from __future__ import annotations

import torch
from torch import nn


class Scorer(nn.Module):
    """Softmax scores over 10 labels; with `nan_on_zero_row`, a row of zeros gives NaN."""

    def __init__(self, nan_on_zero_row: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(8, 10)
        self.nan_on_zero_row = nan_on_zero_row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.softmax(self.linear(x), dim=-1)
        if self.nan_on_zero_row:
            zero = (x == 0).all(dim=1, keepdim=True)
            scores = torch.where(zero, torch.full_like(scores, float("nan")), scores)
        return scores


class RareNaN(nn.Module):
    """NaN scores when x[3] > 0.9 and x[5] < 0.1: about one sample in a hundred of uniform inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.scorer = Scorer(nan_on_zero_row=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.scorer(x)
        rare = ((x[:, 3] > 0.9) & (x[:, 5] < 0.1)).unsqueeze(1)
        return torch.where(rare, torch.full_like(scores, float("nan")), scores)


class Threshold(nn.Module):
    """Two scores deciding whether x[0] is above `boundary`."""

    def __init__(self, boundary: float) -> None:
        super().__init__()
        self.boundary = boundary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = (x[:, :1] - self.boundary) * 10
        return torch.cat([-margin, margin], dim=1)


def zero_nan() -> nn.Module:
    return Scorer(nan_on_zero_row=True)


def healthy() -> nn.Module:
    return Scorer(nan_on_zero_row=False)


def rare_nan() -> nn.Module:
    return RareNaN()


def brittle() -> nn.Module:
    """Its boundary sits at 0.25, within 0.1 of inputs the requires admits."""
    return Threshold(0.25)


def sturdy() -> nn.Module:
    """Its boundary sits at 0.5, more than 0.1 from every input the requires admits."""
    return Threshold(0.5)
