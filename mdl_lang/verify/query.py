"""Verification queries and their outcomes, in the shape of a VNN-LIB property.

A query is an input box plus an "unsafe" region in disjunctive normal form over linear constraints
on the network's outputs: the property holds iff no point of the box satisfies any unsafe
conjunction. Input-side linear constraints (from linear `requires`) restrict the box further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Verdict = Literal["proved", "refuted", "unknown"]


@dataclass(frozen=True)
class LinearConstraint:
    """sum_i coefficients[i] * y[i] + constant <= 0 (< 0 when `strict`) over a flattened vector.

    `coefficients` is a float64 vector as long as the vector it constrains. Strictness matters for
    unsafe regions: `y <= 3` is violated by `y > 3`, and a point with y == 3 must not refute it.
    """

    coefficients: torch.Tensor
    constant: float
    strict: bool = False

    @staticmethod
    def less_equal(size: int, terms: dict[int, float], bound: float, strict: bool = False) -> LinearConstraint:
        """sum_i terms[i] * y[i] <= bound (< bound when `strict`)."""
        coefficients = torch.zeros(size, dtype=torch.float64)
        for index, weight in terms.items():
            coefficients[index] += weight
        return LinearConstraint(coefficients, -float(bound), strict)

    def holds(self, y: torch.Tensor) -> torch.Tensor:
        """Per sample of y (batch, size): is the constraint satisfied?"""
        value = self.value(y)
        return value < 0 if self.strict else value <= 0

    def value(self, y: torch.Tensor) -> torch.Tensor:
        """The left-hand side for a batch y (batch, size); <= 0 means satisfied."""
        return y.to(torch.float64) @ self.coefficients + self.constant


@dataclass(frozen=True)
class Query:
    """Holds iff no x with lower <= x <= upper and every `input_constraints` row satisfied makes
    the network's output satisfy every constraint of some conjunction in `unsafe`.

    `lower` and `upper` are float64 tensors over the flattened input. `name` labels progress and
    reports (e.g. "robust[3] eps=0.05").
    """

    lower: torch.Tensor
    upper: torch.Tensor
    unsafe: tuple[tuple[LinearConstraint, ...], ...]
    input_constraints: tuple[LinearConstraint, ...] = ()
    name: str = "query"


@dataclass(frozen=True)
class Statistics:
    """Work done on one query: branch-and-bound nodes, ReLUs settled by bounds, solver calls."""

    nodes_explored: int = 0
    stable_relus: int = 0
    unstable_relus: int = 0
    z3_calls: int = 0
    attack_restarts: int = 0


@dataclass(frozen=True)
class Outcome:
    """The verdict on one query.

    `proved` always holds over the reals (the bounds use outward rounding slack); `refuted` always
    carries a counterexample that violated the property when replayed in float32 on the original
    network; anything else is `unknown` with a reason.
    """

    verdict: Verdict
    reason: str
    counterexample: torch.Tensor | None = None
    elapsed_s: float = 0.0
    statistics: Statistics = field(default_factory=Statistics)
    # The output the float32 replay produced for the counterexample, for reports.
    replay_output: torch.Tensor | None = None


def unsafe_strict(query: Query) -> torch.Tensor:
    """Per stacked unsafe row (the order of `unsafe_matrix`): is it strict?"""
    return torch.tensor([c.strict for conjunction in query.unsafe for c in conjunction], dtype=torch.bool)


def unsafe_holds(query: Query, outputs: torch.Tensor) -> torch.Tensor:
    """Per sample (batch,): does the output lie in the unsafe region (strictness respected)?"""
    flat = outputs.reshape(outputs.shape[0], -1)
    reached = torch.zeros(flat.shape[0], dtype=torch.bool)
    for conjunction in query.unsafe:
        inside = torch.ones(flat.shape[0], dtype=torch.bool)
        for constraint in conjunction:
            inside &= constraint.holds(flat)
        reached |= inside
    return reached


def unsafe_matrix(query: Query) -> tuple[torch.Tensor, torch.Tensor, tuple[tuple[int, ...], ...]]:
    """Every unsafe constraint stacked: (C (K, n_out), d (K,), the row indices of each conjunction)."""
    rows: list[torch.Tensor] = []
    constants: list[float] = []
    groups: list[tuple[int, ...]] = []
    for conjunction in query.unsafe:
        start = len(rows)
        for constraint in conjunction:
            rows.append(constraint.coefficients.to(torch.float64))
            constants.append(constraint.constant)
        groups.append(tuple(range(start, len(rows))))
    return torch.stack(rows), torch.tensor(constants, dtype=torch.float64), tuple(groups)


def unsafe_margin(query: Query, outputs: torch.Tensor) -> torch.Tensor:
    """min over conjunctions of max over their constraints of c.y + d, per sample (batch,).

    A margin <= 0 means the output lies in the unsafe region: the property is violated there.
    """
    matrix, constants, groups = unsafe_matrix(query)
    values = outputs.to(matrix.dtype) @ matrix.T + constants
    return torch.stack([values[:, list(group)].amax(dim=1) for group in groups], dim=1).amin(dim=1)


def input_violation(query: Query, inputs: torch.Tensor) -> torch.Tensor:
    """How far each flattened input (batch, n_in) is outside the box and the input constraints (0 inside)."""
    flat = inputs.reshape(inputs.shape[0], -1).to(torch.float64)
    outside = (query.lower - flat).clamp(min=0.0).amax(dim=1) + (flat - query.upper).clamp(min=0.0).amax(dim=1)
    for constraint in query.input_constraints:
        outside = outside + constraint.value(flat).clamp(min=0.0)
    return outside
