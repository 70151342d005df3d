"""Contract tests from Python: `check_contracts(spec, "cnn", model)` inside a user's own tests."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mdl_lang.compiler import CheckedSpec, load
from mdl_lang.report import Result, Verdict, render_result
from mdl_lang.testing.runner import ClauseItem, ContractTester, PartlyUntested, TestSettings, clause_items

__all__ = [
    "ClauseItem", "ContractTestFailure", "ContractTester", "PartlyUntested", "TestSettings", "check_contracts",
    "clause_items",
]


class ContractTestFailure(AssertionError):
    """Some clauses failed; `results` holds every verdict, `str()` renders the failures with their blame."""

    def __init__(self, results: list[Result], spec: CheckedSpec) -> None:
        self.results = results
        failures = [r for r in results if r.verdict is Verdict.FAIL]
        super().__init__("\n\n".join(render_result(r, spec.sources) for r in failures))


def check_contracts(
    spec: CheckedSpec | str | Path,
    name: str,
    module: nn.Module | None = None,
    *,
    parts: dict[str, nn.Module] | None = None,
    settings: TestSettings | None = None,
    strict: bool = False,
) -> list[Result]:
    """Test every clause of `name` on `module` (or its parts); raise ContractTestFailure if one fails.

    The modules run in eval mode, each submodule's `training` flag restored afterwards. With `strict`, an
    `unknown` verdict fails too. A binding that cannot be loaded raises BindingError (PartlyUntested when
    some clauses were tested: it holds their results).
    """
    checked = spec if isinstance(spec, CheckedSpec) else load(spec)
    tester = ContractTester(checked, settings or TestSettings(replay_dir=None))
    if module is not None or parts is not None:
        tester.provide(name, module, parts)
    results = tester.run(name)
    bad = {Verdict.FAIL, Verdict.UNKNOWN} if strict else {Verdict.FAIL}
    if any(r.verdict in bad for r in results):
        raise ContractTestFailure(results, checked)
    return results
