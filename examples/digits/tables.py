"""The paper-style tables of examples/README.md: decompose digits MLPs, compose, reuse and replace modules.

    .venv/bin/python -m examples.digits.tables          # about half a minute on one core

Every figure is measured here, on the fixed test split of `mdl_lang.modular.digits`
(899 images), from models trained with fixed seeds, with the modules as `decompose`
gives them (the model's ten outputs over the kept units, `{k} | other` by the best
rival, the form of the paper's published modules):

- Table 1 (Pan & Rajan, ESEC/FSE 2020, Table 1 in form): MLPs with 1 to 4 hidden
  layers of 64 units, the model's accuracy against the vote of its ten modules, and
  the modules' size against the model's (`artifacts.module_sizes`).
- Reuse: two-class compositions across two models, module a from model A and module
  b from model B (another seed and another depth), voted together on the test images
  of a and b, against each model on the same images.
- Replacement: model A's module k replaced by model B's module k, all ten classes.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mdl_lang.modular import digits
from mdl_lang.modular.decompose import Decomposition, ModuleStats
from mdl_lang.modular.repair import composed_accuracy, percent, render_table

DEPTHS = (1, 2, 3, 4)
WIDTH = 64
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Decomposed:
    """A trained model, its modules by class index, and their size table."""

    model: nn.Sequential
    modules: dict[int, nn.Module]
    sizes: tuple[ModuleStats, ...]


def decomposed(depth: int, seed: int) -> Decomposed:
    """An MLP of `depth` hidden layers trained on the digits (full-batch Adam) and decomposed."""
    from mdl_lang.modular.artifacts import module_sizes
    from mdl_lang.modular.decompose import decompose

    split = digits.digits_split()
    model = digits.mlp((WIDTH,) * depth, seed)
    digits.train(model, split.train_inputs, split.train_labels, seed=seed)
    decomposition: Decomposition = decompose(model, split.train_inputs, split.train_labels)
    return Decomposed(model, dict(decomposition.modules), tuple(module_sizes(decomposition)))


def table_1(models: dict[tuple[int, int], Decomposed]) -> tuple[str, float]:
    """Model against composed accuracy per depth (mean over seeds), with module sizes; the mean loss."""
    split = digits.digits_split()
    rows, losses = [], []
    for depth in DEPTHS:
        runs = [models[depth, seed] for seed in SEEDS]
        model = _mean(digits.accuracy(run.model, split.test_inputs, split.test_labels) for run in runs)
        composed = _mean(composed_accuracy(run.modules, split.test_inputs, split.test_labels) for run in runs)
        losses.append(model - composed)
        sizes = [row for run in runs for row in run.sizes]
        rows.append([
            f"{depth} x {WIDTH}", f"{sizes[0].model_params:,}", f"{_mean(row.params for row in sizes):,.0f}",
            f"{_mean(row.jaccard for row in sizes):.3f}", percent(model), percent(composed), _points(model - composed),
        ])
    headers = ["hidden layers", "model params", "module params (mean)", "Jaccard (mean)", "model", "composed", "loss"]
    return render_table(headers, rows), _mean(losses)


def reuse_table(a_models: Decomposed, b_models: Decomposed, shown: int = 6) -> str:
    """Two-class votes of module a from model A and module b from model B, on the test images of a and b."""
    split = digits.digits_split()
    rows, totals = [], []
    for first, second in itertools.combinations(range(digits.CLASSES), 2):
        mask = (split.test_labels == first) | (split.test_labels == second)
        inputs, labels = split.test_inputs[mask], split.test_labels[mask]
        figures = (
            digits.accuracy(a_models.model, inputs, labels),
            digits.accuracy(b_models.model, inputs, labels),
            composed_accuracy({first: a_models.modules[first], second: b_models.modules[second]}, inputs, labels),
        )
        totals.append(figures)
        if len(rows) < shown:
            rows.append([f"{first} (A) + {second} (B)", str(len(labels)), *map(percent, figures)])
    means = [_mean(column) for column in zip(*totals, strict=True)]
    rows.append([f"mean of all {len(totals)} pairs", "", *map(percent, means)])
    return render_table(["modules", "images", "model A", "model B", "composed"], rows)


def replacement_table(a_models: Decomposed, b_models: Decomposed) -> str:
    """Model A's vote before and after its module k is replaced by model B's module k."""
    split = digits.digits_split()
    inputs, labels = split.test_inputs, split.test_labels
    before = composed_accuracy(a_models.modules, inputs, labels)
    rows, totals = [], []
    for label in range(digits.CLASSES):
        after = composed_accuracy({**a_models.modules, label: b_models.modules[label]}, inputs, labels)
        totals.append(after)
        rows.append([f"m{label}", percent(before), percent(after), _points(after - before)])
    rows.append(["mean", percent(before), percent(_mean(totals)), _points(_mean(totals) - before)])
    return render_table(["replaced", "A", "A with B's module", "change"], rows)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _points(loss: float) -> str:
    return f"{100 * loss:+.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    models = {(depth, seed): decomposed(depth, seed) for depth in DEPTHS for seed in SEEDS}
    table, loss = table_1(models)
    print(f"Table 1: model against composed accuracy, mean of seeds {', '.join(map(str, SEEDS))} "
          f"({len(digits.digits_split().test_labels)} test images)\n")
    print(table)
    print(f"\nmean loss: {100 * loss:+.2f} points (target: under 1 point)")
    a_models, b_models = models[1, 0], models[2, 1]
    print("\nReuse: module a of model A (1 x 64, seed 0) and module b of model B (2 x 64, seed 1), voted\n")
    print(reuse_table(a_models, b_models))
    print("\nReplacement: one module of model A replaced by the same class's module of model B\n")
    print(replacement_table(a_models, b_models))
    print(f"\n({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
