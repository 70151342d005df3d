"""Repair with blame: FLOP accounting, the decomposed modules' vote, the generated spec, and blame on a vote."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.modular import digits
from mdl_lang.modular.artifacts import factories_text, load_module, write_decomposition
from mdl_lang.modular.repair import (
    RepairCost,
    SpecModule,
    blamed_modules,
    composed_accuracy,
    counted_flops,
    format_flops,
    forward_flops_per_sample,
    render_table,
    statistical_results,
    training_flops,
    vote_spec_text,
    voted_predictions,
)
from mdl_lang.report import Role, Verdict
from mdl_lang.syntax.format import format_text
from mdl_lang.threads import one_thread


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Small models on a shared machine: one thread is fastest and deterministic."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def trained() -> nn.Sequential:
    torch.manual_seed(0)
    split = digits.digits_split()
    model = digits.mlp((32,), seed=0)
    digits.train(model, split.train_inputs, split.train_labels, epochs=100)
    return model


@pytest.fixture(scope="module")
def decomposition(trained: nn.Sequential):
    from mdl_lang.modular.decompose import decompose

    split = digits.digits_split()
    return decompose(trained, split.train_inputs, split.train_labels)


@pytest.fixture(scope="module")
def concerns(decomposition) -> dict[int, nn.Module]:
    """The modules as `decompose` gives them by default: the ten outputs over the kept units, `{k} | other`."""
    return dict(decomposition.modules)


# ---------------------------------------------------------------- cost


def test_a_linear_layer_counts_two_flops_per_multiply_add():
    layer = nn.Linear(64, 10)
    _, flops = counted_flops(lambda: layer(torch.zeros(3, 64)))
    assert flops == 2 * 64 * 10 * 3


def test_the_forward_pass_of_an_mlp_counts_its_linear_layers_only():
    assert forward_flops_per_sample(digits.mlp((64,)), digits.IMAGE_SHAPE) == 2 * (64 * 64 + 64 * 10)


def test_training_costs_three_forward_passes_per_sample_and_epoch():
    training = digits.Training(samples=898, epochs=200, batch_size=898, learning_rate=0.01, seed=0)
    assert training_flops(9472, training) == 3 * 9472 * 898 * 200


def test_the_repair_cost_says_how_much_was_avoided():
    cost = RepairCost(5_000_000_000, "retrain", 50_000_000, "decompose")
    assert cost.avoided_flops == 4_950_000_000
    assert cost.ratio == pytest.approx(100)
    assert "4.95 GFLOP" in "\n".join(cost.lines())
    assert RepairCost(10, "a", 0, "b").ratio == float("inf")


@pytest.mark.parametrize(("flops", "shown"), [(999, "999 FLOP"), (1500, "1.5 kFLOP"), (82_100_000, "82.1 MFLOP"),
                                              (5.1e9, "5.1 GFLOP"), (2e12, "2 TFLOP")])
def test_flops_are_shown_with_an_si_prefix(flops, shown):
    assert format_flops(int(flops)) == shown


# ---------------------------------------------------------------- the modules' vote


def test_the_vote_of_the_modules_decides_as_the_model(trained, concerns):
    split = digits.digits_split()
    model = digits.accuracy(trained, split.test_inputs, split.test_labels)
    assert composed_accuracy(concerns, split.test_inputs, split.test_labels) == pytest.approx(model, abs=0.01)


def test_a_module_claims_its_class_where_it_is_the_argmax(concerns):
    split = digits.digits_split()
    module = concerns[3]
    with torch.no_grad():
        scores = module(split.test_inputs)
        ten = module[:-1](split.test_inputs)  # before the `{3} | other` view
    assert scores.shape == (len(split.test_labels), 2)
    assert torch.equal(scores.argmax(dim=1) == 0, ten.argmax(dim=1) == 3)
    assert bool((scores.sum(dim=1) <= 1 + 1e-5).all())


def test_factories_load_modules_of_several_decompositions_relative_to_their_file(decomposition, tmp_path: Path):
    write_decomposition(decomposition, tmp_path / "healthy", spec_name="healthy")
    text = factories_text("vote", {"load_m7": "healthy/m7.pt", "load_m7_again": "healthy/m7.pt"})
    path = tmp_path / "vote_factories.py"
    path.write_text(text, encoding="utf-8")
    found = importlib.util.spec_from_file_location("vote_factories", path)
    factories = importlib.util.module_from_spec(found)
    found.loader.exec_module(factories)
    inputs = digits.digits_split().test_inputs[:50]
    with torch.no_grad():
        assert torch.equal(factories.load_m7()(inputs), decomposition.modules[7](inputs))
        assert torch.equal(factories.load_m7_again()(inputs), decomposition.modules[7](inputs))
        assert torch.equal(load_module(tmp_path / "healthy" / "m7.pt")(inputs), decomposition.modules[7](inputs))


def test_a_vote_of_two_modules_decides_between_their_labels(concerns):
    split = digits.digits_split()
    mask = (split.test_labels == 3) | (split.test_labels == 7)
    predicted = voted_predictions({3: concerns[3], 7: concerns[7]}, split.test_inputs[mask])
    assert set(predicted.tolist()) <= {3, 7}
    assert (predicted == split.test_labels[mask]).float().mean() > 0.9


# ---------------------------------------------------------------- the spec and its blame


def spec_with(tmp_path: Path, replacement: bool = False) -> mdl_lang.CheckedSpec:
    modules = [SpecModule(f"m{k}", k, f"nowhere:load_m{k}") for k in range(10)]
    new = ("m3", SpecModule("m3_new", 3, "nowhere:load_m3_new")) if replacement else None
    text = vote_spec_text(modules, recall_bound=0.75, accuracy_bound=0.9, replacement=new)
    path = tmp_path / "vote.mdl"
    path.write_text(text, encoding="utf-8")
    return mdl_lang.load(path)


def test_the_generated_spec_checks_and_is_formatted(tmp_path: Path):
    spec = spec_with(tmp_path, replacement=True)
    assert {"voted", "repaired", "m3_new"} <= set(spec.components())
    text = (tmp_path / "vote.mdl").read_text(encoding="utf-8")
    assert format_text(text).text == text
    assert "compose repaired : Classifier[Digit] = replace(voted, m3, m3_new) {" in text
    assert 'data digits_test : (Image, Digit) { python "mdl_lang.modular.digits:test_split" }' in text


class Abstains(nn.Module):
    """A module of `{3} | other` that never claims 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, 1.0]).expand(x.shape[0], 2)


def test_a_module_that_never_claims_its_class_is_blamed_for_the_vote(concerns, tmp_path: Path):
    spec = spec_with(tmp_path)
    parts = {f"m{k}": module for k, module in concerns.items()}
    assert blamed_modules(statistical_results(spec, "voted", parts)) == []
    parts["m3"] = Abstains()
    results = statistical_results(spec, "voted", parts)
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    assert failed and all(r.blame.party == "m3" and r.blame.role is Role.MODULE for r in failed)
    assert blamed_modules(results) == ["m3"]


def test_replacing_the_blamed_module_passes_again(concerns, tmp_path: Path):
    spec = spec_with(tmp_path, replacement=True)
    parts = {f"m{k}": module for k, module in concerns.items() if k != 3}
    parts["m3_new"] = concerns[3]
    results = statistical_results(spec, "repaired", parts)
    assert results and {r.verdict for r in results} == {Verdict.PASS}


def test_tables_are_markdown_with_padded_columns():
    table = render_table(["a", "long header"], [["1", "2"], ["333", "4"]])
    assert table.splitlines() == [
        "| a   | long header |",
        "| --- | ----------- |",
        "| 1   | 2           |",
        "| 333 | 4           |",
    ]
