"""Modules of different models composed in one spec: `vote` over two models' modules (labels united),
and `replace` of one model's module by another's, as the front end checks them today.

Each model is a small MLP trained on its own clusters; `mdl decompose`'s writer puts its modules and spec
in its own folder, and a third spec imports them. The Z3 subtyping of `replace` is another component's
work: here only the front end's interface check and the obligation it records.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.composed import vote
from mdl_lang.bindings import module_for, parts_for
from mdl_lang.cli import main
from mdl_lang.compiler import SpecError
from mdl_lang.modular.artifacts import write_decomposition
from mdl_lang.modular.decompose import decompose
from tests.modular.test_decompose import blobs, trained_mlp

DIGITS = ["zero", "one", "two", "three"]
LETTERS = ["a", "b", "c"]
INPUT = "Tensor[B, 10] float32 in [0, 1]"


def halves(classes: int, features: int, seed: int, offset: float = 0.0):
    """Clusters split in two: the first half trains and identifies concerns, the second measures."""
    inputs, labels = blobs(classes, features, per_class=80, seed=seed, offset=offset)
    middle = len(labels) // 2
    return (inputs[:middle], labels[:middle]), (inputs[middle:], labels[middle:])


def decomposed(folder: Path, name: str, data, hidden: int, *, softmax: bool, seed: int, names, input_type=INPUT):
    inputs, labels = data
    model = trained_mlp(inputs, labels, hidden, softmax=softmax, seed=seed)
    write_decomposition(decompose(model, inputs, labels), folder / name, spec_name=name, input_type=input_type,
                        label_names=names)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    digits_train, digits_test = halves(4, 10, seed=11)
    letters_train, letters_test = halves(3, 10, seed=12, offset=1.0)
    six_train, _ = halves(3, 6, seed=15)
    built = {
        # two models of the same four digits, trained apart, and one emitting logits
        "digits_a": decomposed(root, "digits_a", digits_train, 16, softmax=True, seed=11, names=DIGITS),
        # (as wide as digits_a: a module of it replacing one of digits_a's keeps its `params` bound)
        "digits_c": decomposed(root, "digits_c", digits_train, 16, softmax=True, seed=13, names=DIGITS),
        "digits_d": decomposed(root, "digits_d", digits_train, 20, softmax=False, seed=14, names=DIGITS),
        # letters: another data set, other labels, the same input type
        "letters_b": decomposed(root, "letters_b", letters_train, 12, softmax=True, seed=12, names=LETTERS),
        # another input type
        "six_e": decomposed(root, "six_e", six_train, 12, softmax=True, seed=15, names=["u", "v", "w"],
                            input_type="Tensor[B, 6] float32 in [0, 1]"),
    }
    return root, built, digits_test, letters_test


HEADER = """spec cross
import "digits_a/digits_a.mdl" as a
import "digits_c/digits_c.mdl" as c
import "digits_d/digits_d.mdl" as d
import "letters_b/letters_b.mdl" as b
import "six_e/six_e.mdl" as e

"""
DIGIT_PARTS = "a.m0, a.m1, a.m2, a.m3"
LETTER_PARTS = "b.m0, b.m1, b.m2"


def write_spec(root: Path, body: str) -> Path:
    path = root / "cross.mdl"
    path.write_text(HEADER + body)
    return path


def errors_of(path: Path) -> list:
    with pytest.raises(SpecError) as raised:
        mdl_lang.load(path)
    return raised.value.diagnostics


def bound(spec, name: str):
    """The composition with its parts made by their bindings, each resolved from its own spec's folder."""
    composition = spec.compositions[name]
    modules = [part for part in composition.parts if isinstance(spec.component(part), ir.Module)]
    parts = {part: module_for(spec.component(part), spec.component(part).file) for part in modules}
    return spec.bind(name, parts=parts, mode="record", replay_dir=None)


def test_a_vote_over_two_models_modules_scores_the_union_of_their_labels(models, capsys):
    root, _, (digit_inputs, digit_labels), (letter_inputs, letter_labels) = models
    path = write_spec(root, f"compose wider : a.Classifier[a.Label | b.Label] = vote({DIGIT_PARTS}, {LETTER_PARTS})\n")
    assert main(["check", str(path)]) == 0, capsys.readouterr().out
    spec = mdl_lang.load(path)
    wider = spec.compositions["wider"]
    assert wider.expr.labels.labels == (*DIGITS, *LETTERS)
    composed = bound(spec, "wider")
    with torch.no_grad():
        on_digits, on_letters = composed(digit_inputs), composed(letter_inputs)
        parts = [composed.parts[name.replace(".", "__")] for name in wider.parts]
        by_hand = vote([part(digit_inputs) for part in parts],
                       tuple(ir.LabelSet((label, ir.OTHER)) for label in (*DIGITS, *LETTERS)),
                       wider.expr.labels, 0.0)
    assert on_digits.shape == (len(digit_inputs), 7)
    assert torch.equal(on_digits.argmax(dim=1), by_hand.argmax(dim=1))
    digit_accuracy = float((on_digits.argmax(dim=1) == digit_labels).float().mean())
    letter_accuracy = float((on_letters.argmax(dim=1) == letter_labels + 4).float().mean())
    print(f"vote of 4 digit + 3 letter modules: {digit_accuracy:.1%} on held-back digits, "
          f"{letter_accuracy:.1%} on held-back letters")
    # Each model alone is near perfect on its own clusters; united, a module may claim the other data set's inputs.
    assert digit_accuracy >= 0.75 and letter_accuracy >= 0.75
    assert composed.reports == []


def test_a_vote_whose_parts_read_different_inputs_says_which_part_reads_what(models):
    root = models[0]
    path = write_spec(root, f"compose bad : a.Classifier[a.Label | e.Label] = vote({DIGIT_PARTS}, e.m0, e.m1, e.m2)\n")
    [error] = errors_of(path)
    assert error.code == "E0506"
    assert error.message == ("`e.m0` reads Tensor[B, 6] float32 in [0, 1] but `a.m0` reads "
                             "Tensor[B, 10] float32 in [0, 1]")
    assert (error.span.line, error.span.column) == (8, len("compose bad : a.Classifier[a.Label | e.Label] = vote(") +
                                                    len(DIGIT_PARTS) + 3)


def test_two_models_modules_for_the_same_label_overlap_unless_the_vote_takes_the_max(models):
    root = models[0]
    body = f"compose both : a.Classifier[a.Label] = vote({DIGIT_PARTS}, c.m3)\n"
    [error] = errors_of(write_spec(root, body))
    assert error.code == "E0504" and error.message == 'label "three" is scored by both `a.m3` and `c.m3`'
    spec = mdl_lang.load(write_spec(root, body.replace("c.m3)", "c.m3, overlap=max)")))
    assert spec.compositions["both"].expr.overlap_max


def test_logit_modules_and_probability_modules_cannot_vote_together(models):
    root = models[0]
    [error] = errors_of(write_spec(root, "compose mixed : a.Classifier[a.Label] = vote(a.m0, a.m1, a.m2, d.m3)\n"))
    assert error.code == "E0507"
    assert "`d.m3` scores Tensor[B, {\"three\", other}] float32," in error.message
    assert "in [0, 1]" in error.message


def test_a_module_replaced_by_another_models_module_of_the_same_class(models, capsys):
    root, _, (digit_inputs, digit_labels), _ = models
    path = write_spec(root, f"compose base : a.Classifier[a.Label] = vote({DIGIT_PARTS})\n"
                            "compose swapped : a.Classifier[a.Label] = replace(base, a.m3, c.m3)\n")
    assert main(["check", str(path)]) == 0, capsys.readouterr().out
    spec = mdl_lang.load(path)
    swapped = spec.compositions["swapped"]
    assert "c.m3" in swapped.parts and "a.m3" not in swapped.parts
    replace = [obligation for obligation in spec.obligations if obligation.kind == "replace"]
    assert [(o.premise, o.conclusion) for o in replace] == [("c.m3 contract", "a.m3 contract")]
    base, composed = bound(spec, "base"), bound(spec, "swapped")
    with torch.no_grad():
        before = float((base(digit_inputs).argmax(dim=1) == digit_labels).float().mean())
        after = float((composed(digit_inputs).argmax(dim=1) == digit_labels).float().mean())
    print(f"digits vote {before:.1%} on held-back digits; with m3 from the other model {after:.1%}")
    assert after >= before - 0.05


def test_a_replacement_for_another_class_is_refused(models):
    root = models[0]
    path = write_spec(root, f"compose base : a.Classifier[a.Label] = vote({DIGIT_PARTS})\n"
                            "compose wrong : a.Classifier[a.Label] = replace(base, a.m3, b.m0)\n")
    [error] = errors_of(path)
    assert error.code == "E0509"
    assert error.message == '`b.m0` implements Concern[{"a", other}], but `a.m3` implements Concern[{"three", other}]'


def test_a_replacement_with_another_score_range_is_refused(models, capsys):
    # The same ports, but logits for probabilities: not a behavioural subtype (its output ensures less).
    root = models[0]
    path = write_spec(root, f"compose base : a.Classifier[a.Label] = vote({DIGIT_PARTS})\n"
                            "compose wrong : a.Classifier[a.Label] = replace(base, a.m3, d.m3)\n")
    assert main(["check", str(path)]) == 1
    output = capsys.readouterr().out
    assert "error[E0604]: `d.m3` is not a behavioural subtype of `a.m3`: it ensures less" in output


def test_replace_reaches_into_an_imported_composition(models):
    root = models[0]
    _, _, (digit_inputs, _), _ = models
    spec = mdl_lang.load(write_spec(root, "compose swapped : a.Classifier[a.Label] = replace(a.voted, a.m3, c.m3)\n"))
    assert "c.m3" in spec.compositions["swapped"].parts and "a.m3" not in spec.compositions["swapped"].parts
    swapped = spec.bind("swapped", parts=parts_for(spec, spec.compositions["swapped"]), mode="record",
                        replay_dir=None)
    with torch.no_grad():
        scores = swapped(digit_inputs)
    assert scores.shape == (len(digit_inputs), len(DIGITS))
    assert "a__m3" not in swapped.parts and "c__m3" in swapped.parts


def test_parts_for_binds_modules_of_imported_specs(models, monkeypatch):
    root = models[0]
    for name in ("digits_a_modules", "letters_b_modules"):  # as in a fresh process: not imported yet
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = mdl_lang.load(write_spec(root, f"compose wider : a.Classifier[a.Label | b.Label] = "
                                          f"vote({DIGIT_PARTS}, {LETTER_PARTS})\n"))
    assert set(parts_for(spec, spec.compositions["wider"])) == set(spec.compositions["wider"].parts)
