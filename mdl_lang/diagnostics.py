"""Diagnostics: stable codes, a span each, rendered like rustc or as JSON.

Codes never change meaning once released: `E0xxx` are errors, `W0xxx`
warnings. The hundreds digit names the phase: 0 syntax, 1 names and imports,
2 label sets, 3 dims, shapes and types, 4 clauses, 5 compositions, 6 Z3 spec
proofs, 7 `mdl verify`, 8 modular workflows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mdl_lang.span import Span


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


CODES: dict[str, str] = {
    # syntax
    "E0001": "syntax error",
    "E0002": "unexpected end of file",
    "E0003": "unexpected character",
    "E0004": "invalid escape in string",
    "E0005": "unterminated string",
    "E0006": "unmatched closing bracket",
    "E0007": "expressions nested too deeply",
    # names, imports, declarations
    "E0101": "undefined name",
    "E0102": "duplicate definition",
    "E0103": "imported file not found",
    "E0104": "import outside the spec root",
    "E0105": "import cycle",
    "E0106": "keyword used as a name",
    "E0107": "name of the wrong kind",
    "E0108": "wrong number of type arguments",
    "E0109": "type argument of the wrong kind",
    "E0110": "duplicate port",
    "E0111": "duplicate clause name",
    "E0112": "interface without ports",
    "E0113": "member not allowed here",
    "E0115": "recursive definition",
    "E0116": "unreadable file",
    "E0117": "imported file has errors",
    # label sets
    "E0201": "label set is not within its parent",
    "E0202": "empty label range",
    "E0203": "not a label",
    "E0204": "label not in the axis' label set",
    "E0205": "label expression of the wrong kind",
    "E0206": "label range too large",
    "W0201": "label listed twice",
    # dims, shapes, dtypes, refinements
    "E0301": "more than one batch dimension",
    "E0302": "dimension is not a positive integer",
    "E0303": "non-integer dimension arithmetic",
    "E0304": "`...` used more than once in a shape",
    "E0305": "too many indices",
    "E0306": "index out of range",
    "E0307": "shapes do not match",
    "E0308": "unknown dtype or refinement",
    "E0309": "conflicting refinements",
    "E0310": "empty value range",
    "E0311": "the batch dimension is not the first axis",
    "E0312": "constant expected",
    "E0313": "number suffix outside a cost clause",
    "E0314": "constant that is not a finite real number",
    # clauses
    "E0401": "clause is not boolean",
    "E0402": "operand of the wrong type",
    "E0403": "unknown function",
    "E0404": "wrong number of arguments",
    "E0405": "`self` outside `ensures`",
    "E0406": "output used in `requires`",
    "E0407": "index of the wrong kind for this axis",
    "E0408": "`within` tolerance on a comparison other than `==`",
    "E0409": "statistical clause without data",
    "E0410": "data given to a clause that is not statistical",
    "E0411": "data set labels do not fit the module",
    "E0412": "confidence outside (0, 1)",
    "E0413": "quantifier domain is not a label set",
    "E0414": "unknown norm",
    "E0415": "unknown keyword argument",
    "E0416": "statistical or relational clause in `requires`",
    "E0417": "ball quantifier not centred on an input",
    "E0418": "cost clause of the wrong form",
    "E0419": "clause that no backend can check",
    "E0420": "probability outside [0, 1]",
    "E0421": "negative tolerance or radius",
    # compositions
    "E0501": "`>>` shapes do not unify",
    "E0502": "`>>` dtypes do not agree",
    "E0503": "`>>` port counts do not fit",
    "E0504": "`vote` parts' label sets overlap",
    "E0505": "`vote` does not cover the interface's labels",
    "E0506": "`vote` parts read different inputs",
    "E0507": "`vote` parts' scores are not comparable",
    "E0508": "`replace` names no part of the composition",
    "E0509": "`replace` interfaces differ",
    "E0510": "composition does not implement its interface",
    "E0511": "a dimension equation has no solution",
    "E0512": "`vote` part without a label-indexed output",
    "E0513": "unknown `vote` option",
    "W0501": "dimension equation left undecided",
    # Z3 spec proofs (mdl_lang/backends/z3): vacuity, implication, subtyping
    "E0601": "`requires` that no input satisfies",
    "E0602": "`>>` parts do not fit: `ensures` do not imply the next `requires`",
    "E0603": "module strengthens its interface's `requires`",
    "E0604": "`replace` by a module that is not a behavioural subtype",
    "E0605": "dimension equations with no solution",
    "W0601": "spec proof undecided",
    "W0602": "composition admits inputs its first parts reject",
    "W0603": "composition's parts do not establish its `ensures`",
    "W0604": "composition's parts do not have its declared shapes",
    # mdl verify (mdl_lang/verify)
    # modular workflows (mdl_lang/modular): decompose, compose, replace, demo
}


@dataclass(frozen=True)
class Note:
    """A secondary location with a message (`note: m5 declared here`)."""

    message: str
    span: Span | None = None


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span
    help: str | None = None
    notes: tuple[Note, ...] = field(default=())

    @property
    def severity(self) -> Severity:
        return Severity.WARNING if self.code.startswith("W") else Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_json(self) -> dict[str, object]:
        """The entry of `diagnostics` in an mdl-report/1 object."""
        entry: dict[str, object] = {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
        }
        if self.help:
            entry["help"] = self.help
        if self.notes:
            entry["notes"] = [
                {"message": note.message, **_location(note.span)} for note in self.notes
            ]
        return entry


def _location(span: Span | None) -> dict[str, object]:
    if span is None:
        return {}
    return {"file": span.file, "line": span.line, "column": span.column}


_SHOWN_AS_SPACE = str.maketrans(dict.fromkeys("\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))


class SourceMap:
    """The text of every file read so far, for rendering source lines."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}
        self._texts: dict[str, str] = {}

    def add(self, path: str, text: str) -> None:
        # Lines as the lexer counts them: only `\n` ends one (str.splitlines would also split at a
        # form feed, U+2028, U+0085 or a lone `\r`, and quote the wrong line). Other line-breaking
        # characters are shown as spaces, so that a caret keeps its column.
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the end of the last line, not a line of its own
        self._lines[path] = [line.removesuffix("\r").translate(_SHOWN_AS_SPACE) for line in lines]
        self._texts[path] = text

    def excerpt(self, span: Span) -> str | None:
        """The source text a span covers, on one line, or None if the file is unknown."""
        text = self._texts.get(span.file)
        if text is None or span.end <= span.start:
            return None
        return " ".join(text[span.start:span.end].split())

    def line(self, path: str, number: int) -> str | None:
        lines = self._lines.get(path)
        if lines is None or not 1 <= number <= len(lines):
            return None
        return lines[number - 1]


def render(diagnostic: Diagnostic, sources: SourceMap) -> str:
    """Render one diagnostic the way rustc does: header, location, source, caret, help."""
    span = diagnostic.span
    out = [f"{diagnostic.severity.value}[{diagnostic.code}]: {diagnostic.message}"]
    out += snippet(span, sources)
    for note in diagnostic.notes:
        if note.span is None:
            out.append(f"  = note: {note.message}")
        else:
            out.append(f"note: {note.message}")
            out += snippet(note.span, sources)
    if diagnostic.help:
        out.append(f"  = help: {diagnostic.help}")
    return "\n".join(out)


def snippet(span: Span, sources: SourceMap) -> list[str]:
    """The `--> file:line:col` line, the source line and a caret under the span."""
    gutter = " " * len(str(span.line))
    lines = [f"{gutter}--> {span.file}:{span.line}:{span.column}"]
    source = sources.line(span.file, span.line)
    if source is None:
        return lines
    source = source.expandtabs(1)
    width = _caret_width(span, source)
    lines += [
        f"{gutter} |",
        f"{span.line} | {source}",
        f"{gutter} | {' ' * (span.column - 1)}{'^' * width}",
    ]
    return lines


def _caret_width(span: Span, source: str) -> int:
    if span.end_line == span.line and span.end_column > span.column:
        return span.end_column - span.column
    # A span running onto later lines is underlined to the end of its first line.
    return max(1, len(source.rstrip()) - span.column + 1)


def render_all(diagnostics: list[Diagnostic], sources: SourceMap) -> str:
    """Every diagnostic, then a one-line count, as `mdl check` prints them."""
    blocks = [render(d, sources) for d in diagnostics]
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    if errors or warnings:
        blocks.append(_count_line(errors, warnings))
    return "\n\n".join(blocks)


def _count_line(errors: int, warnings: int) -> str:
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return " and ".join(parts) + " found"


def sort_key(diagnostic: Diagnostic) -> tuple[str, int, int, str]:
    span = diagnostic.span
    return (span.file, span.line, span.column, diagnostic.code)
