"""`benchmarks/bench_verify.py --quick` logic on a tiny case: the script runs and its verdicts agree."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_verify.py"


@pytest.mark.slow
def test_quick_run_on_one_point_agrees(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_verify", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_verify"] = bench
    spec.loader.exec_module(bench)
    status = bench.main(["--quick", "--points", "1", "--plain-z3-limit", "1", "--plain-z3-timeout", "5",
                         "--timeout", "10", "--keep", str(tmp_path), "--json", str(tmp_path / "answers.json")])
    assert status == 0
    out = capsys.readouterr().out
    assert "| mdl verify | 4 |" in out
    assert "agreement mdl vs plain Z3: " in out and "DISAGREEMENT" not in out
    if bench.marabou_available() is None:
        assert "agreement mdl vs Marabou: " in out and "verdicts agree: met" in out
    else:
        assert "Marabou: skipped (maraboupy is not installed" in out
    assert len(list(tmp_path.glob("*.vnnlib"))) == 4 and (tmp_path / "answers.json").is_file()
