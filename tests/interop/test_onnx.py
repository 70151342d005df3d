"""The ONNX loader against ONNX's own reference evaluator and against torch, operator by operator."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mdl_lang.interop.onnx import (  # noqa: E402
    OnnxImportError,
    UnsupportedOperator,
    network_from_onnx,
    network_to_onnx,
    run_model,
)
from mdl_lang.verify.network import Affine, MaxGroups, Relu, evaluate  # noqa: E402

RNG = np.random.default_rng(0)


def _model(nodes: list, input_shape: list, initializers: dict[str, np.ndarray]):
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value.astype(np.float32) if value.dtype.kind == "f" else value, name)
         for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _agrees(model, input_shape: tuple[int, ...], samples: int = 6) -> None:
    """The lowered network computes what ONNX's reference evaluator computes, on random inputs."""
    network = network_from_onnx(model)
    assert network.input_shape == input_shape
    x = RNG.uniform(-1, 1, size=(samples, *input_shape)).astype(np.float32)
    expected = run_model(model, x)
    lowered = evaluate(network, torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(lowered, expected, rtol=1e-5, atol=1e-5)


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape)


def test_gemm_variants_and_relu() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1, alpha=0.5, beta=2.0, name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "w2"], ["y"], name="fc2"),
    ]
    model = _model(nodes, [5], {"w1": _w(4, 5), "b1": _w(4), "w2": _w(4, 3)})
    _agrees(model, (5,))
    assert [type(n).__name__ for n in network_from_onnx(model).nodes] == ["Affine", "Relu", "Affine"]


def test_matmul_add_sub_mul_div_fuse_into_one_affine() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Sub", ["c", "a"], ["s"]),
        helper.make_node("Mul", ["s", "k"], ["p"]),
        helper.make_node("Div", ["p", "d"], ["q"]),
        helper.make_node("Identity", ["q"], ["y"]),
    ]
    model = _model(nodes, [4], {"w": _w(4, 3), "b": _w(3), "c": _w(1, 3), "k": _w(3), "d": np.full(1, 4.0)})
    _agrees(model, (4,))
    (only,) = network_from_onnx(model).nodes
    assert isinstance(only, Affine)


def test_residual_add_and_sub_of_values_and_constant_nodes() -> None:
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(_w(3, 3).astype(np.float32))),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["a"]),
        helper.make_node("Sub", ["a", "h"], ["y"]),
    ]
    _agrees(_model(nodes, [3], {}), (3,))


def test_a_renamed_value_read_twice_is_not_fused_away() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"]),
        helper.make_node("Identity", ["h"], ["alias"]),
        helper.make_node("Add", ["alias", "c"], ["shifted"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Add", ["shifted", "r"], ["y"]),
    ]
    _agrees(_model(nodes, [3], {"w": _w(3, 3), "c": _w(3)}), (3,))


def test_conv_batchnorm_pools_flatten_reshape() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["m", "gw"], ["g"], group=2, kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["pr"]),
        helper.make_node("Flatten", ["g"], ["gf"], axis=1),
        helper.make_node("Concat", ["pr", "gf"], ["cat"], axis=1),
        helper.make_node("Gemm", ["cat", "fw", "fb"], ["y"], transB=1),
    ]
    initializers = {
        "cw": _w(4, 2, 3, 3), "cb": _w(4), "gw": _w(4, 2, 2, 2), "fw": _w(5, 4 * 3 * 3 + 4), "fb": _w(5),
    }
    initializers["shape"] = np.array([0, -1], dtype=np.int64)
    model = _model(nodes, [2, 6, 6], initializers)
    _agrees(model, (2, 6, 6))
    kinds = {type(n) for n in network_from_onnx(model).nodes}
    assert MaxGroups in kinds and Relu in kinds


def test_batch_normalization_follows_the_onnx_formula() -> None:
    # Checked against ONNX's definition written out, not its reference evaluator: onnx 1.23's
    # reference BatchNormalization disagrees with the formula by up to 0.1 here.
    scale, shift, mean = (_w(3).astype(np.float32) for _ in range(3))
    variance = RNG.uniform(0.5, 2, size=3).astype(np.float32)
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)
    model = _model([node], [3, 2, 2], {"s": scale, "b": shift, "m": mean, "v": variance})
    x = RNG.uniform(-1, 1, size=(4, 3, 2, 2))
    per_channel = (slice(None), None, None)
    expected = (x - mean[per_channel]) / np.sqrt(variance[per_channel] + np.float32(1e-3))
    expected = expected * scale[per_channel] + shift[per_channel]
    lowered = evaluate(network_from_onnx(model), torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(lowered, expected.reshape(4, -1), rtol=1e-6, atol=1e-6)


def test_concat_along_an_inner_axis_reorders() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Concat", ["x", "r", "k"], ["y"], axis=2),
    ]
    model = _model(nodes, [2, 3], {"k": _w(1, 2, 1)})
    _agrees(model, (2, 3))


def _torch_onnx(module: torch.nn.Module, shape: tuple[int, ...]):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *shape),), buffer, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}}, input_names=["input"])
    return onnx.load_from_string(buffer.getvalue())


class _SmallCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.pool = torch.nn.MaxPool2d(2)
        self.head = torch.nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.norm(self.conv(x))))
        return self.head(h.view(h.size(0), -1))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_torch_exports_load_and_agree_with_torch(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "mlp":
        module, shape = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
        ), (1, 8, 8)
    else:
        module, shape = _SmallCnn(), (1, 8, 8)
        module.norm.running_mean.uniform_(-1, 1)
        module.norm.running_var.uniform_(0.5, 2)
    module.eval()
    network = network_from_onnx(_torch_onnx(module, shape))
    x = torch.rand(8, *shape)
    with torch.no_grad():
        torch.testing.assert_close(evaluate(network, x.double()), module(x).double(), rtol=1e-5, atol=1e-5)


def test_writer_round_trips_through_the_loader() -> None:
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()
    network = network_from_onnx(_torch_onnx(mlp, (6,)))
    written = network_to_onnx(network)
    assert [n.op_type for n in written.graph.node] == ["Gemm", "Relu", "Gemm", "Identity"]
    x = torch.rand(4, 6)
    np.testing.assert_allclose(run_model(written, x.numpy()), mlp(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(evaluate(network_from_onnx(written), x.double()), evaluate(network, x.double()))


def test_unsupported_operator_names_op_and_node() -> None:
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], name="probs")]
    with pytest.raises(UnsupportedOperator, match=r"`Softmax` \(node `probs`\) is not supported") as caught:
        network_from_onnx(_model(nodes, [3], {"w": _w(3, 3)}))
    assert caught.value.op_type == "Softmax" and caught.value.node_name == "probs"


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([helper.make_node("Mul", ["x", "x"], ["y"], name="square")], "`Mul` (node `square`)"),
        ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], ceil_mode=1)], "ceil_mode=1"),
        ([helper.make_node("Conv", ["x", "cw"], ["y"], pads=[0, 0, 1, 1])], "is not 2-D and symmetric"),
        ([helper.make_node("Reshape", ["x", "flat"], ["y"])], "moves the batch dimension"),
    ],
)
def test_refused_uses_of_supported_operators(nodes: list, message: str) -> None:
    model = _model(nodes, [1, 4, 4], {"cw": _w(1, 1, 2, 2), "flat": np.array([-1], dtype=np.int64)})
    with pytest.raises(UnsupportedOperator) as caught:
        network_from_onnx(model)
    assert message in str(caught.value)


def test_fixed_batch_and_missing_batch_are_refused() -> None:
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(relu, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(OnnxImportError, match="fixed batch of 2"):
        network_from_onnx(helper.make_model(graph))
    graph = helper.make_graph(relu, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(OnnxImportError, match="leading batch dimension"):
        network_from_onnx(helper.make_model(graph))
