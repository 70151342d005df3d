"""Fast refutation: projected gradient descent inside the query's box, and float32 replay.

An attack only proposes; a point counts as a counterexample only after `replay` confirms it on the
lowered network in float32 and on the original module (when there is one), so a refutation never
rests on float64 arithmetic the deployed network does not perform.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mdl_lang.verify.network import Network, evaluate
from mdl_lang.verify.query import Query, input_violation, unsafe_holds, unsafe_margin

Reference = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Replay:
    """The float32 replay of a candidate: does it violate the property, and what came out."""

    violated: bool
    point: torch.Tensor
    output: torch.Tensor
    margin: float
    reason: str


def to_float32_inside(query: Query, point: torch.Tensor) -> torch.Tensor:
    """The float32 point nearest `point` that still lies inside the box.

    Rounding to float32 can step outside a float64 box edge; step back by one ulp where it does.
    """
    flat = point.reshape(-1).to(torch.float64)
    flat = torch.minimum(torch.maximum(flat, query.lower), query.upper)
    single = flat.to(torch.float32)
    below = single.to(torch.float64) < query.lower
    above = single.to(torch.float64) > query.upper
    single = torch.where(below, torch.nextafter(single, torch.full_like(single, float("inf"))), single)
    single = torch.where(above, torch.nextafter(single, torch.full_like(single, float("-inf"))), single)
    return single


def replay(network: Network, query: Query, point: torch.Tensor, reference: Reference | None = None) -> Replay:
    """Run a candidate in float32 on the lowered network and on `reference` (the original module).

    It violates only if it lies in the box and input constraints, and every float32 run lands in the
    unsafe region (margin <= 0).
    """
    single = to_float32_inside(query, point)
    batch = single.reshape(1, *network.input_shape)
    inside = float(input_violation(query, single.unsqueeze(0))[0]) <= 0
    if not inside or not all(bool(c.holds(single.unsqueeze(0))[0]) for c in query.input_constraints):
        return Replay(False, single, torch.empty(0), float("inf"), "the point breaks the input constraints")
    with torch.no_grad():
        lowered = evaluate(network, batch)
        margin = float(unsafe_margin(query, lowered)[0])
        violated = bool(unsafe_holds(query, lowered)[0])
        output = lowered[0]
        if reference is not None:
            original = reference(batch).reshape(1, -1).to(torch.float32)
            margin = max(margin, float(unsafe_margin(query, original)[0]))
            violated = violated and bool(unsafe_holds(query, original)[0])
            output = original[0]
    if violated:
        return Replay(True, single, output, margin, "float32 replay violates the property")
    return Replay(False, single, output, margin, f"float32 replay keeps the property (margin {margin:.3g})")


def pgd_attack(
    network: Network,
    query: Query,
    *,
    seed: int = 0,
    restarts: int = 32,
    steps: int = 60,
    dtype: torch.dtype = torch.float32,
    deadline: float | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Minimise the unsafe margin by signed-gradient steps projected onto the box.

    Runs `restarts` starting points as one batch (random, plus the box centre and `start` when
    given); returns the candidate with the lowest margin if it is <= 0 in `dtype`, else None.
    Input constraints enter as a penalty, and `replay` checks them exactly.
    """
    generator = torch.Generator().manual_seed(seed)
    lower, upper = query.lower.to(dtype), query.upper.to(dtype)
    width = upper - lower
    points = lower + torch.rand(restarts, lower.shape[0], generator=generator, dtype=torch.float64).to(dtype) * width
    points[0] = (lower + upper) / 2
    if start is not None:
        points[1] = start.reshape(-1).to(dtype).clamp(lower, upper)
    best_point, best_margin = None, float("inf")
    step = width / 4
    for iteration in range(steps):
        if deadline is not None and time.monotonic() > deadline:
            break
        points = points.detach().requires_grad_(True)
        outputs = evaluate(network, points.reshape(restarts, *network.input_shape))
        margins = unsafe_margin(query, outputs)
        penalty = input_violation(query, points) * 1e3 if query.input_constraints else 0.0
        objective = (margins + penalty).sum()
        (gradient,) = torch.autograd.grad(objective, points)
        with torch.no_grad():
            feasible = input_violation(query, points) <= 0
            candidates = torch.where(feasible, margins.detach().to(torch.float64), torch.inf)
            index = int(candidates.argmin())
            if float(candidates[index]) < best_margin:
                best_margin, best_point = float(candidates[index]), points[index].detach().clone()
            if best_margin <= 0:
                break
            points = torch.minimum(torch.maximum(points - step * gradient.sign(), lower), upper)
            if iteration % 20 == 19:
                step = step / 2
    if best_point is None or best_margin > 0:
        return None
    return best_point.to(torch.float64)


def attack(
    network: Network,
    query: Query,
    reference: Reference | None,
    *,
    seed: int = 0,
    deadline: float | None = None,
    rounds: int = 2,
) -> tuple[Replay | None, int]:
    """PGD in float32 then float64, with fresh restarts each round; the first candidate that
    replays counts. Returns (the confirmed replay or None, restarts used)."""
    used, restarts = 0, 32
    for round_index in range(rounds):
        for dtype in (torch.float32, torch.float64):
            if deadline is not None and time.monotonic() > deadline:
                return None, used
            candidate = pgd_attack(
                network, query, seed=seed + round_index, restarts=restarts, dtype=dtype, deadline=deadline,
            )
            used += restarts
            if candidate is not None:
                confirmed = replay(network, query, candidate, reference)
                if confirmed.violated:
                    return confirmed, used
    return None, used
