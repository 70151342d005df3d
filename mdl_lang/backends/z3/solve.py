"""One spec-level question to Z3, and its answer: proved, refuted with a counter-model, or unknown with why.

A `Query` is a hashable description (tensors, premises, one goal), so that the
checks can cache answers: 144 identical compositions cost one solver call. The
goal is an implication (`premises imply goal`: proved when premises and not-goal
are unsatisfiable) or, without a goal, a satisfiability question (vacuity).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

import z3

from mdl_lang import ir
from mdl_lang.backends.z3.encode import DEFAULT_ELEMENT_LIMIT, Encoder, Unsupported, Value

DEFAULT_TIMEOUT_MS = 2000
SHOWN_VALUES = 6  # values of a counter-model named in one message


@dataclass(frozen=True)
class TensorVar:
    """One tensor of the query: how counter-models name it, its sample shape and element kind.

    `free` names the free dims (nothing binds them) its shape rests on: `shape` then holds the size
    tried for them, and an answer that reads the tensor holds for that size only."""

    name: str
    shape: tuple[int, ...]
    element: ir.Element
    axes: tuple[ir.LabelSet | None, ...] = ()
    free: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fact:
    """A clause over some of the query's tensors (`ports` maps its port names to tensor positions),
    or, with `expr` None, the value range `value_range` of tensor `tensor`."""

    expr: ir.Expr | None
    ports: tuple[tuple[str, int], ...] = ()
    tensor: int = -1
    value_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Query:
    tensors: tuple[TensorVar, ...]
    premises: tuple[Fact, ...]
    goal: Fact | None


class Answer(str, Enum):
    PROVED = "proved"
    REFUTED = "refuted"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Outcome:
    """For an implication: proved / refuted (with `model`) / unknown (with `reason`).
    For a satisfiability question: proved means satisfiable (with `model`), refuted unsatisfiable.
    `free` names the free dims an unknown rests on (the answer holds only for the size tried)."""

    answer: Answer
    reason: str = ""
    model: tuple[tuple[str, str], ...] = ()
    free: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    element_limit: int = DEFAULT_ELEMENT_LIMIT


class Prover:
    """Answers queries, each once: the cache is keyed by the query (IR compares without spans)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._answers: dict[tuple[Query, bool], Outcome] = {}
        self.solver_calls = 0

    def answer(self, query: Query, every_size: bool = False) -> Outcome:
        """The answer with free dims at the size tried, or, with `every_size`, with each tensor of a free
        size summarised for all its sizes (an unsatisfiable query is then a proof for every size)."""
        key = (query, every_size)
        if key not in self._answers:
            self._answers[key] = self._solve(query, every_size)
        return self._answers[key]

    def _solve(self, query: Query, every_size: bool) -> Outcome:
        encoder = Encoder(self.settings.element_limit)
        tensors = _LazyTensors(encoder, query.tensors, every_size)
        premises = []
        for fact in query.premises:
            try:
                premises.append(_encode(encoder, tensors, fact))
            except Unsupported as error:
                # Dropping a premise only weakens it: a proof still holds, a model proves nothing.
                encoder.relaxed.add(f"a premise is left out ({error})")
        goal = None
        if query.goal is not None:
            try:
                goal = _encode(encoder, tensors, query.goal)
            except Unsupported as error:
                return Outcome(Answer.UNKNOWN, str(error))
        solver = z3.Solver()
        solver.set("timeout", self.settings.timeout_ms)
        solver.add(*encoder.facts, *premises)
        if goal is not None:
            solver.add(z3.Not(goal))
        self.solver_calls += 1
        status = solver.check()
        if status == z3.unknown:
            return Outcome(Answer.UNKNOWN, _unknown_reason(solver.reason_unknown(), encoder))
        if query.goal is None:
            if status == z3.unsat:
                return Outcome(Answer.REFUTED)
            if encoder.relaxed:
                return Outcome(Answer.UNKNOWN, "; ".join(sorted(encoder.relaxed)))
            return Outcome(Answer.PROVED, model=_shown_model(solver.model(), encoder, None))
        if status == z3.unsat:
            return Outcome(Answer.PROVED)
        if encoder.relaxed:
            return Outcome(Answer.UNKNOWN, "; ".join(sorted(encoder.relaxed)))
        return Outcome(Answer.REFUTED, model=_shown_model(solver.model(), encoder, goal))


class _LazyTensors:
    """The query's tensors, given variables only when a clause reads them: a large input that no clause
    names costs nothing and makes nothing `unknown`."""

    def __init__(self, encoder: Encoder, specs: tuple[TensorVar, ...], every_size: bool) -> None:
        self.encoder = encoder
        self.specs = specs
        self.every_size = every_size
        self.values: dict[int, Value] = {}

    def __getitem__(self, position: int) -> Value:
        if position not in self.values:
            spec = self.specs[position]
            free = spec.free if self.every_size else ()
            self.values[position] = self.encoder.tensor(spec.name, spec.shape, spec.element, spec.axes, free)
        return self.values[position]


class _Ports(Mapping[str, Value]):
    """A clause's port names, mapped to the query's tensors lazily."""

    def __init__(self, tensors: _LazyTensors, ports: tuple[tuple[str, int], ...]) -> None:
        self.tensors = tensors
        self.positions = dict(ports)

    def __getitem__(self, name: str) -> Value:
        return self.tensors[self.positions[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def _encode(encoder: Encoder, tensors: _LazyTensors, fact: Fact) -> z3.BoolRef:
    if fact.expr is None:
        low, high = fact.value_range  # type: ignore[misc]
        return encoder.in_range(tensors[fact.tensor], low, high)
    encoder.ports = _Ports(tensors, fact.ports)
    return encoder.clause(fact.expr)


def _unknown_reason(reason: str, encoder: Encoder) -> str:
    if reason in ("timeout", "canceled"):
        return "timeout"
    if encoder.nonlinear:
        return "non-linear: " + ", ".join(sorted(encoder.nonlinear))
    if encoder.relaxed:
        return "; ".join(sorted(encoder.relaxed))
    return reason


def _shown_model(model: z3.ModelRef, encoder: Encoder, goal: z3.BoolRef | None) -> tuple[tuple[str, str], ...]:
    """The values of the port elements the goal reads (all of them without a goal), named as the spec does."""
    wanted = _constants(_first_broken(goal, model)) & set(encoder.shown) if goal is not None else set()
    shown = []
    for declaration in model.decls():
        key = declaration.name()
        if key not in encoder.shown or (wanted and key not in wanted):
            continue
        shown.append((encoder.shown[key], _value_text(model[declaration])))
    order = {name: position for position, name in enumerate(encoder.shown.values())}
    shown.sort(key=lambda item: order[item[0]])
    return tuple(shown)


def _first_broken(goal: z3.BoolRef, model: z3.ModelRef) -> z3.BoolRef:
    """The first conjunct of the goal the model breaks: a counter-model names the elements that break it."""
    while z3.is_and(goal):
        broken = [part for part in goal.children() if z3.is_false(model.eval(part, model_completion=True))]
        if not broken:
            break
        goal = broken[0]
    return goal


def verb(model: tuple[tuple[str, str], ...], singular: str, plural: str) -> str:
    """`satisfies` for one named value, `satisfy` for several."""
    return singular if len(model) <= 1 else plural


def _constants(formula: z3.ExprRef) -> set[str]:
    """The names of the variables a formula reads."""
    found: set[str] = set()
    seen: set[int] = set()
    stack = [formula]
    while stack:
        expr = stack.pop()
        if expr.get_id() in seen:
            continue
        seen.add(expr.get_id())
        if z3.is_const(expr) and expr.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            found.add(expr.decl().name())
        stack.extend(expr.children())
    return found


def _value_text(value: z3.ExprRef) -> str:
    if z3.is_true(value) or z3.is_false(value):
        return "true" if z3.is_true(value) else "false"
    if z3.is_int_value(value):
        return str(value.as_long())
    if z3.is_rational_value(value):
        number = float(value.as_fraction())
        return str(int(number)) if number.is_integer() else f"{number:.6g}"
    if z3.is_algebraic_value(value):
        return f"{float(value.approx(8).as_fraction()):.6g}"
    return str(value)


def render_model(model: tuple[tuple[str, str], ...]) -> str:
    """`x[2] = -0.5, x[0] = 1` (and how many more)."""
    parts = [f"{name} = {value}" for name, value in model[:SHOWN_VALUES]]
    if len(model) > SHOWN_VALUES:
        parts.append(f"and {len(model) - SHOWN_VALUES} more")
    return ", ".join(parts) if parts else "any input"


def solve_dims(equations: list[tuple[ir.Dim, ir.Dim]], timeout_ms: int) -> Outcome:
    """Dim equations over the positive integers: proved with a solution, refuted when there is none."""
    names: dict[str, z3.ArithRef] = {}
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    try:
        for left, right in equations:
            solver.add(_dim(left, names) == _dim(right, names))
    except Unsupported as error:
        return Outcome(Answer.UNKNOWN, str(error))
    solver.add(*_positive(names.values()))
    status = solver.check()
    if status == z3.unsat:
        return Outcome(Answer.REFUTED)
    if status == z3.unknown:
        return Outcome(Answer.UNKNOWN, "timeout" if solver.reason_unknown() in ("timeout", "canceled")
                       else "non-linear: " + solver.reason_unknown())
    model = solver.model()
    return Outcome(Answer.PROVED, model=tuple(
        (plain_dims(name), _value_text(model.eval(var, model_completion=True)))
        for name, var in names.items()
    ))


def conflicting_dims(equations: list[tuple[ir.Dim, ir.Dim]], timeout_ms: int) -> tuple[int, ...]:
    """The positions of equations that together have no solution in positive integers (an unsat core,
    in order), or () when they have one or Z3 cannot tell."""
    names: dict[str, z3.ArithRef] = {}
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    markers = []
    try:
        for position, (left, right) in enumerate(equations):
            marker = z3.Bool(f"equation{position}")
            solver.add(z3.Implies(marker, _dim(left, names) == _dim(right, names)))
            markers.append(marker)
    except Unsupported:
        return ()
    solver.add(*_positive(names.values()))
    if solver.check(*markers) != z3.unsat:
        return ()
    core = {str(marker) for marker in solver.unsat_core()}
    return tuple(position for position, marker in enumerate(markers) if str(marker) in core)


# A part's free dim renamed apart for one use of it (`sq#2:S`, the front end's renaming), shown as written (`S`).
_RENAMED_DIM = re.compile(r"[A-Za-z0-9_.]+#\d+:")


def plain_dims(text: str) -> str:
    """Text about renamed dims as the spec writes them: `16 == sq#2:S * sq#2:S` is `16 == S * S`."""
    return _RENAMED_DIM.sub("", text)


def _dim(dim: ir.Dim, names: dict[str, z3.ArithRef]) -> z3.ArithRef:
    """A dim as a Z3 integer; each symbolic dim is an unknown, added to `names` (the callers say it is
    positive, inside or outside a quantifier)."""
    match dim:
        case ir.DimConst(value=value):
            return z3.IntVal(value)
        case ir.DimVar(name=name):
            if name not in names:
                names[name] = z3.Int(name)
            return names[name]
        case ir.DimLabels(labels=labels) if not labels.opaque:
            return z3.IntVal(len(labels))
        case ir.DimBinary(op=op, left=left, right=right):
            a, b = _dim(left, names), _dim(right, names)
            return {"+": a + b, "-": a - b, "*": a * b}[op] if op != "//" else a / b
    raise Unsupported(f"the dim `{dim}` has no size to solve for")


def _positive(dims: Iterable[z3.ArithRef]) -> list[z3.BoolRef]:
    """Every dim is a positive integer."""
    return [dim >= 1 for dim in dims]


def dims_follow(given: list[tuple[ir.Dim, ir.Dim]], wanted: list[tuple[ir.Dim, ir.Dim]],
                chosen: frozenset[str], timeout_ms: int) -> tuple[Outcome, int | None]:
    """Whether for all positive sizes of the dims that solve `given`, some positive sizes of the dims named
    in `chosen` solve `wanted` as well. (Dims in `chosen` must not occur in `given`.)

    Proved; refuted with sizes of the other dims (named as `part_dims` shows them) that leave `wanted`
    without a solution, and, when nothing is `chosen`, the position of the first equation of `wanted` they
    break; or unknown: quantified non-linear integer arithmetic is undecidable, and Z3 says so, never guesses."""
    names: dict[str, z3.ArithRef] = {}
    try:
        premises = [_dim(left, names) == _dim(right, names) for left, right in given]
        goals = [_dim(left, names) == _dim(right, names) for left, right in wanted]
    except Unsupported as error:
        return Outcome(Answer.UNKNOWN, str(error)), None
    inner = [var for name, var in names.items() if name in chosen]
    outer = [var for name, var in names.items() if name not in chosen]
    unsolved: z3.BoolRef = z3.Not(z3.And(*goals))
    if inner:
        unsolved = z3.ForAll(inner, z3.Implies(z3.And(*_positive(inner)), unsolved))
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    solver.add(*_positive(outer), *premises, unsolved)
    status = solver.check()
    if status == z3.unsat:
        return Outcome(Answer.PROVED), None
    if status == z3.unknown:
        return Outcome(Answer.UNKNOWN, "timeout" if solver.reason_unknown() in ("timeout", "canceled")
                       else "non-linear: " + solver.reason_unknown()), None
    model = _smallest(solver, outer)
    sizes = tuple((part_dims(str(var)), _value_text(model.eval(var, model_completion=True))) for var in outer)
    broken = None if inner else next(
        (position for position, goal in enumerate(goals) if z3.is_false(model.eval(goal, model_completion=True))),
        None)
    return Outcome(Answer.REFUTED, model=sizes), broken


def _smallest(solver: z3.Solver, dims: list[z3.ArithRef]) -> z3.ModelRef:
    """A model of a satisfiable solver with each dim in turn as small as Z3 can show it to be (a binary search
    below the size of the model before): a counter-model that reads `S = 1`, whatever the order of Z3's
    search. Each bound added was satisfiable when added; should Z3 time out on the way, the last model
    found stands."""
    model = solver.model()
    for dim in dims:
        low, high = 1, model.eval(dim, model_completion=True).as_long()
        while low < high:
            middle = (low + high) // 2
            if solver.check(dim <= middle) == z3.sat:
                high = middle
            else:
                low = middle + 1
        solver.add(dim <= high)
        if solver.check() != z3.sat:
            break
        model = solver.model()
    return model


def part_dims(text: str) -> str:
    """Text about renamed dims with the part they belong to: `a#1:T == S` is `a.T == S`, so that a part's
    `T` is told apart from the interface's."""
    return _RENAMED_DIM.sub(lambda match: match.group(0).split("#")[0] + ".", text)
