"""Branch and bound over unstable ReLUs, with Z3 on the leaves bounds cannot settle.

A domain is the input box plus a sign for some ReLUs. Each round bounds a batch of domains at
once (`bounds.compute_bounds`), tunes the relaxation's slopes and the split multipliers by gradient
ascent (alpha/beta-CROWN), closes the domains whose every unsafe conjunction has a constraint with
a positive lower bound, tries the corner that minimises the linear bound as a cheap counterexample,
and splits the others on the ReLU whose relaxation costs the objective most (its intercept times
the coefficient that meets it). A domain with no unstable ReLU left is a linear program: a long
ascent on its multipliers nearly always closes it, and Z3 decides what remains exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mdl_lang.verify.attack import Reference, Replay, pgd_attack, replay
from mdl_lang.verify.bounds import (
    Domains,
    LayerBounds,
    back_substitute,
    compute_bounds,
    relu_relaxation,
    relu_sources,
)
from mdl_lang.verify.network import Affine, Network, evaluate
from mdl_lang.verify.query import Query, unsafe_margin, unsafe_matrix, unsafe_strict
from mdl_lang.verify.smt import solve_leaf

Progress = Callable[[int, int, float], None]

# Domains bounded together per round, and how many unstable ReLUs a leaf may keep for Z3 (Z3 on
# exact rationals took seconds per leaf even with a handful: splitting further is cheaper).
BATCH = 64
Z3_LEAF_UNSTABLE = 0
# Gradient steps on the relaxation's slopes and the split multipliers per bounded batch (20 steps
# needed 5x the nodes of 40 on the hardest digits query; 100 cost more time than they saved),
# and on a leaf before Z3 sees it.
OPTIMISE_STEPS = 40
LEAF_OPTIMISE_STEPS = 300
# Back-substitution holds (domains x 2n x n) coefficients for an n-wide layer: cap the elements per batch.
BATCH_ELEMENTS = 20_000_000
# Weights beyond which a leaf is not handed to Z3: encoding it would outlast any timeout.
Z3_MAX_TERMS = 200_000


@dataclass
class Search:
    """The mutable state of one branch-and-bound run (counters for the outcome's statistics)."""

    nodes: int = 0
    z3_calls: int = 0
    undecided: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settled:
    """How the search ended: `proved`, `refuted` (with the replay) or `unknown` (with the reason)."""

    verdict: str
    reason: str
    replay: Replay | None = None


@dataclass(frozen=True)
class ObjectiveBounds:
    """Per domain: lower bounds of every unsafe row, which conjunctions stay open, and the back-substitution."""

    row_lower: torch.Tensor
    open_conjunctions: torch.Tensor
    input_coefficients: torch.Tensor
    relu_coefficients: dict[int, torch.Tensor]


def bound_objective(
    network: Network, query: Query, domains: Domains, bounds: LayerBounds, open_conjunctions: torch.Tensor,
    iterations: int = 0,
    deadline: float | None = None,
) -> ObjectiveBounds:
    """Lower-bound every unsafe constraint on every domain; a conjunction is closed on a domain when
    one of its constraints is positive there (or the domain is empty).

    With `iterations`, the lower slopes of unstable ReLUs and the multipliers of split constraints
    are then tuned by gradient ascent on the open rows (alpha/beta-CROWN); every iterate is a sound
    bound, so the best one per row is kept.
    """
    matrix, constants, groups = unsafe_matrix(query)
    strict = unsafe_strict(query).unsqueeze(0)
    count = domains.count
    coefficients = matrix.unsqueeze(0).expand(count, -1, -1)
    offsets = constants.unsqueeze(0).expand(count, -1)

    def substitute(alphas=None, betas=None):
        return back_substitute(network, bounds.lower, bounds.upper, domains, network.output, coefficients, offsets,
                               keep_relu_coefficients=True, alphas=alphas, betas=betas)

    def still_open(lower: torch.Tensor) -> torch.Tensor:
        # A strict unsafe row (c.y + d < 0) is unreachable once its lower bound is >= 0.
        positive = (lower > 0) | (strict & (lower >= 0))
        closed = torch.stack([positive[:, list(group)].any(dim=1) for group in groups], dim=1)
        return open_conjunctions & ~closed & ~bounds.infeasible.unsqueeze(1)

    substitution = substitute()
    best = substitution.lower
    remaining = still_open(best)
    if iterations and bool(remaining.any()):
        substitution, best = _optimise(network, bounds, domains, substitute, best, remaining, groups, iterations,
                                       deadline, still_open)
        remaining = still_open(best)
    return ObjectiveBounds(best, remaining, substitution.input_coefficients, substitution.relu_coefficients)


def _optimise(network, bounds, domains, substitute, best, remaining, groups, iterations, deadline, still_open):
    """Adam on alphas (projected to [0, 1]) and betas (projected to >= 0), maximising the open rows."""
    rows = best.shape[1]
    open_rows = torch.zeros_like(best, dtype=torch.bool)
    for position, group in enumerate(groups):
        open_rows[:, list(group)] |= remaining[:, position:position + 1]
    alphas, betas = {}, {}
    for index, source in relu_sources(network).items():
        relaxation = relu_relaxation(bounds.lower[source], bounds.upper[source])
        alphas[index] = relaxation.alpha.unsqueeze(1).expand(-1, rows, -1).clone().requires_grad_(True)
        if bool((domains.splits[index] != 0).any()):
            betas[index] = torch.zeros_like(alphas[index]).requires_grad_(True)
    parameters = [*alphas.values(), *betas.values()]
    if not parameters:
        return substitute(), best
    optimiser = torch.optim.Adam(parameters, lr=0.1)
    substitution = None
    for step in range(iterations):
        if step and deadline is not None and time.monotonic() > deadline:
            break
        if step and step % 5 == 0 and not bool(still_open(best).any()):
            break  # every open row of every domain is closed: more steps change nothing
        substitution = substitute(alphas, betas)
        lower = substitution.lower
        best = torch.maximum(best, lower.detach())
        loss = -(lower * open_rows).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            for value in alphas.values():
                value.clamp_(0.0, 1.0)
            for value in betas.values():
                value.clamp_(min=0.0)
    detached = type(substitution)(
        substitution.lower.detach(), {k: v.detach() for k, v in substitution.relu_coefficients.items()},
        substitution.input_coefficients.detach(),
    )
    return detached, best


def branch_and_bound(
    network: Network,
    query: Query,
    reference: Reference | None,
    deadline: float,
    search: Search,
    progress: Progress | None = None,
    started: float | None = None,
) -> Settled:
    """Decide the query exactly, or run out of time (=> unknown, never proved)."""
    started = time.monotonic() if started is None else started
    sources = relu_sources(network)
    _, _, groups = unsafe_matrix(query)
    frontier = _Frontier.root(network, query, len(groups), sources)
    matrix, constants, _ = unsafe_matrix(query)
    widest = max(network.size(index) for index in range(len(network.nodes) + 1))
    batch = max(1, min(BATCH, BATCH_ELEMENTS // (2 * widest * widest)))
    while frontier.size:
        if time.monotonic() > deadline:
            return Settled("unknown", f"timeout after {search.nodes} branch-and-bound nodes ({frontier.size} open)")
        domains, open_mask = frontier.pop(batch)
        bounds = compute_bounds(network, domains)
        objective = bound_objective(network, query, domains, bounds, open_mask, OPTIMISE_STEPS, deadline)
        search.nodes += domains.count
        remaining = objective.open_conjunctions.any(dim=1)
        if progress is not None:
            progress(search.nodes, frontier.size + int(remaining.sum()), time.monotonic() - started)
        if not bool(remaining.any()):
            continue
        found = _corner_counterexample(network, query, reference, domains, objective, remaining, groups)
        if found is not None:
            return Settled("refuted", "a bound-minimising corner violates the property", found)
        unstable = _unstable_masks(bounds, domains, sources)
        unstable_count = sum(mask.sum(dim=1) for mask in unstable.values()) if unstable else torch.zeros(
            domains.count, dtype=torch.long)
        leaves = remaining & (unstable_count <= Z3_LEAF_UNSTABLE)
        leaf_rows = torch.nonzero(leaves).flatten()
        if leaf_rows.numel():
            # A leaf is a linear program: long gradient ascent on its multipliers nearly always closes
            # it for far less than Z3 costs; only what stays open goes to Z3.
            leaf_domains, leaf_bounds = _select(domains, bounds, leaf_rows)
            tightened = bound_objective(network, query, leaf_domains, leaf_bounds,
                                        objective.open_conjunctions[leaf_rows], LEAF_OPTIMISE_STEPS, deadline)
            for position, domain in enumerate(leaf_rows.tolist()):
                if not bool(tightened.open_conjunctions[position].any()):
                    continue
                settled = _solve_leaf(
                    network, query, reference, (matrix, constants), groups, bounds, domain,
                    tightened.open_conjunctions[position], deadline, search,
                )
                if settled is not None:
                    return settled
        splitting = remaining & ~leaves
        if bool(splitting.any()):
            choice = _choose_split(bounds, objective, unstable, sources, groups, splitting)
            frontier.push_children(domains, objective.open_conjunctions, splitting, choice)
    if search.undecided:
        return Settled("unknown", search.undecided[0])
    return Settled(
        "proved", f"holds over the reals: {search.nodes} branch-and-bound nodes, {search.z3_calls} Z3 leaves",
    )


def _select(domains: Domains, bounds: LayerBounds, rows: torch.Tensor) -> tuple[Domains, LayerBounds]:
    """The domains `rows` of a batch, with their bounds."""
    chosen = Domains(domains.lower[rows], domains.upper[rows], {k: v[rows] for k, v in domains.splits.items()})
    return chosen, LayerBounds([v[rows] for v in bounds.lower], [v[rows] for v in bounds.upper],
                               bounds.infeasible[rows])


@dataclass
class _Frontier:
    """Open domains stacked as tensors; popping from the end keeps the search depth-first and the
    memory small."""

    lower: torch.Tensor
    upper: torch.Tensor
    splits: dict[int, torch.Tensor]
    open_conjunctions: torch.Tensor

    @classmethod
    def root(cls, network: Network, query: Query, conjunctions: int, sources: dict[int, int]) -> _Frontier:
        sizes = [network.size(index) for index in sources]
        splits = {index: torch.zeros(1, size, dtype=torch.int8) for index, size in zip(sources, sizes, strict=True)}
        return cls(
            query.lower.reshape(1, -1).clone(), query.upper.reshape(1, -1).clone(), splits,
            torch.ones(1, conjunctions, dtype=torch.bool),
        )

    @property
    def size(self) -> int:
        return int(self.lower.shape[0])

    def pop(self, count: int) -> tuple[Domains, torch.Tensor]:
        keep = max(0, self.size - count)
        domains = Domains(self.lower[keep:], self.upper[keep:], {k: v[keep:] for k, v in self.splits.items()})
        open_mask = self.open_conjunctions[keep:]
        self.lower, self.upper = self.lower[:keep], self.upper[:keep]
        self.splits = {k: v[:keep] for k, v in self.splits.items()}
        self.open_conjunctions = self.open_conjunctions[:keep]
        return domains, open_mask

    def push_children(
        self, domains: Domains, open_mask: torch.Tensor, chosen: torch.Tensor, split: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """Two children per chosen domain: the chosen ReLU forced inactive, then forced active."""
        relu_index, neuron = split
        rows = torch.nonzero(chosen).flatten()
        children_splits = {}
        for index, values in domains.splits.items():
            parent = values[rows]
            inactive, active = parent.clone(), parent.clone()
            here = torch.nonzero(relu_index[rows] == index).flatten()
            inactive[here, neuron[rows][here]] = -1
            active[here, neuron[rows][here]] = 1
            children_splits[index] = torch.cat([self.splits[index], inactive, active])
        self.splits = children_splits
        self.lower = torch.cat([self.lower, domains.lower[rows], domains.lower[rows]])
        self.upper = torch.cat([self.upper, domains.upper[rows], domains.upper[rows]])
        self.open_conjunctions = torch.cat([self.open_conjunctions, open_mask[rows], open_mask[rows]])


def _unstable_masks(bounds: LayerBounds, domains: Domains, sources: dict[int, int]) -> dict[int, torch.Tensor]:
    """Per ReLU value: which neurons are unsplit and still cross zero on each domain."""
    return {
        index: (bounds.lower[source] < 0) & (bounds.upper[source] > 0) & (domains.splits[index] == 0)
        for index, source in sources.items()
    }


def _worst_rows(objective: ObjectiveBounds, groups: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Per domain, the unsafe row to improve: in each open conjunction its best (largest) lower bound,
    then the conjunction where that is smallest."""
    best_in_group = []
    best_row = []
    for group in groups:
        values = objective.row_lower[:, list(group)]
        best, where = values.max(dim=1)
        best_in_group.append(best)
        best_row.append(torch.tensor(group)[where])
    best_values = torch.stack(best_in_group, dim=1).masked_fill(~objective.open_conjunctions, float("inf"))
    chosen = best_values.argmin(dim=1)
    return torch.stack(best_row, dim=1).gather(1, chosen.unsqueeze(1)).squeeze(1)


def _choose_split(
    bounds: LayerBounds,
    objective: ObjectiveBounds,
    unstable: dict[int, torch.Tensor],
    sources: dict[int, int],
    groups: tuple[tuple[int, ...], ...],
    splitting: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per domain (relu value index, neuron) to split: the largest |coefficient| x intercept of the
    relaxation on the row being improved, with the bound gap breaking ties."""
    rows = _worst_rows(objective, groups)
    best_score = torch.full((splitting.shape[0],), -1.0, dtype=torch.float64)
    best_index = torch.zeros(splitting.shape[0], dtype=torch.long)
    best_neuron = torch.zeros(splitting.shape[0], dtype=torch.long)
    for index, source in sources.items():
        low, high = bounds.lower[source], bounds.upper[source]
        relaxation = relu_relaxation(low, high)
        coefficient = objective.relu_coefficients[index].gather(
            1, rows.view(-1, 1, 1).expand(-1, 1, low.shape[1])).squeeze(1)
        score = coefficient.abs() * relaxation.offset + 1e-6 * (high - low)
        score = torch.where(unstable[index], score, torch.full_like(score, -1.0))
        value, neuron = score.max(dim=1)
        better = value > best_score
        best_score = torch.where(better, value, best_score)
        best_index = torch.where(better, torch.full_like(best_index, index), best_index)
        best_neuron = torch.where(better, neuron, best_neuron)
    return best_index, best_neuron


def _corner_counterexample(
    network: Network, query: Query, reference: Reference | None, domains: Domains, objective: ObjectiveBounds,
    remaining: torch.Tensor, groups: tuple[tuple[int, ...], ...],
) -> Replay | None:
    """The box corner that minimises each domain's worst linear bound is often a real violation."""
    rows = _worst_rows(objective, groups)
    coefficients = objective.input_coefficients.gather(
        1, rows.view(-1, 1, 1).expand(-1, 1, domains.lower.shape[1])).squeeze(1)
    corners = torch.where(coefficients > 0, domains.lower, domains.upper)[remaining]
    if corners.shape[0] == 0:
        return None
    with torch.no_grad():
        margins = unsafe_margin(query, evaluate(network, corners.reshape(-1, *network.input_shape)))
    for candidate in torch.nonzero(margins <= 0).flatten().tolist()[:4]:
        confirmed = replay(network, query, corners[candidate], reference)
        if confirmed.violated:
            return confirmed
    return None


def _solve_leaf(
    network: Network, query: Query, reference: Reference | None, rows, groups, bounds: LayerBounds, domain: int,
    open_conjunctions: torch.Tensor, deadline: float, search: Search,
) -> Settled | None:
    """Z3 on one leaf, conjunction by conjunction; a model must replay in float32 to refute."""
    terms = sum(int(torch.count_nonzero(node.weight)) for node in network.nodes if isinstance(node, Affine))
    if terms > Z3_MAX_TERMS:
        return Settled("unknown", f"a leaf bounds cannot settle is too large for Z3 ({terms} weights); "
                                  "never reported as proved")
    for position in torch.nonzero(open_conjunctions).flatten().tolist():
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            return Settled("unknown", f"timeout in a Z3 leaf after {search.nodes} branch-and-bound nodes")
        search.z3_calls += 1
        answer = solve_leaf(network, query, groups[position], rows, bounds, domain, remaining_ms)
        if answer.status == "unsat":
            continue
        if answer.status == "unknown":
            return Settled("unknown", f"{answer.reason or 'Z3 returned unknown'} on a leaf; never reported as proved")
        confirmed = _confirm_model(network, query, reference, answer.point, rows, groups[position], bounds, domain,
                                   deadline, search)
        if confirmed.violated:
            return Settled("refuted", "Z3 model, replayed in float32", confirmed)
        search.undecided.append(confirmed.reason)
    return None


def _confirm_model(
    network, query, reference, point, rows, conjunction, bounds, domain, deadline, search,
) -> Replay:
    """A Z3 model sits on the boundary of the unsafe region; if float32 rounding moves it back to
    safety, look nearby with PGD, then ask Z3 for a point with a margin before giving up."""
    first = replay(network, query, point, reference)
    if first.violated:
        return first
    nearby = pgd_attack(network, query, start=point, restarts=8, steps=40, deadline=deadline)
    if nearby is not None:
        confirmed = replay(network, query, nearby, reference)
        if confirmed.violated:
            return confirmed
    scale = float(evaluate(network, point.reshape(1, *network.input_shape)).abs().max()) + 1.0
    remaining_ms = int((deadline - time.monotonic()) * 1000)
    if remaining_ms > 0:
        search.z3_calls += 1
        answer = solve_leaf(network, query, conjunction, rows, bounds, domain, remaining_ms, margin=1e-5 * scale)
        if answer.status == "sat":
            confirmed = replay(network, query, answer.point, reference)
            if confirmed.violated:
                return confirmed
    real_margin = float(unsafe_margin(query, evaluate(network, point.reshape(1, *network.input_shape)))[0])
    return Replay(False, first.point, first.output, first.margin,
                  f"Z3 found x at margin {real_margin:.3g} but float32 replay keeps the property "
                  f"(margin {first.margin:.3g})")
