"""The lowered network form and torch.fx extraction agree with torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mdl_lang.verify.extract import Unsupported, extract
from mdl_lang.verify.network import (
    avgpool2d_affine,
    batchnorm_affine,
    conv2d_affine,
    evaluate,
    maxpool2d_groups,
)


class ResidualNet(nn.Module):
    """Conv, batch norm, residual add, max and average pooling, concat, flatten, view and softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.average = nn.AvgPool2d(2)
        self.head = nn.Sequential(nn.Linear(4 * 4 * 4 + 4 * 2 * 2, 16), nn.ReLU(), nn.Identity(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.norm(self.conv1(x)))
        hidden = hidden + self.conv2(hidden)
        pooled = self.pool(hidden)
        averaged = self.average(pooled)
        features = torch.cat([pooled.flatten(1), averaged.view(x.size(0), -1)], dim=1)
        return torch.softmax(self.head(features), dim=1)


def _residual_net() -> ResidualNet:
    torch.manual_seed(3)
    net = ResidualNet()
    with torch.no_grad():
        net.norm.running_mean.uniform_(-1, 1)
        net.norm.running_var.uniform_(0.5, 2)
    return net.eval()


def test_residual_conv_net_agrees_with_torch_on_random_inputs() -> None:
    net = _residual_net()
    extraction = extract(net, (1, 8, 8), allow_softmax=True)
    assert extraction.dropped_softmax
    inputs = torch.rand(32, 1, 8, 8)
    lowered = evaluate(extraction.network, inputs.to(torch.float64)).softmax(dim=1)
    assert torch.allclose(lowered, net(inputs).to(torch.float64), atol=1e-6)
    assert torch.equal(evaluate(extraction.network, inputs).argmax(1), net(inputs).argmax(1))


def test_softmax_is_refused_for_value_clauses() -> None:
    with pytest.raises(Unsupported, match="non-linear softmax"):
        extract(_residual_net(), (1, 8, 8))


def test_batchnorm_in_training_mode_is_named() -> None:
    with pytest.raises(Unsupported, match="training mode"):
        extract(_residual_net().train(), (1, 8, 8))


def test_unsupported_layer_names_the_layer_and_its_path() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Tanh()))
    with pytest.raises(Unsupported, match=r"unsupported layer Tanh at 1\.1"):
        extract(net, (4,))


def test_concern_view_lowers_to_a_max_over_rivals() -> None:
    from mdl_lang.modular.concern import ConcernView

    torch.manual_seed(0)
    view = ConcernView(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5)), 2).eval()
    network = extract(view, (4,)).network
    inputs = torch.randn(20, 4)
    assert torch.allclose(evaluate(network, inputs), view(inputs))


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1)])
def test_lowering_helpers_match_torch(stride: int, padding: int) -> None:
    torch.manual_seed(1)
    inputs = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    flat = inputs.reshape(5, -1)
    weight, bias = torch.randn(2, 3, 3, 3), torch.randn(2)
    matrix, offset, shape = conv2d_affine(weight, bias, (3, 6, 6), stride, padding)
    expected = nn.functional.conv2d(inputs, weight.double(), bias.double(), stride, padding)
    assert shape == tuple(expected.shape[1:])
    assert torch.allclose(flat @ matrix.T + offset, expected.reshape(5, -1))
    matrix, offset, shape = avgpool2d_affine((3, 6, 6), 3, stride, padding)
    expected = nn.functional.avg_pool2d(inputs, 3, stride, padding)
    assert torch.allclose(flat @ matrix.T + offset, expected.reshape(5, -1))
    groups, shape = maxpool2d_groups((3, 6, 6), 3, stride, padding)
    expected = nn.functional.max_pool2d(inputs, 3, stride, padding)
    assert torch.equal(flat[:, groups].amax(2), expected.reshape(5, -1))
    mean, variance = torch.randn(3), torch.rand(3) + 0.5
    gamma, beta = torch.randn(3), torch.randn(3)
    matrix, offset = batchnorm_affine(mean, variance, gamma, beta, 1e-5, (3, 6, 6))
    expected = nn.functional.batch_norm(inputs, mean.double(), variance.double(), gamma.double(), beta.double(),
                                        False, 0.0, 1e-5)
    assert torch.allclose(flat @ matrix.T + offset, expected.reshape(5, -1))


def test_conv_net_robustness_agrees_with_an_independent_attack(independent_attack) -> None:
    """Max-pool, residual add and concat go through bounds, branch and bound and replay."""
    from mdl_lang.verify.clauses import InputRegion, robustness_query
    from mdl_lang.verify.engine import verify_query

    net = _residual_net()
    network = extract(net, (1, 8, 8), allow_softmax=True).network
    flat_model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), net).eval()
    region = InputRegion(torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64), ())
    generator = torch.Generator().manual_seed(5)
    verdicts = []
    for eps in (0.001, 0.05):
        for _ in range(3):
            point = torch.rand(64, generator=generator)
            with torch.no_grad():
                label = int(flat_model(point.unsqueeze(0)).argmax())
            query = robustness_query(eps, point, label, 10, region, "conv")
            outcome = verify_query(network, query, timeout_s=2.0, reference=net)
            verdicts.append(outcome.verdict)
            assert outcome.elapsed_s < 4.0
            if outcome.verdict == "proved":
                assert independent_attack(flat_model, point, eps, label, restarts=32, steps=40) is None
            if outcome.verdict == "refuted":
                with torch.no_grad():
                    assert int(flat_model(outcome.counterexample.unsqueeze(0)).argmax()) != label
    assert "proved" in verdicts
