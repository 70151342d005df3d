"""The executable vote against a per-sample reference of the ESEC/FSE 2020 rule (LANGUAGE.md section 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.composed import vote

SPEC = Path(__file__).parent / "specs" / "system.mdl"


def reference_decision(scores: list[torch.Tensor], part_labels: list[ir.LabelSet], sample: int) -> ir.Label:
    """The rule written out for one sample, the slow and obvious way."""
    claims = []
    for part_scores, labels in zip(scores, part_labels, strict=True):
        row = part_scores[sample].detach()
        best = labels.labels[int(row.argmax())]
        if best is not ir.OTHER:
            claims.append((float(row.max()), best))
    if len(claims) == 1:
        return claims[0][1]
    if claims:
        return max(claims, key=lambda claim: claim[0])[1]
    own = [
        (float(part_scores[sample][position].detach()), label)
        for part_scores, labels in zip(scores, part_labels, strict=True)
        for position, label in enumerate(labels.labels) if label is not ir.OTHER
    ]
    return max(own, key=lambda item: item[0])[1]


class Concern(nn.Module):
    """A random binary concern `{k} | other` producing (p_k, max_{j != k} p_j) from a softmax."""

    def __init__(self, label: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(10, 8, generator=generator))
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(x @ self.weight.T, dim=-1)
        own = probabilities[:, self.label]
        rest = torch.cat([probabilities[:, : self.label], probabilities[:, self.label + 1:]], dim=1).amax(dim=1)
        return torch.stack([own, rest], dim=1)


@pytest.mark.parametrize("seed", range(5))
def test_vote_matches_the_reference_rule(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = ir.LabelSet(tuple(range(10)))
    part_labels = [ir.LabelSet((k, ir.OTHER)) for k in range(10)]
    scores = []
    for _ in range(10):
        raw = torch.rand(500, 2, generator=generator)
        scores.append(raw / raw.sum(dim=1, keepdim=True))
    decided = vote(scores, tuple(part_labels), labels, 0.0).argmax(dim=1)
    for sample in range(500):
        assert int(decided[sample]) == reference_decision(scores, part_labels, sample)


def test_vote_without_other_always_claims_and_takes_the_highest():
    digits = ir.LabelSet((0, 1, 2))
    letters = ir.LabelSet(("a", "b"))
    union = ir.LabelSet((0, 1, 2, "a", "b"))
    first = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    second = torch.tensor([[0.4, 0.6], [0.95, 0.05]])
    decided = vote([first, second], (digits, letters), union, 0.0).argmax(dim=1)
    assert [union.labels[int(i)] for i in decided] == [0, "a"]


def test_bound_vote_composition_runs_the_rule_and_monitors_each_part():
    spec = mdl_lang.load(SPEC)
    parts = {f"m{k}": Concern(k, seed=k) for k in range(10)}
    voted = spec.bind("voted", parts=parts, mode="record", replay_dir=None)
    x = torch.rand(64, 8)
    output = voted(x)
    assert output.shape == (64, 10)
    scores = [parts[f"m{k}"](x) for k in range(10)]
    part_labels = [ir.LabelSet((k, ir.OTHER)) for k in range(10)]
    for sample in range(64):
        assert int(output[sample].argmax()) == reference_decision(scores, part_labels, sample)
    # Each part's two scores sum to at most 1: its simplex clause fails, blamed on the part at its boundary.
    part_reports = [r for r in voted.reports if r.component != "voted"]
    assert part_reports and all(r.blame.path == ("voted", r.component) for r in part_reports)
    # The vote's own simplex then fails too; a part broke its contract first, so a part is blamed.
    own = [r for r in voted.reports if r.component == "voted"]
    assert own and all(r.blame.party in parts for r in own)


class Always(nn.Module):
    """A concern that claims its label on every input, with score 0.99."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.99, 0.01]]).expand(x.shape[0], 2)


def test_replace_runs_the_new_part_in_the_old_ones_place():
    spec = mdl_lang.load(SPEC)
    parts = {f"m{k}": Concern(k, seed=k) for k in range(10) if k != 5}
    parts["m5_v2"] = Always()
    repaired = spec.bind("repaired", parts=parts, mode="record", replay_dir=None)
    decided = repaired(torch.rand(32, 8)).argmax(dim=1)
    assert (decided == 5).all(), "the replacement claims with the highest score everywhere"
    with pytest.raises(mdl_lang.BindError, match="m5"):
        spec.bind("repaired", parts={**parts, "m5": Concern(5, seed=5)})
