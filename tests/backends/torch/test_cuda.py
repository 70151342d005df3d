"""The monitor on CUDA: same verdicts and bit-identical outputs as on the CPU.

Marked `gpu`: CI (CPU only) deselects them by name with `-m 'not gpu'`; run them
with `pytest -m gpu` on a machine with a CUDA device, where they fail loudly if
there is none.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.monitor import ContractViolation
from mdl_lang.report import Role

pytestmark = pytest.mark.gpu
SPEC = Path(__file__).parent / "specs" / "system.mdl"


@pytest.fixture(scope="module")
def device() -> torch.device:
    assert torch.cuda.is_available(), "these tests need a CUDA device (deselect them with -m 'not gpu')"
    return torch.device("cuda")


def pipeline_parts(device: torch.device, shift: float = 0.0) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    normalize = nn.Sequential(nn.Linear(16, 8), nn.Sigmoid())
    classify = nn.Sequential(nn.Linear(8, 10), nn.Softmax(dim=-1))
    if shift:
        normalize.append(_Shift(shift))
    return {"normalize": normalize.to(device), "classify": classify.to(device)}


class _Shift(nn.Module):
    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.shift


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_bit_identical_outputs_and_gradients_on_cuda(device, dtype):
    spec = mdl_lang.load(SPEC)
    parts = pipeline_parts(device)
    plain = nn.Sequential(parts["normalize"], parts["classify"]).to(dtype)
    x = torch.rand(64, 16, device=device, dtype=dtype, requires_grad=True)
    expected = plain(x)
    expected.sum().backward()
    expected_grad = x.grad.clone()
    x.grad = None
    spec_model = spec.bind("pipeline", parts=parts, mode="record", replay_dir=None)
    got = spec_model(x)
    got.sum().backward()
    assert torch.equal(expected, got)
    assert torch.equal(expected_grad, x.grad)


def test_blame_on_cuda(device):
    spec = mdl_lang.load(SPEC)
    model = spec.bind("pipeline", parts=pipeline_parts(device, shift=0.6), replay_dir=None)
    with pytest.raises(ContractViolation) as raised:
        model(torch.rand(32, 16, device=device))
    assert raised.value.result.blame.party == "normalize"
    assert raised.value.result.blame.role is Role.MODULE
    with pytest.raises(ContractViolation) as raised:
        spec.bind("pipeline", parts=pipeline_parts(device), replay_dir=None)(torch.rand(8, 16, device=device) * 3)
    assert raised.value.result.blame.party == "caller"


def test_inference_mode_and_autocast_on_cuda(device):
    spec = mdl_lang.load(SPEC)
    model = spec.bind("pipeline", parts=pipeline_parts(device), mode="record", replay_dir=None)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(torch.rand(32, 16, device=device))
    assert model.reports == []
