"""`mdl demo`: the digits walk-through, end to end, in well under two minutes on one CPU core.

1. train an MLP on scikit-learn's digits (shipped with scikit-learn: no download);
2. decompose it into ten per-class modules (Pan & Rajan, ESEC/FSE 2020);
3. write a spec that composes them with `vote`, `mdl check` it, bind it, and test it;
4. inject a fault, a model trained with one class under-represented, and let
   `mdl test`'s statistical blame name that class's module;
5. repair the vote with `replace(voted, m5, m5_healthy)`, test again, and count
   the training avoided in FLOPs;
6. compose the paper's KMNIST-1 modules, when their fixtures are at hand.

Every step checks what it claims; the command exits 1 when a check fails, so
the demo is also a test. The specs and modules it writes stay in `--out`, where
`mdl check` and `mdl test` read them as any other spec.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mdl_lang.threads import one_thread

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from mdl_lang.compiler import CheckedSpec
    from mdl_lang.modular.digits import DigitsSplit, Training
    from mdl_lang.report import Result

KMNIST_VARIABLE = "MDL_KMNIST_DIR"
DEFAULT_KMNIST = Path("..") / "shared" / "data" / "fse20-kmnist1"
HIDDEN = (64,)
IMAGE_TYPE = "Tensor[B, 1, 8, 8] float32 in [0, 1]"
# The under-represented class keeps this share of its training samples.
FAULT_FRACTION = 0.05
RECALL_BOUND = 0.75
ACCURACY_BOUND = 0.9
# KMNIST-1 as the paper reports it (Pan & Rajan, ESEC/FSE 2020, Table 1).
PAPER_KMNIST = (0.7602, 0.7603)
KMNIST_QUICK = 2000  # test images composed by `--quick`
KMNIST_IMAGE = (28, 28)
KMNIST_CLASSES = 10


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `mdl demo` to `mdl`."""
    demo = commands.add_parser(
        "demo", help="train, decompose, compose, blame and repair digits MLPs, end to end (no download)",
    )
    demo.add_argument("--out", type=Path, help="folder for the specs and modules written (default: a new temp dir)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the models' initial weights and of the fault")
    demo.add_argument("--quick", action="store_true", help="a shorter run: fewer epochs, a KMNIST-1 subset")
    demo.add_argument("--fault-class", type=int, default=5, metavar="C",
                      help="the digit under-represented in the faulty model (default 5)")
    demo.add_argument("--kmnist", type=Path,
                      help=f"the KMNIST-1 fixtures (default: ${KMNIST_VARIABLE} or {DEFAULT_KMNIST})")
    demo.set_defaults(handler=run_demo)


@dataclass(frozen=True)
class DemoSettings:
    """The options of one run, resolved: where to write, which seed and fault, how long, where KMNIST-1 is."""

    out: Path
    seed: int
    quick: bool
    fault_class: int
    kmnist: Path

    @property
    def epochs(self) -> int:
        return 120 if self.quick else 200

    @property
    def examples(self) -> int:
        """Generated batches per per-sample clause in `mdl test`."""
        return 5 if self.quick else 20


@dataclass
class Checks:
    """What each step promised and whether it held; the exit code."""

    outcomes: list[tuple[str, bool]] = field(default_factory=list)

    def expect(self, what: str, held: bool) -> bool:
        self.outcomes.append((what, held))
        print(f"  {'ok' if held else 'FAILED'}: {what}")
        return held

    @property
    def failed(self) -> list[str]:
        return [what for what, held in self.outcomes if not held]


def run_demo(args: argparse.Namespace) -> int:
    """The `mdl demo` handler: the six steps, then a summary; 0 when every check held."""
    from mdl_lang.cli import EXIT_FAILED, EXIT_OK, UsageError

    if not 0 <= args.fault_class <= 9:
        raise UsageError(f"--fault-class must be a digit 0..9, got {args.fault_class}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    if args.kmnist is not None and not args.kmnist.is_dir():
        # Named on purpose, a missing folder is the user's mistake; only the default may be absent.
        raise UsageError(f"--kmnist {args.kmnist} is not a folder")
    out = args.out or Path(tempfile.mkdtemp(prefix="mdl-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    kmnist = args.kmnist or Path(os.environ.get(KMNIST_VARIABLE) or DEFAULT_KMNIST)
    settings = DemoSettings(out, args.seed, args.quick, args.fault_class, kmnist)
    started = time.perf_counter()
    print(f"mdl demo: writing specs and modules to {out}")
    checks = Checks()
    with one_thread():
        run_steps(settings, checks)
    total = time.perf_counter() - started
    print()
    if checks.failed:
        print(f"demo finished in {total:.1f}s: {len(checks.failed)} check(s) failed: {'; '.join(checks.failed)}")
        return EXIT_FAILED
    print(f"demo finished in {total:.1f}s: all {len(checks.outcomes)} checks held; specs and modules in {out}")
    return EXIT_OK


@contextmanager
def section(title: str) -> Iterator[None]:
    """A numbered part of the output, with the time it took."""
    print(f"\n== {title}")
    started = time.perf_counter()
    yield
    print(f"  ({time.perf_counter() - started:.1f}s)")


@dataclass(frozen=True)
class Trained:
    model: nn.Sequential
    training: Training
    accuracy: float


def run_steps(settings: DemoSettings, checks: Checks) -> None:
    from mdl_lang.modular import digits

    label = settings.fault_class

    with section(f"1. Train an MLP {HIDDEN} on scikit-learn's digits"):
        split = digits.digits_split()
        healthy = _train(split, split.train_inputs, split.train_labels, settings)
        print(f"  {len(split.train_labels)} training images, {len(split.test_labels)} test images (8x8, fixed split)")
        print(f"  model accuracy on the test images: {healthy.accuracy:.2%} "
              f"({healthy.training.epochs} epochs of full-batch Adam)")
        checks.expect("the model reaches 90% test accuracy", healthy.accuracy >= 0.9)

    with section("2. Decompose it into ten per-class modules"):
        decompose_flops = _decompose(healthy.model, split, settings.out / "healthy")

    with section("3. Compose the modules with vote through a spec"):
        spec_file = _write_vote_spec(settings.out, "digits_vote", "healthy", None, label)
        spec = _check_and_load(spec_file, checks)
        parts = _parts(settings.out / "healthy", "m")
        composed = _bound_accuracy(spec, "voted", parts, split)
        print(f"  model {healthy.accuracy:.2%}, composed {composed:.2%} "
              f"({100 * (composed - healthy.accuracy):+.2f} points)")
        results = _test(spec, "voted", parts, settings.examples)
        checks.expect("the vote of the healthy modules keeps every clause of `voted`", _all_pass(results))

    with section(f"4. Inject a fault: retrain with digit {label} at {FAULT_FRACTION:.0%} of its samples"):
        inputs, labels = digits.under_represented(
            split.train_inputs, split.train_labels, label, FAULT_FRACTION, settings.seed,
        )
        faulty = _train(split, inputs, labels, settings)
        faulty_recall = digits.recall(digits.predictions(faulty.model, split.test_inputs), split.test_labels, label)
        kept = int((labels == label).sum())
        print(f"  faulty model: {kept} training images of digit {label} left; "
              f"accuracy {faulty.accuracy:.2%}, recall of {label} {faulty_recall:.2%}")
        _decompose(faulty.model, split, settings.out / "faulty")
        faulty_spec = _check_and_load(_write_vote_spec(settings.out, "faulty_vote", "faulty", None, label), checks)
        faulty_parts = _parts(settings.out / "faulty", "m")
        print(f"  mdl test {settings.out / 'faulty_vote.mdl'} --module voted:")
        results = _test(faulty_spec, "voted", faulty_parts, settings.examples)
        for result in results:
            if result.verdict.value in ("fail", "unknown"):
                print(_indented(_rendered(result, faulty_spec)))
        blamed = _blamed(results)
        checks.expect(f"`mdl test` fails the vote and blames m{label} alone", blamed == [f"m{label}"])

    with section(f"5. Repair: replace(voted, m{label}, m{label}_healthy)"):
        repaired_spec = _check_and_load(
            _write_vote_spec(settings.out, "repaired_vote", "faulty", "healthy", label), checks,
        )
        repaired_parts = {name: part for name, part in faulty_parts.items() if name != f"m{label}"}
        repaired_parts[f"m{label}_healthy"] = _parts(settings.out / "healthy", "m")[f"m{label}"]
        results = _test(repaired_spec, "repaired", repaired_parts, settings.examples)
        checks.expect("the repaired vote keeps every clause of `repaired`", _all_pass(results))
        _before_after(split, label, healthy, faulty, faulty_spec, faulty_parts, repaired_spec, repaired_parts)
        _training_cost(healthy, decompose_flops)

    with section("6. KMNIST-1: the paper's modules (Pan & Rajan, ESEC/FSE 2020)"):
        _kmnist(settings, checks)


# ---------------------------------------------------------------- steps


def _train(split: DigitsSplit, inputs: torch.Tensor, labels: torch.Tensor, settings: DemoSettings) -> Trained:
    from mdl_lang.modular import digits

    model = digits.mlp(HIDDEN, settings.seed)
    training = digits.train(model, inputs, labels, epochs=settings.epochs, seed=settings.seed)
    return Trained(model, training, digits.accuracy(model, split.test_inputs, split.test_labels))


def _decompose(model: nn.Sequential, split: DigitsSplit, folder: Path) -> int:
    """Decompose on the training images, print the size table, write the modules; the FLOPs it took.

    `decompose` gives the modules in the form of the paper's published ones (the
    model's ten outputs over the kept units, seen as `{k} | other`), and
    `write_decomposition` writes them as `mdl decompose` does: `m0.pt` ... `m9.pt`,
    their manifest, factories and spec, under `folder`.
    """
    from mdl_lang.modular.artifacts import module_sizes, write_decomposition
    from mdl_lang.modular.decompose import decompose, format_table
    from mdl_lang.modular.repair import composed_accuracy, counted_flops, format_flops

    decomposition, flops = counted_flops(lambda: decompose(model, split.train_inputs, split.train_labels))
    print(_indented(format_table(module_sizes(decomposition))))
    spec = write_decomposition(decomposition, folder, spec_name=folder.name, input_type=IMAGE_TYPE)
    composed = composed_accuracy(decomposition.modules, split.test_inputs, split.test_labels)
    print(f"  decomposition: {format_flops(flops)} (counted); written to {folder} (spec {spec.name})")
    print(f"  vote of the modules: {composed:.2%} (each keeps the ten outputs over its units, "
          f"`{{k}} | other` by argmax)")
    return flops


def _write_vote_spec(out: Path, name: str, modules_from: str, replacement_from: str | None, label: int) -> Path:
    """`out/<name>.mdl` and the factories its bindings name, `out/<name>_modules.py`.

    The factories load the modules `_decompose` wrote under `out/<modules_from>/`
    (and the replacement's under `out/<replacement_from>/`) with `load_module`.
    """
    from mdl_lang.modular.artifacts import factories_text, module_name
    from mdl_lang.modular.repair import SpecModule, vote_spec_text

    paths = {f"load_m{k}": f"{modules_from}/{module_name(k)}.pt" for k in range(10)}
    modules = [SpecModule(f"m{k}", k, f"{name}_modules:load_m{k}") for k in range(10)]
    replacement = None
    if replacement_from is not None:
        paths[f"load_m{label}_{replacement_from}"] = f"{replacement_from}/{module_name(label)}.pt"
        new = SpecModule(f"m{label}_{replacement_from}", label, f"{name}_modules:load_m{label}_{replacement_from}")
        replacement = (f"m{label}", new)
    text = vote_spec_text(modules, recall_bound=RECALL_BOUND, accuracy_bound=ACCURACY_BOUND, replacement=replacement)
    (out / f"{name}_modules.py").write_text(factories_text(name, paths), encoding="utf-8")
    spec_file = out / f"{name}.mdl"
    spec_file.write_text(text, encoding="utf-8")
    return spec_file


def _check_and_load(spec_file: Path, checks: Checks) -> CheckedSpec:
    """`mdl check` the written spec, then load it."""
    from mdl_lang.compiler import load
    from mdl_lang.diagnostics import render_all
    from mdl_lang.semantics.checker import check_paths

    result = check_paths([spec_file])
    print(f"  mdl check {spec_file}")
    if result.diagnostics:
        print(_indented(render_all(result.diagnostics, result.sources)))
    else:
        print("  checked: no problems")
    checks.expect(f"{spec_file.name} checks", not result.has_errors)
    return load(spec_file)


def _parts(folder: Path, prefix: str) -> dict[str, nn.Module]:
    """The ten modules written to `folder`, read back as the bindings read them, by part name."""
    from mdl_lang.modular.artifacts import load_module, module_name

    return {f"{prefix}{k}": load_module(folder / f"{module_name(k)}.pt") for k in range(10)}


def _bound_accuracy(spec: CheckedSpec, name: str, parts: dict[str, nn.Module], split: DigitsSplit) -> float:
    """The accuracy of the composition bound from the spec, monitors on (raising on any violation)."""
    import torch

    composition = spec.bind(name, parts=parts, mode="raise", replay_dir=None)
    with torch.no_grad():
        predicted = composition(split.test_inputs).argmax(dim=1)
    return (predicted == split.test_labels).float().mean().item()


def _test(spec: CheckedSpec, name: str, parts: dict[str, nn.Module], examples: int) -> list[Result]:
    """`mdl test --module NAME`: every clause of the composition, on these parts; one line per clause."""
    from mdl_lang.testing import ContractTester, TestSettings

    tester = ContractTester(spec, TestSettings(max_examples=examples, replay_dir=None))
    tester.provide(name, parts=parts)
    results = tester.run(name)
    for result in results:
        shown = result.message if len(result.message) <= 90 else result.message[:87] + "..."
        print(f"  {result.verdict.value:>4}  {result.component} · {result.clause} ({result.backend}): {shown}")
    return results


def _all_pass(results: list[Result]) -> bool:
    return bool(results) and all(r.verdict.value in ("pass", "skip") for r in results) and any(
        r.verdict.value == "pass" for r in results
    )


def _blamed(results: list[Result]) -> list[str]:
    from mdl_lang.modular.repair import blamed_modules

    return blamed_modules(results)


def _rendered(result: Result, spec: CheckedSpec) -> str:
    from mdl_lang.report import render_result

    return render_result(result, spec.sources)


def _before_after(
    split: DigitsSplit, label: int, healthy: Trained, faulty: Trained,
    faulty_spec: CheckedSpec, faulty_parts: dict[str, nn.Module],
    repaired_spec: CheckedSpec, repaired_parts: dict[str, nn.Module],
) -> None:
    """Overall accuracy and the recall of the faulty class, before and after the repair."""
    from mdl_lang.modular import digits
    from mdl_lang.modular.repair import percent, render_table

    def row(name: str, model: nn.Module) -> list[str]:
        predicted = digits.predictions(model, split.test_inputs)
        accuracy = (predicted == split.test_labels).float().mean().item()
        return [name, percent(accuracy), percent(digits.recall(predicted, split.test_labels, label))]

    voted = faulty_spec.bind("voted", parts=faulty_parts, mode="off")
    repaired = repaired_spec.bind("repaired", parts=repaired_parts, mode="off")
    rows = [
        row("healthy model", healthy.model),
        row("faulty model", faulty.model),
        row("voted (faulty modules)", voted),
        row(f"repaired (m{label} replaced)", repaired),
    ]
    print(_indented(render_table(["", "accuracy", f"recall of {label}"], rows)))


def _training_cost(healthy: Trained, decompose_flops: int) -> None:
    from mdl_lang.modular import digits
    from mdl_lang.modular.repair import RepairCost, forward_flops_per_sample, training_flops

    forward = forward_flops_per_sample(healthy.model, digits.IMAGE_SHAPE)
    training = healthy.training
    cost = RepairCost(
        retrain_flops=training_flops(forward, training),
        retrain_how=f"3 x {forward:,} forward FLOPs x {training.samples} samples x {training.epochs} epochs",
        repair_flops=decompose_flops,
        repair_how="decomposing the healthy model, counted; the replacement itself trains nothing",
    )
    print("  training cost (FLOPs counted with torch.utils.flop_counter.FlopCounterMode):")
    print(_indented("\n".join(cost.lines())))


def _kmnist(settings: DemoSettings, checks: Checks) -> None:
    from mdl_lang.interop.keras_h5 import KerasImportError

    try:
        outcome = compose_kmnist(settings.kmnist, settings.out, limit=KMNIST_QUICK if settings.quick else None)
    except KmnistUnavailable as reason:
        print(f"  {reason}: skipped")
        return
    except (KerasImportError, OSError, ValueError, KeyError) as error:
        # Fixtures that are there but do not read: a failed step, not a crash and not a skip.
        print(f"  the KMNIST-1 fixtures at {settings.kmnist} do not load: {error}")
        checks.expect("KMNIST-1 fixtures load", False)
        return
    print(f"  {outcome.samples} test images; model {outcome.model_accuracy:.2%}, "
          f"composed {outcome.composed_accuracy:.2%} (the paper: {PAPER_KMNIST[0]:.2%} and {PAPER_KMNIST[1]:.2%})")
    if outcome.samples == 10_000:
        checks.expect(
            "KMNIST-1 gives the paper's figures",
            (round(outcome.model_accuracy, 4), round(outcome.composed_accuracy, 4)) == PAPER_KMNIST,
        )
    else:
        checks.expect("KMNIST-1 model and composed accuracy within 0.5 points on the subset",
                      abs(outcome.model_accuracy - outcome.composed_accuracy) <= 0.005)


def _indented(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


# ---------------------------------------------------------------- KMNIST-1

KMNIST_FILES = ("kmnist.h5", *(f"module{k}.h5" for k in range(10)), "kmnist-test-imgs.npz", "kmnist-test-labels.npz")
KMNIST_SPEC = """\
# The ten modules of KMNIST-1 (Pan & Rajan, ESEC/FSE 2020) composed by vote; written by `mdl demo`,
# which binds the parts itself (the fixtures live outside the package, so no `python` bindings).
spec kmnist_vote

labels KDigit = {0..9}
dim B : batch
type KImage = Tensor[B, 28, 28] float32 in [0, 1 / 255]
type KScores[L] = Tensor[B, L] float32 in [0, 1]

interface Classifier[L] {
  input x: KImage
  output y: KScores[L]
  requires finite(x)
  ensures finite(y)
}
"""


class KmnistUnavailable(Exception):
    """The fixtures, or h5py to read them, are not at hand; the message says which."""


@dataclass(frozen=True)
class KmnistOutcome:
    samples: int
    model_accuracy: float
    composed_accuracy: float


def compose_kmnist(folder: Path, out: Path, limit: int | None = None) -> KmnistOutcome:
    """The paper's model and its ten modules composed by vote (monitored), on the first `limit` test images."""
    import torch

    missing = [name for name in KMNIST_FILES if not (folder / name).is_file()]
    if missing:
        raise KmnistUnavailable(f"KMNIST-1 fixtures not found at {folder} (missing {', '.join(missing[:3])})")
    try:
        import h5py  # noqa: F401 - only to say clearly that the optional extra is missing
    except ImportError as error:
        raise KmnistUnavailable("reading KMNIST-1 needs h5py (pip install 'mdl-lang[keras]')") from error
    from mdl_lang.compiler import load
    from mdl_lang.modular.concern import ConcernView
    from mdl_lang.syntax.format import format_text

    images, targets = _kmnist_test_split(folder)
    # The artifact feeds skimage.transform.resize(img) / 255, that is img / 255 / 255.
    inputs = torch.from_numpy(images[:limit]).to(torch.float32) / 255 / 255
    labels = torch.from_numpy(targets[:limit]).to(torch.int64)
    model = _fitting_model(folder / "kmnist.h5", inputs[:1])
    parts = {f"module{k}": ConcernView(_fitting_model(folder / f"module{k}.h5", inputs[:1]), k) for k in range(10)}
    spec_file = out / "kmnist_vote.mdl"
    modules = "\n".join(f"module module{k} : Classifier[{{{k}}} | other]" for k in range(10))
    vote = f"compose voted : Classifier[KDigit] = vote({', '.join(parts)})"
    formatted = format_text(f"{KMNIST_SPEC}\n{modules}\n\n{vote}\n", spec_file.name)
    if formatted.text is None:
        raise ValueError(f"the KMNIST-1 spec does not parse: {formatted.diagnostics}")
    spec_file.write_text(formatted.text, encoding="utf-8")
    voted = load(spec_file).bind("voted", parts=parts, mode="raise", replay_dir=None)
    with torch.no_grad():
        model_accuracy = (model(inputs).argmax(dim=1) == labels).float().mean().item()
        composed_accuracy = (voted(inputs).argmax(dim=1) == labels).float().mean().item()
    print(f"  spec {spec_file}: ten modules, `vote` monitored at every part (mode raise)")
    return KmnistOutcome(len(labels), model_accuracy, composed_accuracy)


def _kmnist_test_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test images (N, 28, 28) and their N labels; ValueError, the demo's failed step, for any other form."""
    import numpy as np

    with np.load(folder / "kmnist-test-imgs.npz", allow_pickle=False) as archive:
        images = archive["arr_0"]
    with np.load(folder / "kmnist-test-labels.npz", allow_pickle=False) as archive:
        labels = archive["arr_0"]
    if images.ndim != 3 or images.shape[1:] != KMNIST_IMAGE or not len(images):
        raise ValueError(f"{folder / 'kmnist-test-imgs.npz'} holds images of shape {images.shape}, "
                         f"expected (N, {KMNIST_IMAGE[0]}, {KMNIST_IMAGE[1]}) with N > 0")
    if labels.shape != (len(images),):
        raise ValueError(f"{folder / 'kmnist-test-labels.npz'} holds labels of shape {labels.shape}, "
                         f"expected one for each of the {len(images)} images")
    return images, labels


def _fitting_model(path: Path, image: torch.Tensor) -> nn.Module:
    """The Keras model at `path`, once it has taken one test image to scores for the ten classes; a model of
    another form is the fixtures' fault, a ValueError (the demo's failed step), not a crash deep in torch."""
    import torch

    from mdl_lang.interop.keras_h5 import load_keras_sequential

    model = load_keras_sequential(path)
    try:
        with torch.no_grad():
            scores = model(image)
    except RuntimeError as error:
        raise ValueError(f"{path} does not run on a 28x28 KMNIST image: {error}") from error
    if tuple(scores.shape) != (1, KMNIST_CLASSES):
        raise ValueError(f"{path} gives scores of shape {tuple(scores.shape)} for one image, "
                         f"expected (1, {KMNIST_CLASSES})")
    return model
