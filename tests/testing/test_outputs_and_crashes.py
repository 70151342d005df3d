"""`mdl test` on modules whose outputs are not what their interface declares, and on parts that crash.

A tuple with more values than the interface has outputs is a wrong call, a
clause about an output that is missing is not evaluated (never a pass), and a
crash inside a composition is blamed on the part that raised.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.report import Role, Verdict
from mdl_lang.testing import ContractTester, TestSettings

SPEC = """
dim B : batch
type In = Tensor[B, 4] float32 in [0, 1]
type Out = Tensor[B, 4] float32
interface One { input x: In  output y: Out  ensures pos: all(y >= 0) }
interface Two { input x: In  output y: Out  output z: Out  ensures pos: all(z >= 0) }
interface Plain { input x: In  output y: Out }
interface Stage { input x: Out  output y: Out }
module extra : One
module short : Two
module pre : Plain
module crash : Stage
compose p : Plain = pre >> crash
"""


class Extra(nn.Module):
    def forward(self, x: torch.Tensor):
        return x, "junk", 7


class Crash(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward crashed")


@pytest.fixture
def tester(tmp_path) -> ContractTester:
    path = tmp_path / "outputs.mdl"
    path.write_text(SPEC)
    tester = ContractTester(mdl_lang.load(path), TestSettings(max_examples=5, replay_dir=None))
    tester.provide("extra", Extra())
    tester.provide("short", nn.Identity())
    tester.provide("p", parts={"pre": nn.Identity(), "crash": Crash()})
    return tester


def verdicts(results) -> dict[str, Verdict]:
    return {result.clause: result.verdict for result in results}


def test_a_tuple_longer_than_the_outputs_is_a_wrong_call(tester) -> None:
    results = tester.run("extra")
    assert verdicts(results) == {"type of y": Verdict.FAIL, "pos": Verdict.UNKNOWN}
    assert "returned 3 values" in next(r for r in results if r.clause == "type of y").message


def test_a_clause_about_a_missing_output_is_not_evaluated(tester) -> None:
    assert verdicts(tester.run("short")) == {"type of y": Verdict.PASS, "type of z": Verdict.FAIL,
                                             "pos": Verdict.UNKNOWN}


def test_a_crash_inside_a_composition_blames_the_part_that_raised(tester) -> None:
    failed = [result for result in tester.run("p") if result.verdict is Verdict.FAIL]
    assert failed
    for result in failed:
        assert result.blame.party == "crash" and result.blame.role is Role.MODULE
        assert result.blame.path == ("p", "crash")
