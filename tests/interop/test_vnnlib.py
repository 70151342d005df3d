"""The VNN-LIB reader and writer: round trips, DNF grouping, and errors located at line:column."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdl_lang.interop.vnnlib import VnnlibError, parse_sexprs, read_property, write_property
from mdl_lang.verify.query import LinearConstraint, Query

HEADER = "\n".join(
    ["(declare-const X_0 Real)", "(declare-const X_1 Real)", "(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
)
BOX = "(assert (<= X_0 0.5))\n(assert (>= X_0 -0.5))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n"


def test_vnncomp_layout_reads_into_one_query() -> None:
    text = f"; robustness\n{HEADER}\n{BOX}(assert (or (and (>= Y_1 Y_0)) (and (<= Y_0 -2) (>= Y_1 (* 3 X_0)))))\n"
    with pytest.raises(VnnlibError, match=r":10:49: a constraint mixes inputs X and outputs Y"):
        read_property(text, "p.vnnlib")
    prop = read_property(text.replace("(* 3 X_0)", "(* 3 1.5)"), "p.vnnlib")
    assert (prop.input_size, prop.output_size) == (2, 2)
    (query,) = prop.queries
    assert query.lower.tolist() == [-0.5, 0.0] and query.upper.tolist() == [0.5, 1.0]
    first, second = query.unsafe
    # y_1 >= y_0 is y_0 - y_1 <= 0; y_1 >= 4.5 is -y_1 + 4.5 <= 0.
    assert first[0].coefficients.tolist() == [1.0, -1.0] and first[0].constant == 0.0
    assert [c.coefficients.tolist() for c in second] == [[1.0, 0.0], [0.0, -1.0]]
    assert [c.constant for c in second] == [2.0, 4.5]


def test_disjunction_of_input_boxes_gives_one_query_per_box() -> None:
    text = (
        f"{HEADER}\n(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0) (<= Y_0 0))"
        " (and (<= X_0 3) (>= X_0 2) (<= X_1 1) (>= X_1 0) (<= Y_0 0))"
        " (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0) (<= Y_1 0))))"
    )
    prop = read_property(text)
    assert len(prop.queries) == 2
    assert [len(q.unsafe) for q in prop.queries] == [2, 1]
    assert prop.queries[1].lower.tolist() == [2.0, 0.0]


def test_terms_chains_and_input_constraints() -> None:
    text = (
        f"{HEADER}\n{BOX}(assert (<= (+ X_0 X_1) 1.25))\n"
        "(assert (<= (- Y_0 (/ 1 4)) (- (* 2 Y_1 0.5)) 7))"
    )
    (query,) = read_property(text).queries
    (constraint,) = query.input_constraints
    assert constraint.coefficients.tolist() == [1.0, 1.0] and constraint.constant == -1.25
    # (<= a b c) is a <= b and b <= c: y0 - 0.25 <= -y1 and -y1 <= 7.
    (conjunction,) = query.unsafe
    assert [c.coefficients.tolist() for c in conjunction] == [[1.0, 1.0], [0.0, -1.0]]
    assert [c.constant for c in conjunction] == [-0.25, -7.0]


def test_contradictory_box_is_dropped_and_missing_outputs_mean_always_unsafe() -> None:
    text = f"{HEADER}\n{BOX}(assert (or (and (<= X_0 -1) (<= Y_0 0)) (and (<= X_1 0.5))))"
    (query,) = read_property(text).queries
    assert query.upper.tolist() == [0.5, 0.5]
    (conjunction,) = query.unsafe
    assert conjunction[0].coefficients.tolist() == [0.0, 0.0] and conjunction[0].constant == -1.0


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("(declare-const X_0 Real)\n(assert (<= X_0 1)", "2:19", "`(` opened at 2:1 is never closed"),
        ("(declare-const X_0 Real))", "1:25", "unexpected `)`"),
        ("(declare-const Z_0 Real)", "1:16", "not a VNN-LIB variable name"),
        ("(declare-const X_0 Int)", "1:20", "has sort `Int`"),
        ("(declare-const X_0 Real)\n(declare-const X_0 Real)", "2:16", "declared twice (first at 1:16)"),
        (f"{HEADER}\n(assert (<= X_2 1))", "5:13", "`X_2` is used but never declared"),
        (f"{HEADER}\n(assert (= X_0 1))", "5:9", "`=` is outside VNN-LIB 1.0"),
        (f"{HEADER}\n(assert (<= (* X_0 X_1) 1))", "5:13", "a product of two variables is not linear"),
        (f"{HEADER}\n(assert (<= X_0 foo))", "5:17", "`foo` is neither a number nor a declared variable"),
        (f"{HEADER}\n(check-sat)\n(push 1)", "6:1", "unknown command `push`"),
        (f"{HEADER}\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 0))", "5:9", "X_1 has no lower"),
        ("(declare-const X_1 Real)\n(declare-const Y_0 Real)", "1:1", "X_0 is missing"),
        (f"{HEADER}\n(assert (or))", "5:9", "`(or)` with no operand"),
    ],
)
def test_errors_carry_line_and_column(text: str, where: str, message: str) -> None:
    with pytest.raises(VnnlibError) as caught:
        read_property(text, "bad.vnnlib")
    assert str(caught.value).startswith(f"bad.vnnlib:{where}: "), str(caught.value)
    assert message in caught.value.reason


def test_comments_and_positions_of_sexpressions() -> None:
    (first, second) = parse_sexprs("; a comment (with parens)\n  (a (b c)) ; tail\n(d)")
    assert (first.line, first.column) == (2, 3)
    assert first.items[1].items[1].text == "c" and first.items[1].items[1].column == 9
    assert (second.line, second.column) == (3, 1)


_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def queries(draw: st.DrawFn) -> tuple[Query, int]:
    inputs, outputs = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    corners = [sorted(draw(st.tuples(_floats, _floats))) for _ in range(inputs)]
    lower = torch.tensor([c[0] for c in corners], dtype=torch.float64)
    upper = torch.tensor([c[1] for c in corners], dtype=torch.float64)

    def constraint(size: int) -> LinearConstraint:
        weights = draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.5, -0.125]), min_size=size, max_size=size))
        weights[draw(st.integers(0, size - 1))] = draw(st.sampled_from([1.0, -3.0, 0.1]))
        return LinearConstraint(torch.tensor(weights, dtype=torch.float64), draw(_floats), draw(st.booleans()))

    unsafe = tuple(
        tuple(constraint(outputs) for _ in range(draw(st.integers(1, 3)))) for _ in range(draw(st.integers(1, 3)))
    )
    extra = tuple(constraint(inputs) for _ in range(draw(st.integers(0, 2))) if inputs > 1)
    extra = tuple(c for c in extra if int((c.coefficients != 0).sum()) > 1)
    return Query(lower, upper, unsafe, extra), outputs


def _same(left: Query, right: Query) -> None:
    assert torch.equal(left.lower, right.lower) and torch.equal(left.upper, right.upper)
    assert len(left.unsafe) == len(right.unsafe)
    for mine, theirs in zip(left.unsafe, right.unsafe, strict=True):
        assert [c.coefficients.tolist() for c in mine] == [c.coefficients.tolist() for c in theirs]
        assert [(c.constant, c.strict) for c in mine] == [(c.constant, c.strict) for c in theirs]
    assert [(c.coefficients.tolist(), c.constant, c.strict) for c in left.input_constraints] == [
        (c.coefficients.tolist(), c.constant, c.strict) for c in right.input_constraints
    ]


@settings(max_examples=60, deadline=None)
@given(queries())
def test_write_then_read_gives_the_same_query(drawn: tuple[Query, int]) -> None:
    query, outputs = drawn
    prop = read_property(write_property(query, outputs, comment="round trip\nsecond line", closure=False))
    assert (prop.input_size, prop.output_size) == (query.lower.numel(), outputs)
    (back,) = prop.queries
    _same(query, back)


def test_strict_constraints_are_read_and_written_as_their_closure_by_default() -> None:
    (query,) = read_property(f"{HEADER}\n{BOX}(assert (or (< Y_0 Y_1) (> Y_0 2)))").queries
    assert [c[0].strict for c in query.unsafe] == [True, True]
    assert query.unsafe[1][0].coefficients.tolist() == [-1.0, 0.0] and query.unsafe[1][0].constant == 2.0
    text = write_property(query, 2)
    assert "(<= Y_0 Y_1)" in text and "(<= 2.0 Y_0)" in text and "(<" + " " not in text.replace("(<=", "")
    assert [c[0].strict for c in read_property(text).queries[0].unsafe] == [False, False]


def test_unbounded_inputs_cannot_be_written() -> None:
    query = Query(torch.tensor([0.0, -torch.inf], dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                  ((LinearConstraint.less_equal(2, {0: 1.0}, 0.0),),))
    with pytest.raises(ValueError, match="finite lower and upper bound"):
        write_property(query, 2)


def test_several_queries_are_written_as_one_disjunction() -> None:
    first = Query(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                  ((LinearConstraint.less_equal(2, {0: 1.0, 1: -1.0}, 0.0),),))
    second = Query(torch.full((2,), 2.0, dtype=torch.float64), torch.full((2,), 3.0, dtype=torch.float64),
                   ((LinearConstraint.less_equal(2, {1: 1.0}, -1.5),),))
    text = write_property([first, second], 2)
    assert text.count("(assert") == 1
    back = read_property(text).queries
    assert len(back) == 2
    _same(first, back[0])
    _same(second, back[1])
