"""Soundness of the Z3 spec proofs: whatever is `proved` holds on concrete tensors.

Hypothesis draws a box `lo <= x <= hi` (the interface's `requires`) and a module `requires` Q
over a small tensor (one variable per element) or a large one (the interval abstraction); when
the checker proves that the box implies Q, Q must hold at every corner of the box and at random
points inside it, evaluated with numpy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdl_lang.report import Verdict
from mdl_lang.semantics.checker import check_paths

# The module `requires` Q: its text for a threshold t, and its meaning on a concrete vector, with a slack e
# for float rounding (given only when checking that a proof holds; a refutation is checked exactly, at corners).
GOALS: dict[str, tuple[str, Callable[[np.ndarray, float, float], bool]]] = {
    "sum": ("sum(x) >= {t}", lambda x, t, e: x.sum() >= t - e),
    "max": ("max(x) <= {t}", lambda x, t, e: x.max() <= t + e),
    "min": ("min(x) >= {t}", lambda x, t, e: x.min() >= t - e),
    "mean": ("mean(x) <= {t}", lambda x, t, e: x.mean() <= t + e),
    "element": ("x[1] >= {t}", lambda x, t, e: x[1] >= t - e),
    "pair": ("x[0] + x[1] <= {t}", lambda x, t, e: x[0] + x[1] <= t + e),
    "all": ("x >= {t}", lambda x, t, e: bool((x >= t - e).all())),
    "count": ("count(x > {t}) <= 2", lambda x, t, e: int((x > t + e).sum()) <= 2),
    "any": ("any(x > {t})", lambda x, t, e: bool((x > t - e).any())),
    "any-chain": ("any({t} <= x <= {t} + 0.5)", lambda x, t, e: bool(((x >= t - e) & (x <= t + 0.5 + e)).any())),
    "norm": ("norm(x, 1) <= {t}", lambda x, t, e: np.abs(x).sum() <= t + e),
    "distance": ("abs(x[0] - x[1]) <= {t}", lambda x, t, e: abs(x[0] - x[1]) <= t + e),
    "pairwise-max": ("max(x[0], x[2]) >= {t}", lambda x, t, e: max(x[0], x[2]) >= t - e),
    "relu": ("relu(x[0]) <= {t}", lambda x, t, e: max(x[0], 0.0) <= t + e),
}

VACUITY = ("some input", "no input", "cannot decide whether any input")  # the messages of the vacuity checks
quarters = st.integers(-8, 8).map(lambda k: k / 4)


def proved(width: int, low: float, high: float, goal: str) -> Verdict:
    """The verdict of `interface requires low <= x <= high` implying the module's `requires goal`."""
    text = f"""spec sound
dim B : batch
interface I {{
  input x: Tensor[B, {width}] float32
  output y: Tensor[B, 1] float32
  requires x >= {low} and x <= {high}
}}
module m : I {{
  requires {goal}
}}
"""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sound.mdl"
        path.write_text(text, encoding="utf-8")
        result = check_paths([path], Path(folder))
    verdicts = [r.verdict for r in result.results if r.component == "m" and r.kind == "requires"
                and not r.message.startswith(VACUITY)]
    assert len(verdicts) == 1, [r.message for r in result.results]
    return verdicts[0]


def samples(width: int, low: float, high: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Corners of the box (all low, all high, random mixes) and uniform points inside it."""
    points = [np.full(width, low), np.full(width, high)]
    points += [np.where(rng.random(width) < 0.5, low, high) for _ in range(20)]
    points += [rng.uniform(low, high, width) for _ in range(20)]
    return points


EXAMPLES = int(os.environ.get("MDL_Z3_EXAMPLES", "60"))  # e.g. 1500 for a longer search


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.sampled_from([3, 80]),
    bounds=st.tuples(quarters, quarters).map(sorted),
    goal=st.sampled_from(sorted(GOALS)),
    threshold=st.integers(-40, 40).map(lambda k: k / 4),
    seed=st.integers(0, 2**16),
)
def test_every_proved_implication_holds_on_concrete_tensors(
    width: int, bounds: list[float], goal: str, threshold: float, seed: int,
) -> None:
    low, high = bounds
    text, holds = GOALS[goal]
    verdict = proved(width, low, high, text.format(t=threshold))
    rng = np.random.default_rng(seed)
    points = samples(width, low, high, rng)
    if verdict is Verdict.PASS:
        assert all(holds(x, threshold, 1e-9) for x in points)
    elif verdict is Verdict.FAIL:
        # refuted is only said of exact encodings: then some point of the box breaks the goal
        # (a corner does, for these linear goals over a box)
        corners = points[:22] + [np.where(np.arange(width) < k, low, high) for k in range(width + 1)]
        corners += [np.where(np.arange(width) < k, high, low) for k in range(width + 1)]
        assert not all(holds(x, threshold, 0.0) for x in corners)
