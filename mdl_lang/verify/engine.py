"""`verify_query`: bounds first, then an attack, then branch and bound with Z3 leaves.

The order matters for speed: one back-substitution pass settles most robustness queries outright,
a short gradient attack refutes most of the rest, and only what is left pays for branch and bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch

from mdl_lang.threads import one_thread
from mdl_lang.verify.attack import Reference, attack
from mdl_lang.verify.bab import Progress, Search, bound_objective, branch_and_bound
from mdl_lang.verify.bounds import compute_bounds, relu_sources, root_domains
from mdl_lang.verify.network import Network
from mdl_lang.verify.query import Outcome, Query, Statistics, unsafe_matrix

# The share of the time budget the first attack may use before branch and bound starts.
ATTACK_SHARE = 0.15


def verify_query(
    network: Network,
    query: Query,
    *,
    timeout_s: float = 60.0,
    progress: Progress | Callable[[int, int, float], None] | None = None,
    reference: Reference | None = None,
    seed: int = 0,
) -> Outcome:
    """Decide whether any point of the query's box (and input constraints) reaches its unsafe region.

    `proved` holds over the reals for the lowered network; `refuted` comes with a float32 point
    that violates the property on `evaluate` and on `reference` (the original module, when given);
    a timeout or a counterexample that does not replay is `unknown` with the reason.
    """
    query = replace(
        query, lower=query.lower.reshape(-1).to(torch.float64), upper=query.upper.reshape(-1).to(torch.float64),
    )
    _check_shapes(network, query)
    with one_thread():
        return _decide(network, query, timeout_s, progress, reference, seed)


def _decide(
    network: Network, query: Query, timeout_s: float, progress: Progress | None, reference: Reference | None,
    seed: int,
) -> Outcome:
    started = time.monotonic()
    deadline = started + timeout_s
    domains = root_domains(network, query.lower, query.upper)
    bounds = compute_bounds(network, domains)
    stable, unstable = _relu_counts(network, bounds)
    _, _, groups = unsafe_matrix(query)
    objective = bound_objective(network, query, domains, bounds, torch.ones(1, len(groups), dtype=torch.bool))

    def finish(verdict: str, reason: str, search: Search | None = None, restarts: int = 0, found=None) -> Outcome:
        statistics = Statistics(
            nodes_explored=search.nodes if search else 1, stable_relus=stable, unstable_relus=unstable,
            z3_calls=search.z3_calls if search else 0, attack_restarts=restarts,
        )
        return Outcome(
            verdict, reason, None if found is None else found.point, time.monotonic() - started, statistics,
            None if found is None else found.output,
        )

    if bool(bounds.infeasible[0]) or not bool(objective.open_conjunctions.any()):
        return finish("proved", f"holds over the reals: linear bounds settle it ({unstable} unstable ReLUs)")
    attack_deadline = min(deadline, started + ATTACK_SHARE * timeout_s)
    found, restarts = attack(network, query, reference, seed=seed, deadline=attack_deadline)
    if found is not None:
        return finish("refuted", "gradient attack, replayed in float32", restarts=restarts, found=found)
    search = Search()
    settled = branch_and_bound(network, query, reference, deadline, search, progress, started)
    return finish(settled.verdict, settled.reason, search, restarts, settled.replay)


def _check_shapes(network: Network, query: Query) -> None:
    size = network.input_size
    if query.lower.numel() != size or query.upper.numel() != size:
        raise ValueError(f"the query's box has {query.lower.numel()} inputs; the network takes {size}")
    if not query.unsafe or not all(query.unsafe):
        raise ValueError("the query needs at least one unsafe conjunction, each of at least one constraint")
    outputs = network.size(network.output)
    for conjunction in query.unsafe:
        for constraint in conjunction:
            if constraint.coefficients.numel() != outputs:
                raise ValueError(f"an output constraint has {constraint.coefficients.numel()} coefficients; "
                                 f"the network has {outputs} outputs")
    if bool((query.lower > query.upper).any()):
        raise ValueError("the query's box is empty (a lower bound exceeds its upper bound)")


def _relu_counts(network: Network, bounds) -> tuple[int, int]:
    """Stable and unstable ReLU neurons at the root (for statistics)."""
    stable = unstable = 0
    for source in relu_sources(network).values():
        crossing = (bounds.lower[source][0] < 0) & (bounds.upper[source][0] > 0)
        unstable += int(crossing.sum())
        stable += int((~crossing).sum())
    return stable, unstable
