"""Hypothesis strategies for random .mdl syntax trees: the inputs of the parser and formatter properties.

Every tree is one the parser could build from some text: names avoid the grammar's
words, number texts match its NUMBER token, a negative number is `Unary("-", Number)`,
slices appear only inside an index, keyword arguments only in a call, ranges only in a
label-set literal, a ball is centred on a plain name. Nothing else is constrained: an
operand may be any expression, since the formatter adds the parentheses the grammar
needs. Spans keep their defaults; they take no part in equality. Comments come only from
text, so the trees carry none (tests/syntax/test_format.py covers them).
"""

from __future__ import annotations

from hypothesis import strategies as st

from mdl_lang.syntax import ast
from mdl_lang.syntax.parser import keywords

RESERVED = keywords()

# Names that start like a keyword, to catch a lexer that splits `input_size` into `input`.
NEAR_KEYWORDS = ("in_", "inputs", "forall2", "Tensors", "other_", "selfish", "_x", "e5", "k")

NUMBER_SHAPE = r"([0-9]{1,3}(\.[0-9]{1,3})?|\.[0-9]{1,3})([eE][+-]?[0-9]{1,2})?[kMG]?"
TYPICAL_NUMBERS = ("3", "0.5", "1e-3", "10k", "5M", "2G", ".5", "1E+2", "0")

COMPARE_OPS = ("<", "<=", "==", "!=", ">=", ">")
BINARY_OPS = ("implies", "or", "and", "|", "+", "-", "*", "/", "//", "**")

EXPRESSION_LEAVES = 8


def names() -> st.SearchStrategy[str]:
    """Identifiers that are no keyword of the grammar."""
    fresh = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True).filter(lambda name: name not in RESERVED)
    return st.one_of(fresh, st.sampled_from(NEAR_KEYWORDS))


def identifiers() -> st.SearchStrategy[ast.Identifier]:
    return st.builds(ast.Identifier, names())


def qualified_names() -> st.SearchStrategy[ast.QualifiedName]:
    return st.builds(ast.QualifiedName, st.lists(names(), min_size=1, max_size=3).map(tuple))


def number_texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(TYPICAL_NUMBERS), st.from_regex(NUMBER_SHAPE, fullmatch=True))


def string_values() -> st.SearchStrategy[str]:
    """String contents: anything printable on one line, quotes, backslashes and `#` included."""
    printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)
    return st.one_of(printable, st.sampled_from(['"', "\\", 'a"b\\c', "# no comment", '\\"', "tshirt"]))


# ---------------------------------------------------------------- expressions


def _leaves() -> st.SearchStrategy[ast.Expr]:
    dotted = st.lists(names(), min_size=2, max_size=3).map(".".join)
    return st.one_of(
        st.builds(ast.Number, number_texts()),
        st.builds(ast.String, string_values()),
        st.builds(ast.Name, st.one_of(names(), dotted)),
        st.just(ast.SelfRef()),
        st.just(ast.OtherLabel()),
        st.just(ast.Wildcard()),
        st.just(ast.EllipsisDims()),
    )


def _small_tuples(elements: st.SearchStrategy, min_size: int = 0, max_size: int = 3) -> st.SearchStrategy[tuple]:
    return st.lists(elements, min_size=min_size, max_size=max_size).map(tuple)


def _compound(children: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
    """Every expression node built over `children`."""
    optional = st.none() | children
    compare = st.integers(min_value=2, max_value=3).flatmap(
        lambda size: st.builds(
            ast.Compare,
            _small_tuples(children, size, size),
            _small_tuples(st.sampled_from(COMPARE_OPS), size - 1, size - 1),
            optional,
        )
    )
    return st.one_of(
        st.builds(ast.Binary, st.sampled_from(BINARY_OPS), children, children),
        st.builds(ast.Unary, st.sampled_from(("-", "not")), children),
        compare,
        st.builds(ast.InInterval, children, children, children),
        st.builds(ast.InLabels, children, children),
        st.builds(ast.Call, children, _small_tuples(children | st.builds(ast.KeywordArg, identifiers(), children))),
        st.builds(ast.Index, children, _small_tuples(children | st.builds(ast.Slice, optional, optional), 1)),
        st.builds(ast.LabelSetLiteral, _small_tuples(children | st.builds(ast.LabelRange, children, children))),
        st.builds(ast.LabelQuantifier, st.sampled_from(("forall", "exists")), identifiers(), children, children),
        st.builds(
            ast.BallQuantifier,
            identifiers(),
            children,
            st.builds(ast.Name, names()),
            st.none() | identifiers(),
            children,
        ),
    )


def expressions() -> st.SearchStrategy[ast.Expr]:
    return st.recursive(_leaves(), _compound, max_leaves=EXPRESSION_LEAVES)


# ---------------------------------------------------------------- types and members


def type_refs() -> st.SearchStrategy[ast.TypeRef]:
    return st.builds(ast.TypeRef, qualified_names(), _small_tuples(expressions(), 0, 2))


def type_exprs() -> st.SearchStrategy[ast.TypeExpr]:
    head = st.builds(ast.TensorType, _small_tuples(expressions(), 0, 4)) | type_refs()
    refinement = st.builds(ast.FlagRefinement, identifiers()) | st.builds(
        ast.RangeRefinement, expressions(), expressions()
    )
    return st.builds(ast.TypeExpr, head, _small_tuples(refinement))


def bindings() -> st.SearchStrategy[ast.Binding]:
    return st.builds(ast.Binding, string_values())


def cost_items() -> st.SearchStrategy[ast.CostItem]:
    return st.builds(
        ast.CostItem,
        st.sampled_from(("params", "flops", "latency")),
        st.sampled_from(("<=", "<")),
        expressions(),
        st.booleans(),
        st.none() | st.sampled_from(("ms", "us", "s")),
        st.none() | expressions(),
    )


def members() -> st.SearchStrategy[ast.Member]:
    data = st.builds(ast.DataBinding, qualified_names(), st.none() | expressions())
    return st.one_of(
        st.builds(ast.Port, st.sampled_from(("input", "output")), identifiers(), type_exprs()),
        bindings(),
        st.builds(
            ast.Clause, st.sampled_from(("requires", "ensures")), st.none() | identifiers(), expressions(),
            st.none() | data,
        ),
        st.builds(ast.CostBlock, _small_tuples(cost_items())),
    )


def compositions() -> st.SearchStrategy[ast.CompExpr]:
    def compound(children: st.SearchStrategy[ast.CompExpr]) -> st.SearchStrategy[ast.CompExpr]:
        return st.one_of(
            st.builds(ast.Pipe, children, children),
            st.builds(ast.Vote, _small_tuples(children, 1), st.none() | identifiers()),
            st.builds(ast.Replace, children, qualified_names(), qualified_names()),
        )

    return st.recursive(st.builds(ast.CompRef, qualified_names()), compound, max_leaves=5)


# ---------------------------------------------------------------- declarations


def dim_items() -> st.SearchStrategy[ast.DimItem]:
    return st.one_of(
        st.builds(ast.DimItem, identifiers(), st.just("batch")),
        st.builds(ast.DimItem, identifiers(), st.just("defined"), expressions()),
        st.builds(ast.DimItem, identifiers(), st.just("free")),
    )


def declarations() -> st.SearchStrategy[ast.Decl]:
    params = _small_tuples(identifiers(), 0, 2)
    block = _small_tuples(members(), 0, 4)
    return st.one_of(
        st.builds(ast.Import, string_values(), identifiers()),
        st.builds(ast.LabelsDecl, identifiers(), expressions(), st.none() | expressions()),
        st.builds(ast.DimDecl, _small_tuples(dim_items(), 1)),
        st.builds(ast.TypeDecl, identifiers(), params, type_exprs()),
        st.builds(ast.InterfaceDecl, identifiers(), params, block),
        st.builds(ast.ModuleDecl, identifiers(), type_refs(), block),
        st.builds(ast.DataDecl, identifiers(), type_exprs(), expressions(), st.none() | bindings()),
        st.builds(ast.ComposeDecl, identifiers(), type_refs(), compositions(), block),
    )


def spec_files() -> st.SearchStrategy[ast.SpecFile]:
    """Whole files: an optional `spec` line and up to six declarations of any kind."""
    spec = st.none() | st.builds(ast.SpecName, identifiers())
    return st.builds(ast.SpecFile, spec, _small_tuples(declarations(), 0, 6))
