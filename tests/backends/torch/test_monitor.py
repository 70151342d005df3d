"""Monitors are transparent: same outputs and gradients bit for bit, and every nn.Module habit keeps working."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang.backends.torch.monitor import ContractViolation
from mdl_lang.report import Verdict

SPEC_TEXT = """
labels Digit = {0..9}
dim B : batch
dim S
type Vector = Tensor[B, 64] float in [0, 16]
interface Classifier {
  input  x: Vector
  output y: Tensor[B, Digit] float
  requires finite(x)
  ensures finite(y)
  ensures simplex: sum(softmax(y)) == 1 within 1e-3
  ensures argmax(y) in Digit
}
module mlp : Classifier
interface Sequence {
  input  x: Tensor[B, S, 4] float
  output y: Tensor[B, S * 2] float
  ensures sum(y) == sum(x) within 1e-2
}
module pairs : Sequence
"""


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Pairs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = x.reshape(x.shape[0], x.shape[1], 2, 2).sum(dim=-1)
        return halves.reshape(x.shape[0], -1)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "monitor.mdl"
    path.write_text(SPEC_TEXT)
    return mdl_lang.load(path)


def digits(batch: int = 16, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    return (torch.rand(batch, 64, generator=torch.Generator().manual_seed(seed)) * 16).to(dtype)


def test_outputs_and_gradients_are_bit_identical(spec):
    torch.manual_seed(0)
    plain = MLP()
    monitored_model = MLP()
    monitored_model.load_state_dict(plain.state_dict())
    monitored = spec.bind("mlp", monitored_model)
    x = digits()
    for model in (plain, monitored):
        model.train()
    torch.manual_seed(1)
    expected = plain(x)
    expected.square().sum().backward()
    torch.manual_seed(1)
    got = monitored(x)
    got.square().sum().backward()
    assert torch.equal(expected, got)
    for (name, a), (_, b) in zip(plain.named_parameters(), monitored_model.named_parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name


def test_input_gradients_are_untouched(spec):
    model = MLP().eval()
    monitored = spec.bind("mlp", model)
    x1 = digits().requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    model(x1).sum().backward()
    monitored(x2).sum().backward()
    assert torch.equal(x1.grad, x2.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_float_dtype(spec, dtype):
    monitored = spec.bind("mlp", MLP().to(dtype).eval())
    assert monitored(digits(dtype=dtype)).dtype == dtype
    with pytest.raises(ContractViolation):
        monitored(digits(dtype=dtype) * 2)


def test_no_grad_inference_mode_and_autocast(spec):
    monitored = spec.bind("mlp", MLP().eval())
    with torch.no_grad():
        monitored(digits())
    with torch.inference_mode():
        monitored(digits())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        monitored(digits())
    with torch.inference_mode(), pytest.raises(ContractViolation):
        monitored(digits() * 2)


def test_state_dict_to_train_eval_and_pickle(spec):
    model = MLP()
    monitored = spec.bind("mlp", model)
    assert monitored.state_dict().keys() == model.state_dict().keys()
    fresh = MLP()
    fresh.load_state_dict(monitored.state_dict())
    monitored.load_state_dict(MLP().state_dict())
    monitored.eval()
    assert not model.training
    monitored.to(torch.float64)
    assert next(model.parameters()).dtype == torch.float64
    monitored.to(torch.float32)
    restored = pickle.loads(pickle.dumps(monitored))
    x = digits()
    assert torch.equal(restored(x), monitored(x))
    with pytest.raises(ContractViolation):
        restored(x * 2)
    buffer = io.BytesIO()
    torch.save(monitored.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))


def test_export_traces_the_module_without_the_checks(spec):
    monitored = spec.bind("mlp", MLP().eval())
    exported = torch.export.export(monitored, (digits(),))
    assert torch.allclose(exported.module()(digits()), monitored(digits()))


def test_symbolic_dims_bind_per_call(spec):
    monitored = spec.bind("pairs", Pairs(), mode="record", replay_dir=None)
    for length in (1, 3, 7):
        monitored(torch.rand(5, length, 4))
    assert monitored.reports == []


def test_symbolic_dim_mismatch_names_the_dims_bound(spec):
    class Wrong(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], x.shape[1] * 2 + 1)

    monitored = spec.bind("pairs", Wrong(), replay_dir=None)
    with pytest.raises(ContractViolation) as raised:
        monitored(torch.rand(5, 3, 4))
    text = str(raised.value)
    assert "S * 2" in text and "S=3" in text and "blame: pairs (module)" in text


def test_record_mode_keeps_reports_and_saves_replays(spec, tmp_path):
    monitored = spec.bind("mlp", MLP(), mode="record", replay_dir=tmp_path)
    bad = digits()
    bad[3, 5] = float("nan")
    monitored(bad)
    assert {r.blame.party for r in monitored.reports} == {"caller"}, "NaN in, NaN out: the caller's fault"
    result = monitored.reports[0]
    assert "finite" in result.message
    assert result.verdict is Verdict.FAIL
    assert result.witness.samples == (3,)
    assert result.blame.party == "caller"
    saved = torch.load(Path(result.witness.replay), weights_only=True)
    assert saved["component"] == "mlp" and saved["inputs"]["x"].shape == (1, 64)
    assert torch.isnan(saved["inputs"]["x"]).any()


def test_mode_context_switches_every_monitor(spec):
    monitored = spec.bind("mlp", MLP())
    with mdl_lang.monitor_mode("record"):
        monitored(digits() * 2)
    assert len(monitored.reports) == 1
    with pytest.raises(ValueError, match="mode"):
        spec.bind("mlp", MLP(), mode="loud")


def test_bind_errors_are_clear(spec):
    with pytest.raises(mdl_lang.BindError, match="did you mean `mlp`"):
        spec.bind("mpl", MLP())
    with pytest.raises(mdl_lang.BindError, match="is a module"):
        spec.bind("mlp")


PORTS_TEXT = """
dim B : batch
interface Split {
  input x: Tensor[B, 4] float32
  output lo: Tensor[B, 2] float32
  output hi: Tensor[B, 3] float32 in [0, 10]
}
interface Join {
  input lo: Tensor[B, 2] float32
  input hi: Tensor[B, 3] float32
  output y: Tensor[B, 5] float32
}
interface Whole {
  input x: Tensor[B, 4] float32
  output y: Tensor[B, 5] float32
}
interface Capped {
  input x: Tensor[B, 3] float32
  output y: Tensor[B, 3] float32
  requires small: all(x <= 1)
  ensures low: all(y <= 1)
}
module split : Split
module join : Join
module cap : Capped
compose whole : Whole = split >> join
"""


class SplitByName(nn.Module):
    """Returns a dict keyed by the output port names, in the other order."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"hi": x[:, 1:].abs(), "lo": x[:, :2]}


class Join(nn.Module):
    def forward(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return torch.cat([lo, hi], dim=1)


class ClampInPlace(nn.Module):
    """Changes its input in place, as `nn.ReLU(inplace=True)` does; `scale` then scales the output."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(max=1.0)
        return x * self.scale


@pytest.fixture(scope="module")
def ports_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("ports") / "ports.mdl"
    path.write_text(PORTS_TEXT)
    return mdl_lang.load(path)


def test_dict_outputs_are_matched_to_ports_by_name(ports_spec):
    x = torch.randn(3, 4)
    module = ports_spec.bind("split", SplitByName(), mode="record", replay_dir=None)
    module(x)
    assert module.reports == []
    composed = ports_spec.bind("whole", parts={"split": SplitByName(), "join": Join()}, mode="record",
                               replay_dir=None)
    assert torch.equal(composed(x), Join()(**SplitByName()(x)))
    assert composed.reports == []
    with mdl_lang.monitor_mode("off"):
        assert torch.equal(composed(x), Join()(**SplitByName()(x)))


def test_a_requires_broken_before_an_in_place_change_is_still_reported(ports_spec):
    bad = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ContractViolation, match="in place") as raised:
        ports_spec.bind("cap", ClampInPlace(), replay_dir=None)(bad.clone())
    result = raised.value.result
    assert result.kind == "requires" and result.clause == "small"
    assert result.blame.party == "caller"
    recording = ports_spec.bind("cap", ClampInPlace(scale=2.0), mode="record", replay_dir=None)
    recording(bad.clone())
    assert [(r.clause, r.kind) for r in recording.reports] == [("small", "requires"), ("low", "ensures")]


def test_an_in_place_change_of_a_good_input_blames_only_what_failed(ports_spec):
    monitored = ports_spec.bind("cap", ClampInPlace(scale=2.0), mode="record", replay_dir=None)
    monitored(torch.tensor([[0.5, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert [(r.clause, r.blame.party) for r in monitored.reports] == [("low", "cap")]
    monitored.reports.clear()
    with torch.inference_mode():
        monitored(torch.tensor([[0.9, 0.0, 0.0]]))
        monitored(torch.tensor([[5.0, 0.0, 0.0]]))
    assert [(r.clause, "in place" in r.message) for r in monitored.reports] == [
        ("low", False), ("small", True), ("low", False),
    ]


class Holder(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_state_dict_round_trips_through_a_parent_module(spec, ports_spec):
    first, second = Holder(spec.bind("mlp", MLP())), Holder(spec.bind("mlp", MLP()))
    state = first.state_dict()
    assert list(state) == [f"body.{key}" for key in MLP().state_dict()]
    second.load_state_dict(state)
    for key, value in second.state_dict().items():
        assert torch.equal(value, state[key]), key
    plain = Holder(MLP())
    plain.load_state_dict(state)
    first.load_state_dict(plain.state_dict())
    nested = spec.bind("mlp", spec.bind("mlp", MLP()))
    nested.load_state_dict(first.body.state_dict())
    assert list(nested.state_dict()) == list(MLP().state_dict())

    def whole() -> Holder:
        return Holder(ports_spec.bind("whole", parts={"split": SplitByName(), "join": spec.bind("mlp", MLP())}))

    made, loaded = whole(), whole()
    loaded.load_state_dict(made.state_dict())
    assert torch.equal(made.state_dict()["body.parts.join.layers.0.weight"],
                       loaded.state_dict()["body.parts.join.layers.0.weight"])


def test_the_witness_of_a_quantified_clause_shows_the_label_that_failed(tmp_path):
    path = tmp_path / "quantified.mdl"
    path.write_text('labels G = {"tshirt", "trouser", "pullover"}\ndim B : batch\ninterface I {\n'
                    "  input x: Tensor[B, G] float32\n  output y: Tensor[B, G] float32\n"
                    "  ensures b: forall l in G: argmax(y) == l implies y[l] > 0.3\n}\nmodule i : I\n")
    model = mdl_lang.load(path).bind("i", nn.Identity(), mode="record", replay_dir=None)
    model(torch.tensor([[0.1, 0.2, 0.25]]))  # argmax "pullover", with 0.25: the pullover instance fails
    [report] = model.reports
    values = dict(report.witness.values)
    assert values["l"] == '"pullover"' and values["y[l]"] == "0.25" and values["y[l] > 0.3"] == "False"


def test_a_warning_points_at_the_line_that_called_the_model(tmp_path):
    path = tmp_path / "warned.mdl"
    path.write_text("dim B : batch\ninterface I {\n  input x: Tensor[B, 2] float32 in [0, 1]\n"
                    "  output y: Tensor[B, 2] float32\n}\nmodule m : I\n")
    model = mdl_lang.load(path).bind("m", nn.Identity(), mode="warn", replay_dir=None)
    with pytest.warns(UserWarning) as caught:
        model(torch.full((1, 2), 5.0))
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]
