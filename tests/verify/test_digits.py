"""Robustness of a trained digits MLP at several radii: every refutation replays, and no proved
query falls to an independent attack."""

from __future__ import annotations

import pytest
import torch

from mdl_lang.verify.clauses import InputRegion, robustness_query
from mdl_lang.verify.engine import verify_query
from mdl_lang.verify.extract import extract

RADII = (0.01, 0.02, 0.05, 0.1)
POINTS = 8


@pytest.fixture(scope="module")
def outcomes(digits, digits_mlp):
    inputs, _ = digits
    network = extract(digits_mlp, (64,)).network
    region = InputRegion(torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64), ())
    found = []
    for eps in RADII:
        for index in range(POINTS):
            point = inputs[1500 + index]
            label = int(digits_mlp(point.unsqueeze(0)).argmax())
            query = robustness_query(eps, point, label, 10, region, f"point {index} eps={eps}")
            outcome = verify_query(network, query, timeout_s=30.0, reference=digits_mlp)
            found.append((eps, point, label, outcome))
    return found


def test_every_query_is_decided_and_both_verdicts_occur(outcomes) -> None:
    verdicts = [outcome.verdict for *_, outcome in outcomes]
    assert "unknown" not in verdicts, [o.reason for *_, o in outcomes if o.verdict == "unknown"]
    assert verdicts.count("proved") >= len(RADII) * POINTS // 2
    assert "refuted" in verdicts
    # Robustness only gets harder with the radius.
    proved_at = {eps: sum(o.verdict == "proved" for e, _, _, o in outcomes if e == eps) for eps in RADII}
    assert [proved_at[eps] for eps in RADII] == sorted(proved_at.values(), reverse=True)


def test_every_refutation_replays_in_float32_inside_the_ball(outcomes, digits_mlp) -> None:
    for eps, point, label, outcome in outcomes:
        if outcome.verdict != "refuted":
            continue
        counterexample = outcome.counterexample
        assert counterexample.dtype == torch.float32
        assert float((counterexample.double() - point.double()).abs().max()) <= eps
        assert float(counterexample.min()) >= 0.0 and float(counterexample.max()) <= 1.0
        with torch.no_grad():
            assert int(digits_mlp(counterexample.unsqueeze(0)).argmax()) != label


def test_no_proved_query_falls_to_an_independent_attack(outcomes, digits_mlp, independent_attack) -> None:
    for eps, point, label, outcome in outcomes:
        if outcome.verdict == "proved":
            assert "holds over the reals" in outcome.reason
            assert independent_attack(digits_mlp, point, eps, label, restarts=64) is None, (eps, outcome.reason)


def test_the_attack_agrees_where_it_finds_counterexamples(outcomes, digits_mlp, independent_attack) -> None:
    """Where the independent attack breaks a point, the verifier refuted it too."""
    for eps, point, label, outcome in outcomes:
        if independent_attack(digits_mlp, point, eps, label, restarts=16) is not None:
            assert outcome.verdict == "refuted"
