"""The exact encoding of one branch-and-bound leaf for Z3, over the reals.

Weights become exact rationals (every float64 is one), ReLUs the bounds settled are fixed as
linear pieces, and the remaining ones are encoded exactly (y >= 0, y >= z, y <= 0 or y <= z) with
the triangle relaxation added as a redundant cut that helps Z3's simplex prune. A `sat` answer is
only a candidate: the caller replays it in float32 before it refutes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

from mdl_lang.verify.bounds import LayerBounds
from mdl_lang.verify.network import Add, Affine, Concat, MaxGroups, Network, Relu
from mdl_lang.verify.query import Query, unsafe_strict


@dataclass(frozen=True)
class LeafAnswer:
    """`unsat` (the leaf is safe), `sat` with a real-valued point, or `unknown` (timeout, solver gave up)."""

    status: str
    point: torch.Tensor | None = None
    reason: str = ""


def _rational(z3, value: float):
    fraction = Fraction(float(value))
    return z3.RealVal(f"{fraction.numerator}/{fraction.denominator}")


def _linear(z3, weights: torch.Tensor, variables: list, constant: float):
    terms = [_rational(z3, w) * v for w, v in zip(weights.tolist(), variables, strict=True) if w != 0.0]
    if constant != 0.0:
        terms.append(_rational(z3, constant))
    if not terms:
        return z3.RealVal(0)
    return z3.Sum(terms) if len(terms) > 1 else terms[0]


def solve_leaf(
    network: Network,
    query: Query,
    conjunction: tuple[int, ...],
    rows: tuple[torch.Tensor, torch.Tensor],
    bounds: LayerBounds,
    domain: int,
    timeout_ms: int,
    margin: float = 0.0,
) -> LeafAnswer:
    """Is there an input in this domain whose output satisfies every row of `conjunction`
    (c.y + d <= -margin)? `bounds` must hold on the domain (they carry its splits)."""
    import z3

    solver = z3.SolverFor("QF_LRA")
    solver.set("timeout", max(1, int(timeout_ms)))
    lower = [bounds.lower[i][domain] for i in range(len(bounds.lower))]
    upper = [bounds.upper[i][domain] for i in range(len(bounds.upper))]
    inputs = [z3.Real(f"x{i}") for i in range(network.input_size)]
    for variable, low, high in zip(inputs, query.lower.tolist(), query.upper.tolist(), strict=True):
        solver.add(variable >= _rational(z3, low), variable <= _rational(z3, high))
    for variable, low, high in zip(inputs, lower[0].tolist(), upper[0].tolist(), strict=True):
        solver.add(variable >= _rational(z3, low), variable <= _rational(z3, high))
    for constraint in query.input_constraints:
        expression = _linear(z3, constraint.coefficients, inputs, constraint.constant)
        solver.add(expression < 0 if constraint.strict else expression <= 0)
    values: list[list] = [inputs]
    for position, node in enumerate(network.nodes):
        index = position + 1
        values.append(_encode(z3, solver, node, index, values, lower, upper))
    matrix, constants = rows
    strict = unsafe_strict(query)
    for row in conjunction:
        expression = _linear(z3, matrix[row], values[network.output], float(constants[row]))
        if margin:
            solver.add(expression <= -_rational(z3, margin))
        else:
            solver.add(expression < 0 if bool(strict[row]) else expression <= 0)
    answer = solver.check()
    if answer == z3.unsat:
        return LeafAnswer("unsat")
    if answer == z3.sat:
        model = solver.model()
        point = torch.tensor([_model_float(z3, model, v) for v in inputs], dtype=torch.float64)
        return LeafAnswer("sat", point)
    return LeafAnswer("unknown", reason=f"Z3: {solver.reason_unknown()}")


def _model_float(z3, model, variable) -> float:
    value = model.eval(variable, model_completion=True)
    if z3.is_rational_value(value):
        return float(Fraction(value.numerator_as_long(), value.denominator_as_long()))
    return float(value.as_decimal(20).rstrip("?"))


def _encode(z3, solver, node, index: int, values: list[list], lower, upper) -> list:
    """Variables for value `index`, with the constraints that define them added to `solver`."""
    if isinstance(node, Affine):
        source = values[node.src]
        outputs = []
        for row in range(node.weight.shape[0]):
            variable = z3.Real(f"v{index}_{row}")
            solver.add(variable == _linear(z3, node.weight[row], source, float(node.bias[row])))
            low, high = float(lower[index][row]), float(upper[index][row])
            solver.add(variable >= _rational(z3, low), variable <= _rational(z3, high))
            outputs.append(variable)
        return outputs
    if isinstance(node, Relu):
        return _encode_relu(z3, solver, index, values[node.src], lower[node.src], upper[node.src])
    if isinstance(node, Add):
        return [a + b for a, b in zip(values[node.a], values[node.b], strict=True)]
    if isinstance(node, Concat):
        return [variable for source in node.srcs for variable in values[source]]
    if isinstance(node, MaxGroups):
        source = values[node.src]
        outputs = []
        for row, members in enumerate(node.groups.tolist()):
            variable = z3.Real(f"v{index}_{row}")
            chosen = [source[m] for m in dict.fromkeys(members)]
            solver.add(*[variable >= member for member in chosen])
            solver.add(z3.Or([variable <= member for member in chosen]))
            outputs.append(variable)
        return outputs
    raise TypeError(f"unknown network node {type(node).__name__}")


def _encode_relu(z3, solver, index: int, source: list, low: torch.Tensor, high: torch.Tensor) -> list:
    outputs = []
    for row, (z, lo, hi) in enumerate(zip(source, low.tolist(), high.tolist(), strict=True)):
        if lo >= 0:
            solver.add(z >= 0)
            outputs.append(z)
        elif hi <= 0:
            solver.add(z <= 0)
            outputs.append(z3.RealVal(0))
        else:
            variable = z3.Real(f"v{index}_{row}")
            slope = Fraction(hi) / (Fraction(hi) - Fraction(lo))
            cut = z3.RealVal(f"{slope.numerator}/{slope.denominator}") * (z - _rational(z3, lo))
            solver.add(variable >= 0, variable >= z, variable <= cut, z3.Or(variable <= 0, variable <= z))
            outputs.append(variable)
    return outputs
