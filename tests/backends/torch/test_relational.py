"""Relational clauses: `self(...)` evaluated exactly, balls searched (random points and an attack), `monotone`.

The classifiers have hand-set weights, so where a counterexample exists (and
how far away it is) is known; every reported one is re-checked here by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.predicates import UnsupportedClause
from mdl_lang.backends.torch.relational import RelationalVerdict, check_relational

SPEC_TEXT = """
labels Two = {0, 1}
dim B : batch
type Point = Tensor[B, 2] float32 in [0, 1]
type Scores = Tensor[B, Two] float32

interface Classifier {
  input  x: Point
  output y: Scores
}

# The plane x0 + x1 = 1 is at linf distance 0.2, l2 distance 0.2828 and l1 distance 0.4 from (0.3, 0.3).
module plane : Classifier {
  ensures linf_19: forall x2 within 0.19 of x (linf): argmax(self(x2)) == argmax(y)
  ensures linf_21: forall x2 within 0.21 of x (linf): argmax(self(x2)) == argmax(y)
  ensures l2_27: forall x2 within 0.27 of x (l2): argmax(self(x2)) == argmax(y)
  ensures l2_29: forall x2 within 0.29 of x (l2): argmax(self(x2)) == argmax(y)
  ensures l1_39: forall x2 within 0.39 of x (l1): argmax(self(x2)) == argmax(y)
  ensures l1_41: forall x2 within 0.41 of x (l1): argmax(self(x2)) == argmax(y)
  ensures l2_big: forall x2 within 0.5 of x (l2): argmax(self(x2)) == argmax(y)
  ensures stays_one: forall x2 within 0.21 of x: argmax(self(x2)) in {1}
  ensures flip: self(flip(x, dim=-1)) == y within 1e-4
  ensures both: all(y >= -10) and (forall x2 within 0.21 of x: argmax(self(x2)) == argmax(y))
  ensures either: all(y >= -10) or (forall x2 within 0.21 of x: argmax(self(x2)) == argmax(y))
  ensures negated: not (forall x2 within 0.21 of x: argmax(self(x2)) == argmax(y))
  ensures premise: (forall x2 within 0.21 of x: argmax(self(x2)) == argmax(y)) implies all(y >= 0)
  ensures per_label: forall l in Two: forall x2 within 0.21 of x: self(x2)[l] <= y[l] + 0.3
}

interface Wide {
  input  x: Tensor[B, 64] float32
  output y: Scores
}

# One narrow direction in 64 dims leads to the other class.
module needle : Wide {
  ensures l2: forall x2 within 1 of x (l2): argmax(self(x2)) == argmax(y)
  ensures linf: forall x2 within 0.15625 of x (linf): argmax(self(x2)) == argmax(y)
  ensures bounded: forall x2 within 1 of x (l2): self(x2)[0] <= 0.1
}

interface Layer {
  input  x: Tensor[B, 4] float32 in [0, 1]
  output y: Tensor[B, 3] float32
}

module layer : Layer {
  ensures up: monotone(y[1], x[2])
  ensures sum_up: monotone(y[1], x[0] + x[2])
}

interface FreeLayer {
  input  x: Tensor[B, 4] float32
  output y: Tensor[B, 3] float32
}

module free_layer : FreeLayer {
  ensures up: monotone(y[1], x[2])
}

interface Counter {
  input  x: Tensor[B, 2] int64
  output y: Scores
}

module counter : Counter {
  ensures forall x2 within 1 of x: argmax(self(x2)) == argmax(y)
}
"""

POINTS = torch.tensor([[0.3, 0.3], [0.05, 0.05], [0.9, 0.9]])


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("relational") / "relational.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path)


def clause_of(spec, component: str, name: str) -> ir.Clause:
    return next(clause for clause in spec.component(component).all_clauses if clause.name == name)


def check(spec, component: str, name: str, module, inputs: torch.Tensor, seed: int = 0, **budget) -> RelationalVerdict:
    return check_relational(
        clause_of(spec, component, name), module, {"x": inputs}, spec.component(component).interface.ports,
        generator=torch.Generator().manual_seed(seed), **budget,
    )


def linear(weight: list[list[float]], bias: list[float]):
    """A linear module with hand-set weights."""
    weights, biases = torch.tensor(weight), torch.tensor(bias)
    return lambda x: x @ weights.T + biases


def plane(x: torch.Tensor) -> torch.Tensor:
    """Class 0 beyond the plane x0 + x1 = 1, class 1 before it."""
    return linear([[1.0, 1.0], [-1.0, -1.0]], [-1.0, 1.0])(x)


def distance(delta: torch.Tensor, norm: str) -> float:
    flat = delta.double().reshape(-1)
    return float({"linf": flat.abs().max(), "l2": flat.norm(), "l1": flat.abs().sum()}[norm])


def assert_confirmed_in_ball(verdict: RelationalVerdict, module, radius: float, norm: str) -> None:
    """The counterexample is inside the ball and the range, and re-running the module shows the flipped label."""
    x, x2 = verdict.counterexample["x"], verdict.counterexample["x2"]
    assert x.shape == x2.shape == (1, 2)
    assert distance(x2 - x, norm) <= radius * (1 + 1e-7)
    assert float(x2.min()) >= 0.0 and float(x2.max()) <= 1.0
    with torch.no_grad():
        assert int(module(x2).argmax()) != int(module(x).argmax())


# ---------------------------------------------------------------- balls


@pytest.mark.parametrize(("name", "radius", "norm"), [
    ("linf_19", 0.19, "linf"), ("l2_27", 0.27, "l2"), ("l1_39", 0.39, "l1"),
])
def test_a_ball_short_of_the_boundary_holds(spec, name, radius, norm):
    verdict = check(spec, "plane", name, plane, POINTS)
    assert verdict.failing == ()
    assert verdict.counterexample is None
    assert "no counterexample on 3 samples" in verdict.reason


@pytest.mark.parametrize(("name", "radius", "norm"), [
    ("linf_21", 0.21, "linf"), ("l2_29", 0.29, "l2"), ("l1_41", 0.41, "l1"),
])
def test_a_ball_across_the_boundary_has_a_confirmed_counterexample(spec, name, radius, norm):
    verdict = check(spec, "plane", name, plane, POINTS)
    assert verdict.failing == (0,)
    assert_confirmed_in_ball(verdict, plane, radius, norm)
    values = dict(verdict.values)
    assert float(values[f"{norm} distance of x2 from x"].split()[0]) <= radius
    assert values["argmax(y) at x"] == "1" and values["argmax(y) at x2"] == "0"
    assert "y at x" in values and "y at x2" in values, "the scores, for a clause about them rather than the label"
    assert "confirmed by re-running" in verdict.reason


def test_the_norms_differ(spec):
    """At 0.25 the boundary is inside the linf ball but outside the l2 ball."""
    assert check(spec, "plane", "linf_21", plane, POINTS[:1]).failing == (0,)
    assert check(spec, "plane", "l2_27", plane, POINTS[:1]).failing == ()


def test_label_membership_is_searched_by_its_margin(spec):
    verdict = check(spec, "plane", "stays_one", plane, POINTS)
    assert verdict.failing == (0, 2)
    assert_confirmed_in_ball(verdict, plane, 0.21, "linf")


def test_a_constant_classifier_is_robust_everywhere(spec):
    def constant(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.2, 0.8]).expand(x.shape[0], 2)

    verdict = check(spec, "plane", "l2_big", constant, torch.rand(6, 2, generator=torch.Generator().manual_seed(1)))
    assert verdict.failing == ()


def test_a_linear_classifier_keeps_a_big_ball_only_far_from_the_plane(spec):
    verdict = check(spec, "plane", "l2_big", plane, POINTS)
    assert verdict.failing == (0,)
    assert_confirmed_in_ball(verdict, plane, 0.5, "l2")


# ---------------------------------------------------------------- the input's range


@pytest.mark.parametrize("name", ["linf_21", "l2_29"])
def test_a_boundary_outside_the_range_is_never_reached(spec, name):
    """The ball reaches x0 = 1.1, the type stops at 1, the class changes only at 1.05."""
    beyond = linear([[1.0, 0.0], [0.0, 0.0]], [-1.05, 0.0])
    points = torch.tensor([[0.95, 0.5], [1.0, 1.0], [0.9, 0.0]])
    verdict = check(spec, "plane", name, beyond, points)
    assert verdict.failing == ()


@pytest.mark.parametrize(("name", "norm"), [("linf_21", "linf"), ("l2_29", "l2")])
def test_counterexamples_stay_in_the_range(spec, name, norm):
    edge = linear([[1.0, 0.0], [0.0, 0.0]], [-0.99, 0.0])
    points = torch.tensor([[0.95, 0.98], [0.9, 0.01]])
    verdict = check(spec, "plane", name, edge, points)
    assert verdict.failing == (0, 1)
    assert_confirmed_in_ball(verdict, edge, 0.21 if norm == "linf" else 0.29, norm)


def test_only_admissible_points_count(spec):
    """Crossing the plane from (0.3, 0.3) within 0.21 needs x0 > 0.49; the requires forbid x0 > 0.45."""
    def admissible(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["x"][:, 0] <= 0.45

    verdict = check_relational(
        clause_of(spec, "plane", "linf_21"), plane, {"x": POINTS[:1]}, spec.component("plane").interface.ports,
        generator=torch.Generator().manual_seed(0), admissible=admissible,
    )
    assert verdict.failing == ()


# ---------------------------------------------------------------- the attack


def needle_module():
    """Class 0 only where w . x > 0.8, w a unit vector spread evenly over 64 dims."""
    signs = torch.where(torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5, -1.0, 1.0)
    direction = signs / 8

    def needle(x: torch.Tensor) -> torch.Tensor:
        along = x @ direction
        return torch.stack([along - 0.8, torch.zeros_like(along)], dim=1)

    return needle, direction


@pytest.mark.parametrize("name", ["l2", "linf", "bounded"])
def test_the_attack_finds_what_random_points_miss(spec, name):
    needle, direction = needle_module()
    centers = torch.zeros(4, 64)
    assert check(spec, "needle", name, needle, centers, samples=256, restarts=0).failing == ()
    verdict = check(spec, "needle", name, needle, centers)
    assert verdict.failing == (0, 1, 2, 3)
    x2 = verdict.counterexample["x2"]
    assert float(x2.reshape(-1) @ direction) > 0.8
    if name == "linf":
        assert float(x2.abs().max()) <= 0.15625 * (1 + 1e-7)
    else:
        assert float(x2.double().norm()) <= 1 + 1e-7


def test_a_fixed_generator_gives_the_same_verdict(spec):
    needle, _ = needle_module()
    centers = torch.randn(3, 64, generator=torch.Generator().manual_seed(5)) * 0.1
    first = check(spec, "needle", "linf", needle, centers, seed=7)
    second = check(spec, "needle", "linf", needle, centers, seed=7)
    assert first.failing == second.failing != ()
    assert first.values == second.values
    assert all(torch.equal(first.counterexample[key], second.counterexample[key]) for key in first.counterexample)


# ---------------------------------------------------------------- self(...) without a ball


def test_self_on_a_flipped_input_holds_for_a_symmetric_module(spec):
    symmetric = linear([[1.0, 1.0], [0.5, 0.5]], [0.0, 0.1])
    assert check(spec, "plane", "flip", symmetric, torch.tensor([[0.3, 0.3], [0.1, 0.7]])).failing == ()


def test_self_on_a_flipped_input_fails_for_an_asymmetric_module(spec):
    skewed = linear([[1.0, 2.0], [0.0, 1.0]], [0.0, 0.0])
    verdict = check(spec, "plane", "flip", skewed, torch.tensor([[0.3, 0.3], [0.1, 0.7]]))
    assert verdict.failing == (1,)
    assert torch.equal(verdict.counterexample["x"], torch.tensor([[0.1, 0.7]]))
    assert "self(flip(x, dim=-1))" in dict(verdict.values)


# ---------------------------------------------------------------- clauses that combine a ball with more


def test_a_ball_in_a_conjunction_is_searched(spec):
    verdict = check(spec, "plane", "both", plane, POINTS)
    assert verdict.failing == (0,)
    assert_confirmed_in_ball(verdict, plane, 0.21, "linf")


def test_a_ball_in_a_disjunction_that_already_holds_passes(spec):
    assert check(spec, "plane", "either", plane, POINTS).failing == ()


def test_a_ball_under_a_label_quantifier_is_searched_once_per_label(spec):
    verdict = check(spec, "plane", "per_label", plane, POINTS)
    assert verdict.failing == (0, 1, 2)
    x, x2 = verdict.counterexample["x"], verdict.counterexample["x2"]
    assert distance(x2 - x, "linf") <= 0.21
    with torch.no_grad():
        assert bool((plane(x2) > plane(x) + 0.3).any())
    names = [name for name, _ in verdict.values]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ["negated", "premise"])
def test_a_ball_that_would_need_a_proof_is_unsupported(spec, name):
    with pytest.raises(UnsupportedClause, match="refute it but not prove it"):
        check(spec, "plane", name, plane, POINTS)


def test_a_ball_around_an_integer_input_is_unsupported(spec):
    def counter(x: torch.Tensor) -> torch.Tensor:
        return x.float()

    with pytest.raises(UnsupportedClause, match="floating-point input"):
        check_relational(
            spec.component("counter").all_clauses[0], counter, {"x": torch.ones(2, 2, dtype=torch.long)},
            spec.component("counter").interface.ports, generator=torch.Generator().manual_seed(0),
        )


# ---------------------------------------------------------------- monotone


def relu_layer(weight: list[list[float]]):
    weights = torch.tensor(weight)
    return lambda x: torch.relu(x @ weights.T)


LAYER_INPUTS = torch.tensor([[0.2, 0.4, 0.6, 0.8], [0.9, 0.1, 0.0, 0.5], [0.5, 0.5, 1.0, 0.5]])


@pytest.mark.parametrize("component", ["layer", "free_layer"])
def test_monotone_holds_for_nonnegative_weights(spec, component):
    layer = relu_layer([[1.0, 0.0, 2.0, 0.5], [0.3, 1.0, 0.7, 0.0], [0.0, 0.0, 0.0, 1.0]])
    verdict = check(spec, component, "up", layer, LAYER_INPUTS)
    assert verdict.failing == ()
    assert "moves of x[2]" in verdict.reason


@pytest.mark.parametrize("component", ["layer", "free_layer"])
def test_monotone_fails_for_a_negative_weight(spec, component):
    layer = relu_layer([[1.0, 0.0, 2.0, 0.5], [3.0, 1.0, -0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    verdict = check(spec, component, "up", layer, LAYER_INPUTS)
    assert verdict.failing == (0, 1, 2)
    low, high = verdict.counterexample["x_low"], verdict.counterexample["x_high"]
    assert float(low[0, 2]) < float(high[0, 2])
    assert torch.equal(torch.cat([low[:, :2], low[:, 3:]], 1), torch.cat([high[:, :2], high[:, 3:]], 1))
    if component == "layer":
        assert float(low.min()) >= 0 and float(high.max()) <= 1
    with torch.no_grad():
        assert float(layer(high)[0, 1]) < float(layer(low)[0, 1])
    assert dict(verdict.values)["x[2] (lower, higher)"]


def test_monotone_of_a_sum_is_unsupported(spec):
    with pytest.raises(UnsupportedClause, match="not an input indexed at constant positions"):
        check(spec, "layer", "sum_up", relu_layer([[1.0] * 4] * 3), LAYER_INPUTS)


def test_radii_are_respected_exactly_in_float32(spec):
    """Centres whose float32 sums round outwards: every reported point is still within the radius."""
    centers = torch.tensor([[0.7, 0.1], [0.333333, 0.4444444], [0.123456, 0.7654321]])
    for name, radius, norm in (("linf_21", 0.21, "linf"), ("l2_29", 0.29, "l2"), ("l1_41", 0.41, "l1")):
        verdict = check(spec, "plane", name, plane, centers)
        assert verdict.failing
        assert distance(verdict.counterexample["x2"] - verdict.counterexample["x"], norm) <= radius
        assert not math.isnan(float(verdict.counterexample["x2"].sum()))


def test_a_point_that_does_not_reproduce_is_not_reported(spec):
    """A module that answers wrongly the first time it sees a point: every candidate fails once, none on re-run."""
    seen: set[tuple[float, ...]] = set()
    calls = []

    def forgetful(x: torch.Tensor) -> torch.Tensor:
        honest = plane(x)
        rows = [tuple(row.tolist()) for row in x]
        first_look = torch.tensor([bool(calls) and row not in seen for row in rows])
        seen.update(rows)
        calls.append(len(rows))
        return torch.where(first_look[:, None], honest.flip(-1), honest)

    far = torch.tensor([[0.05, 0.05], [0.9, 0.9]])
    verdict = check(spec, "plane", "linf_21", forgetful, far)
    assert verdict.failing == ()
