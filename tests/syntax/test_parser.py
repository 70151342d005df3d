"""The parser: every construct of LANGUAGE.md sections 2-6, the spans it records, and its syntax errors."""

from __future__ import annotations

import pytest

from mdl_lang.syntax import ast
from mdl_lang.syntax.parser import parse
from tests.syntax.examples import LANGUAGE_EXAMPLE


def parsed(text: str) -> ast.SpecFile:
    """The tree of text that must parse without any diagnostic."""
    result = parse(text, "test.mdl")
    assert result.diagnostics == (), result.diagnostics
    assert result.tree is not None
    return result.tree


def clause_expression(source: str) -> ast.Expr:
    """The expression of `ensures SOURCE` inside an interface, as a clause sees it."""
    member = parsed(f"interface I {{\n  ensures {source}\n}}\n").decls[0].members[0]
    assert isinstance(member, ast.Clause)
    return member.expr


def name(identifier: str) -> ast.Name:
    return ast.Name(identifier)


def number(text: str) -> ast.Number:
    return ast.Number(text)


def qualified(dotted: str) -> ast.QualifiedName:
    return ast.QualifiedName(tuple(dotted.split(".")))


def call(function: str, *args: ast.Expr | ast.KeywordArg) -> ast.Call:
    return ast.Call(name(function), args)


def compare(left: ast.Expr, op: str, right: ast.Expr, tolerance: ast.Expr | None = None) -> ast.Compare:
    return ast.Compare((left, right), (op,), tolerance)


@pytest.fixture(scope="module")
def example() -> ast.SpecFile:
    return parsed(LANGUAGE_EXAMPLE)


# ---------------------------------------------------------------- section 2: lexical


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("0.5", 0.5), ("1e-3", 1e-3), (".5", 0.5), ("10k", 10_000), ("5M", 5_000_000), ("2G", 2_000_000_000)],
)
def test_a_number_keeps_its_text_and_decodes_its_value(text, value):
    literal = clause_expression(f"x == {text}").operands[1]
    assert literal == number(text)
    assert literal.value == value


def test_a_negative_number_is_unary_minus_on_the_number():
    assert clause_expression("x == -2").operands[1] == ast.Unary("-", number("2"))


def test_strings_undo_the_quote_and_backslash_escapes():
    decl = parsed('labels Stroke = {"\\\\", "\\"", "# not a comment"}\n').decls[0]
    assert decl.value == ast.LabelSetLiteral((ast.String("\\"), ast.String('"'), ast.String("# not a comment")))


def test_every_comment_is_kept_with_its_span_and_none_from_inside_a_string():
    tree = parsed('# head\nlabels L = {"#x"}  # tail\n')
    assert [comment.text for comment in tree.comments] == ["# head", "# tail"]
    tail = tree.comments[1].span
    assert (tail.line, tail.column, tail.end_line, tail.end_column) == (2, 20, 2, 26)


def test_a_name_may_start_with_a_keyword():
    tree = parsed("dim input_size = 3, inner, forall2\n")
    assert [item.name.name for item in tree.decls[0].items] == ["input_size", "inner", "forall2"]


# ---------------------------------------------------------------- section 3: declarations


def test_the_declarations_of_section_3(example):
    assert example.spec == ast.SpecName(ast.Identifier("digits"))
    imported, digit, even, garment, batch, consts, derived, free, image, flat, scores = example.decls[:11]
    assert imported == ast.Import("common.mdl", ast.Identifier("common"))
    assert digit.value == ast.LabelSetLiteral((ast.LabelRange(number("0"), number("9")),))
    assert even.parent == name("Digit")
    assert even.value == ast.LabelSetLiteral(tuple(number(n) for n in "02468"))
    assert garment.value.items[0] == ast.String("tshirt")
    assert batch.items == (ast.DimItem(ast.Identifier("B"), "batch"),)
    assert [(item.name.name, item.kind, item.value) for item in consts.items] == [
        ("H", "defined", number("8")),
        ("W", "defined", number("8")),
    ]
    assert derived.items[0].value == ast.Binary("*", name("H"), name("W"))
    assert free.items == (ast.DimItem(ast.Identifier("S"), "free"),)
    assert image.value == ast.TypeExpr(
        ast.TensorType((name("B"), number("1"), name("H"), name("W"))),
        (ast.FlagRefinement(ast.Identifier("float32")), ast.RangeRefinement(number("0"), number("1"))),
    )
    assert flat.params == ()
    assert scores.params == (ast.Identifier("L"),)


def test_label_set_expressions_union_difference_and_other():
    tree = parsed("labels A = Digit - {4, 7} | other\nlabels C = common.Digit\n")
    assert tree.decls[0].value == ast.Binary(
        "|", ast.Binary("-", name("Digit"), ast.LabelSetLiteral((number("4"), number("7")))), ast.OtherLabel()
    )
    assert tree.decls[1].value == name("common.Digit")


def test_a_shape_holds_arithmetic_wildcards_ellipsis_and_label_sets():
    decl = parsed("type T = Tensor[B, ..., S - 1, C // 2, _, {5} | other] float finite\n").decls[0]
    assert decl.value == ast.TypeExpr(
        ast.TensorType(
            (
                name("B"),
                ast.EllipsisDims(),
                ast.Binary("-", name("S"), number("1")),
                ast.Binary("//", name("C"), number("2")),
                ast.Wildcard(),
                ast.Binary("|", ast.LabelSetLiteral((number("5"),)), ast.OtherLabel()),
            )
        ),
        (ast.FlagRefinement(ast.Identifier("float")), ast.FlagRefinement(ast.Identifier("finite"))),
    )


def test_a_type_reference_takes_arguments_and_a_qualified_name():
    decl = parsed("type T = common.Scores[Digit | Garment] in [0, 1]\n").decls[0]
    union = ast.Binary("|", name("Digit"), name("Garment"))
    assert decl.value.head == ast.TypeRef(qualified("common.Scores"), (union,))
    assert decl.value.refinements == (ast.RangeRefinement(number("0"), number("1")),)


# ---------------------------------------------------------------- section 4: interfaces, modules, data


def test_an_interface_declares_ports_and_clauses(example):
    interface = example.decls[11]
    assert isinstance(interface, ast.InterfaceDecl)
    assert interface.params == (ast.Identifier("L"),)
    x, y, requires, ensures = interface.members
    assert x == ast.Port("input", ast.Identifier("x"), ast.TypeExpr(ast.TypeRef(qualified("Image"))))
    assert y.type.head == ast.TypeRef(qualified("Scores"), (name("L"),))
    assert requires == ast.Clause("requires", None, call("finite", name("x")))
    assert ensures.kind == "ensures"


def test_a_module_binds_python_and_adds_named_statistical_and_cost_clauses(example):
    module = example.decls[12]
    assert isinstance(module, ast.ModuleDecl)
    assert module.interface == ast.TypeRef(qualified("Classifier"), (name("Digit"),))
    binding, calibrated, robust, accuracy, cost = module.members
    assert binding == ast.Binding("examples.digits.models:load_cnn")
    assert calibrated.name == ast.Identifier("calibrated")
    assert calibrated.expr == compare(call("sum", call("softmax", name("y"))), "==", number("1"), number("1e-5"))
    assert robust.expr == ast.BallQuantifier(
        ast.Identifier("x2"),
        number("0.02"),
        name("x"),
        ast.Identifier("linf"),
        compare(call("argmax", ast.Call(ast.SelfRef(), (name("x2"),))), "==", call("argmax", name("y"))),
    )
    assert accuracy.data == ast.DataBinding(qualified("digits_test"), number("0.95"))
    assert cost == ast.CostBlock(
        (
            ast.CostItem("params", "<=", number("50k")),
            ast.CostItem("flops", "<=", number("2M"), per_sample=True),
        )
    )


def test_a_module_without_a_block_has_no_members():
    assert parsed("module m4 : Classifier[{4} | other]\n").decls[0].members == ()


def test_a_cost_block_with_latency_and_batch():
    member = parsed("module m : I { cost { latency <= 5 ms at batch 32, params < 1k, } }\n").decls[0].members[0]
    assert member.items == (
        ast.CostItem("latency", "<=", number("5"), unit="ms", batch=number("32")),
        ast.CostItem("params", "<", number("1k")),
    )


def test_a_data_declaration_names_input_type_labels_and_binding(example):
    data = example.decls[13]
    assert data == ast.DataDecl(
        ast.Identifier("digits_test"),
        ast.TypeExpr(ast.TypeRef(qualified("Image"))),
        name("Digit"),
        ast.Binding("examples.digits.data:test_split"),
    )


# ---------------------------------------------------------------- section 5: contract expressions


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a + b * c", ast.Binary("+", name("a"), ast.Binary("*", name("b"), name("c")))),
        ("a - b - c", ast.Binary("-", ast.Binary("-", name("a"), name("b")), name("c"))),
        ("a / b // c", ast.Binary("//", ast.Binary("/", name("a"), name("b")), name("c"))),
        ("2 ** 3 ** 2", ast.Binary("**", number("2"), ast.Binary("**", number("3"), number("2")))),
        ("-2 ** 2", ast.Unary("-", ast.Binary("**", number("2"), number("2")))),
        ("2 ** -1", ast.Binary("**", number("2"), ast.Unary("-", number("1")))),
        ("0 <= x <= 1", ast.Compare((number("0"), name("x"), number("1")), ("<=", "<="))),
        ("a != b", compare(name("a"), "!=", name("b"))),
        ("a or b and not c", ast.Binary("or", name("a"), ast.Binary("and", name("b"), ast.Unary("not", name("c"))))),
        ("a implies b implies c", ast.Binary("implies", name("a"), ast.Binary("implies", name("b"), name("c")))),
        ("not a == b", ast.Unary("not", compare(name("a"), "==", name("b")))),
        ("a == b within 1e-4", compare(name("a"), "==", name("b"), number("1e-4"))),
        ("v in [lo, hi]", ast.InInterval(name("v"), name("lo"), name("hi"))),
        ("argmax(y) in Even", ast.InLabels(call("argmax", name("y")), name("Even"))),
        ("l in A | B", ast.InLabels(name("l"), ast.Binary("|", name("A"), name("B")))),
    ],
)
def test_operators_bind_as_the_grammar_says(source, expected):
    assert clause_expression(source) == expected


def test_indexing_and_slicing():
    assert clause_expression('x[0, :, 1:] == y["tshirt"]') == compare(
        ast.Index(name("x"), (number("0"), ast.Slice(None, None), ast.Slice(number("1"), None))),
        "==",
        ast.Index(name("y"), (ast.String("tshirt"),)),
    )
    assert clause_expression("y[other] <= y[:3]") == compare(
        ast.Index(name("y"), (ast.OtherLabel(),)), "<=", ast.Index(name("y"), (ast.Slice(None, number("3")),))
    )


def test_calls_take_positional_and_keyword_arguments():
    assert clause_expression("self(flip(x, dim=-1)) == y within 1e-4") == compare(
        ast.Call(
            ast.SelfRef(),
            (call("flip", name("x"), ast.KeywordArg(ast.Identifier("dim"), ast.Unary("-", number("1")))),),
        ),
        "==",
        name("y"),
        number("1e-4"),
    )
    assert clause_expression("clamp(v, lo, hi) == norm(v, 2)") == compare(
        call("clamp", name("v"), name("lo"), name("hi")), "==", call("norm", name("v"), number("2"))
    )
    assert clause_expression("monotone(y[k], x[i])") == call(
        "monotone", ast.Index(name("y"), (name("k"),)), ast.Index(name("x"), (name("i"),))
    )


def test_label_quantifiers_take_the_rest_of_the_clause():
    in_range = ast.Binary(
        "and",
        compare(ast.Index(name("y"), (name("l"),)), ">=", number("0")),
        compare(ast.Index(name("y"), (name("l"),)), "<=", number("1")),
    )
    assert clause_expression("forall l in L: y[l] >= 0 and y[l] <= 1") == ast.LabelQuantifier(
        "forall", ast.Identifier("l"), name("L"), in_range
    )
    likely = compare(ast.Index(name("y"), (name("l"),)), ">", number("0.5"))
    assert clause_expression("exists l in common.Digit: y[l] > 0.5") == ast.LabelQuantifier(
        "exists", ast.Identifier("l"), name("common.Digit"), likely
    )


def test_a_quantifier_may_follow_implies_without_parentheses():
    assert clause_expression("a implies forall l in L: p") == ast.Binary(
        "implies", name("a"), ast.LabelQuantifier("forall", ast.Identifier("l"), name("L"), name("p"))
    )


def test_a_ball_quantifier_without_a_norm():
    assert clause_expression("forall x2 within 0.1 of x: p") == ast.BallQuantifier(
        ast.Identifier("x2"), number("0.1"), name("x"), None, name("p")
    )


@pytest.mark.parametrize("metric", ["accuracy(y) >= 0.9", "recall(y, 5) >= 0.8", "precision(y, l) >= 0.8"])
def test_statistical_clauses_name_their_data(metric):
    tree = parsed(f"module m : I {{\n  ensures {metric} on common.test with confidence 0.99\n}}\n")
    member = tree.decls[0].members[0]
    assert member.data == ast.DataBinding(qualified("common.test"), number("0.99"))


# ---------------------------------------------------------------- section 6: composition


def test_the_compositions_of_section_6(example):
    pipeline, voted, wider, repaired = example.decls[14:]
    cnn = ast.CompRef(qualified("cnn"))
    assert pipeline.expr == ast.Pipe(ast.CompRef(qualified("normalize")), cnn)
    assert voted.expr == ast.Vote(tuple(ast.CompRef(qualified(f"m{k}")) for k in range(10)))
    assert wider.interface.args == (ast.Binary("|", name("Digit"), name("Garment")),)
    assert repaired.expr == ast.Replace(ast.CompRef(qualified("voted")), qualified("m5"), qualified("m5_v2"))
    assert [type(member) for member in repaired.members] == [ast.Clause]


def test_pipes_associate_left_and_vote_takes_an_overlap_option():
    tree = parsed("compose c : I = vote(a >> b.c >> (d >> e), f, overlap=max)\n")
    a, bc, d, e, f = (ast.CompRef(qualified(n)) for n in ("a", "b.c", "d", "e", "f"))
    assert tree.decls[0].expr == ast.Vote((ast.Pipe(ast.Pipe(a, bc), ast.Pipe(d, e)), f), ast.Identifier("max"))


# ---------------------------------------------------------------- spans


def test_spans_of_declarations_members_and_expressions(example):
    interface, module = example.decls[11], example.decls[12]
    assert (interface.span.line, interface.span.column, interface.span.end_line, interface.span.end_column) == (
        17,
        1,
        22,
        2,
    )
    robust = module.members[2]
    assert (robust.span.line, robust.span.column, robust.span.end_column) == (27, 3, 83)
    assert (robust.name.span.line, robust.name.span.column) == (27, 11)
    ball = robust.expr
    assert (ball.span.column, ball.center.span.column, ball.norm.span.column) == (19, 44, 47)
    calibrated = module.members[1].expr
    assert (calibrated.tolerance.span.line, calibrated.tolerance.span.column) == (26, 51)


def test_a_span_covers_the_source_text_of_its_node(example):
    clause = example.decls[12].members[3]
    assert LANGUAGE_EXAMPLE[clause.span.start : clause.span.end] == (
        "ensures accuracy(y) >= 0.93 on digits_test with confidence 0.95"
    )
    closing = example.decls[12].span.end
    assert LANGUAGE_EXAMPLE[closing - 1] == "}"


# ---------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "message"),
    [
        (
            "dim B : batch\ntype Image = Tensor[B, 1\n",
            "E0002", 2, 25, "expected `]` to close `Tensor[` opened at 2:14, found end of file",
        ),
        (
            "module cnn : I {\n  ensures finite(y\n}\n",
            "E0001", 3, 1, "expected `)` to close `finite(` opened at 2:11, found `}`",
        ),
        ("labels Digit = {0..9}}\n", "E0006", 1, 22, "unmatched `}`"),
        ('import "common.mdl as common\n', "E0005", 1, 8, "unterminated string"),
        ("dim H = 8 $\n", "E0003", 1, 11, "unexpected character `$`"),
        ("interface I {\n  input x Image\n}\n", "E0001", 2, 11, "expected `:`, found name `Image`"),
        (
            "interface I {\n  input x: Image\n",
            "E0002", 2, 17, "expected `}` to close `{` opened at 1:13, found end of file",
        ),
    ],
    ids=["unclosed-bracket", "unclosed-call", "unmatched-closer", "unterminated-string", "bad-character",
         "missing-colon", "unclosed-block"],
)
def test_a_syntax_error_is_reported_where_it_is_in_words_a_user_knows(text, code, line, column, message):
    result = parse(text, "bad.mdl")
    assert result.tree is None
    assert [(d.code, d.span.line, d.span.column, d.message) for d in result.diagnostics] == [
        (code, line, column, message)
    ]
    assert result.diagnostics[0].span.file == "bad.mdl"


def test_an_unknown_escape_is_named_but_the_tree_is_still_built():
    result = parse('module m : I {\n  python "a\\nb"\n}\n', "bad.mdl")
    assert result.tree is not None
    assert [(d.code, d.span.line, d.span.column, d.message) for d in result.diagnostics] == [
        ("E0004", 2, 12, "unknown escape `\\n` in string")
    ]


def test_parsing_resumes_at_the_next_declaration_to_report_every_broken_one():
    text = "dim B : batch\nlabels L = {1,,2}\ntype T = Tensor[B\ndim H = 8\n"
    result = parse(text, "bad.mdl")
    assert result.tree is None
    assert [(d.code, d.span.line) for d in result.diagnostics] == [("E0001", 2), ("E0001", 4)]
