"""Z3 spec-proof tests: check a spec written as text after the test module's `HEADER`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mdl_lang.semantics.checker import CheckResult, check_paths

Check = Callable[..., CheckResult]


@pytest.fixture
def check(request: pytest.FixtureRequest, tmp_path: Path) -> Check:
    """Check the test module's `HEADER` and `text` after it, in a fresh folder (a module that builds its specs
    otherwise defines its own `check`)."""

    def run(text: str, timeout_ms: int | None = None) -> CheckResult:
        path = tmp_path / "spec.mdl"
        path.write_text(request.module.HEADER + text, encoding="utf-8")
        return check_paths([path], tmp_path, z3_timeout_ms=timeout_ms)

    return run
