"""Hand-built networks whose exact answers are known, bounds soundness, timeouts and refusals."""

from __future__ import annotations

import torch

from mdl_lang.verify.attack import replay
from mdl_lang.verify.bounds import back_substitute, compute_bounds, root_domains
from mdl_lang.verify.engine import verify_query
from mdl_lang.verify.network import Affine, MaxGroups, Network, Relu, evaluate, evaluate_all
from mdl_lang.verify.query import LinearConstraint, Query


def _tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _two_two_one() -> Network:
    """y = relu(x0 - x1) + relu(x0 + x1) - 1. On [0, 1]^2 the maximum is exactly 1 (at x0 = 1, any
    x1) and the minimum exactly -1 (at x = 0)."""
    return Network(
        (2,),
        (Affine(0, _tensor([[1, -1], [1, 1]]), _tensor([0, 0])), Relu(1), Affine(2, _tensor([[1, 1]]), _tensor([-1]))),
        3, ("hidden", "relu", "out"),
    )


def _box(size: int, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((size,), low, dtype=torch.float64), torch.full((size,), high, dtype=torch.float64)


def _at_most(bound: float) -> tuple[tuple[LinearConstraint, ...], ...]:
    """Unsafe: y > bound."""
    return ((LinearConstraint.less_equal(1, {0: -1.0}, -bound, strict=True),),)


def _at_least(bound: float) -> tuple[tuple[LinearConstraint, ...], ...]:
    """Unsafe: y < bound."""
    return ((LinearConstraint.less_equal(1, {0: 1.0}, bound, strict=True),),)


def test_tight_maximum_is_proved_and_anything_below_is_refuted() -> None:
    network = _two_two_one()
    lower, upper = _box(2, 0.0, 1.0)
    assert verify_query(network, Query(lower, upper, _at_most(1.0))).verdict == "proved"
    refuted = verify_query(network, Query(lower, upper, _at_most(0.999)))
    assert refuted.verdict == "refuted"
    assert float(evaluate(network, refuted.counterexample.reshape(1, 2))[0, 0]) > 0.999
    assert refuted.counterexample.dtype == torch.float32


def test_tight_minimum_is_proved_and_anything_above_is_refuted() -> None:
    network = _two_two_one()
    lower, upper = _box(2, 0.0, 1.0)
    assert verify_query(network, Query(lower, upper, _at_least(-1.0))).verdict == "proved"
    assert verify_query(network, Query(lower, upper, _at_least(-0.99))).verdict == "refuted"


def test_non_strict_unsafe_region_touching_the_maximum_is_refuted() -> None:
    """`y >= 1` is reachable (y == 1 at x0 = 1): the boundary counts when the constraint is not strict."""
    network = _two_two_one()
    lower, upper = _box(2, 0.0, 1.0)
    unsafe = ((LinearConstraint.less_equal(1, {0: -1.0}, -1.0),),)
    assert verify_query(network, Query(lower, upper, unsafe)).verdict == "refuted"


def test_input_constraints_shrink_the_region() -> None:
    """With x0 <= 0.5 required, the maximum of y drops to exactly 0.5 (x0 = 0.5, x1 = 1: y = x0 + x1 - 1)."""
    network = _two_two_one()
    lower, upper = _box(2, 0.0, 1.0)
    half = (LinearConstraint.less_equal(2, {0: 1.0}, 0.5),)
    assert verify_query(network, Query(lower, upper, _at_most(0.5), half)).verdict == "proved"
    refuted = verify_query(network, Query(lower, upper, _at_most(0.49), half))
    assert refuted.verdict == "refuted"
    assert float(refuted.counterexample[0]) <= 0.5


def test_max_pool_node_has_its_exact_maximum() -> None:
    """y = max(x0, x1, 2 - x0 - x1) on [0, 1]^2: its minimum is exactly 2/3, at x0 = x1 = 2/3."""
    network = Network(
        (2,),
        (Affine(0, _tensor([[1, 0], [0, 1], [-1, -1]]), _tensor([0, 0, 2])), MaxGroups(1, torch.tensor([[0, 1, 2]]))),
        2, ("affine", "max"),
    )
    lower, upper = _box(2, 0.0, 1.0)
    assert verify_query(network, Query(lower, upper, _at_least(0.66))).verdict == "proved"
    assert verify_query(network, Query(lower, upper, _at_least(0.67))).verdict == "refuted"


def _random_network(seed: int) -> Network:
    generator = torch.Generator().manual_seed(seed)

    def affine(src: int, out: int, into: int) -> Affine:
        return Affine(src, torch.randn(out, into, generator=generator, dtype=torch.float64),
                      torch.randn(out, generator=generator, dtype=torch.float64) * 0.1)

    return Network((6,), (affine(0, 12, 6), Relu(1), affine(2, 12, 12), Relu(3), affine(4, 3, 12)), 5,
                   tuple("abcde"))


def test_bounds_contain_every_sampled_value() -> None:
    for seed in range(5):
        network = _random_network(seed)
        lower, upper = _box(6, -0.3, 0.2)
        domains = root_domains(network, lower, upper)
        bounds = compute_bounds(network, domains)
        samples = lower + torch.rand(20000, 6, dtype=torch.float64) * (upper - lower)
        for index, values in enumerate(evaluate_all(network, samples)):
            assert bool((values.amin(0) >= bounds.lower[index][0]).all())
            assert bool((values.amax(0) <= bounds.upper[index][0]).all())
        objective = torch.eye(3, dtype=torch.float64).unsqueeze(0)
        linear = back_substitute(network, bounds.lower, bounds.upper, domains, 5, objective).lower[0]
        assert bool((evaluate(network, samples).amin(0) >= linear).all())


def test_timeout_is_unknown_never_proved() -> None:
    """y = 1.h - 1.h' with h, h' two copies of the same 40 ReLUs is 0 everywhere, so `y >= -1e-3` holds,
    but the relaxations of the copies are independent: bounds need thousands of splits."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(40, 10, generator=generator, dtype=torch.float64)
    doubled = torch.cat([weight, weight])
    readout = torch.cat([torch.ones(40), -torch.ones(40)]).to(torch.float64).unsqueeze(0)
    network = Network((10,), (Affine(0, doubled, torch.zeros(80, dtype=torch.float64)), Relu(1),
                              Affine(2, readout, torch.zeros(1, dtype=torch.float64))), 3, ("a", "b", "c"))
    lower, upper = _box(10, -1.0, 1.0)
    seen: list[tuple[int, int, float]] = []
    outcome = verify_query(network, Query(lower, upper, _at_least(-1e-3)), timeout_s=1.0,
                           progress=lambda nodes, open_, elapsed: seen.append((nodes, open_, elapsed)))
    assert outcome.verdict == "unknown"
    assert "timeout" in outcome.reason
    assert outcome.elapsed_s < 5.0
    assert outcome.statistics.nodes_explored > 1 and outcome.statistics.unstable_relus == 80
    assert seen and seen[-1][0] == outcome.statistics.nodes_explored and seen[-1][1] > 0


def test_replay_rejects_a_point_that_float32_keeps_safe() -> None:
    """A point exactly on a strict boundary (y == 1 against `y > 1`) is not a counterexample."""
    network = _two_two_one()
    lower, upper = _box(2, 0.0, 1.0)
    query = Query(lower, upper, _at_most(1.0))
    checked = replay(network, query, torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert not checked.violated
    assert "keeps the property" in checked.reason


def test_z3_timeout_on_a_leaf_is_unknown(monkeypatch) -> None:
    """Handing the whole doubled network to Z3 as one leaf, with two seconds: Z3 runs out of time, and
    the verdict says so instead of claiming a proof."""
    from mdl_lang.verify import bab

    monkeypatch.setattr(bab, "Z3_LEAF_UNSTABLE", 10_000)
    monkeypatch.setattr(bab, "LEAF_OPTIMISE_STEPS", 0)
    monkeypatch.setattr(bab, "OPTIMISE_STEPS", 0)
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(60, 10, generator=generator, dtype=torch.float64)
    readout = torch.cat([torch.ones(60), -torch.ones(60)]).to(torch.float64).unsqueeze(0)
    network = Network((10,), (Affine(0, torch.cat([weight, weight]), torch.zeros(120, dtype=torch.float64)), Relu(1),
                              Affine(2, readout, torch.zeros(1, dtype=torch.float64))), 3, ("a", "b", "c"))
    lower, upper = _box(10, -1.0, 1.0)
    outcome = verify_query(network, Query(lower, upper, _at_least(-1e-3)), timeout_s=2.0)
    assert outcome.verdict == "unknown"
    assert "Z3" in outcome.reason
    assert outcome.statistics.z3_calls == 1


def test_reasons_name_what_the_verifier_does_not_take_in_the_specs_words() -> None:
    from mdl_lang import ir
    from mdl_lang.verify.clauses import described

    boolean = ir.ValueType(ir.Element.BOOL)
    labels = ir.LabelSet((0, 1))
    assert described(ir.Call("monotone", (), (), boolean)) == "`monotone(...)`"
    assert described(ir.SelfCall((), "y", boolean)) == "`self(...)`"
    assert described(ir.LabelQuantifier("forall", "l", labels, ir.Const(True, boolean), boolean)) == \
        "a `forall`/`exists` over labels"
