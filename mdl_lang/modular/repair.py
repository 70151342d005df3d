"""Repair with blame: a vote of per-class modules, a spec that states their contracts, and the cost avoided.

The scenario of Pan & Rajan (ESEC/FSE 2020): a model trained with one class
under-represented is decomposed into per-class modules; the spec's per-class
`recall` clauses fail on the vote, and the statistical blame of `mdl test`
names that class's module. Replacing the module by the same class's module of
a healthy model (`replace(voted, m5, m5_healthy)`) restores the vote, without
retraining anything.

Training cost is counted in FLOPs with `torch.utils.flop_counter.FlopCounterMode`:
one forward pass of one sample is counted (a Linear layer of n inputs and m
outputs counts 2nm), and a training epoch costs forward + backward, about 3x the
forward FLOPs, per sample. A decomposition is counted by running it under the
same counter, so every figure printed is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from mdl_lang import ir
from mdl_lang.backends.torch.composed import vote
from mdl_lang.compiler import CheckedSpec
from mdl_lang.modular.digits import Training
from mdl_lang.report import Result, Role, Verdict

T = TypeVar("T")

# Forward + backward per sample per epoch, as a multiple of the forward pass: the
# backward pass computes the gradients of both the weights and the activations.
TRAINING_FACTOR = 3

DATA_BINDING = "mdl_lang.modular.digits:test_split"


# ---------------------------------------------------------------- cost


def counted_flops(run: Callable[[], T]) -> tuple[T, int]:
    """What `run()` returns, and the FLOPs of the torch operations it ran (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        value = run()
    return value, int(counter.get_total_flops())


def forward_flops_per_sample(model: nn.Module, sample_shape: Sequence[int]) -> int:
    """The FLOPs of one forward pass of one sample (FlopCounterMode; softmax and ReLU count 0)."""
    example = torch.zeros((1, *sample_shape))
    with torch.no_grad():
        _, flops = counted_flops(lambda: model(example))
    return flops


def training_flops(forward_per_sample: int, training: Training) -> int:
    """Forward + backward (3x forward) for every sample of every epoch."""
    return TRAINING_FACTOR * forward_per_sample * training.samples * training.epochs


@dataclass(frozen=True)
class RepairCost:
    """The training avoided by repairing one module instead of retraining the whole model."""

    retrain_flops: int
    retrain_how: str
    repair_flops: int
    repair_how: str

    @property
    def avoided_flops(self) -> int:
        return self.retrain_flops - self.repair_flops

    @property
    def ratio(self) -> float:
        """How many times cheaper the repair is."""
        return self.retrain_flops / self.repair_flops if self.repair_flops else float("inf")

    def lines(self) -> list[str]:
        """The accounting, one line per figure, for people."""
        return [
            f"retrain the whole model:   {format_flops(self.retrain_flops):>10}  ({self.retrain_how})",
            f"decompose + replace:       {format_flops(self.repair_flops):>10}  ({self.repair_how})",
            f"training cost avoided:     {format_flops(self.avoided_flops):>10}  "
            f"({self.ratio:,.1f}x less compute for the repair)",
        ]


def format_flops(flops: int) -> str:
    """1234567 -> '1.23 MFLOP': three significant digits with an SI prefix."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if flops >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP"
    return f"{flops} FLOP"


# ---------------------------------------------------------------- composing without a spec


def voted_scores(modules: dict[int, nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """The ESEC/FSE 2020 vote of per-class modules (each (N, 2): (p_k, p_other)), as `vote` runs it.

    The same function `spec.bind("voted", parts=...)` runs, without the monitors: for tables
    over many compositions. Columns follow the modules' labels in increasing order; scores
    are probabilities, so an abstaining label drops to 0.
    """
    ordered = sorted(modules)
    part_labels = tuple(ir.LabelSet((label, ir.OTHER)) for label in ordered)
    with torch.no_grad():
        scores = [modules[label](inputs) for label in ordered]
    return vote(scores, part_labels, ir.LabelSet(tuple(ordered)), 0.0)


def voted_predictions(modules: dict[int, nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """The label the vote of `modules` decides for each input."""
    ordered = torch.as_tensor(sorted(modules))
    return ordered[voted_scores(modules, inputs).argmax(dim=1)]


def composed_accuracy(modules: dict[int, nn.Module], inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the vote of `modules` on samples of their classes."""
    return (voted_predictions(modules, inputs) == labels).float().mean().item()


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True)
class SpecModule:
    """A per-class module `name : Classifier[{label} | other]` made by the factory `binding`."""

    name: str
    label: int
    binding: str


def vote_spec_text(
    modules: Sequence[SpecModule],
    *,
    recall_bound: float,
    accuracy_bound: float,
    replacement: tuple[str, SpecModule] | None = None,
    title: str = "A digits classifier decomposed into per-class modules and composed again by vote.",
) -> str:
    """A spec of `compose voted = vote(m0, ..., m9)` with per-class recall and accuracy clauses.

    With `replacement` (old part, new module), it also declares the new module and
    `compose repaired = replace(voted, old, new)` with the same clauses. The text
    is formatted with `mdl fmt`'s layout.
    """
    from mdl_lang.syntax.format import format_text

    classes = len(modules)
    clauses = [
        f"  ensures overall: accuracy(y) >= {accuracy_bound} on digits_test with confidence 0.95",
        f"  ensures per_class: forall l in Digit: recall(y, l) >= {recall_bound} on digits_test",
    ]
    text = [
        f"# {title}",
        "# Written by `mdl demo`; `mdl check` and `mdl test` read it as any other spec.",
        "",
        "spec demo",
        "",
        f"labels Digit = {{0..{classes - 1}}}",
        "dim B : batch",
        "dim H = 8, W = 8",
        "type Image = Tensor[B, 1, H, W] float32 in [0, 1]",
        "type Scores[L] = Tensor[B, L] float32 in [0, 1]",
        "",
        "interface Classifier[L] {",
        "  input x: Image",
        "  output y: Scores[L]",
        "  requires finite(x)",
        "  ensures finite_scores: finite(y)",
        "}",
        "",
        f'data digits_test : (Image, Digit) {{ python "{DATA_BINDING}" }}',
        "",
    ]
    every = [*modules, replacement[1]] if replacement else list(modules)
    for module in every:
        text += [
            f"module {module.name} : Classifier[{{{module.label}}} | other] {{",
            f'  python "{module.binding}"',
            f"  ensures own_recall: recall(y, {module.label}) >= {recall_bound} on digits_test",
            "}",
            "",
        ]
    names = ", ".join(module.name for module in modules)
    text += [f"compose voted : Classifier[Digit] = vote({names}) {{", *clauses, "}", ""]
    if replacement:
        old, new = replacement
        text += [f"compose repaired : Classifier[Digit] = replace(voted, {old}, {new.name}) {{", *clauses, "}", ""]
    source = "\n".join(text)
    formatted = format_text(source, "demo.mdl")
    if formatted.text is None:
        raise ValueError(f"the generated spec does not parse: {formatted.diagnostics}")
    return formatted.text


# ---------------------------------------------------------------- testing and blame


def statistical_results(spec: CheckedSpec, name: str, parts: dict[str, nn.Module]) -> list[Result]:
    """The statistical clauses of composition `name` run by `mdl test`'s tester on `parts`, with their blame."""
    from mdl_lang.testing import ContractTester, TestSettings, clause_items

    tester = ContractTester(spec, TestSettings(replay_dir=None))
    tester.provide(name, parts=parts)
    return [tester.run_item(item) for item in clause_items(spec, name) if item.backend == "stat"]


def blamed_modules(results: Sequence[Result]) -> list[str]:
    """The modules blamed by the failed results, in order of first blame."""
    blamed = [r.blame.party for r in results if r.verdict is Verdict.FAIL and r.blame and r.blame.role is Role.MODULE]
    return list(dict.fromkeys(blamed))


# ---------------------------------------------------------------- tables


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, its columns padded so that it reads as plain text too."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "| " + " | ".join("-" * width for width in widths) + " |", *map(line, rows)])


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"
