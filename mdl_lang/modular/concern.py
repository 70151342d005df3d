"""A per-class module of a decomposed classifier, seen through the interface `{k} | other`.

Decomposition (Pan & Rajan, ESEC/FSE 2020) leaves module k with all the
outputs of the original classifier; the module claims class k when its argmax
is k. A spec states it as `Scores[{k} | other]`, two scores, so this view
turns the many outputs into (p_k, max over j != k of p_j): the argmax of the
pair is `other` exactly when the module does not claim k, and p_k is the
score the paper's vote compares. A tie between p_k and the best rival counts
as a claim, as `argmax` picks the first of equal scores.
"""

from __future__ import annotations

import torch
from torch import nn


class ConcernView(nn.Module):
    """Wraps `module`, whose output is (N, C) scores, to output (N, 2): its score for `label`, then the best other."""

    def __init__(self, module: nn.Module, label: int) -> None:
        super().__init__()
        if label < 0:
            raise ValueError(f"a concern's label is a class index, got {label}")
        self.module = module
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.module(x)
        if scores.ndim != 2 or scores.shape[1] < 2 or self.label >= scores.shape[1]:
            raise ValueError(
                f"ConcernView for label {self.label} needs (N, C) scores with C >= 2 and C > {self.label}, "
                f"got shape {tuple(scores.shape)}"
            )
        own = scores[:, self.label]
        rivals = torch.cat((scores[:, : self.label], scores[:, self.label + 1 :]), dim=1)
        return torch.stack((own, rivals.amax(dim=1)), dim=1)

    def extra_repr(self) -> str:
        return f"label={self.label}"
