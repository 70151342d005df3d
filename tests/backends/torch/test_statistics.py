"""Statistical clauses: exact Clopper-Pearson bounds and the bound rule over known confusion matrices."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.statistics import (
    UnsupportedStatistic,
    clopper_pearson,
    evaluate_statistical,
    regularized_incomplete_beta,
)

SPEC = """
labels Digit = {{0..9}}
labels Five = {{5}} | other
labels Wide = {{0..11}}
dim B : batch
type Image = Tensor[B, 4] float32
interface Classifier[L] {{
  input  x: Image
  output y: Tensor[B, L] float32
}}
data digits : (Image, Digit) {{ python "data:digits" }}
module m : Classifier[{labels}] {{
{clauses}
}}
"""


@dataclass(frozen=True)
class Loaded:
    clauses: dict[str, ir.Clause]
    output_labels: ir.LabelSet
    data_labels: ir.LabelSet
    label_sets: dict[str, ir.LabelSet]


def load(tmp_path: Path, *clauses: str, labels: str = "Digit") -> Loaded:
    """Check a spec whose module `m` carries `clauses` (named c0, c1, ...), all on `digits`."""
    body = "\n".join(f"  ensures c{i}: {clause} on digits" for i, clause in enumerate(clauses))
    path = tmp_path / "spec.mdl"
    path.write_text(SPEC.format(labels=labels, clauses=body), encoding="utf-8")
    spec = mdl_lang.load(path)
    module = spec.component("m")
    output = module.interface.port("y").type.dims[-1]
    return Loaded(
        {clause.name: clause for clause in module.all_clauses}, output.labels, spec.data["digits"].labels,
        spec.label_sets,
    )


def samples(counts: dict[tuple[int, int], int], classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and targets with a given confusion: `counts[(predicted, target)]` samples of each pair."""
    pairs = torch.tensor(list(counts), dtype=torch.long).reshape(-1, 2)
    repeats = torch.tensor(list(counts.values()))
    predicted = pairs[:, 0].repeat_interleave(repeats)
    targets = pairs[:, 1].repeat_interleave(repeats)
    return torch.nn.functional.one_hot(predicted, classes).float(), targets


def evaluate(loaded: Loaded, name: str, scores: torch.Tensor, targets: torch.Tensor):
    return evaluate_statistical(loaded.clauses[name], scores, targets, loaded.output_labels, loaded.data_labels)


def accuracy_data(correct: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    return samples({(0, 0): correct, (1, 0): total - correct}, 10)


# ---------------------------------------------------------------- Clopper-Pearson


def binomial_at_least(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


CASES = [(1, 10, 0.95), (5, 10, 0.95), (9, 10, 0.9), (3, 20, 0.99), (17, 40, 0.8), (29, 30, 0.95), (1, 1, 0.5)]


@pytest.mark.parametrize(("k", "n", "confidence"), CASES)
def test_the_bounds_solve_the_exact_binomial_tail_equations(k, n, confidence):
    lower, upper = clopper_pearson(k, n, confidence)
    assert binomial_at_least(k, n, lower) == pytest.approx(1 - confidence, abs=1e-9)
    if k < n:
        assert 1 - binomial_at_least(k + 1, n, upper) == pytest.approx(1 - confidence, abs=1e-9)
    assert lower <= k / n <= upper


def test_known_values_and_closed_forms():
    assert clopper_pearson(5, 10, 0.975) == pytest.approx((0.1870860, 0.8129140), abs=1e-7)
    assert clopper_pearson(0, 10, 0.95) == pytest.approx((0.0, 1 - 0.05 ** (1 / 10)), abs=1e-11)
    assert clopper_pearson(10, 10, 0.95) == pytest.approx((0.05 ** (1 / 10), 1.0), abs=1e-11)
    assert clopper_pearson(0, 1, 0.95) == pytest.approx((0.0, 0.95), abs=1e-11)


def test_large_samples_agree_with_the_normal_approximation():
    lower, upper = clopper_pearson(90_000, 100_000, 0.95)
    half_width = 1.6449 * math.sqrt(0.9 * 0.1 / 100_000)
    assert lower == pytest.approx(0.9 - half_width, abs=1e-4)
    assert upper == pytest.approx(0.9 + half_width, abs=1e-4)


@pytest.mark.parametrize(("k", "n", "confidence"), [*CASES, (0, 7, 0.95), (7, 7, 0.95), (400, 1000, 0.99)])
def test_lower_and_upper_bounds_are_symmetric(k, n, confidence):
    lower, _ = clopper_pearson(k, n, confidence)
    _, mirrored_upper = clopper_pearson(n - k, n, confidence)
    assert lower == pytest.approx(1 - mirrored_upper, abs=1e-11)


def test_bounds_grow_with_successes_and_widen_with_confidence():
    bounds = [clopper_pearson(k, 25, 0.95) for k in range(26)]
    lowers, uppers = [b[0] for b in bounds], [b[1] for b in bounds]
    assert lowers == sorted(lowers) and len(set(lowers)) == 26
    assert uppers == sorted(uppers) and len(set(uppers)) == 26
    widths = [clopper_pearson(12, 25, c) for c in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)]
    assert all(a[0] > b[0] and a[1] < b[1] for a, b in itertools.pairwise(widths))


def test_the_incomplete_beta_matches_closed_forms():
    for x in (1e-6, 0.1, 0.37, 0.5, 0.9, 1 - 1e-6):
        assert regularized_incomplete_beta(x, 1, 1) == pytest.approx(x, rel=1e-12)
        assert regularized_incomplete_beta(x, 3, 1) == pytest.approx(x**3, rel=1e-12)
        assert regularized_incomplete_beta(x, 1, 4) == pytest.approx(1 - (1 - x) ** 4, rel=1e-12)


@pytest.mark.parametrize(
    ("k", "n", "confidence", "message"),
    [(0, 0, 0.95, "at least one trial"), (-1, 5, 0.95, "successes"), (6, 5, 0.95, "successes"),
     (1, 5, 1.0, "confidence"), (1, 5, 0.0, "confidence")],
)
def test_invalid_counts_are_errors(k, n, confidence, message):
    with pytest.raises(ValueError, match=message):
        clopper_pearson(k, n, confidence)


# ---------------------------------------------------------------- statistics on known confusions


def test_accuracy_reports_the_estimate_the_counts_and_the_bound(tmp_path):
    loaded = load(tmp_path, "accuracy(y) >= 0.4", "accuracy(y) >= 0.38")
    scores, targets = accuracy_data(410, 1000)
    lower, _ = clopper_pearson(410, 1000, 0.95)
    failed = evaluate(loaded, "c0", scores, targets)
    assert failed.verdict == "fail"
    assert failed.values == (("accuracy(y)", f"0.4100 (410/1000; 95% lower bound {lower:.4f})"),)
    assert failed.failing == ("accuracy(y)",)
    assert "accuracy(y)" in failed.reason
    passed = evaluate(loaded, "c1", scores, targets)
    assert (passed.verdict, passed.failing) == ("pass", ())


def test_recall_and_precision_count_their_own_conditions(tmp_path):
    loaded = load(tmp_path, "recall(y, 0) >= 0.7 and precision(y, 0) >= 0.7 and precision(y, 2) <= 0.5")
    scores, targets = samples({(0, 0): 800, (1, 0): 200, (0, 2): 300, (2, 2): 100, (2, 3): 50}, 10)
    result = evaluate(loaded, "c0", scores, targets)
    values = dict(result.values)
    assert list(values) == ["recall(y, 0)", "precision(y, 0)", "precision(y, 2)"]
    assert values["recall(y, 0)"].startswith("0.8000 (800/1000; 95% lower bound")
    assert values["precision(y, 0)"].startswith("0.7273 (800/1100; 95% lower bound")
    assert values["precision(y, 2)"].startswith("0.6667 (100/150; 95% upper bound")
    assert result.verdict == "fail"
    assert result.failing == ("precision(y, 2)",)


# the data: 90 of 100 correct; at 95% the lower bound is about 0.836 and the upper about 0.946
BOUND_RULE = [
    ("accuracy(y) >= 0.85", "fail"),
    ("accuracy(y) >= 0.83", "pass"),
    ("accuracy(y) > 0.83", "pass"),
    ("0.85 <= accuracy(y)", "fail"),
    ("0.83 < accuracy(y)", "pass"),
    ("accuracy(y) <= 0.94", "fail"),
    ("accuracy(y) <= 0.95", "pass"),
    ("accuracy(y) < 0.95", "pass"),
    ("0.94 >= accuracy(y)", "fail"),
    ("not (accuracy(y) < 0.85)", "fail"),
    ("not (accuracy(y) < 0.83)", "pass"),
    ("not (accuracy(y) > 0.94)", "fail"),
    ("not (accuracy(y) >= 0.95)", "pass"),
    ("0.8 <= accuracy(y) <= 0.95", "pass"),
    ("0.8 <= accuracy(y) <= 0.94", "fail"),
    ("not (0.85 <= accuracy(y) <= 0.99)", "fail"),
    ("accuracy(y) >= 0.85 or accuracy(y) <= 0.95", "pass"),
    # `a implies b` is `not a or b`: it holds when the data show `a` false, or show `b`
    ("accuracy(y) >= 0.99 implies accuracy(y) >= 0.995", "pass"),
    ("accuracy(y) <= 0.5 implies accuracy(y) >= 0.99", "pass"),
    ("accuracy(y) >= 0.85 implies accuracy(y) >= 0.99", "fail"),
    ("accuracy(y) >= 0.83 implies accuracy(y) >= 0.8", "pass"),
    ("not (accuracy(y) >= 0.83 implies accuracy(y) >= 0.99)", "pass"),
    ("accuracy(y) >= 0.5 * 1.6 + 0.05", "fail"),
    ("accuracy(y) >= -(-0.83)", "pass"),
]


@pytest.mark.parametrize(("clause", "verdict"), BOUND_RULE)
def test_the_bound_on_the_demanded_side_must_clear_the_threshold(tmp_path, clause, verdict):
    lower, upper = clopper_pearson(90, 100, 0.95)
    assert 0.83 < lower < 0.85 and 0.94 < upper < 0.95
    loaded = load(tmp_path, clause)
    assert evaluate(loaded, "c0", *accuracy_data(90, 100)).verdict == verdict


def test_a_chain_reports_both_bounds_it_used(tmp_path):
    loaded = load(tmp_path, "0.8 <= accuracy(y) <= 0.95")
    lower, upper = clopper_pearson(90, 100, 0.95)
    result = evaluate(loaded, "c0", *accuracy_data(90, 100))
    assert result.values == (
        ("accuracy(y)", f"0.9000 (90/100; 95% lower bound {lower:.4f}, 95% upper bound {upper:.4f})"),
    )


def test_the_clause_confidence_sets_the_bound(tmp_path):
    path = tmp_path / "spec.mdl"
    path.write_text(
        SPEC.format(labels="Digit", clauses="  ensures c0: accuracy(y) >= 0.83 on digits with confidence 0.999"),
        encoding="utf-8",
    )
    module = mdl_lang.load(path).component("m")
    output = module.interface.port("y").type.dims[-1].labels
    result = evaluate_statistical(module.all_clauses[0], *accuracy_data(90, 100), output, output)
    lower, _ = clopper_pearson(90, 100, 0.999)
    assert result.verdict == "fail"
    assert result.values[0][1] == f"0.9000 (90/100; 99.9% lower bound {lower:.4f})"


def per_label_recall(hits: dict[int, int], per_label: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Every digit `per_label` times; digit l is predicted right `hits.get(l, per_label)` times, else as l + 1."""
    counts: dict[tuple[int, int], int] = {}
    for label in range(10):
        right = hits.get(label, per_label)
        counts[(label, label)] = right
        if right < per_label:
            counts[((label + 1) % 10, label)] = per_label - right
    return samples(counts, 10)


def test_forall_is_unrolled_and_names_the_failing_labels(tmp_path):
    loaded = load(tmp_path, "forall l in Digit: recall(y, l) >= 0.8", "exists l in Digit: recall(y, l) >= 0.8")
    scores, targets = per_label_recall({3: 60, 7: 75})
    result = evaluate(loaded, "c0", scores, targets)
    assert result.verdict == "fail"
    assert [name for name, _ in result.values] == [f"recall(y, {label})" for label in range(10)]
    assert result.failing == ("recall(y, 3)", "recall(y, 7)")
    assert "recall(y, 3), recall(y, 7)" in result.reason
    assert evaluate(loaded, "c1", scores, targets).verdict == "pass"


def test_negation_turns_forall_into_exists(tmp_path):
    loaded = load(
        tmp_path, "not (forall l in Digit: recall(y, l) < 0.8)", "not (exists l in Digit: recall(y, l) < 0.9)",
    )
    scores, targets = per_label_recall({3: 60, 7: 75})
    assert evaluate(loaded, "c0", scores, targets).verdict == "pass"
    result = evaluate(loaded, "c1", scores, targets)
    assert result.verdict == "fail"
    assert result.failing == ("recall(y, 3)", "recall(y, 7)")


def test_data_labels_outside_a_binary_module_count_as_other(tmp_path):
    loaded = load(
        tmp_path, "recall(y, 5) >= 0.95 and recall(y, other) >= 0.95", "precision(y, 5) >= 0.95", labels="Five",
    )
    targets = torch.arange(10).repeat_interleave(100)
    predicted_five = (targets == 5) | (torch.arange(1000) % 100 == 0)  # and one sample of every other digit
    scores = torch.stack([predicted_five.float(), (~predicted_five).float()], dim=1)
    result = evaluate(loaded, "c0", scores, targets)
    values = dict(result.values)
    assert values["recall(y, 5)"].startswith("1.0000 (100/100;")
    assert values["recall(y, other)"].startswith("0.9900 (891/900;")
    assert result.verdict == "pass"
    precision = evaluate(loaded, "c1", scores, targets)
    assert precision.verdict == "fail"
    assert dict(precision.values)["precision(y, 5)"].startswith("0.9174 (100/109;")


def test_a_data_label_the_module_cannot_score_is_an_error(tmp_path):
    loaded = load(tmp_path, "accuracy(y) >= 0.5")
    scores, targets = accuracy_data(90, 100)
    with pytest.raises(ValueError, match=r"data label 10 is not in the output labels"):
        evaluate_statistical(loaded.clauses["c0"], scores, targets, loaded.output_labels, loaded.label_sets["Wide"])


# ---------------------------------------------------------------- unknown and unsupported


def test_a_statistic_without_trials_is_unknown(tmp_path):
    loaded = load(tmp_path, "recall(y, 9) >= 0.5", "precision(y, 9) <= 0.5", "forall l in Digit: recall(y, l) >= 0.5")
    scores, targets = samples({(0, 0): 50, (1, 1): 50}, 10)
    recall = evaluate(loaded, "c0", scores, targets)
    assert recall.verdict == "unknown"
    assert recall.values == (("recall(y, 9)", "undefined (0/0: label 9 does not occur in the data)"),)
    assert "label 9 does not occur in the data" in recall.reason
    precision = evaluate(loaded, "c1", scores, targets)
    assert precision.verdict == "unknown"
    assert "never predicts 9" in precision.reason
    assert evaluate(loaded, "c2", scores, targets).verdict == "unknown"


def test_an_unknown_part_does_not_hide_a_certain_failure(tmp_path):
    loaded = load(tmp_path, "recall(y, 9) >= 0.5 and accuracy(y) >= 0.99", "recall(y, 9) >= 0.5 or accuracy(y) >= 0.4")
    scores, targets = samples({(0, 0): 50, (1, 0): 50}, 10)
    assert evaluate(loaded, "c0", scores, targets).verdict == "fail"
    assert evaluate(loaded, "c1", scores, targets).verdict == "pass"


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ("accuracy(y) == 0.9", "cannot be decided by a confidence bound"),
        ("accuracy(y) == 0.9 within 0.01", "within"),
        ("1 - accuracy(y) <= 0.1", "arithmetic on a statistic"),
        ("recall(y, 1) >= recall(y, 2)", "two statistics"),
        ("max(accuracy(y), 0.2) >= 0.5", "Call"),
        ("(accuracy(y) >= 0.9) == (recall(y, 1) >= 0.2)", "Compare"),
    ],
)
def test_forms_the_bound_rule_cannot_decide_are_unsupported(tmp_path, clause, message):
    loaded = load(tmp_path, clause)
    with pytest.raises(UnsupportedStatistic, match=message):
        evaluate(loaded, "c0", *accuracy_data(90, 100))


def test_a_per_sample_clause_is_not_statistical(tmp_path):
    path = tmp_path / "spec.mdl"
    path.write_text(SPEC.format(labels="Digit", clauses="  ensures c0: finite(y)"), encoding="utf-8")
    module = mdl_lang.load(path).component("m")
    output = module.interface.port("y").type.dims[-1].labels
    with pytest.raises(UnsupportedStatistic, match="per-sample, not statistical"):
        evaluate_statistical(module.all_clauses[0], *accuracy_data(90, 100), output, output)


def test_tensors_of_the_wrong_shape_are_errors(tmp_path):
    loaded = load(tmp_path, "accuracy(y) >= 0.5")
    scores, targets = accuracy_data(90, 100)
    with pytest.raises(ValueError, match=r"scores must have shape \[N, 10\]"):
        evaluate(loaded, "c0", scores[:, :5], targets)
    with pytest.raises(ValueError, match="targets must be integer positions"):
        evaluate(loaded, "c0", scores, targets.float())
    with pytest.raises(ValueError, match="positions in the data labels"):
        evaluate(loaded, "c0", scores, targets + 10)
