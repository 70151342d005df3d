"""The semantic driver: read files, follow imports, check every declaration, build the IR.

Imports are relative to the importing file and must stay inside the spec
root. Each file is read, parsed and checked once per run however often it
is imported; diagnostics are kept per check and reported once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mdl_lang import ir
from mdl_lang.diagnostics import Diagnostic, SourceMap, sort_key
from mdl_lang.semantics.components import Components
from mdl_lang.semantics.compose import Compositions
from mdl_lang.semantics.context import Env, FileScope, Reporter, Symbol
from mdl_lang.semantics.declarations import BUILTIN_CONSTANTS, Declarations
from mdl_lang.span import Span
from mdl_lang.syntax import ast
from mdl_lang.syntax.parser import deep_nesting, front_end_context, keywords, parse, too_deep

# Words of the cost sub-language stay usable as names elsewhere (`s`, `ms`, `batch`...).
CONTEXTUAL_WORDS = frozenset({"s", "ms", "us", "per", "sample", "at", "batch", "params", "flops", "latency",
                              "confidence", "overlap", "of", "with", "on", "as"})


def reserved_words() -> frozenset[str]:
    return keywords() - CONTEXTUAL_WORDS


@dataclass
class CheckResult:
    """Everything one run of the checker found; `results` are the Z3 spec proofs (mdl_lang.report.Result)."""

    specs: dict[str, ir.Spec] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: SourceMap = field(default_factory=SourceMap)
    results: list = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


def display_path(path: Path) -> str:
    """The path as a user would type it: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


class Checker:
    """Checks files under one spec root; reuse one Checker to check many files in one run."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.reporter = Reporter()
        self.sources = SourceMap()
        self.declarations = Declarations(self.reporter)
        self.components = Components(self.declarations)
        self.compositions = Compositions(self.components)
        self._scopes: dict[Path, FileScope | None] = {}
        self._loading: list[Path] = []
        self._specs: dict[str, ir.Spec] = {}
        # Every import followed, deepest first: (importing file, its import, the file imported).
        self._imports: list[tuple[FileScope, ast.Import, Path]] = []
        self._broken_imports_reported: set[Span] = set()

    def check(self, path: Path) -> ir.Spec | None:
        with front_end_context():
            try:
                scope = self._load(path.resolve(), None)
                return None if scope is None else self._spec(scope)
            except RecursionError:
                self.reporter.diagnostics.append(too_deep(display_path(path.resolve())))
                return None
            finally:
                self._report_broken_imports()

    def result(self) -> CheckResult:
        return CheckResult(dict(self._specs), sorted(self.reporter.diagnostics, key=sort_key), self.sources)

    # ------------------------------------------------------------ files and imports

    def _load(self, path: Path, importer: ast.Import | None) -> FileScope | None:
        if path in self._scopes:
            return self._scopes[path]
        shown = display_path(path)
        text = self._read(path, shown, importer)
        if text is None:
            self._scopes[path] = None
            return None
        self.sources.add(shown, text)
        parsed = parse(text, shown)
        for diagnostic in parsed.diagnostics:
            self.reporter.diagnostics.append(diagnostic)
        if parsed.tree is None:
            self._scopes[path] = None
            return None
        scope = FileScope(shown, parsed.tree)
        self._scopes[path] = scope
        self._declare(scope)
        self._loading.append(path)
        try:
            self._follow_imports(scope, path)
        finally:
            self._loading.pop()
        return scope

    def _read(self, path: Path, shown: str, importer: ast.Import | None) -> str | None:
        """The text of a file; a missing or unreadable file is reported at its import, bad UTF-8 where it is."""
        try:
            raw = path.read_bytes()
        except OSError as error:
            span = importer.span if importer else Span(shown, 1, 1, 1, 1)
            if importer and isinstance(error, FileNotFoundError):
                self.reporter.error(
                    "E0103", f"imported file `{shown}` does not exist", span,
                    help="an import path is relative to the folder of the file that imports it",
                )
            else:
                self.reporter.error(
                    "E0116", f"cannot read `{shown}`: {error.strerror or error}", span,
                    help="check that the path names a readable file",
                )
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            self._report_bad_utf8(raw, error, shown)
            return None

    def _report_bad_utf8(self, raw: bytes, error: UnicodeDecodeError, shown: str) -> None:
        """Point at the first byte that is not UTF-8, showing the line with that byte replaced."""
        self.sources.add(shown, raw.decode("utf-8", errors="replace"))
        before = raw[:error.start].decode("utf-8")
        line = before.count("\n") + 1
        column = len(before) - before.rfind("\n")
        self.reporter.error(
            "E0116", f"`{shown}` is not UTF-8 text: byte 0x{raw[error.start]:02x} cannot be decoded",
            Span(shown, line, column, line, column + 1, len(before), len(before) + 1),
            help="save the file as UTF-8",
        )

    def _import_target(self, importer: Path, decl: ast.Import) -> Path | None:
        """The absolute path an import names, or None (reported) when no file can have that name."""
        try:
            return (importer.parent / decl.path).resolve()
        except (OSError, ValueError, RuntimeError) as error:  # a NUL in the path, a symlink loop
            shown = f"`{decl.path}`" if decl.path.isprintable() else repr(decl.path)
            self.reporter.error(
                "E0103", f"cannot import {shown}: {error}", decl.span,
                help="an import names a .mdl file by its path relative to the importing file",
            )
            return None

    def _follow_imports(self, scope: FileScope, path: Path) -> None:
        for decl in scope.tree.decls:
            if not isinstance(decl, ast.Import):
                continue
            target = self._import_target(path, decl)
            if target is None:
                scope.imports[decl.alias.name] = None
                continue
            if not target.is_relative_to(self.root):
                self.reporter.error(
                    "E0104", f"`{decl.path}` is outside the spec root `{display_path(self.root)}`", decl.span,
                    help="imports stay inside the spec root; pass `--root` to widen it",
                )
                scope.imports[decl.alias.name] = None
                continue
            if target in self._loading:
                cycle = [*self._loading[self._loading.index(target):], target]
                self.reporter.error(
                    "E0105", "import cycle: " + " -> ".join(display_path(p) for p in cycle), decl.span,
                    help="move what both files need into a third file that both import",
                )
                scope.imports[decl.alias.name] = None
                continue
            scope.imports[decl.alias.name] = self._load(target, decl)
            self._imports.append((scope, decl, target))

    def _report_broken_imports(self) -> None:
        """E0117 at each import of a file with errors, unless the importing file has errors of its own.

        What a file builds on does not check, so neither does the file: without this, a report would
        call it a pass (`mdl check --format json` gives one verdict per file). Imports are visited
        deepest first, so a file that imports a file that imports a broken one fails as well."""
        failing = {diagnostic.span.file for diagnostic in self.reporter.diagnostics if diagnostic.is_error}
        for scope, decl, target in self._imports:
            imported = display_path(target)
            if imported not in failing or scope.path in failing or decl.span in self._broken_imports_reported:
                continue
            self._broken_imports_reported.add(decl.span)
            self.reporter.error(
                "E0117", f"imported file `{imported}` has errors", decl.span,
                help=f"fix the errors of `{imported}` first: this file cannot be checked without them",
            )
            failing.add(scope.path)

    def _declare(self, scope: FileScope) -> None:
        """Enter every top-level name of a file, reporting duplicates and keywords."""
        for decl in scope.tree.decls:
            for kind, identifier, node in _declared_names(decl):
                self._enter(scope, kind, identifier, node)
            self._check_generic_params(getattr(decl, "params", ()))

    def _check_generic_params(self, params: tuple[ast.Identifier, ...]) -> None:
        """`interface C[L, L]`: a second parameter of one name would hide the first one's argument."""
        seen: dict[str, Span] = {}
        for param in params:
            if param.name in seen:
                self.reporter.error(
                    "E0102", f"generic parameter `{param.name}` is declared twice", param.span,
                    help=f"the first `{param.name}` is at {seen[param.name]}; give each parameter its own name",
                )
            else:
                seen[param.name] = param.span

    def _enter(self, scope: FileScope, kind: str, identifier: ast.Identifier, node: object) -> None:
        name = identifier.name
        if name in reserved_words():
            self.reporter.error(
                "E0106", f"`{name}` is a keyword and cannot name a declaration", identifier.span,
                help=f"choose another name, e.g. `{name}_`",
            )
            return
        if name in BUILTIN_CONSTANTS:
            # `dim inf = 3` would size axes while `x <= inf` still meant the constant.
            self.reporter.error(
                "E0106", f"`{name}` is a built-in constant and cannot name a declaration", identifier.span,
                help=f"choose another name, e.g. `{name}_`",
            )
            return
        if name in scope.symbols:
            first = scope.symbols[name]
            self.reporter.error(
                "E0102", f"`{name}` is declared twice", identifier.span,
                help=f"the first `{name}` is declared at {first.span}",
            )
            return
        scope.symbols[name] = Symbol(kind, name, node, identifier.span, scope)

    # ------------------------------------------------------------ declarations

    def _spec(self, scope: FileScope) -> ir.Spec:
        if scope.path in self._specs:
            return self._specs[scope.path]
        imports = {alias: self._spec(target) for alias, target in scope.imports.items() if target is not None}
        label_sets: dict[str, ir.LabelSet] = {}
        dims: dict[str, ir.Dim] = {}
        modules: dict[str, ir.Module] = {}
        compositions: dict[str, ir.Composition] = {}
        data: dict[str, ir.Data] = {}
        interfaces: dict[str, ir.Interface] = {}
        self._check_batch_dims(scope)
        obligations_before = len(self.compositions.obligations)
        for symbol in scope.symbols.values():
            value = self._check_symbol(symbol)
            if value is None:
                continue
            target = {
                "labels": label_sets, "dim": dims, "module": modules, "compose": compositions, "data": data,
                "interface": interfaces,
            }.get(symbol.kind)
            if target is not None:
                target[symbol.name] = value
        self._check_reserved_members(scope)
        spec = ir.Spec(
            scope.path, scope.tree.spec.name.name if scope.tree.spec else None, label_sets, dims, modules,
            compositions, data, interfaces, imports, tuple(self.compositions.obligations[obligations_before:]),
        )
        self._specs[scope.path] = spec
        return spec

    def _check_symbol(self, symbol: Symbol):
        if symbol.kind == "labels":
            return self.declarations.declared_labels(symbol)
        if symbol.kind == "dim":
            return self.declarations.declared_dim(symbol)
        if symbol.kind == "type":
            return self._check_type(symbol)
        if symbol.kind == "interface":
            return self.components.abstract_interface(symbol)
        if symbol.kind == "module":
            return self.components.module(symbol)
        if symbol.kind == "data":
            return self.components.data(symbol)
        if symbol.kind == "compose":
            return self.compositions.composition(symbol)
        return None

    def _check_type(self, symbol: Symbol) -> ir.TensorType | None:
        decl: ast.TypeDecl = symbol.node  # type: ignore[assignment]
        params = {param.name: ir.LabelSet((), param.name, opaque=True) for param in decl.params}
        return self.declarations.type_expr(decl.value, Env(symbol.scope, params))

    def _check_batch_dims(self, scope: FileScope) -> None:
        batches = [
            item for decl in scope.tree.decls if isinstance(decl, ast.DimDecl)
            for item in decl.items if item.kind == "batch"
        ]
        for extra in batches[1:]:
            self.reporter.error(
                "E0301", f"`{extra.name.name}` is a second batch dimension", extra.span,
                help=f"a file has one batch dimension; `{batches[0].name.name}` is declared at "
                f"{batches[0].name.span}",
            )

    def _check_reserved_members(self, scope: FileScope) -> None:
        reserved = reserved_words()
        for decl in scope.tree.decls:
            for identifier in _member_names(decl):
                if identifier.name in reserved:
                    self.reporter.error(
                        "E0106", f"`{identifier.name}` is a keyword and cannot be used as a name", identifier.span,
                        help=f"choose another name, e.g. `{identifier.name}_`",
                    )


def _declared_names(decl: ast.Decl):
    """(kind, identifier, node) for each name a top-level declaration introduces."""
    if isinstance(decl, ast.Import):
        yield "import", decl.alias, decl
    elif isinstance(decl, ast.LabelsDecl):
        yield "labels", decl.name, decl
    elif isinstance(decl, ast.DimDecl):
        for item in decl.items:
            yield "dim", item.name, item
    elif isinstance(decl, ast.TypeDecl):
        yield "type", decl.name, decl
    elif isinstance(decl, ast.InterfaceDecl):
        yield "interface", decl.name, decl
    elif isinstance(decl, ast.ModuleDecl):
        yield "module", decl.name, decl
    elif isinstance(decl, ast.DataDecl):
        yield "data", decl.name, decl
    elif isinstance(decl, ast.ComposeDecl):
        yield "compose", decl.name, decl


def _member_names(decl: ast.Decl):
    """Ports, clause names, generic parameters: names a declaration binds inside itself."""
    params = getattr(decl, "params", ())
    yield from params
    for member in getattr(decl, "members", ()):
        if isinstance(member, ast.Port) or (isinstance(member, ast.Clause) and member.name is not None):
            yield member.name


def check_paths(paths: list[Path], root: Path | None = None, *, prove: bool = True,
                z3_timeout_ms: int | None = None) -> CheckResult:
    """Check files (directories are searched for `*.mdl`) under one spec root.

    With `prove`, the Z3 spec proofs (vacuity, `>>`, subtyping, `replace`) run last, on what the
    front end built; `z3_timeout_ms` bounds each solver call (a timeout is `unknown`, never a proof).
    """
    files = expand_paths(paths)
    checker = Checker(root or default_root(paths))
    for path in files:
        checker.check(path)
    result = checker.result()
    if prove:
        prove_specs(result, z3_timeout_ms)
    return result


def prove_specs(result: CheckResult, timeout_ms: int | None = None) -> None:
    """Add the Z3 backend's diagnostics and results; z3 is imported only when a spec has something to prove.

    A file with a front-end error is not proved: its IR may be partial, and its errors come first."""
    failing = {diagnostic.span.file for diagnostic in result.diagnostics if diagnostic.is_error}
    specs = [spec for spec in result.specs.values() if spec.file not in failing]
    if not any(spec.obligations or any(_has_requires(c) for c in spec.components().values()) for spec in specs):
        return
    from mdl_lang.backends.z3 import Settings, check_specs

    settings = Settings() if timeout_ms is None else Settings(timeout_ms=timeout_ms)
    diagnostics: list[Diagnostic] = []
    # The encoder recurses once per level of a clause, as the front end does: give it the same depth.
    with deep_nesting():
        try:
            proofs = check_specs(specs, result.sources, settings)
            diagnostics, result.results = proofs.diagnostics, proofs.results
        except RecursionError:
            # Rare (a clause nested nearly as deep as the front end allows): prove spec by spec so
            # that only the specs too deep for the encoder go unproved, each with a warning.
            for spec in specs:
                try:
                    proofs = check_specs([spec], result.sources, settings)
                except RecursionError:
                    diagnostics.append(_too_deep_to_prove(spec))
                    continue
                diagnostics += proofs.diagnostics
                result.results += proofs.results
    result.diagnostics = sorted(result.diagnostics + diagnostics, key=sort_key)


def _too_deep_to_prove(spec: ir.Spec) -> Diagnostic:
    """W0601 for a spec whose clauses nest too deeply for the Z3 encoder, at its longest clause."""
    clauses = [clause for component in spec.components().values() for clause in component.all_clauses]
    span = max((clause.span for clause in clauses), key=lambda span: span.end - span.start,
               default=Span(spec.file, 1, 1, 1, 1))
    return Diagnostic(
        "W0601", f"cannot decide the spec proofs of `{spec.file}`: a clause nests too deeply for the Z3 encoder",
        span, help="split the clause into several clauses, or let `mdl test` check it",
    )


def _has_requires(component: ir.Component) -> bool:
    return any(clause.kind == "requires" and clause.fragment is ir.Fragment.PER_SAMPLE
               for clause in component.all_clauses)


def expand_paths(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.rglob("*.mdl")))
        else:
            files.append(path)
    return files


def default_root(paths: list[Path]) -> Path:
    """The spec root when none is given: the deepest directory holding every path given."""
    folders = [str((path if path.is_dir() else path.parent).resolve()) for path in paths]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()
