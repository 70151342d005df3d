"""`mdl fmt`: print a syntax tree in the one canonical layout of .mdl, keeping its comments.

The layout, so that two people's specs read the same and diffs show only real changes:

- Two-space indentation. `interface`, and a `module` or `compose` with members, are
  *block declarations*: `{` ends the header line, one member per line, `}` alone on the
  last line. A `module` or `compose` without members is written without braces, an
  `interface` without members as `interface X {}`. A `data` binding and a `cost` block
  stay on one line: `data d : (Image, Digit) { python "..." }`,
  `cost { params <= 50k, flops <= 2M per sample }`.
- Blank lines: one after `spec`, and one between two top-level declarations unless both
  are one-line declarations of the same kind (`import`, `labels`, `dim`, `type`, `data`,
  or a `module` / `compose` without members), which stay together. A block declaration is
  never a one-liner, so a blank line always comes before and after it. Beyond these, a
  blank line the author left between two declarations or two members of a block is kept
  (several count as one), as black keeps them, so that groups of clauses stay apart;
  none is kept after `{` or before `}`.
- Expressions: one space around binary operators, `, ` between items, `name=value` for
  keyword arguments, `lo..hi` in label sets, `a:b` in slices. Numbers are printed as
  written, strings with `"` and `\\` escaped. Parentheses appear exactly where the
  grammar's precedence or associativity needs them (the tree keeps none).
- Refinements are printed in the order the tree holds them (the source order), so
  that formatting never changes the tree.
- Width: a line may run to 100 characters. A longer clause continues on the next
  line after its name (or its `ensures`/`requires`), one level deeper; a longer
  `compose ... = vote(...)` puts the parts on lines of their own, filled to the width,
  and `)` back at the start of a line. Other long lines stay whole.

Comments: every output line stands for the code that starts at its *anchor* (a
declaration, a member, a block header or its closing `}`). The comments found after one
anchor and before the next belong to the earlier line: the first of them, if it lies on
one of the source lines of that line's code, stays at the end of it
(`dim B : batch  # the batch`; a comment inside a `cost { ... }` written over several
lines thus moves to the end of its one line); the rest go on lines of their own before
the next line (before `}` inside a block, at the end of the file after the last line).
Comment order never changes, a blank line that followed a comment is kept, and formatted
text formats to itself.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise

from mdl_lang.diagnostics import Diagnostic
from mdl_lang.syntax import ast
from mdl_lang.syntax.parser import front_end_context, parse, too_deep

INDENT = "  "
TRAILING_GAP = "  "
MAX_WIDTH = 100


@dataclass(frozen=True)
class FormatResult:
    """The canonical text of a file, or None and the diagnostics that kept it from parsing."""

    text: str | None
    diagnostics: tuple[Diagnostic, ...]


def format_text(text: str, file: str = "<input>") -> FormatResult:
    """Parse and print again; text that does not parse cleanly is left alone.

    A string with an unknown escape parses with a diagnostic, but its decoded value
    would lose the backslash, so any error keeps the text from being rewritten.
    """
    result = parse(text, file)
    if result.tree is None or any(diagnostic.is_error for diagnostic in result.diagnostics):
        return FormatResult(None, result.diagnostics)
    with front_end_context():
        try:
            return FormatResult(format_spec(result.tree), result.diagnostics)
        except RecursionError:
            return FormatResult(None, (too_deep(file),))


def format_spec(tree: ast.SpecFile) -> str:
    """The canonical text of a tree: `parse(format_spec(t)).tree == t`, comments included."""
    lines = _file_lines(tree)
    end_comments = _place_comments(lines, tree.comments)
    _keep_author_blank_lines(lines)
    rendered = list(_rendered_lines(lines)) + list(_end_comment_lines(end_comments, lines))
    return "\n".join(rendered) + "\n" if rendered else ""


# ---------------------------------------------------------------- expressions


class Level(IntEnum):
    """How tightly a construct binds, loosest first (the grammar's precedence ladder).

    A node is parenthesized where its level is below the level its place needs.
    """

    QUANTIFIER = 0
    IMPLIES = 1
    OR = 2
    AND = 3
    NOT = 4
    COMPARE = 5
    UNION = 6
    SUM = 7
    PRODUCT = 8
    UNARY = 9
    POWER = 10
    POSTFIX = 11
    ATOM = 12


BINARY_LEVELS = {
    "implies": Level.IMPLIES,
    "or": Level.OR,
    "and": Level.AND,
    "|": Level.UNION,
    "+": Level.SUM,
    "-": Level.SUM,
    "*": Level.PRODUCT,
    "/": Level.PRODUCT,
    "//": Level.PRODUCT,
    "**": Level.POWER,
}

NODE_LEVELS: dict[type, Level] = {
    ast.LabelQuantifier: Level.QUANTIFIER,
    ast.BallQuantifier: Level.QUANTIFIER,
    ast.Compare: Level.COMPARE,
    ast.InInterval: Level.COMPARE,
    ast.InLabels: Level.COMPARE,
    ast.Call: Level.POSTFIX,
    ast.Index: Level.POSTFIX,
}


def level_of(node: ast.Expr) -> Level:
    """The precedence level the grammar gives `node`."""
    if isinstance(node, ast.Binary):
        return BINARY_LEVELS[node.op]
    if isinstance(node, ast.Unary):
        return Level.NOT if node.op == "not" else Level.UNARY
    return NODE_LEVELS.get(type(node), Level.ATOM)


def expression(node: ast.Expr, minimum: Level = Level.QUANTIFIER) -> str:
    """`node` as text, in parentheses when its place needs a tighter level than it has.

    `minimum` is the loosest level the grammar accepts at that place: `QUANTIFIER`
    wherever it says `expr`, `UNION` for a comparison operand, and so on.
    """
    text = EXPRESSION_WRITERS[type(node)](node)
    return f"({text})" if level_of(node) < minimum else text


def _operand_levels(op: str) -> tuple[Level, Level]:
    """The levels a binary operator's left and right operands need.

    `implies` is right-associative and takes a quantifier on its right; `**` takes a
    postfix on its left and a unary on its right. The rest are left-associative, so an
    equal-level right operand needs parentheses.
    """
    if op == "implies":
        return Level.OR, Level.QUANTIFIER
    if op == "**":
        return Level.POSTFIX, Level.UNARY
    level = BINARY_LEVELS[op]
    return level, Level(level + 1)


def _binary(node: ast.Binary) -> str:
    left_level, right_level = _operand_levels(node.op)
    return f"{expression(node.left, left_level)} {node.op} {expression(node.right, right_level)}"


def _unary(node: ast.Unary) -> str:
    if node.op == "not":
        return f"not {expression(node.operand, Level.NOT)}"
    return f"-{expression(node.operand, Level.UNARY)}"


def _compare(node: ast.Compare) -> str:
    parts = [expression(node.operands[0], Level.UNION)]
    for op, operand in zip(node.ops, node.operands[1:], strict=True):
        parts += [op, expression(operand, Level.UNION)]
    if node.tolerance is not None:
        parts += ["within", expression(node.tolerance, Level.UNION)]
    return " ".join(parts)


def _in_interval(node: ast.InInterval) -> str:
    return f"{expression(node.value, Level.UNION)} in {_interval(node.low, node.high)}"


def _interval(low: ast.Expr, high: ast.Expr) -> str:
    return f"[{expression(low)}, {expression(high)}]"


def _in_labels(node: ast.InLabels) -> str:
    return f"{expression(node.value, Level.UNION)} in {expression(node.labels, Level.UNION)}"


def _call(node: ast.Call) -> str:
    return f"{expression(node.func, Level.POSTFIX)}({_comma_list(_call_argument(arg) for arg in node.args)})"


def _call_argument(node: ast.Expr | ast.KeywordArg) -> str:
    if isinstance(node, ast.KeywordArg):
        return f"{node.name.name}={expression(node.value)}"
    return expression(node)


def _index(node: ast.Index) -> str:
    return f"{expression(node.value, Level.POSTFIX)}[{_comma_list(_index_item(item) for item in node.items)}]"


def _index_item(node: ast.Expr | ast.Slice) -> str:
    if isinstance(node, ast.Slice):
        start = "" if node.start is None else expression(node.start)
        stop = "" if node.stop is None else expression(node.stop)
        return f"{start}:{stop}"
    return expression(node)


def _label_set(node: ast.LabelSetLiteral) -> str:
    return "{" + _comma_list(_label_set_item(item) for item in node.items) + "}"


def _label_set_item(node: ast.Expr | ast.LabelRange) -> str:
    if isinstance(node, ast.LabelRange):
        return f"{expression(node.low, Level.SUM)}..{expression(node.high, Level.SUM)}"
    return expression(node, Level.UNION)


def _label_quantifier(node: ast.LabelQuantifier) -> str:
    return f"{node.quantifier} {node.var.name} in {expression(node.domain, Level.UNION)}: {expression(node.body)}"


def _ball_quantifier(node: ast.BallQuantifier) -> str:
    norm = "" if node.norm is None else f" ({node.norm.name})"
    radius = expression(node.radius, Level.UNION)
    return f"forall {node.var.name} within {radius} of {node.center.id}{norm}: {expression(node.body)}"


def quoted(value: str) -> str:
    """A string literal for `value`: only `\\` and `"` need escapes in .mdl."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comma_list(items: Iterator[str]) -> str:
    return ", ".join(items)


EXPRESSION_WRITERS: dict[type, Callable] = {
    ast.Number: lambda node: node.text,
    ast.String: lambda node: quoted(node.value),
    ast.Name: lambda node: node.id,
    ast.SelfRef: lambda node: "self",
    ast.OtherLabel: lambda node: "other",
    ast.Wildcard: lambda node: "_",
    ast.EllipsisDims: lambda node: "...",
    ast.LabelSetLiteral: _label_set,
    ast.Binary: _binary,
    ast.Unary: _unary,
    ast.Compare: _compare,
    ast.InInterval: _in_interval,
    ast.InLabels: _in_labels,
    ast.Call: _call,
    ast.Index: _index,
    ast.LabelQuantifier: _label_quantifier,
    ast.BallQuantifier: _ball_quantifier,
}


# ---------------------------------------------------------------- types, members, compositions


def type_expression(node: ast.TypeExpr) -> str:
    """`Tensor[B, L] float32 in [0, 1]`: the head, then the refinements in tree order."""
    return " ".join([_type_head(node.head), *(_refinement(r) for r in node.refinements)])


def _type_head(node: ast.TensorType | ast.TypeRef) -> str:
    if isinstance(node, ast.TensorType):
        return f"Tensor[{_comma_list(expression(dim) for dim in node.dims)}]"
    return type_reference(node)


def type_reference(node: ast.TypeRef) -> str:
    if not node.args:
        return node.name.dotted
    return f"{node.name.dotted}[{_comma_list(expression(arg) for arg in node.args)}]"


def _refinement(node: ast.Refinement) -> str:
    if isinstance(node, ast.FlagRefinement):
        return node.name.name
    return f"in {_interval(node.low, node.high)}"


def member(node: ast.Member) -> str:
    """One member of a block, on one line."""
    if isinstance(node, ast.Port):
        return f"{node.direction} {node.name.name}: {type_expression(node.type)}"
    if isinstance(node, ast.Binding):
        return f"python {quoted(node.target)}"
    if isinstance(node, ast.Clause):
        return _clause(node)
    return _cost_block(node)


def _clause(node: ast.Clause) -> str:
    name = "" if node.name is None else f" {node.name.name}:"
    text = f"{node.kind}{name} {expression(node.expr)}"
    if node.data is not None:
        text += f" on {node.data.data.dotted}"
        if node.data.confidence is not None:
            text += f" with confidence {expression(node.data.confidence)}"
    return text


def _cost_block(node: ast.CostBlock) -> str:
    if not node.items:
        return "cost {}"
    return "cost { " + _comma_list(_cost_item(item) for item in node.items) + " }"


def _cost_item(node: ast.CostItem) -> str:
    parts = [node.metric, node.op, expression(node.value)]
    if node.per_sample:
        parts.append("per sample")
    if node.unit is not None:
        parts.append(node.unit)
    if node.batch is not None:
        parts.append(f"at batch {expression(node.batch)}")
    return " ".join(parts)


def composition(node: ast.CompExpr) -> str:
    """A composition expression; `>>` is left-associative, so a `>>` on its right is parenthesized."""
    if isinstance(node, ast.CompRef):
        return node.name.dotted
    if isinstance(node, ast.Pipe):
        right = composition(node.right)
        return f"{composition(node.left)} >> {f'({right})' if isinstance(node.right, ast.Pipe) else right}"
    if isinstance(node, ast.Vote):
        parts = [composition(part) for part in node.parts]
        if node.overlap is not None:
            parts.append(f"overlap={node.overlap.name}")
        return f"vote({', '.join(parts)})"
    return f"replace({composition(node.base)}, {node.old.dotted}, {node.new.dotted})"


# ---------------------------------------------------------------- declarations


def declaration_head(decl: ast.Decl) -> str:
    """A declaration up to its `{` (a block) or in full (a one-liner)."""
    if isinstance(decl, ast.Import):
        return f"import {quoted(decl.path)} as {decl.alias.name}"
    if isinstance(decl, ast.LabelsDecl):
        return _labels_declaration(decl)
    if isinstance(decl, ast.DimDecl):
        return "dim " + _comma_list(_dim_item(item) for item in decl.items)
    if isinstance(decl, ast.TypeDecl):
        return f"type {decl.name.name}{_parameters(decl.params)} = {type_expression(decl.value)}"
    if isinstance(decl, ast.InterfaceDecl):
        return f"interface {decl.name.name}{_parameters(decl.params)}" + ("" if decl.members else " {}")
    if isinstance(decl, ast.ModuleDecl):
        return f"module {decl.name.name} : {type_reference(decl.interface)}"
    if isinstance(decl, ast.DataDecl):
        return _data_declaration(decl)
    return f"compose {decl.name.name} : {type_reference(decl.interface)} = {composition(decl.expr)}"


def _labels_declaration(decl: ast.LabelsDecl) -> str:
    """`labels N = V [within P]`.

    Before `within P`, a comparison ending the value would take `within P` as its
    tolerance, so the value is then parenthesized unless it binds at least as `|`.
    """
    if decl.parent is None:
        return f"labels {decl.name.name} = {expression(decl.value)}"
    return f"labels {decl.name.name} = {expression(decl.value, Level.UNION)} within {expression(decl.parent)}"


def _dim_item(item: ast.DimItem) -> str:
    if item.kind == "batch":
        return f"{item.name.name} : batch"
    if item.value is not None:
        return f"{item.name.name} = {expression(item.value)}"
    return item.name.name


def _parameters(params: tuple[ast.Identifier, ...]) -> str:
    return f"[{_comma_list(param.name for param in params)}]" if params else ""


def _data_declaration(decl: ast.DataDecl) -> str:
    text = f"data {decl.name.name} : ({type_expression(decl.input_type)}, {expression(decl.labels)})"
    return text if decl.binding is None else f"{text} {{ {member(decl.binding)} }}"


# ---------------------------------------------------------------- lines and comments


@dataclass
class _Line:
    """One output line and the stretch of source it stands for.

    `anchor` is the source offset where its code starts; `first_line` and `last_line`
    are the source lines of that code, which tell a trailing comment from one on a line
    of its own. A closing `}` line indents the comments before it one level deeper.
    """

    text: str
    depth: int
    anchor: int
    first_line: int
    last_line: int
    kind: type | None = None
    one_liner: bool = False
    closes_block: bool = False
    blank_before: bool = False
    leading: list[ast.Comment] = field(default_factory=list)
    trailing: ast.Comment | None = None


def _file_lines(tree: ast.SpecFile) -> list[_Line]:
    """Every line of the file's code, blank-line separation already decided."""
    lines: list[_Line] = []
    if tree.spec is not None:
        span = tree.spec.span
        lines.append(_Line(f"spec {tree.spec.name.name}", 0, span.start, span.line, span.end_line, ast.SpecName))
    for decl in tree.decls:
        decl_lines = _declaration_lines(decl)
        if lines:
            decl_lines[0].blank_before = not _stay_together(lines[-1], decl_lines[0])
        lines += decl_lines
    return lines


def _stay_together(previous: _Line, line: _Line) -> bool:
    """Two top-level declarations share a group when both are one-liners of one kind."""
    return previous.one_liner and line.one_liner and previous.kind is line.kind


def _declaration_lines(decl: ast.Decl) -> list[_Line]:
    """A one-liner's line, or a block's header, members and `}` (a declaration with members is a block)."""
    span = decl.span
    if not (isinstance(decl, ast.InterfaceDecl | ast.ModuleDecl | ast.ComposeDecl) and decl.members):
        text = _wrapped_head(decl, "")
        return [_Line(text, 0, span.start, span.line, span.end_line, type(decl), one_liner=True)]
    header = _Line(_wrapped_head(decl, " {"), 0, span.start, span.line, _header_end_line(decl), type(decl))
    body = [_Line(_wrapped_member(m), 1, m.span.start, m.span.line, m.span.end_line) for m in decl.members]
    closer = _Line("}", 0, span.end - 1, span.end_line, span.end_line, closes_block=True)
    return [header, *body, closer]


def _wrapped_head(decl: ast.Decl, suffix: str) -> str:
    """A declaration's head; a `vote(...)` too wide for one line gets its parts on lines of their own.

    Lines inside the text are separated by newlines and indented relative to the
    declaration; rendering indents them all by the declaration's depth.
    """
    text = declaration_head(decl) + suffix
    if len(text) <= MAX_WIDTH or not (isinstance(decl, ast.ComposeDecl) and isinstance(decl.expr, ast.Vote)):
        return text
    parts = [composition(part) for part in decl.expr.parts]
    if decl.expr.overlap is not None:
        parts.append(f"overlap={decl.expr.overlap.name}")
    opening = f"compose {decl.name.name} : {type_reference(decl.interface)} = vote("
    return "\n".join([opening, *_packed(parts, INDENT), ")" + suffix])


def _packed(items: list[str], indent: str) -> list[str]:
    """Comma-separated items filled into lines of at most MAX_WIDTH characters."""
    lines: list[str] = []
    current = ""
    for position, item in enumerate(items):
        piece = item + ("," if position < len(items) - 1 else "")
        candidate = f"{current} {piece}" if current else piece
        if current and len(indent + candidate) > MAX_WIDTH:
            lines.append(indent + current)
            candidate = piece
        current = candidate
    return [*lines, indent + current]


def _wrapped_member(node: ast.Member) -> str:
    """A member on one line; a clause too wide for it continues on the next line, after its name."""
    text = member(node)
    if len(INDENT + text) <= MAX_WIDTH or not isinstance(node, ast.Clause):
        return text
    head = node.kind + (f" {node.name.name}:" if node.name is not None else "")
    return head + "\n" + INDENT + text[len(head) + 1:]


def _header_end_line(decl: ast.InterfaceDecl | ast.ModuleDecl | ast.ComposeDecl) -> int:
    """The source line where a block's header code ends (its `{` is normally there too)."""
    if isinstance(decl, ast.InterfaceDecl):
        return (decl.params[-1] if decl.params else decl.name).span.end_line
    if isinstance(decl, ast.ModuleDecl):
        return decl.interface.span.end_line
    return decl.expr.span.end_line


def _place_comments(lines: list[_Line], comments: tuple[ast.Comment, ...]) -> list[ast.Comment]:
    """Attach each comment to a line (see the module docstring); return those left for the end of the file."""
    anchors = [line.anchor for line in lines]
    groups: dict[int, list[ast.Comment]] = {}
    for comment in comments:
        groups.setdefault(bisect_right(anchors, comment.span.start) - 1, []).append(comment)
    end_of_file: list[ast.Comment] = []
    for index, group in sorted(groups.items()):
        shares_a_line = index >= 0 and lines[index].first_line <= group[0].span.line <= lines[index].last_line
        if shares_a_line:
            lines[index].trailing = group[0]
        rest = group[1:] if shares_a_line else group
        if index + 1 < len(lines):
            lines[index + 1].leading += rest
        else:
            end_of_file += rest
    return end_of_file


def _keep_author_blank_lines(lines: list[_Line]) -> None:
    """Keep a blank line the source had between two declarations or two members (not after `{` or before `}`)."""
    for previous, line in pairwise(lines):
        if line.closes_block or (line.depth == 1 and previous.depth == 0):
            continue
        first_line = line.leading[0].span.line if line.leading else line.first_line
        if first_line - previous.last_line >= 2:
            line.blank_before = True


def _rendered_lines(lines: list[_Line]) -> Iterator[str]:
    previous_last_line = 0
    for line in lines:
        if line.blank_before:
            yield ""
        comment_indent = INDENT * (line.depth + line.closes_block)
        yield from _own_line_comments(line.leading, comment_indent, previous_last_line, line.first_line)
        text = "\n".join(INDENT * line.depth + piece for piece in line.text.split("\n"))
        yield text if line.trailing is None else text + TRAILING_GAP + line.trailing.text
        previous_last_line = line.last_line


def _own_line_comments(
    comments: list[ast.Comment], indent: str, previous_code_line: int, next_code_line: int
) -> Iterator[str]:
    """Comments on lines of their own, each followed by a blank line if one followed it in the source.

    A comment from inside the previous line's code (`{ # c` of a one-line block) counts
    as ending where that code ends, so the code's own lines are not taken for blank ones.
    """
    if not comments:
        return
    following = [comment.span.line for comment in comments[1:]] + [next_code_line]
    for comment, next_line in zip(comments, following, strict=True):
        yield indent + comment.text
        if next_line - max(comment.span.end_line, previous_code_line) >= 2:
            yield ""


def _end_comment_lines(comments: list[ast.Comment], lines: list[_Line]) -> Iterator[str]:
    """Comments after the last code line, a blank line before them if the source had one."""
    if not comments:
        return
    last_code_line = lines[-1].last_line if lines else 0
    if lines and comments[0].span.line - last_code_line >= 2:
        yield ""
    yield from _own_line_comments(comments, "", last_code_line, comments[-1].span.end_line + 1)
