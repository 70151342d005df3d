"""Hypothesis strategies for a component's inputs: `from mdl_lang.strategies import inputs`.

The public names of the hypothesis backend (`mdl_lang.backends.hypothesis`),
so that users compose them with their own strategies:

    spec = mdl_lang.load("specs/digits.mdl")
    @given(inputs(spec, "cnn", keep=...))
    def test_cnn(batch): ...
"""

from __future__ import annotations

from mdl_lang.backends.hypothesis.narrowing import Bound, InputPlan, PortBounds, PortPlan, input_plan
from mdl_lang.backends.hypothesis.replay import find_counterexample, load_example, save_example
from mdl_lang.backends.hypothesis.strategies import (
    Example,
    Keep,
    KeepNames,
    RequiresStats,
    StarvedRequires,
    UnfilteredRequires,
    UnsatisfiableRequires,
    corners,
    inputs,
)

__all__ = [
    "Bound",
    "Example",
    "InputPlan",
    "Keep",
    "KeepNames",
    "PortBounds",
    "PortPlan",
    "RequiresStats",
    "StarvedRequires",
    "UnfilteredRequires",
    "UnsatisfiableRequires",
    "corners",
    "find_counterexample",
    "input_plan",
    "inputs",
    "load_example",
    "save_example",
]
