"""The lowered network form shared by `mdl verify` and ONNX / VNN-LIB interop.

Every value is a flat float64 vector per sample; node 0 is the flattened input and node i+1 is
`nodes[i]`. Only piecewise-linear operations exist here, so bounds, attacks and the exact Z3
encoding all read one small set of node kinds. Convolutions, pooling by average, batch norm in eval
mode, flatten and identity lower to dense `Affine` nodes: the networks verified are small, and
a dense matrix keeps every consumer simple.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Affine:
    """y = weight @ x[src] + bias; weight (out, in) float64, bias (out,) float64."""

    src: int
    weight: torch.Tensor
    bias: torch.Tensor


@dataclass(frozen=True)
class Relu:
    """y = max(x[src], 0)."""

    src: int


@dataclass(frozen=True)
class Add:
    """y = x[a] + x[b] (residual connections)."""

    a: int
    b: int


@dataclass(frozen=True)
class Concat:
    """y = cat(x[s] for s in srcs)."""

    srcs: tuple[int, ...]


@dataclass(frozen=True)
class MaxGroups:
    """y[i] = max_j x[src][groups[i, j]]; MaxPool2d lowered (groups int64, shape (out, k))."""

    src: int
    groups: torch.Tensor


Node = Affine | Relu | Add | Concat | MaxGroups


@dataclass(frozen=True)
class Network:
    """A piecewise-linear network over one sample's flattened input.

    `names[i]` is the module path node i+1 came from, so messages can point back at the source.
    """

    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    output: int
    names: tuple[str, ...]

    def size(self, index: int) -> int:
        """Length of value `index` (0 is the flattened input)."""
        return _sizes(self)[index]

    @property
    def input_size(self) -> int:
        return _numel(self.input_shape)


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _sizes(network: Network) -> list[int]:
    """Lengths of every value, computed from the node list (cheap: no tensors are touched)."""
    sizes = [_numel(network.input_shape)]
    for node in network.nodes:
        if isinstance(node, Affine):
            sizes.append(int(node.weight.shape[0]))
        elif isinstance(node, Relu):
            sizes.append(sizes[node.src])
        elif isinstance(node, Add):
            sizes.append(sizes[node.a])
        elif isinstance(node, Concat):
            sizes.append(sum(sizes[s] for s in node.srcs))
        elif isinstance(node, MaxGroups):
            sizes.append(int(node.groups.shape[0]))
        else:
            raise TypeError(f"unknown network node {type(node).__name__}")
    return sizes


def evaluate_all(network: Network, x: torch.Tensor) -> list[torch.Tensor]:
    """Every value of the network for a batch `x` (batch, *input_shape), each (batch, size), in x's dtype."""
    values = [x.reshape(x.shape[0], -1)]
    for node in network.nodes:
        values.append(_apply(node, values))
    return values


def evaluate(network: Network, x: torch.Tensor) -> torch.Tensor:
    """Run the lowered network on a batch (batch, *input_shape) -> (batch, n_out), in x's dtype.

    This is what replays counterexamples on the lowered form; the weights are cast to x's dtype so
    that a float32 replay really computes in float32.
    """
    return evaluate_all(network, x)[network.output]


def _apply(node: Node, values: list[torch.Tensor]) -> torch.Tensor:
    if isinstance(node, Affine):
        source = values[node.src]
        weight = node.weight.to(source.dtype)
        return source @ weight.T + node.bias.to(source.dtype)
    if isinstance(node, Relu):
        return torch.relu(values[node.src])
    if isinstance(node, Add):
        return values[node.a] + values[node.b]
    if isinstance(node, Concat):
        return torch.cat([values[s] for s in node.srcs], dim=1)
    if isinstance(node, MaxGroups):
        source = values[node.src]
        return source[:, node.groups].amax(dim=2)
    raise TypeError(f"unknown network node {type(node).__name__}")


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _spatial(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"expected a (channels, height, width) shape, got {input_shape}")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


def _linear_map_matrix(function, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The dense matrix of a linear map, by applying it to the identity basis (float64, exact for 0/1 inputs)."""
    size = _numel(input_shape)
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *input_shape)
    images = function(basis)
    output_shape = tuple(int(d) for d in images.shape[1:])
    return images.reshape(size, -1).T.contiguous(), output_shape


def conv2d_affine(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    input_shape: tuple[int, ...],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Conv2d (zero padding) as a dense (W, b, output_shape) over the flattened (C, H, W) input."""
    _spatial(input_shape)
    kernel = weight.detach().to(torch.float64)

    def apply(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(
            batch, kernel, None, _pair(stride), _pair(padding), _pair(dilation), groups
        )

    matrix, output_shape = _linear_map_matrix(apply, input_shape)
    if bias is None:
        offset = torch.zeros(matrix.shape[0], dtype=torch.float64)
    else:
        offset = bias.detach().to(torch.float64).repeat_interleave(_numel(output_shape[1:]))
    return matrix, offset, output_shape


def avgpool2d_affine(
    input_shape: tuple[int, ...],
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    padding: int | tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """AvgPool2d (count_include_pad=True, torch's default) as a dense (W, b, output_shape)."""
    _spatial(input_shape)
    step = kernel if stride is None else stride

    def apply(batch: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(batch, _pair(kernel), _pair(step), _pair(padding))

    matrix, output_shape = _linear_map_matrix(apply, input_shape)
    return matrix, torch.zeros(matrix.shape[0], dtype=torch.float64), output_shape


def maxpool2d_groups(
    input_shape: tuple[int, ...],
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    padding: int | tuple[int, int],
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """MaxPool2d (dilation 1) as index groups into the flattened input.

    Padding positions are -inf in torch and so never win; they are left out of the group.
    """
    channels, height, width = _spatial(input_shape)
    kernel_h, kernel_w = _pair(kernel)
    stride_h, stride_w = _pair(kernel if stride is None else stride)
    pad_h, pad_w = _pair(padding)
    out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    rows: list[list[int]] = []
    for channel in range(channels):
        for i in range(out_h):
            for j in range(out_w):
                members = [
                    channel * height * width + r * width + c
                    for r in range(i * stride_h - pad_h, i * stride_h - pad_h + kernel_h)
                    for c in range(j * stride_w - pad_w, j * stride_w - pad_w + kernel_w)
                    if 0 <= r < height and 0 <= c < width
                ]
                rows.append(members)
    width_k = max(len(r) for r in rows)
    # Groups cut by padding repeat a member: max is idempotent, so the rectangle stays exact.
    padded = [r + [r[0]] * (width_k - len(r)) for r in rows]
    return torch.tensor(padded, dtype=torch.int64), (channels, out_h, out_w)


def batchnorm_affine(
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    input_shape: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm (eval mode) over (C, ...) as a diagonal dense (W, b)."""
    channels = int(input_shape[0])
    per_channel = _numel(tuple(input_shape[1:]))
    mean = running_mean.detach().to(torch.float64)
    scale = 1.0 / torch.sqrt(running_var.detach().to(torch.float64) + eps)
    gamma = torch.ones(channels, dtype=torch.float64) if weight is None else weight.detach().to(torch.float64)
    beta = torch.zeros(channels, dtype=torch.float64) if bias is None else bias.detach().to(torch.float64)
    factor = (gamma * scale).repeat_interleave(per_channel)
    offset = (beta - gamma * scale * mean).repeat_interleave(per_channel)
    return torch.diag(factor), offset
