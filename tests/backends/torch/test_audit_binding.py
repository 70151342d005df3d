"""What binding a module must survive: dims-only requires, unbatched ports in replays, vmap, pickled
violations, a replay folder that cannot be written, calls with arguments besides the ports."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.monitor import ContractViolation
from mdl_lang.cli import main
from mdl_lang.compiler import BindError

SPEC = """
dim B : batch
dim F
interface Wide {
  input  x: Tensor[B, F] float32 in [0, 1]
  output y: Tensor[B, F] float32
  requires wide: F >= 4
}
module wide : Wide
interface Shifted {
  input  x: Tensor[B, F] float32
  input  t: Tensor[2] float32
  output y: Tensor[B, F] float32
  ensures positive: all(y >= 0)
}
module shifted : Shifted { python "factories:shift" }
module scaled : Shifted { python "factories:scaled" }
"""

FACTORIES = """
from torch import nn


class Shift(nn.Module):
    def forward(self, x, t):
        return x * t[0] - t[1]


class Scaled(nn.Module):
    def forward(self, x, t, scale):
        return x * t[0] * scale - t[1]


def shift():
    return Shift()


def scaled():
    return Scaled()
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "binding.mdl"
    path.write_text(SPEC)
    (tmp_path / "factories.py").write_text(FACTORIES)
    return mdl_lang.load(path)


class Shift(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * t[0] - t[1]


class Scaled(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor, scale: float) -> torch.Tensor:
        return x * t[0] * scale - t[1]


def test_a_requires_on_dims_alone_is_not_passed_as_the_last_requires(spec) -> None:
    monitored = spec.bind("wide", nn.Identity(), mode="record", replay_dir=None)
    monitored(torch.zeros(2, 3))
    assert [(result.clause, result.blame.party) for result in monitored.reports] == [("wide", "caller")]
    monitored(torch.zeros(2, 4))
    assert len(monitored.reports) == 1


def test_a_replay_keeps_a_port_without_the_batch_axis_whole(spec, tmp_path) -> None:
    monitored = spec.bind("shifted", Shift(), mode="record", replay_dir=tmp_path / "replays")
    x = torch.ones(5, 3)
    x[3] = -1
    monitored(x, torch.tensor([1.0, 0.0]))
    (result,) = monitored.reports
    assert result.witness.samples == (3,)
    saved = torch.load(result.witness.replay, weights_only=True)
    assert saved["inputs"]["x"].shape == (1, 3) and saved["inputs"]["t"].tolist() == [1.0, 0.0]
    assert main(["replay", result.witness.replay]) == 1


def test_a_call_with_arguments_besides_the_ports_cannot_be_replayed_alone_and_says_so(spec, tmp_path, capsys):
    monitored = spec.bind("scaled", Scaled(), mode="record", replay_dir=tmp_path / "replays")
    monitored(-torch.ones(2, 3), torch.tensor([1.0, 0.0]), 2.0)
    assert main(["replay", monitored.reports[0].witness.replay]) == 2
    assert "cannot be called with its saved inputs alone" in capsys.readouterr().err


def test_checks_step_aside_under_vmap_and_still_run_under_grad(spec) -> None:
    monitored = spec.bind("shifted", Shift(), replay_dir=None)
    t = torch.tensor([1.0, 0.0])
    per_sample = torch.func.vmap(lambda row: monitored(row.unsqueeze(0), t).squeeze(0))(torch.ones(3, 4))
    assert per_sample.shape == (3, 4)
    with pytest.raises(ContractViolation):
        torch.func.grad(lambda x: monitored(x, t).sum())(-torch.ones(2, 4))


def test_a_contract_violation_pickles_with_its_report_and_text(spec) -> None:
    monitored = spec.bind("wide", nn.Identity(), replay_dir=None)
    with pytest.raises(ContractViolation) as raised:
        monitored(torch.zeros(2, 3))
    for copied in (pickle.loads(pickle.dumps(raised.value)), copy.deepcopy(raised.value)):
        assert str(copied) == str(raised.value) and copied.result == raised.value.result


def test_a_replay_folder_that_cannot_be_written_does_not_stop_the_report(spec, tmp_path) -> None:
    (tmp_path / "afile").write_text("")
    monitored = spec.bind("shifted", Shift(), mode="record", replay_dir=tmp_path / "afile" / "replays")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitored(-torch.ones(2, 3), torch.tensor([1.0, 0.0]))
    assert [result.clause for result in monitored.reports] == ["positive"]
    assert monitored.reports[0].witness.replay is None
    assert any("could not be saved" in str(warning.message) for warning in caught)


def test_binding_something_that_is_not_a_module_is_refused_at_once(spec) -> None:
    with pytest.raises(BindError, match=r"must be bound to an nn\.Module, not a function"):
        spec.bind("wide", lambda x: x)
