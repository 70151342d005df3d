"""Statistical clauses over a data set, decided by exact one-sided Clopper-Pearson bounds.

Accuracy, recall and precision are binomial proportions of the module's
predictions (`argmax` of its scores) over a labelled data set. A comparison
`stat >= p` holds only when the lower confidence bound of `stat` clears `p`,
and `stat <= p` only when the upper bound does: a clause passes when the data
demonstrate it at the clause's confidence, not when the point estimate happens
to lie on the right side. Negations are pushed onto the comparisons first, so
`not (stat < p)` is held to the same standard as `stat >= p`.

A statistic without trials cannot be bounded; its comparisons are `unknown`
and the clause's verdict follows Kleene's three-valued logic (an `and` with a
failing part still fails). The bounds are computed here from the regularized
incomplete beta function, so scipy is not needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mdl_lang import ir

BISECTION_TOLERANCE = 1e-12
CONTINUED_FRACTION_TOLERANCE = 1e-15
CONTINUED_FRACTION_MAX_TERMS = 100_000
TINY = 1e-300

Truth = bool | None
"""A three-valued truth: True, False, or None for unknown."""


class UnsupportedStatistic(Exception):
    """A node or form the statistical backend cannot decide; the message says which and why."""


@dataclass(frozen=True)
class StatisticalVerdict:
    """The verdict on one statistical clause, with every statistic it measured.

    `values` pairs each statistic's name with its estimate, counts and the
    bounds used, in evaluation order. `failing` names the statistics whose
    bound did not clear its threshold in some comparison (possibly inside a
    disjunction that still held).
    """

    verdict: str
    values: tuple[tuple[str, str], ...]
    failing: tuple[str, ...]
    reason: str


# ---------------------------------------------------------------- Clopper-Pearson


def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """The one-sided exact lower and upper bounds of a binomial proportion at `confidence`.

    The lower bound is the largest p with P(X >= k | p) <= 1 - c, the
    (1 - c)-quantile of Beta(k, n - k + 1); the upper bound is the smallest p
    with P(X <= k | p) <= 1 - c, the c-quantile of Beta(k + 1, n - k). Each is
    rounded outward by at most 1e-12, so neither claims more than the data show.
    """
    if trials < 1:
        raise ValueError(f"a proportion needs at least one trial, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    lower = 0.0 if successes == 0 else _beta_quantile(1 - confidence, successes, trials - successes + 1)[0]
    upper = 1.0 if successes == trials else _beta_quantile(confidence, successes + 1, trials - successes)[1]
    return lower, upper


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = P(Beta(a, b) <= x), for a, b > 0.

    The continued fraction converges fast for x < (a + 1) / (a + b + 2); above
    that point the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) moves x below it.
    """
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - regularized_incomplete_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    return math.exp(log_front) / (a * _beta_continued_fraction(x, a, b))


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The denominator 1 + d1/(1 + d2/(1 + ...)) of I_x(a, b), by the modified Lentz method.

    With d_{2m+1} = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)) and
    d_{2m} = m(b-m)x / ((a+2m-1)(a+2m)) (DLMF 8.17.22). Lentz's method keeps
    two ratios instead of numerators and denominators that overflow, and
    replaces an exact zero by a tiny number so no step divides by it.
    """
    value, numerator_ratio, denominator_ratio = 1.0, 1.0, 0.0
    for term in range(1, CONTINUED_FRACTION_MAX_TERMS):
        coefficient = _continued_fraction_coefficient(term, x, a, b)
        denominator_ratio = 1.0 + coefficient * denominator_ratio
        numerator_ratio = 1.0 + coefficient / numerator_ratio
        denominator_ratio = 1.0 / (denominator_ratio if abs(denominator_ratio) > TINY else TINY)
        numerator_ratio = numerator_ratio if abs(numerator_ratio) > TINY else TINY
        step = numerator_ratio * denominator_ratio
        value *= step
        if abs(step - 1.0) < CONTINUED_FRACTION_TOLERANCE:
            return value
    raise ArithmeticError(f"the incomplete beta fraction did not converge for x={x}, a={a}, b={b}")


def _continued_fraction_coefficient(term: int, x: float, a: float, b: float) -> float:
    """d_term of the incomplete beta continued fraction (odd and even terms differ)."""
    if term % 2:
        m = (term - 1) // 2
        return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
    m = term // 2
    return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))


def _beta_quantile(probability: float, a: float, b: float) -> tuple[float, float]:
    """A bracket [low, high] narrower than 1e-12 around the x with I_x(a, b) = probability.

    I_x is increasing in x, so bisection cannot fail; returning the bracket
    lets the caller round each bound outward.
    """
    low, high = 0.0, 1.0
    while high - low > BISECTION_TOLERANCE:
        middle = (low + high) / 2
        if regularized_incomplete_beta(middle, a, b) < probability:
            low = middle
        else:
            high = middle
    return low, high


# ---------------------------------------------------------------- counts


@dataclass(frozen=True)
class Confusion:
    """Per-label counts of one module's predictions on one data set, in output-label positions.

    `correct[i]` counts samples predicted and labelled i, `predicted[i]` those
    predicted i, `actual[i]` those labelled i (after mapping data labels the
    output does not score to `other`).
    """

    labels: ir.LabelSet
    correct: tuple[int, ...]
    predicted: tuple[int, ...]
    actual: tuple[int, ...]

    @property
    def samples(self) -> int:
        return sum(self.actual)


def confusion(
    scores: torch.Tensor, targets: torch.Tensor, output_labels: ir.LabelSet, data_labels: ir.LabelSet,
) -> Confusion:
    """Count predictions against targets in one `bincount`: no Python loop over samples."""
    size = len(output_labels)
    if scores.dim() != 2 or scores.shape[1] != size:
        raise ValueError(
            f"scores must have shape [N, {size}] for the labels {output_labels.describe()}, got {list(scores.shape)}"
        )
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0] or targets.is_floating_point():
        raise ValueError(
            f"targets must be integer positions of shape [{scores.shape[0]}], "
            f"got {targets.dtype} {list(targets.shape)}"
        )
    if targets.numel() and not 0 <= int(targets.min()) <= int(targets.max()) < len(data_labels):
        raise ValueError(
            f"targets must be positions in the data labels {data_labels.describe()}, in [0, {len(data_labels)})"
        )
    table = torch.tensor(output_positions(output_labels, data_labels), device=targets.device)
    actual = table[targets.long()]
    predicted = scores.argmax(dim=1).to(targets.device)
    counts = torch.bincount(predicted * size + actual, minlength=size * size).reshape(size, size)
    return Confusion(
        output_labels,
        tuple(counts.diagonal().tolist()),
        tuple(counts.sum(dim=1).tolist()),
        tuple(counts.sum(dim=0).tolist()),
    )


def output_positions(output_labels: ir.LabelSet, data_labels: ir.LabelSet) -> list[int]:
    """For each data label, its position among the output labels; labels the output lacks count as `other`."""
    positions = []
    for label in data_labels.labels:
        if label in output_labels:
            positions.append(output_labels.position(label))
        elif output_labels.has_other:
            positions.append(output_labels.position(ir.OTHER))
        else:
            raise ValueError(
                f"data label {ir.format_label(label)} is not in the output labels {output_labels.describe()}, "
                "which have no `other` to count it as"
            )
    return positions


@dataclass(frozen=True)
class Proportion:
    """A statistic as successes out of trials; `empty_reason` says why there are no trials."""

    successes: int
    trials: int
    empty_reason: str


def proportion(counts: Confusion, metric: str, label: ir.Label | None) -> Proportion:
    """The counts behind a statistic.

    accuracy = P(pred == target), recall(l) = P(pred == l | target == l),
    precision(l) = P(target == l | pred == l).
    """
    if metric == "accuracy":
        return Proportion(sum(counts.correct), counts.samples, "the data set is empty")
    if label not in counts.labels:
        raise UnsupportedStatistic(f"label {ir.format_label(label)} is not among the output labels")
    position = counts.labels.position(label)
    shown, correct = ir.format_label(label), counts.correct[position]
    if metric == "recall":
        return Proportion(correct, counts.actual[position], f"label {shown} does not occur in the data")
    if metric == "precision":
        return Proportion(correct, counts.predicted[position], f"the module never predicts {shown}")
    raise UnsupportedStatistic(f"`{metric}` is not a statistic this backend measures")


# ---------------------------------------------------------------- evaluation


def evaluate_statistical(
    clause: ir.Clause,
    scores: torch.Tensor,
    targets: torch.Tensor,
    output_labels: ir.LabelSet,
    data_labels: ir.LabelSet,
) -> StatisticalVerdict:
    """Decide a statistical clause on a module's scores for a whole data set.

    `scores` is [N, |output_labels|], `targets` the data labels as int
    positions in `data_labels`. Raises UnsupportedStatistic for forms the
    bound rule cannot decide, ValueError for tensors that do not fit.
    """
    if clause.fragment is not ir.Fragment.STATISTICAL:
        raise UnsupportedStatistic(f"clause `{clause.name}` is {clause.fragment.value}, not statistical")
    outputs = {node.output for node in ir.walk(clause.expr) if isinstance(node, ir.Statistic)}
    if len(outputs) > 1:
        raise UnsupportedStatistic(
            f"clause `{clause.name}` measures several outputs ({', '.join(sorted(outputs))}); one score tensor is given"
        )
    evaluator = _Evaluator(confusion(scores, targets, output_labels, data_labels), clause.confidence)
    truth = evaluator.truth(clause.expr, negated=False)
    return evaluator.verdict(truth)


@dataclass
class _Measured:
    """A statistic measured once per evaluation, and which of its bounds the comparisons used."""

    proportion: Proportion
    bounds: tuple[float, float] | None
    sides: list[str] = field(default_factory=list)


_NEGATED = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!=", "!=": "=="}
_MIRRORED = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "==": "==", "!=": "!="}



class _Evaluator:
    """Evaluates one clause's expression in three-valued logic; one `truth_<Node>` per boolean node kind.

    `negated` carries a pending `not` down to the comparisons, where it flips
    the operator (and with it the bound that must clear the threshold).
    """

    def __init__(self, counts: Confusion, confidence: float) -> None:
        self._counts = counts
        self._confidence = confidence
        self._labels: dict[str, ir.Label] = {}
        self._measured: dict[str, _Measured] = {}
        self._failing: dict[str, None] = {}

    def truth(self, expr: ir.Expr, negated: bool) -> Truth:
        handler = getattr(self, f"truth_{type(expr).__name__}", None)
        if handler is None:
            raise UnsupportedStatistic(f"a statistical clause cannot decide {type(expr).__name__} nodes")
        return handler(expr, negated)

    def truth_Not(self, expr: ir.Not, negated: bool) -> Truth:
        return self.truth(expr.operand, not negated)

    def truth_Logic(self, expr: ir.Logic, negated: bool) -> Truth:
        if expr.op == "implies":
            left = self.truth(expr.left, not negated)
            right = self.truth(expr.right, negated)
            return _all((left, right)) if negated else _any((left, right))
        if expr.op not in ("and", "or"):
            raise UnsupportedStatistic(f"`{expr.op}` is not a connective this backend knows")
        parts = (self.truth(expr.left, negated), self.truth(expr.right, negated))
        conjunction = (expr.op == "and") != negated
        return _all(parts) if conjunction else _any(parts)

    def truth_LabelQuantifier(self, expr: ir.LabelQuantifier, negated: bool) -> Truth:
        """Unrolled over the label set: `forall` is a conjunction, `exists` a disjunction."""
        shadowed = self._labels.get(expr.var)
        parts = []
        for label in expr.labels.labels:
            self._labels[expr.var] = label
            parts.append(self.truth(expr.body, negated))
        if shadowed is None:
            self._labels.pop(expr.var, None)
        else:
            self._labels[expr.var] = shadowed
        conjunction = (expr.quantifier == "forall") != negated
        return _all(parts) if conjunction else _any(parts)

    def truth_Compare(self, expr: ir.Compare, negated: bool) -> Truth:
        """A chain `a op b op c` is the conjunction of its links (a disjunction of negated links under `not`)."""
        if expr.tolerance is not None:
            raise UnsupportedStatistic("`within` has no meaning for a statistic; compare it with a bound instead")
        links = tuple(
            self._link(left, op, right, negated)
            for left, op, right in zip(expr.operands, expr.ops, expr.operands[1:], strict=False)
        )
        return _any(links) if negated else _all(links)

    def _link(self, left: ir.Expr, op: str, right: ir.Expr, negated: bool) -> Truth:
        """One comparison under the bound rule: `>`/`>=` need the lower bound, `<`/`<=` the upper one."""
        if negated:
            op = _NEGATED[op]
        if isinstance(left, ir.Statistic) and isinstance(right, ir.Statistic):
            raise UnsupportedStatistic("a comparison of two statistics has no single bound to test")
        if not isinstance(left, ir.Statistic) and not isinstance(right, ir.Statistic):
            return ir.COMPARISONS[op](self.constant(left), self.constant(right))
        if isinstance(right, ir.Statistic):
            left, right, op = right, left, _MIRRORED[op]
        if op in ("==", "!="):
            raise UnsupportedStatistic(f"`{op}` cannot be decided by a confidence bound; use `>=` or `<=`")
        threshold = self.constant(right)
        name, measured = self.measure(left)
        side = "lower" if op in (">=", ">") else "upper"
        if side not in measured.sides:
            measured.sides.append(side)
        if measured.bounds is None:
            return None
        bound = measured.bounds[0] if side == "lower" else measured.bounds[1]
        holds = ir.COMPARISONS[op](bound, threshold)
        if not holds:
            self._failing[name] = None
        return holds

    def constant(self, expr: ir.Expr) -> float:
        """A sample-independent number; a statistic here would need a bound of a transformed proportion."""
        match expr:
            case ir.Const(value=value) if not isinstance(value, bool):
                return float(value)
            case ir.Neg(operand=operand):
                return -self.constant(operand)
            case ir.Arith(op=op, left=left, right=right) if op in ir.ARITHMETIC:
                return ir.ARITHMETIC[op](self.constant(left), self.constant(right))
            case ir.Statistic():
                raise UnsupportedStatistic(
                    "arithmetic on a statistic is not decided by its bound; compare the statistic itself"
                )
        raise UnsupportedStatistic(f"a statistical clause cannot compute {type(expr).__name__} nodes")

    def measure(self, statistic: ir.Statistic) -> tuple[str, _Measured]:
        """The statistic's counts and bounds, computed once per clause and kept in evaluation order."""
        label = self._label_of(statistic.label)
        name = statistic_name(statistic, label)
        if name not in self._measured:
            counts = proportion(self._counts, statistic.metric, label)
            bounds = (
                clopper_pearson(counts.successes, counts.trials, self._confidence) if counts.trials else None
            )
            self._measured[name] = _Measured(counts, bounds)
        return name, self._measured[name]

    def _label_of(self, expr: ir.Expr | None) -> ir.Label | None:
        if expr is None:
            return None
        if isinstance(expr, ir.LabelConst):
            return expr.label
        if isinstance(expr, ir.VarRef) and expr.name in self._labels:
            return self._labels[expr.name]
        raise UnsupportedStatistic(
            f"a statistic's label must be a label or a quantified label, not {type(expr).__name__}"
        )

    def verdict(self, truth: Truth) -> StatisticalVerdict:
        percent = f"{self._confidence * 100:g}%"
        values = tuple((name, _describe(measured, percent)) for name, measured in self._measured.items())
        failing = tuple(self._failing)
        if truth is None:
            empty = "; ".join(
                f"{name} has no samples ({measured.proportion.empty_reason})"
                for name, measured in self._measured.items() if measured.bounds is None
            )
            return StatisticalVerdict("unknown", values, failing, f"the clause cannot be decided: {empty}")
        if truth:
            reason = f"the {percent} Clopper-Pearson bounds establish the clause on this data"
            return StatisticalVerdict("pass", values, failing, reason)
        if failing:
            reason = f"at {percent} confidence the bound of {', '.join(failing)} does not clear its threshold"
        else:
            reason = "the clause is false on its constants alone"
        return StatisticalVerdict("fail", values, failing, reason)


def statistic_name(statistic: ir.Statistic, label: ir.Label | None) -> str:
    """How reports name a statistic: `accuracy(y)`, `recall(y, 5)`, `precision(y, other)`."""
    if label is None:
        return f"{statistic.metric}({statistic.output})"
    return f"{statistic.metric}({statistic.output}, {ir.format_label(label)})"


def _describe(measured: _Measured, percent: str) -> str:
    counts = measured.proportion
    if measured.bounds is None:
        return f"undefined (0/0: {counts.empty_reason})"
    bounds = ", ".join(
        f"{percent} {side} bound {measured.bounds[0] if side == 'lower' else measured.bounds[1]:.4f}"
        for side in measured.sides
    )
    return f"{counts.successes / counts.trials:.4f} ({counts.successes}/{counts.trials}; {bounds})"


def _all(parts: tuple[Truth, ...] | list[Truth]) -> Truth:
    """Kleene conjunction: false if any part is false, else unknown if any is unknown."""
    if any(part is False for part in parts):
        return False
    return None if any(part is None for part in parts) else True


def _any(parts: tuple[Truth, ...] | list[Truth]) -> Truth:
    """Kleene disjunction: true if any part is true, else unknown if any is unknown."""
    if any(part is True for part in parts):
        return True
    return None if any(part is None for part in parts) else False
