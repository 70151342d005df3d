"""Parse .mdl text into the syntax tree of `ast.py`, or into diagnostics.

lark's LALR parser with the contextual lexer builds the tree in one pass (the
builder below runs inside the parser). Syntax errors are translated into
words a user knows, and parsing resumes at the next declaration so that one
run reports every broken declaration of a file.
"""

from __future__ import annotations

import bisect
import gc
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr

from mdl_lang.diagnostics import Diagnostic
from mdl_lang.span import Span
from mdl_lang.syntax import ast
from mdl_lang.syntax.errors import describe_syntax_error

DECLARATION_KEYWORDS = ("spec", "import", "labels", "dim", "type", "interface", "module", "data", "compose")


def grammar_text() -> str:
    """The grammar, from inside the installed package or from the source tree."""
    packaged = Path(__file__).resolve().parent.parent / "grammar" / "mdl.lark"
    source_tree = Path(__file__).resolve().parents[2] / "grammar" / "mdl.lark"
    for candidate in (packaged, source_tree):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise FileNotFoundError("mdl.lark is missing from the mdl_lang installation")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        _grammar(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )


@lru_cache(maxsize=1)
def _grammar() -> str:
    return grammar_text()


@lru_cache(maxsize=1)
def terminal_spellings() -> dict[str, str]:
    """lark's terminal names mapped to the literal text they match, for error messages."""
    return {
        terminal.name: terminal.pattern.value
        for terminal in _parser().terminals
        if isinstance(terminal.pattern, PatternStr)
    }


@lru_cache(maxsize=1)
def keywords() -> frozenset[str]:
    """Every word the grammar spells out; declarations may not use them as names."""
    return frozenset(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', _grammar()))


@dataclass(frozen=True)
class ParseResult:
    tree: ast.SpecFile | None
    diagnostics: tuple[Diagnostic, ...]


# Front-end passes recurse once per level of nesting (`a + b + ... + z` nests once per
# term). Python-to-Python calls do not grow the C stack on CPython 3.11+, so a spec may
# nest this deep; deeper nesting is reported as E0007, never a RecursionError.
NESTING_LIMIT = 30_000


@contextmanager
def deep_nesting() -> Iterator[None]:
    """Allow recursion as deep as the nesting the front end accepts, for any pass that walks its trees
    (the checker, and the Z3 encoder, which recurses once per level of the IR)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, NESTING_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@contextmanager
def front_end_context() -> Iterator[None]:
    """Run a front-end pass with the cyclic garbage collector paused and deep nesting allowed.

    Parsing allocates hundreds of thousands of short-lived, acyclic objects; the
    collector's passes over them cost about a third of the parse time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with deep_nesting():
            yield
    finally:
        if was_enabled:
            gc.enable()


def too_deep(file: str) -> Diagnostic:
    """The diagnostic for a file whose nesting exceeds what the front end follows."""
    return Diagnostic(
        "E0007", "this file nests expressions too deeply to check", Span(file, 1, 1, 1, 1),
        help="split the expression into several clauses, or name parts of it with `dim` or `labels`",
    )


def parse(text: str, file: str = "<input>") -> ParseResult:
    """Parse one file. On syntax errors the tree is None and every error found is returned."""
    with front_end_context():
        try:
            return _parse(text, file)
        except RecursionError:
            return ParseResult(None, (too_deep(file),))


def _parse(text: str, file: str) -> ParseResult:
    diagnostics: list[Diagnostic] = []
    tree: ast.SpecFile | None = None
    offset = 0
    while True:
        attempt = _blank_prefix(text, offset)
        try:
            result = _build(_parser().parse(attempt), file)
        except UnexpectedInput as error:
            diagnostics.append(describe_syntax_error(error, attempt, file, terminal_spellings()))
            resume = _next_declaration(text, _error_offset(error, attempt))
            if resume is None:
                break
            offset = resume
            continue
        if offset == 0:
            tree = result
        break
    if diagnostics:
        return ParseResult(None, tuple(diagnostics))
    assert tree is not None
    comments, escape_errors = _comments_and_escape_errors(text, file)
    tree = ast.SpecFile(tree.spec, tree.decls, comments, tree.span)
    return ParseResult(tree, tuple(escape_errors))


def _build(tree, file: str) -> ast.SpecFile:
    """The syntax tree of a parse tree. lark wraps an exception raised in a builder callback in a
    VisitError; a RecursionError (nesting deeper than the limit) is re-raised as itself so that the
    callers report it as E0007, like one raised by the parser."""
    try:
        return _Builder(file).transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, RecursionError):
            raise RecursionError(str(error.orig_exc)) from None
        raise


# ---------------------------------------------------------------- recovery

def _code_only(text: str) -> str:
    """The text with strings and comments turned to spaces, so keywords inside them are not seen."""
    return _STRING_OR_COMMENT.sub(lambda m: " " * len(m.group()), text)


def _blank_prefix(text: str, offset: int) -> str:
    """The text with everything before `offset` turned to spaces, keeping line numbers."""
    if offset == 0:
        return text
    prefix = re.sub(r"[^\n]", " ", text[:offset])
    return prefix + text[offset:]


def _error_offset(error: UnexpectedInput, text: str) -> int:
    if isinstance(error, UnexpectedToken) and error.token.type == "$END":
        return len(text)
    position = getattr(error, "pos_in_stream", None)
    if position is None and isinstance(error, UnexpectedToken):
        position = error.token.start_pos
    return position if position is not None else len(text)


_DECLARATION_START = re.compile(r"^[ \t]*(" + "|".join(DECLARATION_KEYWORDS) + r")\b", re.MULTILINE)


def _next_declaration(text: str, after: int) -> int | None:
    """Where the next declaration starts on a line of its own after `after`."""
    line_end = text.find("\n", after)
    if line_end < 0:
        return None
    match = _DECLARATION_START.search(_code_only(text), line_end + 1)
    return match.start(1) if match else None


class LineIndex:
    """Offsets to 1-based lines and columns in O(log n), for many spans of one text."""

    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.starts = [0] + [match.end() for match in re.finditer("\n", text)]

    def span(self, start: int, end: int) -> Span:
        line = bisect.bisect_right(self.starts, start)
        end_line = bisect.bisect_right(self.starts, end)
        return Span(
            self.file, line, start - self.starts[line - 1] + 1, end_line, end - self.starts[end_line - 1] + 1,
            start, end,
        )


def span_of(text: str, file: str, start: int, end: int) -> Span:
    """The span of text[start:end], with 1-based lines and columns."""
    return LineIndex(text, file).span(start, end)


# ---------------------------------------------------------------- strings and comments

_ESCAPE = re.compile(r"\\(.)")
# A string or a comment, whichever starts first: a `#` inside a string is no comment.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')


def decode_string(token_text: str) -> str:
    """The value of a string literal: the quotes dropped, `\\"` and `\\\\` undone."""
    return _ESCAPE.sub(lambda m: m.group(1), token_text[1:-1])


def _comments_and_escape_errors(text: str, file: str) -> tuple[tuple[ast.Comment, ...], list[Diagnostic]]:
    """Every comment of a parsed file, and the escapes other than `\\"` and `\\\\` its strings hold.

    The lexer lets any escape through so that this pass can name the bad one precisely.
    """
    comments: list[ast.Comment] = []
    problems: list[Diagnostic] = []
    lines = LineIndex(text, file)
    for match in _STRING_OR_COMMENT.finditer(text):
        if match.group().startswith("#"):
            comments.append(ast.Comment(match.group().rstrip(), lines.span(match.start(), match.end())))
            continue
        for escape in _ESCAPE.finditer(match.group()):
            if escape.group(1) not in '"\\':
                start = match.start() + escape.start()
                problems.append(
                    Diagnostic(
                        "E0004", f"unknown escape `\\{escape.group(1)}` in string", lines.span(start, start + 2),
                        help='only `\\"` and `\\\\` are escapes; write a backslash as `\\\\`',
                    )
                )
    return tuple(comments), problems


# ---------------------------------------------------------------- tree builder


def _token_span(file: str, token: Token) -> Span:
    return Span(
        file, token.line or 1, token.column or 1, token.end_line or 1, token.end_column or 1,
        token.start_pos or 0, token.end_pos or 0,
    )


@v_args(meta=True)
class _Builder(Transformer):
    """Turns lark's parse events into `ast` nodes; method names are grammar rule names."""

    def __init__(self, file: str) -> None:
        super().__init__(visit_tokens=False)
        self.file = file

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1, 1, 1, 0, 0)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos)

    def _id(self, token: Token) -> ast.Identifier:
        return ast.Identifier(str(token), _token_span(self.file, token))

    # -- file and declarations

    def start(self, meta, children):
        spec = children[0] if children and isinstance(children[0], ast.SpecName) else None
        decls = tuple(c for c in children if c is not None and not isinstance(c, ast.SpecName))
        return ast.SpecFile(spec, decls, (), self._span(meta))

    def spec_decl(self, meta, children):
        return ast.SpecName(self._id(children[0]), self._span(meta))

    def import_decl(self, meta, children):
        path, alias = children
        return ast.Import(decode_string(str(path)), self._id(alias), self._span(meta))

    def labels_decl(self, meta, children):
        name, value, parent = children
        return ast.LabelsDecl(self._id(name), value, parent, self._span(meta))

    def within_parent(self, meta, children):
        return children[0]

    def dim_decl(self, meta, children):
        return ast.DimDecl(tuple(children), self._span(meta))

    def dim_batch(self, meta, children):
        return ast.DimItem(self._id(children[0]), "batch", None, self._span(meta))

    def dim_defined(self, meta, children):
        return ast.DimItem(self._id(children[0]), "defined", children[1], self._span(meta))

    def dim_free(self, meta, children):
        return ast.DimItem(self._id(children[0]), "free", None, self._span(meta))

    def type_decl(self, meta, children):
        name, params, value = children
        return ast.TypeDecl(self._id(name), params or (), value, self._span(meta))

    def type_params(self, meta, children):
        return tuple(self._id(token) for token in children)

    def type_expr(self, meta, children):
        return ast.TypeExpr(children[0], tuple(children[1:]), self._span(meta))

    def tensor_type(self, meta, children):
        return ast.TensorType(children[0] or (), self._span(meta))

    def dim_list(self, meta, children):
        return tuple(children)

    def type_ref(self, meta, children):
        name, args = children
        return ast.TypeRef(name, args or (), self._span(meta))

    def type_args(self, meta, children):
        return tuple(children)

    def flag_refinement(self, meta, children):
        return ast.FlagRefinement(self._id(children[0]), self._span(meta))

    def range_refinement(self, meta, children):
        low, high = children[0]
        return ast.RangeRefinement(low, high, self._span(meta))

    def interval(self, meta, children):
        return (children[0], children[1])

    def interface_decl(self, meta, children):
        name, params, *members = children
        return ast.InterfaceDecl(self._id(name), params or (), tuple(members), self._span(meta))

    def port(self, meta, children):
        direction, name, type_ = children
        return ast.Port(direction, self._id(name), type_, self._span(meta))

    def port_direction(self, meta, children):
        return str(children[0])

    def binding(self, meta, children):
        return ast.Binding(decode_string(str(children[0])), self._span(meta))

    def clause(self, meta, children):
        kind, name, expr, data = children
        return ast.Clause(kind, name, expr, data, self._span(meta))

    def clause_kind(self, meta, children):
        return str(children[0])

    def clause_name(self, meta, children):
        return self._id(children[0])

    def data_binding(self, meta, children):
        return ast.DataBinding(children[0], children[1], self._span(meta))

    def confidence(self, meta, children):
        return children[0]

    def cost_block(self, meta, children):
        return ast.CostBlock(tuple(c for c in children if c is not None), self._span(meta))

    def cost_item(self, meta, children):
        metric, op, value, per, unit, batch = children
        return ast.CostItem(metric, str(op), value, per is not None, unit, batch, self._span(meta))

    def cost_metric(self, meta, children):
        return str(children[0])

    def cost_per(self, meta, children):
        return True

    def cost_unit(self, meta, children):
        return str(children[0])

    def cost_batch(self, meta, children):
        return children[0]

    def module_decl(self, meta, children):
        name, interface, *members = children
        return ast.ModuleDecl(self._id(name), interface, tuple(m for m in members if m is not None), self._span(meta))

    def data_decl(self, meta, children):
        name, input_type, labels, binding = children
        return ast.DataDecl(self._id(name), input_type, labels, binding, self._span(meta))

    def compose_decl(self, meta, children):
        name, interface, expr, *members = children
        return ast.ComposeDecl(
            self._id(name), interface, expr, tuple(m for m in members if m is not None), self._span(meta)
        )

    def comp_pipe(self, meta, children):
        return ast.Pipe(children[0], children[1], self._span(meta))

    def comp_ref(self, meta, children):
        return ast.CompRef(children[0], self._span(meta))

    def comp_vote(self, meta, children):
        parts, overlap = children[0]
        return ast.Vote(parts, overlap, self._span(meta))

    def vote_args(self, meta, children):
        overlap = children[-1]
        parts = tuple(children[:-1])
        return parts, (self._id(overlap) if overlap is not None else None)

    def comp_replace(self, meta, children):
        base, old, new = children
        return ast.Replace(base, old, new, self._span(meta))

    def qualified_name(self, meta, children):
        return ast.QualifiedName(tuple(str(t) for t in children), self._span(meta))

    # -- expressions

    def forall_labels(self, meta, children):
        var, domain, body = children
        return ast.LabelQuantifier("forall", self._id(var), domain, body, self._span(meta))

    def exists_labels(self, meta, children):
        var, domain, body = children
        return ast.LabelQuantifier("exists", self._id(var), domain, body, self._span(meta))

    def forall_ball(self, meta, children):
        var, radius, center, norm, body = children
        center_name = ast.Name(str(center), _token_span(self.file, center))
        return ast.BallQuantifier(self._id(var), radius, center_name, norm, body, self._span(meta))

    def ball_norm(self, meta, children):
        return self._id(children[0])

    def _binary(self, op: str, meta, children) -> ast.Binary:
        return ast.Binary(op, children[0], children[1], self._span(meta))

    def implies(self, meta, children):
        return self._binary("implies", meta, children)

    def or_(self, meta, children):
        return self._binary("or", meta, children)

    def and_(self, meta, children):
        return self._binary("and", meta, children)

    def not_(self, meta, children):
        return ast.Unary("not", children[0], self._span(meta))

    def compare(self, meta, children):
        tolerance = children[-1]
        chain = children[:-1]
        return ast.Compare(tuple(chain[0::2]), tuple(str(op) for op in chain[1::2]), tolerance, self._span(meta))

    def tolerance(self, meta, children):
        return children[0]

    def in_interval(self, meta, children):
        value, (low, high) = children
        return ast.InInterval(value, low, high, self._span(meta))

    def in_labels(self, meta, children):
        return ast.InLabels(children[0], children[1], self._span(meta))

    def union_(self, meta, children):
        return self._binary("|", meta, children)

    def add(self, meta, children):
        return self._binary("+", meta, children)

    def sub(self, meta, children):
        return self._binary("-", meta, children)

    def mul(self, meta, children):
        return self._binary("*", meta, children)

    def div(self, meta, children):
        return self._binary("/", meta, children)

    def floordiv(self, meta, children):
        return self._binary("//", meta, children)

    def pow_(self, meta, children):
        return self._binary("**", meta, children)

    def neg(self, meta, children):
        return ast.Unary("-", children[0], self._span(meta))

    def call(self, meta, children):
        func, args = children
        return ast.Call(func, args or (), self._span(meta))

    def call_args(self, meta, children):
        return tuple(children)

    def keyword_arg(self, meta, children):
        return ast.KeywordArg(self._id(children[0]), children[1], self._span(meta))

    def index(self, meta, children):
        return ast.Index(children[0], children[1], self._span(meta))

    def index_list(self, meta, children):
        return tuple(children)

    def slice_(self, meta, children):
        return ast.Slice(children[0], children[1], self._span(meta))

    def ellipsis(self, meta, children):
        return ast.EllipsisDims(self._span(meta))

    def number(self, meta, children):
        return ast.Number(str(children[0]), self._span(meta))

    def string(self, meta, children):
        return ast.String(decode_string(str(children[0])), self._span(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), self._span(meta))

    def dotted_name(self, meta, children):
        return ast.Name(".".join(str(token) for token in children), self._span(meta))

    def self_(self, meta, children):
        return ast.SelfRef(self._span(meta))

    def other(self, meta, children):
        return ast.OtherLabel(self._span(meta))

    def wildcard(self, meta, children):
        return ast.Wildcard(self._span(meta))

    def label_set(self, meta, children):
        return ast.LabelSetLiteral(children[0] or (), self._span(meta))

    def set_items(self, meta, children):
        return tuple(children)

    def label_range(self, meta, children):
        return ast.LabelRange(children[0], children[1], self._span(meta))


