"""Which requires read as bounds on an input port (narrowed), and which must filter samples."""

from __future__ import annotations

import pytest

from mdl_lang.strategies import Bound, PortBounds, input_plan

SPEC = """
dim B : batch
interface I {{
  input  x: Tensor[B, 4] float32{x_type}
  input  k: Tensor[B, 4] int64
  output y: Tensor[B, 4] float32
  requires r: {clause}
}}
module m : I
"""


def plan_of(load_spec, clause: str, x_type: str = ""):
    return input_plan(load_spec(SPEC.format(clause=clause, x_type=x_type)).component("m"))


@pytest.mark.parametrize(
    ("clause", "bounds"),
    [
        ("all(x >= 0)", PortBounds(lows=(Bound(0),))),
        ("x >= 0", PortBounds(lows=(Bound(0),))),
        ("0 <= x <= 1", PortBounds(lows=(Bound(0),), highs=(Bound(1),))),
        ("0 < x", PortBounds(lows=(Bound(0, strict=True),))),
        ("x in [0.25, 0.75]", PortBounds(lows=(Bound(0.25),), highs=(Bound(0.75),))),
        ("x >= 0.2 and x <= 0.8", PortBounds(lows=(Bound(0.2),), highs=(Bound(0.8),))),
        ("all(x >= 0) and not any(x > 1)", PortBounds(lows=(Bound(0),), highs=(Bound(1),))),
        ("-x >= -0.7", PortBounds(highs=(Bound(0.7),))),
        ("-x < 2", PortBounds(lows=(Bound(-2, strict=True),))),
        ("x <= 1 - 0.25 * 2", PortBounds(highs=(Bound(0.5),))),
        ("x == 3", PortBounds(lows=(Bound(3),), highs=(Bound(3),))),
        ("finite(x)", PortBounds(finite=True)),
    ],
)
def test_bounds_on_a_whole_input_are_narrowed(load_spec, clause, bounds):
    plan = plan_of(load_spec, clause)
    assert plan.narrowed == ("r",)
    assert plan.filtering == ()
    assert plan.ports[0].bounds == bounds
    assert plan.ports[0].clauses == ("r",)


@pytest.mark.parametrize(
    "clause",
    [
        "sum(x) >= 0",
        "x >= 0 or x <= -1",
        "x != 0",
        "not (x > 1)",
        "x[0] >= 0",
        "x >= k",
        "x == 1 within 0.1",
        "all(x >= 0) implies all(x <= 1)",
        "any(x >= 0)",
    ],
)
def test_anything_else_filters(load_spec, clause):
    plan = plan_of(load_spec, clause)
    assert plan.narrowed == ()
    assert plan.filtering == ("r",)
    assert plan.ports[0].bounds == PortBounds()


def test_the_bounds_among_the_conjuncts_of_a_filtering_clause_still_narrow(load_spec):
    plan = plan_of(load_spec, "all(x >= 0) and sum(x) <= 1 and k < 3")
    assert plan.narrowed == ()
    assert plan.filtering == ("r",)
    assert plan.ports[0].bounds == PortBounds(lows=(Bound(0),))
    assert plan.ports[1].bounds == PortBounds(highs=(Bound(3, strict=True),))
    assert plan.ports[0].clauses == plan.ports[1].clauses == ("r",)


def test_the_type_range_comes_first_and_makes_the_port_finite(load_spec):
    plan = plan_of(load_spec, "x >= 0.5", x_type=" in [0, 1]")
    assert plan.ports[0].bounds == PortBounds((Bound(0), Bound(0.5)), (Bound(1),), finite=True)


def test_the_modules_own_requires_count_with_the_interfaces(load_spec):
    spec = load_spec("""
dim B : batch
interface I {
  input  x: Tensor[B, 4] float32
  output y: Tensor[B, 4] float32
  requires wide: all(x >= -1)
  ensures  all(y >= 0)
}
module m : I {
  requires own: sum(x) >= 0
  requires narrow: x <= 1
}
""")
    plan = input_plan(spec.component("m"))
    assert plan.component == "m"
    assert plan.narrowed == ("wide", "narrow")
    assert plan.filtering == ("own",)
    assert plan.ports[0].bounds == PortBounds((Bound(-1),), (Bound(1),))
