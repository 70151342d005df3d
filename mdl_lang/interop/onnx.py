"""ONNX models into the lowered `Network` of `mdl verify`, and small piecewise-linear networks back out.

The loader walks the graph in its (topological) node order, keeping each tensor either as a
constant (initializers, `Constant` nodes and anything computed from constants alone, folded with
numpy) or as a value of the network being built, with its per-sample shape. Only piecewise-linear
operators exist in a `Network`; any other operator raises `UnsupportedOperator` naming the op and
the node, so a model is never half loaded and `mdl verify` can answer `unknown` with the reason.

The first dimension of the graph input is the batch (symbolic or 1); the network sees one sample,
flattened row-major, which is also how VNN-LIB numbers `X_i` and `Y_j`. The `onnx` package is
imported only here, when a model is read or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mdl_lang.verify.network import (
    Add,
    Affine,
    Concat,
    MaxGroups,
    Network,
    Node,
    Relu,
    avgpool2d_affine,
    batchnorm_affine,
    conv2d_affine,
    maxpool2d_groups,
)

if TYPE_CHECKING:
    import onnx

SUPPORTED_OPERATORS = (
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Flatten", "Reshape", "Conv", "AveragePool",
    "MaxPool", "BatchNormalization", "Identity", "Concat", "Constant",
    # folded when every operand is a constant (shape arithmetic of exported `x.view(x.size(0), -1)`):
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast",
)


class OnnxImportError(Exception):
    """A model this loader cannot turn into a `Network`; the message says which part and why."""


class UnsupportedOperator(OnnxImportError):
    """An operator (or a use of one) outside the piecewise-linear subset, named with its node."""

    def __init__(self, op_type: str, node_name: str, detail: str = "") -> None:
        why = f": {detail}" if detail else ""
        super().__init__(
            f"ONNX operator `{op_type}` (node `{node_name}`) is not supported{why}; "
            f"supported: {', '.join(SUPPORTED_OPERATORS[:16])}"
        )
        self.op_type = op_type
        self.node_name = node_name


@dataclass(frozen=True)
class _Value:
    """A tensor the network computes: node `index`, with this per-sample shape (batch removed)."""

    index: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


Tensor = _Value | np.ndarray


def load_onnx(path: str | Path) -> Network:
    """Read an ONNX file and lower it; `OSError` and `OnnxImportError` are the caller's to report."""
    return network_from_onnx(read_model(path))


def read_model(path: str | Path) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.load(str(path))
    except OSError:
        raise
    except Exception as error:  # protobuf's DecodeError has no stable public import path
        raise OnnxImportError(f"{path} is not an ONNX model: {type(error).__name__}: {error}") from error


def network_from_onnx(model: onnx.ModelProto) -> Network:
    """The graph of `model` as a `Network` over one sample of its single input."""
    return _Lowering(model).run()


class _Lowering:
    """One pass over the graph; `tensors` maps every tensor name seen so far to a constant or a value."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.tensors: dict[str, Tensor] = {
            init.name: numpy_helper.to_array(init) for init in self.graph.initializer
        }
        self.nodes: list[Node] = []
        self.names: list[str] = []
        # How often each tensor name is read, and how many reads of each network value are still to
        # come (a value can have several names: Identity, Flatten and Reshape only rename it). An
        # Affine whose value nobody else reads is fused with the Affine that consumes it.
        self.uses: dict[str, int] = {}
        self.pending_reads: dict[int, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for output in self.graph.output:
            self.uses[output.name] = self.uses.get(output.name, 0) + 1
        self.input_size = 0

    # -- the walk

    def run(self) -> Network:
        input_shape = self._input()
        for position, node in enumerate(self.graph.node):
            name = node.name or f"{node.op_type}#{position}"
            handler = _HANDLERS.get(node.op_type)
            if handler is None:
                raise UnsupportedOperator(node.op_type, name)
            operands = [self._tensor(operand, node.op_type, name) if operand else None for operand in node.input]
            for operand in operands:
                if isinstance(operand, _Value):
                    self.pending_reads[operand.index] -= 1
            attributes = _attributes(node)
            results = handler(self, operands, attributes, node.op_type, name)
            used = [output for output in node.output if output]
            for index, output in enumerate(used):
                if index >= len(results):
                    if self.uses.get(output, 0):
                        raise UnsupportedOperator(node.op_type, name, f"its output {index + 1} is used")
                    continue
                result = results[index]
                # numpy folds 0-d results to scalars (np.take of one index); keep every constant an array.
                self.tensors[output] = result if isinstance(result, _Value) else np.asarray(result)
                if isinstance(result, _Value):
                    reads = self.uses.get(output, 0)
                    self.pending_reads[result.index] = self.pending_reads.get(result.index, 0) + reads
        if len(self.graph.output) != 1:
            raise OnnxImportError(f"the graph has {len(self.graph.output)} outputs; one is supported")
        result = self.tensors.get(self.graph.output[0].name)
        if not isinstance(result, _Value):
            raise OnnxImportError("the graph's output does not depend on its input")
        return Network(input_shape, tuple(self.nodes), result.index, tuple(self.names))

    def _input(self) -> tuple[int, ...]:
        inputs = [value for value in self.graph.input if value.name not in self.tensors]
        if len(inputs) != 1:
            raise OnnxImportError(f"the graph has {len(inputs)} inputs besides its weights; one is supported")
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) < 2:
            raise OnnxImportError(
                f"input `{inputs[0].name}` has rank {len(dims)}; a leading batch dimension is expected"
            )
        batch = dims[0]
        if batch.HasField("dim_value") and batch.dim_value not in (0, 1):
            raise OnnxImportError(f"input `{inputs[0].name}` has a fixed batch of {batch.dim_value}; expected 1")
        shape: list[int] = []
        for dim in dims[1:]:
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                raise OnnxImportError(f"input `{inputs[0].name}` has a symbolic non-batch dimension")
            shape.append(int(dim.dim_value))
        self.tensors[inputs[0].name] = _Value(0, tuple(shape))
        self.pending_reads[0] = self.uses.get(inputs[0].name, 0)
        self.input_size = int(np.prod(shape, dtype=np.int64))
        return tuple(shape)

    def _tensor(self, name: str, op_type: str, node_name: str) -> Tensor:
        if name not in self.tensors:
            raise OnnxImportError(f"node `{node_name}` ({op_type}) reads `{name}`, which nothing computes before it")
        return self.tensors[name]

    # -- building nodes

    def emit(self, node: Node, name: str, shape: tuple[int, ...]) -> _Value:
        self.nodes.append(node)
        self.names.append(name)
        return _Value(len(self.nodes), shape)

    def affine(self, source: _Value, weight: np.ndarray, bias: np.ndarray, name: str,
               shape: tuple[int, ...]) -> _Value:
        """An Affine on `source`, fused into the Affine that made `source` when nothing else reads it.

        Fusing keeps `MatMul` + `Add` (or a chain of scalings) one dense layer instead of several
        square identity-sized matrices."""
        weight_t = torch.as_tensor(np.asarray(weight, dtype=np.float64))
        bias_t = torch.as_tensor(np.asarray(bias, dtype=np.float64).reshape(-1))
        producer = self.nodes[source.index - 1] if source.index > 0 else None
        last = source.index == len(self.nodes)
        if isinstance(producer, Affine) and last and not self.pending_reads.get(source.index):
            fused = Affine(producer.src, weight_t @ producer.weight, weight_t @ producer.bias + bias_t)
            self.nodes[-1] = fused
            self.names[-1] = f"{self.names[-1]}+{name}"
            return _Value(source.index, shape)
        return self.emit(Affine(source.index, weight_t, bias_t), name, shape)

    def materialize(self, constant: np.ndarray, name: str) -> _Value:
        """A constant as a network value (a zero-weight Affine on the input), for Concat with values."""
        if constant.ndim == 0 or constant.shape[0] != 1:
            raise OnnxImportError(f"node `{name}` concatenates a constant without a batch dimension of 1")
        flat = constant.reshape(-1).astype(np.float64)
        weight = np.zeros((flat.size, self.input_size), dtype=np.float64)
        return self.emit(Affine(0, torch.as_tensor(weight), torch.as_tensor(flat)), name, tuple(constant.shape[1:]))



# ---------------------------------------------------------------- operator handlers

Handler = Callable[[_Lowering, list[Any], dict[str, Any], str, str], list[Tensor]]


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    values: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.type == attribute.TENSOR:
            value = numpy_helper.to_array(value)
        values[attribute.name] = value
    return values


def _constant(operand: Any, op_type: str, name: str, what: str) -> np.ndarray:
    if not isinstance(operand, np.ndarray):
        raise UnsupportedOperator(op_type, name, f"its {what} must be a constant")
    return operand


def _value(operand: Any, op_type: str, name: str, what: str = "data input") -> _Value:
    if not isinstance(operand, _Value):
        raise UnsupportedOperator(op_type, name, f"its {what} must depend on the network input")
    return operand


def _full(value: _Value) -> tuple[int, ...]:
    """The ONNX shape of a value for one sample: batch 1 in front."""
    return (1, *value.shape)


def _only_constants(operands: list[Any]) -> bool:
    return all(operand is None or isinstance(operand, np.ndarray) for operand in operands)


def _gemm(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    alpha = float(attributes.get("alpha", 1.0))
    beta = float(attributes.get("beta", 1.0))
    trans_a, trans_b = int(attributes.get("transA", 0)), int(attributes.get("transB", 0))
    a, b = operands[0], operands[1]
    c = operands[2] if len(operands) > 2 else None
    if _only_constants(operands):
        product = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
        return [product + beta * c if c is not None else product]
    source = _value(a, op, name, "input A")
    if trans_a or len(source.shape) != 1:
        raise UnsupportedOperator(op, name, "input A must be (batch, features) and not transposed")
    matrix = _constant(b, op, name, "input B")
    weight = alpha * (matrix if trans_b else matrix.T)
    if weight.shape[1] != source.size:
        raise OnnxImportError(f"node `{name}` (Gemm): B has {weight.shape[1]} inputs, A has {source.size}")
    outputs = weight.shape[0]
    bias = np.zeros(outputs) if c is None else beta * np.broadcast_to(_constant(c, op, name, "input C"), (1, outputs))
    return [lower.affine(source, weight, bias, name, (outputs,))]


def _matmul(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    a, b = operands
    if _only_constants(operands):
        return [a @ b]
    source = _value(a, op, name, "left operand")
    matrix = _constant(b, op, name, "right operand")
    if matrix.ndim != 2 or matrix.shape[0] != source.shape[-1]:
        raise UnsupportedOperator(op, name, f"a {source.shape} value times a {matrix.shape} constant")
    leading = int(np.prod(source.shape[:-1], dtype=np.int64))
    # Every leading row of a sample is multiplied by the same matrix: a block-diagonal dense layer.
    weight = np.kron(np.eye(leading), matrix.T)
    return [lower.affine(source, weight, np.zeros(weight.shape[0]), name, (*source.shape[:-1], matrix.shape[1]))]


def _broadcast(value: _Value, constant: np.ndarray, op: str, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """The constant spread over one sample, and the per-sample shape of the result."""
    try:
        shape = np.broadcast_shapes(_full(value), constant.shape)
    except ValueError as error:
        raise OnnxImportError(f"node `{name}` ({op}): shapes {_full(value)} and {constant.shape} differ") from error
    if int(np.prod(shape)) != value.size or shape[0] != 1:
        raise UnsupportedOperator(op, name, f"the constant {constant.shape} would widen the value {_full(value)}")
    return np.broadcast_to(constant, shape).reshape(-1).astype(np.float64), tuple(shape[1:])


def _elementwise(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    a, b = operands
    if _only_constants(operands):
        return [{"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](a, b)]
    if isinstance(a, _Value) and isinstance(b, _Value):
        if a.shape != b.shape:
            raise UnsupportedOperator(op, name, f"broadcasting between computed values {a.shape} and {b.shape}")
        if op == "Add":
            return [lower.emit(Add(a.index, b.index), name, a.shape)]
        if op == "Sub":
            negated = lower.emit(Affine(b.index, -torch.eye(b.size, dtype=torch.float64),
                                        torch.zeros(b.size, dtype=torch.float64)), f"{name}(negate)", b.shape)
            return [lower.emit(Add(a.index, negated.index), name, a.shape)]
        raise UnsupportedOperator(op, name, "a product or quotient of two computed values is not piecewise linear")
    value, constant = (a, b) if isinstance(a, _Value) else (b, a)
    spread, shape = _broadcast(value, constant, op, name)
    identity = np.eye(value.size)
    if op == "Add":
        return [lower.affine(value, identity, spread, name, shape)]
    if op == "Sub":
        sign = 1.0 if value is a else -1.0
        return [lower.affine(value, sign * identity, -sign * spread, name, shape)]
    if op == "Mul":
        return [lower.affine(value, np.diag(spread), np.zeros(value.size), name, shape)]
    if value is b:
        raise UnsupportedOperator(op, name, "dividing by a computed value is not piecewise linear")
    return [lower.affine(value, np.diag(1.0 / spread), np.zeros(value.size), name, shape)]


def _relu(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    if _only_constants(operands):
        return [np.maximum(operands[0], 0)]
    source = _value(operands[0], op, name)
    return [lower.emit(Relu(source.index), name, source.shape)]


def _identity(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    return [operands[0]]


def _flatten(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    axis = int(attributes.get("axis", 1))
    data = operands[0]
    if isinstance(data, np.ndarray):
        axis = axis + data.ndim if axis < 0 else axis
        return [data.reshape(int(np.prod(data.shape[:axis], dtype=np.int64)), -1)]
    full = _full(data)
    axis = axis + len(full) if axis < 0 else axis
    if int(np.prod(full[:axis], dtype=np.int64)) != 1:
        raise UnsupportedOperator(op, name, f"axis {axis} folds per-sample dimensions into the batch")
    return [_Value(data.index, (data.size,))]


def _reshape_target(full: tuple[int, ...], target: np.ndarray, allow_zero: bool) -> tuple[int, ...]:
    """ONNX Reshape's rules: 0 copies the input's dimension (unless allowzero), -1 is inferred."""
    dims = [int(d) for d in target.reshape(-1)]
    resolved = [full[i] if d == 0 and not allow_zero else d for i, d in enumerate(dims)]
    if resolved.count(-1) > 1:
        raise ValueError("more than one -1")
    if -1 in resolved:
        known = int(np.prod([d for d in resolved if d != -1], dtype=np.int64))
        resolved[resolved.index(-1)] = int(np.prod(full, dtype=np.int64)) // max(known, 1)
    if int(np.prod(resolved, dtype=np.int64)) != int(np.prod(full, dtype=np.int64)):
        raise ValueError(f"cannot reshape {full} to {tuple(dims)}")
    return tuple(resolved)


def _reshape(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    data, target = operands[0], _constant(operands[1], op, name, "shape")
    allow_zero = bool(attributes.get("allowzero", 0))
    full = data.shape if isinstance(data, np.ndarray) else _full(data)
    try:
        shape = _reshape_target(tuple(full), target, allow_zero)
    except ValueError as error:
        raise OnnxImportError(f"node `{name}` (Reshape): {error}") from error
    if isinstance(data, np.ndarray):
        return [data.reshape(shape)]
    if not shape or shape[0] != 1:
        raise UnsupportedOperator(op, name, f"the target shape {shape} moves the batch dimension")
    return [_Value(data.index, shape[1:])]


def _spatial_attributes(attributes: dict[str, Any], op: str, name: str, default_stride: int | None = 1
                        ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, padding) of a 2-D conv or pool; asymmetric or automatic padding is refused."""
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise UnsupportedOperator(op, name, f"auto_pad={attributes['auto_pad']!r}")
    kernel = tuple(int(k) for k in attributes.get("kernel_shape", ()))
    pads = tuple(int(p) for p in attributes.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4 or pads[:2] != pads[2:]:
        raise UnsupportedOperator(op, name, f"padding {pads} is not 2-D and symmetric")
    strides = tuple(int(s) for s in attributes.get("strides", (default_stride, default_stride)))
    return (kernel[0], kernel[1]) if len(kernel) == 2 else (0, 0), (strides[0], strides[1]), (pads[0], pads[1])


def _conv(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    source = _value(operands[0], op, name)
    weight = _constant(operands[1], op, name, "weight")
    bias = _constant(operands[2], op, name, "bias") if len(operands) > 2 and operands[2] is not None else None
    if len(source.shape) != 3 or weight.ndim != 4:
        raise UnsupportedOperator(op, name, "only 2-D convolutions over (channels, height, width) are supported")
    _, stride, padding = _spatial_attributes(attributes, op, name)
    dilations = tuple(int(d) for d in attributes.get("dilations", (1, 1)))
    matrix, offset, shape = conv2d_affine(
        torch.as_tensor(weight.astype(np.float64)),
        None if bias is None else torch.as_tensor(bias.astype(np.float64)),
        source.shape, stride, padding, (dilations[0], dilations[1]), int(attributes.get("group", 1)),
    )
    return [lower.affine(source, matrix.numpy(), offset.numpy(), name, shape)]


def _pool_checks(source: _Value, attributes: dict[str, Any], op: str, name: str) -> None:
    if len(source.shape) != 3:
        raise UnsupportedOperator(op, name, "only 2-D pooling over (channels, height, width) is supported")
    if int(attributes.get("ceil_mode", 0)):
        raise UnsupportedOperator(op, name, "ceil_mode=1")
    if any(int(d) != 1 for d in attributes.get("dilations", (1, 1))):
        raise UnsupportedOperator(op, name, "dilated pooling")


def _average_pool(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str
                  ) -> list[Tensor]:
    source = _value(operands[0], op, name)
    _pool_checks(source, attributes, op, name)
    kernel, stride, padding = _spatial_attributes(attributes, op, name)
    if padding != (0, 0) and not int(attributes.get("count_include_pad", 0)):
        # ONNX's default divides by the window's real size at the edges; the lowering helper counts pads.
        raise UnsupportedOperator(op, name, "padding with count_include_pad=0")
    matrix, offset, shape = avgpool2d_affine(source.shape, kernel, stride, padding)
    return [lower.affine(source, matrix.numpy(), offset.numpy(), name, shape)]


def _max_pool(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    source = _value(operands[0], op, name)
    _pool_checks(source, attributes, op, name)
    kernel, stride, padding = _spatial_attributes(attributes, op, name)
    groups, shape = maxpool2d_groups(source.shape, kernel, stride, padding)
    return [lower.emit(MaxGroups(source.index, groups), name, shape)]


def _batch_norm(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str
                ) -> list[Tensor]:
    if int(attributes.get("training_mode", 0)):
        raise UnsupportedOperator(op, name, "training_mode=1")
    source = _value(operands[0], op, name)
    scale, bias, mean, variance = (
        torch.as_tensor(_constant(operand, op, name, "statistics").astype(np.float64)) for operand in operands[1:5]
    )
    matrix, offset = batchnorm_affine(mean, variance, scale, bias, float(attributes.get("epsilon", 1e-5)),
                                      source.shape)
    return [lower.affine(source, matrix.numpy(), offset.numpy(), name, source.shape)]


def _concat(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    axis = int(attributes["axis"])
    if _only_constants(operands):
        return [np.concatenate(operands, axis=axis)]
    rank = len(_full(next(o for o in operands if isinstance(o, _Value))))
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise UnsupportedOperator(op, name, "concatenation along the batch dimension")
    values = [o if isinstance(o, _Value) else lower.materialize(o, f"{name}(constant)") for o in operands]
    shapes = [v.shape for v in values]
    if any(len(s) != rank - 1 or s[:axis - 1] + s[axis:] != shapes[0][:axis - 1] + shapes[0][axis:] for s in shapes):
        raise OnnxImportError(f"node `{name}` (Concat): shapes {shapes} differ outside axis {axis}")
    shape = (*shapes[0][:axis - 1], sum(s[axis - 1] for s in shapes), *shapes[0][axis:])
    joined = lower.emit(Concat(tuple(v.index for v in values)), name, shape)
    if axis == 1:
        # The first per-sample axis is outermost in row-major order: flat vectors simply follow each other.
        return [joined]
    offsets = np.cumsum([0] + [v.size for v in values])
    positions = np.concatenate(
        [np.arange(offsets[i], offsets[i + 1]).reshape(v.shape) for i, v in enumerate(values)], axis=axis - 1
    ).reshape(-1)
    permutation = np.eye(int(offsets[-1]))[positions]
    return [lower.affine(joined, permutation, np.zeros(int(offsets[-1])), f"{name}(reorder)", shape)]


def _constant_node(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str
                   ) -> list[Tensor]:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attributes:
            return [np.asarray(attributes[key])]
    raise UnsupportedOperator(op, name, f"attribute {sorted(attributes)}")


def _shape(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str) -> list[Tensor]:
    data = operands[0]
    full = data.shape if isinstance(data, np.ndarray) else _full(data)
    start, end = int(attributes.get("start", 0)), attributes.get("end")
    return [np.asarray(full[start:None if end is None else int(end)], dtype=np.int64)]


def _folded(function: Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]) -> Handler:
    """A handler for an operator that mdl evaluates only on constants (shape arithmetic)."""

    def handler(lower: _Lowering, operands: list[Any], attributes: dict[str, Any], op: str, name: str
                ) -> list[Tensor]:
        if not _only_constants(operands):
            raise UnsupportedOperator(op, name, "only on constants, not on values computed from the input")
        return [function(operands, attributes)]

    return handler


def _axes(operands: list[np.ndarray], attributes: dict[str, Any]) -> tuple[int, ...] | None:
    if len(operands) > 1 and operands[1] is not None:
        return tuple(int(a) for a in operands[1].reshape(-1))
    return tuple(int(a) for a in attributes["axes"]) if "axes" in attributes else None


def _unsqueeze(operands: list[np.ndarray], attributes: dict[str, Any]) -> np.ndarray:
    result = operands[0]
    axes = _axes(operands, attributes) or ()
    rank = result.ndim + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        result = np.expand_dims(result, axis)
    return result


def _squeeze(operands: list[np.ndarray], attributes: dict[str, Any]) -> np.ndarray:
    axes = _axes(operands, attributes)
    return np.squeeze(operands[0], axis=axes)


def _cast(operands: list[np.ndarray], attributes: dict[str, Any]) -> np.ndarray:
    from onnx import helper

    return operands[0].astype(helper.tensor_dtype_to_np_dtype(int(attributes["to"])))


def _gather(operands: list[np.ndarray], attributes: dict[str, Any]) -> np.ndarray:
    return np.take(operands[0], operands[1], axis=int(attributes.get("axis", 0)))


_HANDLERS: dict[str, Handler] = {
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "Relu": _relu,
    "Identity": _identity,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Conv": _conv,
    "AveragePool": _average_pool,
    "MaxPool": _max_pool,
    "BatchNormalization": _batch_norm,
    "Concat": _concat,
    "Constant": _constant_node,
    "Shape": _shape,
    "Gather": _folded(_gather),
    "Unsqueeze": _folded(_unsqueeze),
    "Squeeze": _folded(_squeeze),
    "Cast": _folded(_cast),
}


# ---------------------------------------------------------------- running the original graph


def run_model(model: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    """The model's output for a batch, by ONNX's reference evaluator (the graph as written, not the
    lowered network): what counterexamples are replayed on."""
    from onnx.reference import ReferenceEvaluator

    graph_input = next(v for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer})
    evaluator = ReferenceEvaluator(model)
    outputs = [evaluator.run(None, {graph_input.name: row[None]})[0] for row in inputs]
    return np.concatenate([np.asarray(o).reshape(1, -1) for o in outputs], axis=0)


def input_dtype(model: onnx.ModelProto) -> np.dtype:
    """The numpy dtype the model's input is declared with (float32 for most exported models)."""
    from onnx import helper

    graph_input = next(v for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer})
    return np.dtype(helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type))


# ---------------------------------------------------------------- writing


def network_to_onnx(network: Network, dtype: np.dtype | type = np.float32) -> onnx.ModelProto:
    """A `Network` of Affine, Relu, Add and Concat nodes as an ONNX model (opset 13): Gemm per Affine.

    The input keeps `network.input_shape` behind a symbolic batch and is flattened first. Used where
    `torch.onnx.export` is not at hand (a network that exists only in lowered form); MaxGroups is refused.
    """
    import onnx
    from onnx import helper, numpy_helper

    element = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    names = ["input"]
    if len(network.input_shape) != 1:
        nodes.append(helper.make_node("Flatten", ["input"], ["value0"], axis=1))
        names[0] = "value0"
    for position, node in enumerate(network.nodes, start=1):
        out = f"value{position}"
        if isinstance(node, Affine):
            initializers.append(numpy_helper.from_array(node.weight.numpy().astype(dtype), f"weight{position}"))
            initializers.append(numpy_helper.from_array(node.bias.numpy().astype(dtype), f"bias{position}"))
            nodes.append(helper.make_node(
                "Gemm", [names[node.src], f"weight{position}", f"bias{position}"], [out], transB=1,
            ))
        elif isinstance(node, Relu):
            nodes.append(helper.make_node("Relu", [names[node.src]], [out]))
        elif isinstance(node, Add):
            nodes.append(helper.make_node("Add", [names[node.a], names[node.b]], [out]))
        elif isinstance(node, Concat):
            nodes.append(helper.make_node("Concat", [names[s] for s in node.srcs], [out], axis=1))
        else:
            raise OnnxImportError(f"writing {type(node).__name__} nodes to ONNX is not supported")
        names.append(out)
    nodes.append(helper.make_node("Identity", [names[network.output]], ["output"]))
    graph = helper.make_graph(
        nodes, "mdl_network",
        [helper.make_tensor_value_info("input", element, ["batch", *network.input_shape])],
        [helper.make_tensor_value_info("output", element, ["batch", network.size(network.output)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mdl")
    onnx.checker.check_model(model)
    return model
