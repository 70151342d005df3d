"""pytest plugin: `pytest specs/` runs every contract of every `.mdl` file as a test.

One item per (component, clause), named `component:clause`, so `-k`, `--lf`
and pytest-xdist work as with any test. A failing item shows the blame
report; a spec that does not check is one failing item with its diagnostics;
a component without a `python "..."` binding is skipped, with the reason.
Registered through the `pytest11` entry point; `mdl_ignore` (ini, glob
patterns relative to the rootdir) keeps `.mdl` files out of collection.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from mdl_lang.diagnostics import render_all
from mdl_lang.report import Result, Verdict, render_result
from mdl_lang.semantics.checker import check_paths


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mdl", "contract tests of .mdl specs")
    group.addoption("--mdl-seed", type=int, default=0, help="seed of generated inputs and attacks")
    group.addoption("--mdl-max-examples", type=int, default=50, help="generated batches per per-sample clause")
    group.addoption("--mdl-strict", action="store_true", help="an unknown verdict fails instead of skipping")
    parser.addini("mdl_ignore", type="linelist", default=[], help="glob patterns of .mdl files not to collect")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".mdl" or _ignored(file_path, parent.config):
        return None
    return MdlFile.from_parent(parent, path=file_path)


def _ignored(path: Path, config: pytest.Config) -> bool:
    try:
        relative = path.resolve().relative_to(config.rootpath.resolve()).as_posix()
    except ValueError:
        relative = path.as_posix()
    return any(fnmatch.fnmatch(relative, pattern) for pattern in config.getini("mdl_ignore"))


class MdlFile(pytest.File):
    """A spec file: checked first, then one item per clause of each component."""

    def root(self) -> Path:
        """The spec root: pytest's rootdir, as `mdl check DIR` takes the folder, so that a spec may import
        from a folder above its own (`import "../common.mdl"`); the file's folder outside the rootdir."""
        rootdir = self.config.rootpath.resolve()
        return rootdir if self.path.resolve().is_relative_to(rootdir) else self.path.parent

    def collect(self):
        checked = check_paths([self.path], self.root())
        if checked.has_errors:
            yield MdlCheckItem.from_parent(self, name="check", text=render_all(checked.diagnostics, checked.sources))
            return
        from mdl_lang.compiler import load
        from mdl_lang.testing import clause_items

        spec = load(self.path, self.root())
        for component in spec.components():
            for item in clause_items(spec, component):
                yield MdlItem.from_parent(self, name=_item_name(component, item.name), clause_item=item)

    def tester(self):
        """One tester per file and worker: models are bound once and shared by the file's items."""
        tester = getattr(self, "_tester", None)
        if tester is None:
            from mdl_lang.compiler import load
            from mdl_lang.testing import ContractTester, TestSettings

            options = self.config.option
            settings = TestSettings(seed=options.mdl_seed, max_examples=options.mdl_max_examples, replay_dir=None)
            tester = ContractTester(load(self.path, self.root()), settings)
            self._tester = tester
        return tester


def _item_name(component: str, clause: str) -> str:
    # pytest reads `[...]` in a test id as parameters; a clause like `y in [0, 1]` keeps parentheses instead.
    return f"{component}:{clause}".replace("[", "(").replace("]", ")")


class MdlContractFailure(Exception):
    """A clause failed; the report is the failure text."""

    def __init__(self, result: Result, text: str) -> None:
        super().__init__(text)
        self.result = result
        self.text = text


class MdlItem(pytest.Item):
    """One clause of one component."""

    def __init__(self, *, clause_item, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clause_item = clause_item

    def runtest(self) -> None:
        tester = self.parent.tester()
        unreachable_before = len(tester.diagnostics)
        result = tester.run_item(self.clause_item)
        if len(tester.diagnostics) > unreachable_before:
            # No backend could check the clause: an error, never a pass or a skip.
            raise MdlContractFailure(result, render_all(tester.diagnostics[unreachable_before:], tester.spec.sources))
        if result.verdict is Verdict.FAIL or (result.verdict is Verdict.UNKNOWN and self.config.option.mdl_strict):
            raise MdlContractFailure(result, render_result(result, tester.spec.sources))
        if result.verdict is Verdict.UNKNOWN:
            pytest.skip(f"unknown: {result.message}")
        if result.verdict is Verdict.SKIP:
            pytest.skip(result.message)

    def repr_failure(self, excinfo, style=None) -> str:
        from mdl_lang.bindings import BindingError

        if isinstance(excinfo.value, MdlContractFailure):
            return excinfo.value.text
        if isinstance(excinfo.value, BindingError):
            # The binding's own message names the declaration and the cause; the traceback through
            # mdl's import machinery would bury it.
            return f"mdl: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        span = self.clause_item.span
        return self.path, max(getattr(span, "line", 1) - 1, 0), f"mdl: {self.name}"


class MdlCheckItem(pytest.Item):
    """A spec with errors: one failing item showing every diagnostic."""

    def __init__(self, *, text: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = text

    def runtest(self) -> None:
        raise MdlContractFailure(None, self.text)  # type: ignore[arg-type]

    def repr_failure(self, excinfo, style=None) -> str:
        return self.text

    def reportinfo(self):
        return self.path, 0, f"mdl check: {self.path.name}"
