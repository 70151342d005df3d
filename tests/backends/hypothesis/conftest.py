"""The hypothesis backend's tests build their IR from spec text, through the checker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import mdl_lang
from mdl_lang.compiler import CheckedSpec


@pytest.fixture
def load_spec(tmp_path: Path) -> Callable[[str], CheckedSpec]:
    """Write a spec's text to a file and load it: the IR under test always comes from the checker."""

    def load(text: str) -> CheckedSpec:
        path = tmp_path / "spec.mdl"
        path.write_text(text, encoding="utf-8")
        return mdl_lang.load(path)

    return load
