"""VNN-LIB 1.0 properties: a reader into `Query`s and a writer from them.

A VNN-LIB file declares inputs `X_i` and outputs `Y_j` as `Real` constants and asserts a formula
over them; in VNN-COMP that formula is the UNSAFE condition, so the property holds iff it is
unsatisfiable. The reader is a real S-expression parser (comments, nesting, positions): every error
names the line and column it is about. Formulas are `and` / `or` trees over `<=` / `>=` between
linear terms (`+`, `-`, `*` by a constant, `/` of constants, numbers, variables); `<` and `>` are
read as strict constraints (over the outputs; a strict bound on one input is read as its closure). The asserted
conjunction is put in disjunctive normal form; each disjunct's constraints over `X` alone give an
input box (single-variable bounds) plus input constraints (several variables), those over `Y`
alone give an unsafe conjunction, and disjuncts with the same input part share one `Query`.
A constraint that mixes `X` and `Y`, a non-linear term or an unbounded input is an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from mdl_lang.verify.query import LinearConstraint, Query

# A property whose DNF grows past this many disjuncts is refused rather than expanded.
MAX_DISJUNCTS = 100_000
# Commands that carry no meaning for the property; SMT-LIB files produced by other tools end with them.
IGNORED_COMMANDS = frozenset({"check-sat", "get-model", "exit", "set-logic", "set-info", "set-option"})
_VARIABLE = re.compile(r"([XY])_(0|[1-9][0-9]*)\Z")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")


class VnnlibError(Exception):
    """A VNN-LIB file this reader cannot take, located at `file:line:column`."""

    def __init__(self, message: str, line: int, column: int, file: str = "<vnnlib>") -> None:
        super().__init__(f"{file}:{line}:{column}: {message}")
        self.reason = message
        self.line = line
        self.column = column
        self.file = file


# ---------------------------------------------------------------- S-expressions


@dataclass(frozen=True)
class Atom:
    """A symbol or number as written, with the position of its first character."""

    text: str
    line: int
    column: int


@dataclass(frozen=True)
class SList:
    """A parenthesised list, positioned at its `(`."""

    items: tuple[Atom | SList, ...]
    line: int
    column: int


SExpr = Atom | SList


def parse_sexprs(text: str, file: str = "<vnnlib>") -> list[SExpr]:
    """Every top-level S-expression of `text`; `;` starts a comment to the end of the line."""
    stack: list[tuple[list[SExpr], int, int]] = [([], 0, 0)]
    line, column, index = 1, 1, 0
    while index < len(text):
        char = text[index]
        if char == "\n":
            line, column, index = line + 1, 1, index + 1
            continue
        if char.isspace():
            column, index = column + 1, index + 1
            continue
        if char == ";":
            end = text.find("\n", index)
            end = len(text) if end < 0 else end
            column, index = column + end - index, end
            continue
        if char == "(":
            stack.append(([], line, column))
            column, index = column + 1, index + 1
            continue
        if char == ")":
            if len(stack) == 1:
                raise VnnlibError("unexpected `)` with no `(` open", line, column, file)
            items, open_line, open_column = stack.pop()
            stack[-1][0].append(SList(tuple(items), open_line, open_column))
            column, index = column + 1, index + 1
            continue
        end = index
        while end < len(text) and not text[end].isspace() and text[end] not in "();":
            end += 1
        stack[-1][0].append(Atom(text[index:end], line, column))
        column, index = column + end - index, end
    if len(stack) > 1:
        _, open_line, open_column = stack[-1]
        raise VnnlibError(f"`(` opened at {open_line}:{open_column} is never closed", line, column, file)
    return stack[0][0]


# ---------------------------------------------------------------- linear terms and formulas


@dataclass(frozen=True)
class Linear:
    """sum of coefficient * variable + constant; variables are ("X", i) or ("Y", j)."""

    terms: tuple[tuple[tuple[str, int], float], ...]
    constant: float

    @staticmethod
    def of(terms: dict[tuple[str, int], float], constant: float) -> Linear:
        kept = tuple(sorted((variable, weight) for variable, weight in terms.items() if weight != 0.0))
        return Linear(kept, constant)

    def scaled(self, factor: float) -> Linear:
        return Linear.of({v: w * factor for v, w in self.terms}, self.constant * factor)

    def plus(self, other: Linear) -> Linear:
        combined = dict(self.terms)
        for variable, weight in other.terms:
            combined[variable] = combined.get(variable, 0.0) + weight
        return Linear.of(combined, self.constant + other.constant)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(kind for (kind, _), _ in self.terms)


@dataclass(frozen=True)
class Constraint:
    """`expression <= 0` (`< 0` when strict), remembered with the position of the comparison it came from."""

    expression: Linear
    line: int
    column: int
    strict: bool = False


@dataclass(frozen=True)
class VnnProperty:
    """A parsed property: holds iff every query holds (one query per distinct input region)."""

    input_size: int
    output_size: int
    queries: tuple[Query, ...]


class _Reader:
    """Turns the S-expressions of one file into declarations and the asserted formula in DNF."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.declared: dict[tuple[str, int], Atom] = {}
        self.disjuncts: list[tuple[Constraint, ...]] = [()]

    def error(self, message: str, where: SExpr) -> VnnlibError:
        return VnnlibError(message, where.line, where.column, self.file)

    def command(self, expression: SExpr) -> None:
        if not isinstance(expression, SList) or not expression.items or not isinstance(expression.items[0], Atom):
            raise self.error("expected a command such as `(declare-const X_0 Real)` or `(assert ...)`", expression)
        head = expression.items[0].text
        if head == "declare-const":
            self.declare(expression)
        elif head == "assert":
            if len(expression.items) != 2:
                raise self.error("`assert` takes exactly one formula", expression)
            self.disjuncts = _product([self.disjuncts, self.formula(expression.items[1])], self, expression)
        elif head not in IGNORED_COMMANDS:
            raise self.error(f"unknown command `{head}`; VNN-LIB has `declare-const` and `assert`", expression)

    def declare(self, expression: SList) -> None:
        items = expression.items
        if len(items) != 3 or not all(isinstance(item, Atom) for item in items):
            raise self.error("expected `(declare-const NAME Real)`", expression)
        name, sort = items[1], items[2]
        assert isinstance(name, Atom) and isinstance(sort, Atom)
        match = _VARIABLE.match(name.text)
        if match is None:
            raise self.error(f"`{name.text}` is not a VNN-LIB variable name: inputs are X_i, outputs Y_j", name)
        if sort.text != "Real":
            raise self.error(f"`{name.text}` has sort `{sort.text}`; VNN-LIB variables are `Real`", sort)
        key = (match.group(1), int(match.group(2)))
        if key in self.declared:
            first = self.declared[key]
            raise self.error(f"`{name.text}` is declared twice (first at {first.line}:{first.column})", name)
        self.declared[key] = name

    def formula(self, expression: SExpr) -> list[tuple[Constraint, ...]]:
        """The DNF of a formula: a list of conjunctions."""
        if not isinstance(expression, SList) or not expression.items or not isinstance(expression.items[0], Atom):
            raise self.error("expected a formula: `(and ...)`, `(or ...)`, `(<= a b)` or `(>= a b)`", expression)
        head, operands = expression.items[0].text, expression.items[1:]
        if head == "and":
            return _product([self.formula(operand) for operand in operands], self, expression)
        if head == "or":
            if not operands:
                raise self.error("`(or)` with no operand is false; write the property without it", expression)
            disjuncts = [term for operand in operands for term in self.formula(operand)]
            if len(disjuncts) > MAX_DISJUNCTS:
                raise self.error(f"the formula has more than {MAX_DISJUNCTS} disjuncts", expression)
            return disjuncts
        if head in ("<=", ">=", "<", ">"):
            if len(operands) < 2:
                raise self.error(f"`{head}` compares at least two terms", expression)
            terms = [self.term(operand) for operand in operands]
            # Chained comparisons read as in SMT-LIB: (<= a b c) is a <= b and b <= c.
            pairs = pairwise(terms if head in ("<=", "<") else terms[::-1])
            strict = head in ("<", ">")
            return [tuple(Constraint(low.plus(high.scaled(-1.0)), expression.line, expression.column, strict)
                          for low, high in pairs)]
        if head in ("=", "distinct", "not", "=>"):
            raise self.error(f"`{head}` is outside VNN-LIB 1.0 as this reader takes it; use `<=` or `>=`", expression)
        raise self.error(f"unknown formula `{head}`", expression)

    def term(self, expression: SExpr) -> Linear:
        if isinstance(expression, Atom):
            if _NUMBER.match(expression.text):
                return Linear((), float(expression.text))
            match = _VARIABLE.match(expression.text)
            if match is None:
                raise self.error(f"`{expression.text}` is neither a number nor a declared variable", expression)
            key = (match.group(1), int(match.group(2)))
            if key not in self.declared:
                raise self.error(f"`{expression.text}` is used but never declared", expression)
            return Linear(((key, 1.0),), 0.0)
        if not expression.items or not isinstance(expression.items[0], Atom):
            raise self.error("expected a term: a number, a variable or `(+ ...)`, `(- ...)`, `(* ...)`", expression)
        head, operands = expression.items[0].text, [self.term(item) for item in expression.items[1:]]
        if not operands:
            raise self.error(f"`{head}` needs an operand", expression)
        if head == "+":
            return _sum(operands)
        if head == "-":
            if len(operands) == 1:
                return operands[0].scaled(-1.0)
            return operands[0].plus(_sum(operands[1:]).scaled(-1.0))
        if head == "*":
            variable_factors = [operand for operand in operands if operand.terms]
            if len(variable_factors) > 1:
                raise self.error("a product of two variables is not linear", expression)
            product = variable_factors[0] if variable_factors else Linear((), 1.0)
            for operand in operands:
                if not operand.terms:
                    product = product.scaled(operand.constant)
            return product
        if head == "/":
            if len(operands) != 2 or operands[1].terms:
                raise self.error("`/` divides by a constant only", expression)
            if operands[1].constant == 0.0:
                raise self.error("division by zero", expression)
            return operands[0].scaled(1.0 / operands[1].constant)
        raise self.error(f"unknown term `{head}`; linear terms use + - * /", expression)


def _sum(operands: Sequence[Linear]) -> Linear:
    total = Linear((), 0.0)
    for operand in operands:
        total = total.plus(operand)
    return total


def _product(parts: list[list[tuple[Constraint, ...]]], reader: _Reader, where: SExpr) -> list[tuple[Constraint, ...]]:
    """The DNF of a conjunction of DNFs. Single-disjunct parts are joined in one pass first: VNN-COMP
    files assert hundreds of bounds one by one, and multiplying them in pairwise would be quadratic."""
    common = tuple(constraint for part in parts if len(part) == 1 for constraint in part[0])
    result: list[tuple[Constraint, ...]] = [common]
    for part in parts:
        if len(part) == 1:
            continue
        if len(result) * len(part) > MAX_DISJUNCTS:
            raise reader.error(f"the formula has more than {MAX_DISJUNCTS} disjuncts in normal form", where)
        result = [left + right for left in result for right in part]
    return result


# ---------------------------------------------------------------- DNF -> queries


def read_property(text: str, file: str = "<vnnlib>") -> VnnProperty:
    """Parse VNN-LIB text into queries; the asserted formula is the unsafe condition."""
    reader = _Reader(file)
    for expression in parse_sexprs(text, file):
        reader.command(expression)
    input_size = _declared_size(reader, "X")
    output_size = _declared_size(reader, "Y")
    grouped: dict[tuple, tuple[torch.Tensor, torch.Tensor, list[LinearConstraint], list[tuple[LinearConstraint, ...]]]]
    grouped = {}
    for disjunct in reader.disjuncts:
        region = _split_disjunct(disjunct, input_size, output_size, reader)
        if region is None:
            continue
        key, lower, upper, inputs, unsafe = region
        if key not in grouped:
            grouped[key] = (lower, upper, inputs, [])
        grouped[key][3].append(unsafe)
    queries = tuple(
        Query(lower, upper, tuple(unsafe), tuple(inputs), name=f"{Path(file).name}[{number}]" if len(grouped) > 1
              else Path(file).name)
        for number, (lower, upper, inputs, unsafe) in enumerate(grouped.values())
    )
    return VnnProperty(input_size, output_size, queries)


def load_property(path: str | Path) -> VnnProperty:
    """Read a `.vnnlib` file; I/O problems surface as `OSError` for the caller to report."""
    return read_property(Path(path).read_text(encoding="utf-8"), str(path))


def _declared_size(reader: _Reader, kind: str) -> int:
    indices = sorted(index for variable_kind, index in reader.declared if variable_kind == kind)
    if not indices:
        raise VnnlibError(f"no `{kind}_i` variable is declared", 1, 1, reader.file)
    for expected, index in enumerate(indices):
        if index != expected:
            raise VnnlibError(f"{kind}_{expected} is missing: {kind} variables must be numbered 0, 1, 2, ...",
                              1, 1, reader.file)
    return len(indices)


def _split_disjunct(
    disjunct: tuple[Constraint, ...], input_size: int, output_size: int, reader: _Reader
) -> tuple[tuple, torch.Tensor, torch.Tensor, list[LinearConstraint], tuple[LinearConstraint, ...]] | None:
    """One conjunction as (grouping key, box, input constraints, unsafe outputs); None if trivially false."""
    # Python lists while the bounds are collected: a tensor element write per bound is ten times slower.
    lower = [-math.inf] * input_size
    upper = [math.inf] * input_size
    inputs: list[LinearConstraint] = []
    input_key: list[tuple] = []
    unsafe: list[LinearConstraint] = []
    for constraint in disjunct:
        expression = constraint.expression
        kinds = expression.kinds
        if not kinds:
            if expression.constant > 0.0 or (constraint.strict and expression.constant == 0.0):
                return None
            continue
        if kinds == {"X", "Y"}:
            raise VnnlibError("a constraint mixes inputs X and outputs Y; VNN-LIB keeps them apart",
                              constraint.line, constraint.column, reader.file)
        if kinds == {"Y"}:
            unsafe.append(_linear_constraint(expression, output_size, constraint.strict))
            continue
        if len(expression.terms) == 1:
            # The box is closed: a strict bound on one input is read as its closure.
            ((_, index), weight), = expression.terms
            bound = -expression.constant / weight
            if weight > 0:
                upper[index] = min(upper[index], bound)
            else:
                lower[index] = max(lower[index], bound)
            continue
        inputs.append(_linear_constraint(expression, input_size, constraint.strict))
        input_key.append((*expression.terms, (("c", 0), expression.constant), (("strict", 0), constraint.strict)))
    for index, (low, high) in enumerate(zip(lower, upper, strict=True)):
        if math.isinf(low) or math.isinf(high):
            where = disjunct[0] if disjunct else Constraint(Linear((), 0.0), 1, 1)
            side = "lower" if math.isinf(low) else "upper"
            raise VnnlibError(f"X_{index} has no {side} bound; every input needs both", where.line, where.column,
                              reader.file)
    if any(low > high for low, high in zip(lower, upper, strict=True)):
        return None
    key = (tuple(lower), tuple(upper), tuple(sorted(input_key)))
    if not unsafe:
        # Nothing asked of the outputs: every point of the region is unsafe. `0 - 1 <= 0` says so in
        # the one form a Query has, so verifiers need no special case for an empty conjunction.
        unsafe.append(LinearConstraint(torch.zeros(output_size, dtype=torch.float64), -1.0))
    box = torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64)
    return key, *box, inputs, tuple(unsafe)


def _linear_constraint(expression: Linear, size: int, strict: bool) -> LinearConstraint:
    coefficients = torch.zeros(size, dtype=torch.float64)
    for (_, index), weight in expression.terms:
        coefficients[index] += weight
    return LinearConstraint(coefficients, float(expression.constant), strict)


# ---------------------------------------------------------------- writer


def format_number(value: float) -> str:
    """The shortest decimal that reads back as the same float, never in exponent form (some readers
    of VNN-LIB, Marabou's among them, take plain decimals only)."""
    return np.format_float_positional(float(value), unique=True, trim="0")


def _side(terms: Iterable[tuple[str, float]], constant: float) -> str:
    parts = [name if weight == 1.0 else f"(* {format_number(weight)} {name})" for name, weight in terms]
    if constant != 0.0 or not parts:
        parts.append(format_number(constant))
    return parts[0] if len(parts) == 1 else f"(+ {' '.join(parts)})"


def format_constraint(constraint: LinearConstraint, prefix: str, closure: bool = True) -> str:
    """`sum c_i v_i + k <= 0` as `(<= POSITIVE NEGATIVE)`, so that `y_1 - y_0 <= 0` reads `(<= Y_1 Y_0)`.

    A strict constraint is written `<` unless `closure`, which writes it `<=`: VNN-COMP's properties
    and most tools' readers know only `<=` / `>=`, and over the reals the closure differs only on the
    boundary (a tie between two scores, for robustness)."""
    operator = "<" if constraint.strict and not closure else "<="
    positive: list[tuple[str, float]] = []
    negative: list[tuple[str, float]] = []
    for index, weight in enumerate(constraint.coefficients.tolist()):
        if weight > 0:
            positive.append((f"{prefix}_{index}", weight))
        elif weight < 0:
            negative.append((f"{prefix}_{index}", -weight))
    if not negative and positive:
        return f"({operator} {_side(positive, 0.0)} {format_number(-constraint.constant)})"
    return f"({operator} {_side(positive, constraint.constant)} {_side(negative, 0.0)})"


def _unsafe_formula(unsafe: tuple[tuple[LinearConstraint, ...], ...], closure: bool) -> str:
    conjunctions = [
        f"(and {' '.join(format_constraint(c, 'Y', closure) for c in conjunction)})" if conjunction else "(<= 0 0)"
        for conjunction in unsafe
    ]
    if not conjunctions:
        return "(<= 1 0)"
    return conjunctions[0] if len(conjunctions) == 1 else f"(or {' '.join(conjunctions)})"


def _box_constraints(query: Query, closure: bool) -> list[str]:
    if not bool(torch.isfinite(query.lower).all() and torch.isfinite(query.upper).all()):
        raise ValueError("VNN-LIB needs a finite lower and upper bound on every input")
    lines = []
    for index, (low, high) in enumerate(zip(query.lower.tolist(), query.upper.tolist(), strict=True)):
        lines.append(f"(>= X_{index} {format_number(low)})")
        lines.append(f"(<= X_{index} {format_number(high)})")
    lines += [format_constraint(constraint, "X", closure) for constraint in query.input_constraints]
    return lines


def write_property(queries: Query | Sequence[Query], output_size: int, comment: str = "",
                   closure: bool = True) -> str:
    """VNN-LIB text whose asserted (unsafe) formula is satisfiable iff some query fails.

    One query is written in VNN-COMP's usual layout: one `assert` per input bound, then one for the
    unsafe outputs. Several queries become one `(or (and BOX UNSAFE) ...)`. Strict constraints are
    written as their closure unless `closure=False` (see `format_constraint`); a `ValueError` says
    when an input is unbounded, which VNN-LIB cannot express.
    """
    group = [queries] if isinstance(queries, Query) else list(queries)
    if not group:
        raise ValueError("write_property needs at least one query")
    input_size = int(group[0].lower.numel())
    lines = [f"; {line}" for line in comment.splitlines()]
    lines += [f"(declare-const X_{index} Real)" for index in range(input_size)]
    lines += [f"(declare-const Y_{index} Real)" for index in range(output_size)]
    if len(group) == 1:
        lines += [f"(assert {constraint})" for constraint in _box_constraints(group[0], closure)]
        lines.append(f"(assert {_unsafe_formula(group[0].unsafe, closure)})")
    else:
        regions = [f"(and {' '.join(_box_constraints(query, closure))} {_unsafe_formula(query.unsafe, closure)})"
                   for query in group]
        lines.append(f"(assert (or {' '.join(regions)}))")
    return "\n".join(lines) + "\n"
