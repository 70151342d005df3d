"""What every semantic pass shares: the diagnostics sink, scopes, and name lookup."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from mdl_lang import ir
from mdl_lang.diagnostics import Diagnostic, Note
from mdl_lang.span import Span
from mdl_lang.syntax import ast


class Reporter:
    """Collects diagnostics once each: a generic checked per instantiation reports a fault once."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, Span, str]] = set()
        self.diagnostics: list[Diagnostic] = []

    def error(
        self, code: str, message: str, span: Span, help: str | None = None, notes: Iterable[Note] = ()
    ) -> None:
        key = (code, span, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.diagnostics.append(Diagnostic(code, message, span, help, tuple(notes)))

    warning = error  # the code's letter decides the severity

    def errors_since(self, count: int) -> bool:
        """Whether an error was reported after the first `count` diagnostics."""
        return any(d.is_error for d in self.diagnostics[count:])


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A `help:` line naming the closest known name, if one is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


KIND_NOUNS = {
    "labels": "a label set",
    "dim": "a dimension",
    "type": "a type",
    "interface": "an interface",
    "module": "a module",
    "data": "a data set",
    "compose": "a composition",
    "import": "an imported file",
    "param": "a generic parameter",
}


@dataclass
class Symbol:
    """A top-level declaration of a file."""

    kind: str
    name: str
    node: object
    span: Span
    scope: FileScope


@dataclass
class FileScope:
    """The top-level names of one file; `imports` maps aliases to the files they name."""

    path: str
    tree: ast.SpecFile
    symbols: dict[str, Symbol] = field(default_factory=dict)
    imports: dict[str, FileScope | None] = field(default_factory=dict)
    batch_dim: ir.DimVar | None = None

    def lookup(self, name: ast.QualifiedName) -> Symbol | None:
        """The declaration a possibly qualified name refers to, or None."""
        scope: FileScope | None = self
        for part in name.parts[:-1]:
            if scope is None:
                return None
            scope = scope.imports.get(part)
        if scope is None:
            return None
        return scope.symbols.get(name.parts[-1])

    def names_of_kind(self, *kinds: str) -> list[str]:
        return [name for name, symbol in self.symbols.items() if symbol.kind in kinds]


@dataclass(frozen=True)
class Env:
    """What names mean inside one declaration: generic arguments bound, ports, quantified vars.

    `arg_spans` says where each generic argument was written, so that an argument of
    the wrong kind is reported where the user wrote it, not inside the generic.
    """

    scope: FileScope
    params: dict[str, ir.LabelSet | ir.Dim] = field(default_factory=dict)
    ports: dict[str, ir.Port] = field(default_factory=dict)
    variables: dict[str, ir.ValueType] = field(default_factory=dict)
    clause_kind: str | None = None
    statistical_ok: bool = False
    arg_spans: dict[str, Span] = field(default_factory=dict)

    def with_variable(self, name: str, value_type: ir.ValueType) -> Env:
        return replace(self, variables={**self.variables, name: value_type})
