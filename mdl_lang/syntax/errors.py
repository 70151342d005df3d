"""Syntax errors in a user's words: what was expected, what was found, which bracket is open.

lark reports terminal names (`RPAR`, `__ANON_3`); this module turns them into
the spelling the user typed (`` `)` ``) or into a category ("an expression"),
and looks at the brackets opened before the error so that an unclosed one is
named with the place it was opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from mdl_lang.diagnostics import Diagnostic
from mdl_lang.span import Span

CLOSERS = {"(": ")", "[": "]", "{": "}"}
OPENERS = {closer: opener for opener, closer in CLOSERS.items()}

REGEX_TERMINALS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "COMPARE_OP": "a comparison",
    "COST_OP": "<=",
    "$END": "end of file",
}

DECLARATION_WORDS = {"spec", "import", "labels", "dim", "type", "interface", "module", "data", "compose"}
MEMBER_WORDS = {"input", "output", "requires", "ensures", "cost", "python"}
EXPRESSION_STARTS = {"NAME", "NUMBER", "STRING", "(", "{", "-", "not", "self", "other", "_", "...", "forall", "exists"}
OPERATORS = {
    "+", "-", "*", "/", "//", "**", "|", "and", "or", "implies", "a comparison", "in", "within", "[", "(", ".", "..",
    "<=",
}


@dataclass(frozen=True)
class OpenBracket:
    char: str
    label: str
    line: int
    column: int


def describe_syntax_error(
    error: UnexpectedInput, text: str, file: str, spellings: dict[str, str]
) -> Diagnostic:
    """One diagnostic for a lark error, worded for the person who wrote the spec.

    `spellings` maps lark's terminal names to the text they match (`RPAR` to `)`).
    """
    if isinstance(error, UnexpectedCharacters):
        return _unexpected_character(error, text, file)
    assert isinstance(error, UnexpectedToken)
    return _unexpected_token(error, text, file, spellings)


def _unexpected_character(error: UnexpectedCharacters, text: str, file: str) -> Diagnostic:
    position = error.pos_in_stream
    char = text[position] if position < len(text) else ""
    span = Span(file, error.line, error.column, error.line, error.column + 1, position, position + 1)
    if char == '"':
        line_end = text.find("\n", position)
        line_end = len(text) if line_end < 0 else line_end
        span = Span(file, error.line, error.column, error.line, error.column + line_end - position, position, line_end)
        return Diagnostic(
            "E0005", "unterminated string", span,
            help='close the string with `"` on the same line; write a quote inside it as `\\"`',
        )
    if char in OPENERS:
        return _unmatched_closer(char, span)
    shown = char if char.isprintable() else repr(char)
    return Diagnostic(
        "E0003", f"unexpected character `{shown}`", span,
        help="a spec holds names, numbers, strings, operators and `#` comments",
    )


def _unmatched_closer(char: str, span: Span) -> Diagnostic:
    return Diagnostic(
        "E0006", f"unmatched `{char}`", span,
        help=f"nothing is open here for `{char}` to close; remove it or add the `{OPENERS[char]}` it belongs to",
    )


def _unexpected_token(error: UnexpectedToken, text: str, file: str, spellings: dict[str, str]) -> Diagnostic:
    token = error.token
    expected = _expected_words(_acceptable(error), spellings)
    stack = open_brackets(text, _offset_of(token, text))
    at_end = token.type == "$END"
    span = _token_span(token, text, file)
    found = "end of file" if at_end else _found_word(token)
    if not at_end and str(token) in OPENERS and (not stack or CLOSERS[stack[-1].char] != str(token)):
        if not any(CLOSERS[opener.char] == str(token) for opener in stack):
            return _unmatched_closer(str(token), span)
        # The closer belongs to an outer bracket: the inner one was left open.
        return _unclosed(stack[-1], found, span, "E0001")
    code = "E0002" if at_end else "E0001"
    if stack and CLOSERS[stack[-1].char] in expected and _looks_unclosed(token, expected):
        others = [word for word in expected if word not in (CLOSERS[stack[-1].char], *OPERATORS)]
        return _unclosed(stack[-1], found, span, code, others)
    message = f"expected {_describe_expected(expected)}, found {found}"
    return Diagnostic(code, message, span, help=_hint(expected, token, text))


def _unclosed(opener: OpenBracket, found: str, span: Span, code: str, others: list[str] = ()) -> Diagnostic:
    closer = CLOSERS[opener.char]
    where = f"{opener.line}:{opener.column}"
    message = f"expected `{closer}` to close `{opener.label}` opened at {where}, found {found}"
    hint = f"add `{closer}`" + (f", or {_join(list(others))} to continue" if others and len(others) <= 3 else "")
    return Diagnostic(code, message, span, help=hint)


def _acceptable(error: UnexpectedToken) -> set[str]:
    """The terminals the parser accepts at the error: exact where lark can replay the state."""
    parser = getattr(error, "interactive_parser", None)
    if parser is None:
        return set(error.expected)
    try:
        return set(parser.accepts()) or set(error.expected)
    except Exception:  # noqa: BLE001 - a failed replay only costs precision
        return set(error.expected)


def _looks_unclosed(token, expected: list[str]) -> bool:
    """Whether the best reading is a missing closer rather than a bad item inside the brackets."""
    if token.type == "$END" or str(token) in OPENERS:
        return True
    # A keyword is lexed as its own terminal (`MODULE`) where no name fits, as a NAME where one does.
    if str(token) in DECLARATION_WORDS | MEMBER_WORDS:
        return True
    return not (set(expected) & (EXPRESSION_STARTS | {"a name", "a number", "a string"}))


def _token_span(token, text: str, file: str) -> Span:
    if token.type == "$END":
        # Point just after the last character written, not at an empty line past it.
        end = len(text.rstrip())
        line = text.count("\n", 0, end) + 1
        column = end - (text.rfind("\n", 0, end) + 1) + 1
        return Span(file, line, column, line, column + 1, end, end)
    return Span(file, token.line, token.column, token.end_line, token.end_column, token.start_pos, token.end_pos)


def _offset_of(token, text: str) -> int:
    return len(text) if token.type == "$END" else token.start_pos


def _found_word(token) -> str:
    if token.type == "NAME":
        return f"name `{token}`"
    if token.type == "NUMBER":
        return f"number `{token}`"
    if token.type == "STRING":
        return f"string {token}"
    return f"`{token}`"


def _expected_words(terminals: set[str], spellings: dict[str, str]) -> list[str]:
    words = []
    for terminal in sorted(terminals):
        word = REGEX_TERMINALS.get(terminal) or spellings.get(terminal, terminal.lower())
        if word not in words:
            words.append(word)
    return words


def _describe_expected(words: list[str]) -> str:
    """A short list: categories for the big families, then the rest spelled out."""
    remaining = set(words)
    phrases = []
    if "NAME" in remaining or "a name" in remaining:
        starts = {w for w in remaining if w in EXPRESSION_STARTS or w in ("a name", "a number", "a string")}
        if len(starts) >= 4:
            phrases.append("an expression")
            remaining -= starts
    declarations = remaining & DECLARATION_WORDS
    if len(declarations) >= 3:
        phrases.append("a declaration")
        remaining -= declarations
    members = remaining & MEMBER_WORDS
    if len(members) >= 3:
        phrases.append("a port, a clause, `cost` or `python`")
        remaining -= members
    operators = remaining & OPERATORS
    if operators and (phrases or len(remaining - operators) > 0):
        remaining -= operators
        phrases.append("an operator")
    ends = [w for w in ("end of file",) if w in remaining]
    remaining -= set(ends)
    spelled = sorted(remaining, key=_word_order)
    items = spelled + phrases + ends
    return _join(items) if items else "something else"


def _word_order(word: str) -> tuple[int, str]:
    return (0 if not word[0].isalpha() else 1, word)


def _quote(word: str) -> str:
    plain = word.startswith(("a ", "an ", "`")) or word == "end of file"
    return word if plain else f"`{word}`"


def _join(items: list[str]) -> str:
    quoted = [_quote(item) for item in items]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


_PREVIOUS_WORD = re.compile(r"(?m)^([ \t]*)([A-Za-z_][A-Za-z0-9_]*)[ \t]*\Z")


def _hint(expected: list[str], token, text: str) -> str:
    if token.type == "NAME" and str(token) in DECLARATION_WORDS | MEMBER_WORDS:
        return f"`{token}` is a keyword; it cannot be used as a name here"
    start = len(text) if token.type == "$END" else token.start_pos
    unfinished = _unfinished_before(text[:start].rstrip())
    if unfinished is not None:
        return unfinished
    if str(token) == "=" and text[token.start_pos - 1:token.start_pos] == "=":
        # Where `=` is expected the lexer reads `==` as two `=`: the second one is the error.
        return "a definition uses one `=`; `==` compares"
    if ":" in expected:
        return "a port or a quantifier needs `:` before what follows"
    if token.type == "$END":
        return "the file ends inside a declaration: finish it, or remove what is left of it"
    wanted = _describe_expected(expected)
    if wanted == "an expression":
        return "an expression is a number, a name or a call such as `argmax(y)`, alone or joined by operators"
    return f"only {wanted} can follow what comes before"


def _unfinished_before(text: str) -> str | None:
    """A declaration keyword alone at the start of the last line read as a name: the line before is unfinished.

    The lexer takes `type` for a name where an expression may stand, so in
    `dim H =` followed by `type T = ...` the error only shows at `T`.
    """
    match = _PREVIOUS_WORD.search(text)
    if match is None or match.group(2) not in DECLARATION_WORDS:
        return None
    line = text.count("\n", 0, match.start(2)) + 1
    return (
        f"`{match.group(2)}` on line {line} starts a new declaration, so the one before it is unfinished; "
        "complete it (a value after `=`, a closing bracket)"
    )


def open_brackets(text: str, end: int) -> list[OpenBracket]:
    """The brackets still open at offset `end`, innermost last (strings and comments skipped)."""
    stack: list[OpenBracket] = []
    line, column = 1, 1
    position = 0
    in_string = False
    while position < end:
        char = text[position]
        if in_string:
            if char == "\\":
                position += 1
                column += 1
            elif char in {'"', "\n"}:
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "#":
            newline = text.find("\n", position)
            newline = end if newline < 0 else min(newline, end)
            column += newline - position
            position = newline
            continue
        elif char in CLOSERS:
            label, label_column = _opener_label(text, position, column)
            stack.append(OpenBracket(char, label, line, label_column))
        elif char in OPENERS and stack and stack[-1].char == OPENERS[char]:
            stack.pop()
        if char == "\n":
            line, column = line + 1, 1
        else:
            column += 1
        position += 1
    return stack


_WORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*$")


def _opener_label(text: str, position: int, column: int) -> tuple[str, int]:
    """`all(` for the `(` of a call, with the column where the name starts; else the bracket alone."""
    line_start = text.rfind("\n", 0, position) + 1
    match = _WORD_BEFORE.search(text[line_start:position])
    if match is None or text[position] == "{":
        return text[position], column
    word = match.group(1)
    return f"{word}{text[position]}", column - (position - line_start - match.start(1))
