"""The front end's public face: check files into IR, or load one checked spec."""

from __future__ import annotations

from pathlib import Path

from mdl_lang import ir
from mdl_lang.diagnostics import Diagnostic, render_all
from mdl_lang.semantics.checker import Checker, CheckResult, check_paths, default_root

__all__ = ["CheckResult", "SpecError", "check_paths", "load"]


class SpecError(Exception):
    """A spec that does not check; `diagnostics` holds every error, `str()` renders them."""

    def __init__(self, result: CheckResult) -> None:
        self.diagnostics: list[Diagnostic] = [d for d in result.diagnostics if d.is_error]
        self.rendered = render_all(self.diagnostics, result.sources)
        super().__init__(self.rendered)


def load(path: str | Path, root: str | Path | None = None) -> ir.Spec:
    """The checked IR of one spec file; raises SpecError if it has errors, FileNotFoundError if missing."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no spec file at {file}")
    checker = Checker(Path(root) if root is not None else default_root([file]))
    spec = checker.check(file)
    result = checker.result()
    if spec is None or result.has_errors:
        raise SpecError(result)
    return spec
