"""How a VNN-LIB query is put to `verify_query`: jointly first, then one unsafe case at a time.

A robustness property is a disjunction (some other class j scores at least the true one); the
verifier bounds all cases at once, and branch and bound on the joint query must split until every
case is closed in every branch, where one case alone often closes after a few splits. So: a short
joint pass (it settles the easy queries, and its attack looks for any violation), then each case
on its own with the time that is left; the property holds when every case is proved, and fails at
the first case refuted. On the 240 queries of `benchmarks/bench_verify.py` this solved the same
queries in 32.7 s against 38.7 s for one joint `verify_query` each (the hardest, 12.7 s against
19.0 s); with an earlier revision of the engine, joint queries that timed out at 60 s were proved
in 1 to 2 s this way.
"""

from __future__ import annotations

import time
from dataclasses import replace

from mdl_lang.verify.attack import Reference
from mdl_lang.verify.engine import verify_query
from mdl_lang.verify.network import Network
from mdl_lang.verify.query import Outcome, Query, Statistics

# The joint pass gets this share of the budget, at least JOINT_MIN_S (and never more than all of it).
JOINT_SHARE = 0.05
JOINT_MIN_S = 1.0


def verify_cases(network: Network, query: Query, *, timeout_s: float, reference: Reference | None = None,
                 seed: int = 0) -> Outcome:
    """The verdict on `query` within `timeout_s`, with the same guarantees as `verify_query`."""
    started = time.monotonic()
    deadline = started + timeout_s
    if len(query.unsafe) == 1:
        return verify_query(network, query, timeout_s=timeout_s, reference=reference, seed=seed)
    joint = verify_query(network, query, timeout_s=min(timeout_s, max(JOINT_MIN_S, JOINT_SHARE * timeout_s)),
                         reference=reference, seed=seed)
    if joint.verdict != "unknown":
        return joint
    outcomes = [joint]
    for number, case in enumerate(query.unsafe, start=1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _combined("unknown", f"timeout before unsafe case {number} of {len(query.unsafe)}", outcomes,
                             started)
        outcome = verify_query(network, replace(query, unsafe=(case,), name=f"{query.name} case {number}"),
                               timeout_s=remaining, reference=reference, seed=seed)
        outcomes.append(outcome)
        if outcome.verdict == "refuted":
            return _combined("refuted", f"unsafe case {number}: {outcome.reason}", outcomes, started, outcome)
        if outcome.verdict == "unknown":
            return _combined("unknown", f"unsafe case {number} of {len(query.unsafe)}: {outcome.reason}", outcomes,
                             started)
    return _combined("proved", f"each of the {len(query.unsafe)} unsafe cases proved on its own", outcomes, started)


def _combined(verdict: str, reason: str, outcomes: list[Outcome], started: float,
              refuting: Outcome | None = None) -> Outcome:
    """One outcome for the whole query: the work of every pass added up, the refuting point kept."""
    statistics = Statistics(
        nodes_explored=sum(o.statistics.nodes_explored for o in outcomes),
        stable_relus=outcomes[0].statistics.stable_relus,
        unstable_relus=outcomes[0].statistics.unstable_relus,
        z3_calls=sum(o.statistics.z3_calls for o in outcomes),
        attack_restarts=sum(o.statistics.attack_restarts for o in outcomes),
    )
    return Outcome(
        verdict, reason,  # type: ignore[arg-type]
        None if refuting is None else refuting.counterexample,
        time.monotonic() - started, statistics,
        None if refuting is None else refuting.replay_output,
    )
