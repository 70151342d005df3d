"""The self-measure of issue 5: a 64-32-16-10 digits MLP, 20 points x eps {0.01, 0.02, 0.05, 0.1}.

Slow (about 10 s on a quiet machine, training included); run it with
`pytest -p no:xdist -s tests/verify/test_measure.py -m slow` to see the numbers.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from mdl_lang.verify.clauses import InputRegion, robustness_query
from mdl_lang.verify.engine import verify_query
from mdl_lang.verify.extract import extract


@pytest.mark.slow
def test_64_32_16_10_robustness_sweep(digits, independent_attack) -> None:
    inputs, labels = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs[:1500]), labels[:1500]).backward()
        optimiser.step()
    model.eval()
    network = extract(model, (64,)).network
    region = InputRegion(torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64), ())
    counts = {"proved": 0, "refuted": 0, "unknown": 0}
    proved = []
    verifying = 0.0
    for eps in (0.01, 0.02, 0.05, 0.1):
        for index in range(20):
            point = inputs[1500 + index]
            with torch.no_grad():
                label = int(model(point.unsqueeze(0)).argmax())
            query = robustness_query(eps, point, label, 10, region, f"{index}@{eps}")
            started = time.monotonic()
            outcome = verify_query(network, query, timeout_s=60.0, reference=model)
            verifying += time.monotonic() - started
            counts[outcome.verdict] += 1
            if outcome.verdict == "proved":
                proved.append((point, eps, label))
    print(f"\n64-32-16-10, 20 points x 4 radii: {counts}, {verifying:.1f}s verifying in all")
    assert counts["unknown"] == 0
    for point, eps, label in proved:
        assert independent_attack(model, point, eps, label, restarts=32) is None
