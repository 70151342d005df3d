"""`replace(c, old, new)` takes a behavioural subtype of `old` (LANGUAGE.md section 6): `new` may have other
value ranges and clauses than `old`, proved with Z3 (E0604: requires weaker, ensures stronger, port types'
ranges included); ports of another name, direction, shape or dtype stay a front-end error (E0509)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mdl_lang.report import Verdict
from mdl_lang.semantics.checker import CheckResult, check_paths

HEADER = """spec replacing
dim B : batch
dim S
interface Narrow {
  input x: Tensor[B, S] float32 in [0, 5]
  output z: Tensor[B, S] float32 in [0, 1]
}
module n : Narrow {}
compose c : Narrow = n
"""
Check = Callable[..., CheckResult]


@pytest.fixture
def check(tmp_path: Path) -> Check:
    """Check `HEADER`, an interface `New` with ports `NEW_PORTS` and module `fresh : New`, and a composition
    that replaces `n` by `fresh`; with `prove=False`, the front end alone."""

    def run(new_ports: str, clauses: str = "", prove: bool = True) -> CheckResult:
        path = tmp_path / "spec.mdl"
        path.write_text(HEADER + f"interface New {{\n{new_ports}\n}}\nmodule fresh : New {{ {clauses} }}\n"
                        "compose r : Narrow = replace(c, n, fresh)\n", encoding="utf-8")
        return check_paths([path], tmp_path, prove=prove)

    return run


def codes(result: CheckResult) -> list[str]:
    return [diagnostic.code for diagnostic in result.diagnostics]


WIDER_IN_NARROWER_OUT = """  input x: Tensor[B, S] float32 in [0, 10]
  output z: Tensor[B, S] float32 in [0, 0.5]"""


def test_a_replacement_that_reads_more_and_promises_more_is_a_subtype(check: Check) -> None:
    result = check(WIDER_IN_NARROWER_OUT)
    assert codes(result) == []
    replaced = [r for r in result.results if r.backend == "z3" and r.component == "fresh"]
    assert {(r.kind, r.clause, r.verdict) for r in replaced} == {
        ("requires", "type of x", Verdict.PASS), ("ensures", "type of z", Verdict.PASS)}


def test_other_ranges_pass_the_front_end_and_are_left_to_the_proof(check: Check) -> None:
    assert codes(check(WIDER_IN_NARROWER_OUT.replace("[0, 10]", "[0, 2]"), prove=False)) == []


def test_a_narrower_input_range_requires_more(check: Check) -> None:
    result = check(WIDER_IN_NARROWER_OUT.replace("[0, 10]", "[0, 2]"))
    assert codes(result) == ["E0604"]
    assert result.diagnostics[0].message == (
        "`fresh` is not a behavioural subtype of `n`: it requires more: max(x) = 3 satisfies `n`'s requires but "
        "breaks input type `x: Tensor[B, S] float32 in [0, 2]`")
    [failed] = [r for r in result.results if r.verdict is Verdict.FAIL]
    assert failed.blame is not None and failed.blame.party == "fresh"


def test_a_wider_output_range_ensures_less_unless_a_clause_narrows_it(check: Check) -> None:
    wider = WIDER_IN_NARROWER_OUT.replace("[0, 0.5]", "[0, 3]")
    result = check(wider)
    assert codes(result) == ["E0604"]
    assert "it ensures less: max(z) = " in result.diagnostics[0].message
    assert "breaks `n`'s output type `z: Tensor[B, S] float32 in [0, 1]`" in result.diagnostics[0].message
    assert codes(check(wider, "ensures all(z <= 1)")) == []


def test_a_stronger_requires_clause_is_refuted(check: Check) -> None:
    result = check(WIDER_IN_NARROWER_OUT + "\n  requires all(x <= 1)")
    assert codes(result) == ["E0604"]
    assert "it requires more: max(x) = " in result.diagnostics[0].message
    assert result.diagnostics[0].message.endswith("breaks `requires all(x <= 1)`")


@pytest.mark.parametrize("ports", [
    WIDER_IN_NARROWER_OUT.replace("input x", "input y"),
    WIDER_IN_NARROWER_OUT.replace("Tensor[B, S] float32 in [0, 10]", "Tensor[B, S] float64 in [0, 10]"),
    WIDER_IN_NARROWER_OUT.replace("Tensor[B, S] float32 in [0, 0.5]", "Tensor[B, S, 2] float32 in [0, 0.5]"),
], ids=["name", "dtype", "shape"])
def test_other_ports_are_still_an_error_of_the_front_end(check: Check, ports: str) -> None:
    result = check(ports, prove=False)
    assert codes(result) == ["E0509"]
    assert result.diagnostics[0].notes, "the note names the port that differs"
