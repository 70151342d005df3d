"""torch.fx extraction of an `nn.Module` into the lowered `Network`.

Supported: Linear, Conv2d, ReLU, Flatten, AvgPool2d, MaxPool2d, BatchNorm1d/2d in eval mode,
Identity and Dropout (eval), residual `+`, `torch.cat` over features/channels, `flatten`/`view`/
`reshape` to one sample's shape, and a trailing softmax/log-softmax, which is dropped when the
clause only looks at the argmax (both are monotone). Anything else raises `Unsupported` naming the
layer and its path, which the caller reports as `unknown`. The decomposed-module wrapper
`ConcernView` is lowered to its inner module plus a `MaxGroups` node.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn

from mdl_lang.verify.network import (
    Add,
    Affine,
    Concat,
    MaxGroups,
    Network,
    Node,
    Relu,
    _numel,
    avgpool2d_affine,
    batchnorm_affine,
    conv2d_affine,
    maxpool2d_groups,
)


class Unsupported(Exception):
    """A layer or operation the verifier cannot encode exactly: `unsupported layer X at path`."""


@dataclass(frozen=True)
class Extraction:
    """The lowered network, and whether a trailing softmax was dropped to get it."""

    network: Network
    dropped_softmax: bool


@dataclass(frozen=True)
class _Value:
    """A traced tensor: the network value it is, with its per-sample shape."""

    index: int
    shape: tuple[int, ...]


_BATCH = object()  # the traced `x.size(0)` / `x.shape[0]`: the batch dimension of a reshape

_SOFTMAX_FUNCTIONS = (torch.softmax, torch.nn.functional.softmax, torch.log_softmax, torch.nn.functional.log_softmax)
_RELU_FUNCTIONS = (torch.relu, torch.nn.functional.relu)
_ADD_FUNCTIONS = (operator.add, torch.add)


class _Builder:
    """Collects nodes while walking the traced graph."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.input_shape = input_shape
        self.nodes: list[Node] = []
        self.names: list[str] = []

    def add(self, node: Node, name: str) -> int:
        self.nodes.append(node)
        self.names.append(name)
        return len(self.nodes)

    def network(self, output: int) -> Network:
        return Network(self.input_shape, tuple(self.nodes), output, tuple(self.names))


def extract(module: nn.Module, input_shape: tuple[int, ...], *, allow_softmax: bool = False) -> Extraction:
    """Lower `module` for one sample of shape `input_shape`.

    `allow_softmax` lets a final softmax be dropped (only sound for argmax clauses).
    """
    from mdl_lang.modular.concern import ConcernView

    if isinstance(module, ConcernView):
        return _extract_concern(module, input_shape, allow_softmax)
    for path, part in module.named_modules():
        if part.training and isinstance(part, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd):
            kind = type(part).__name__
            raise Unsupported(f"the module is in training mode: {kind} at {path or 'the top'} needs eval mode "
                              "(call module.eval())")
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as error:  # fx raises many kinds for data-dependent control flow
        raise Unsupported(f"torch.fx cannot trace {type(module).__name__}: {type(error).__name__}: {error}") from error
    builder = _Builder(tuple(input_shape))
    modules = dict(module.named_modules())
    env: dict[str, object] = {}
    dropped_softmax = False
    softmax_nodes: set[str] = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            if env:
                raise Unsupported(f"a second input `{node.target}`: only one-input modules are verified")
            env[node.name] = _Value(0, tuple(input_shape))
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node) or not isinstance(env.get(result.name), _Value):
                raise Unsupported("the module's output is not a single tensor")
            dropped_softmax = result.name in softmax_nodes
            if dropped_softmax and not allow_softmax:
                raise Unsupported("non-linear softmax at the output: only argmax clauses can drop it")
            return Extraction(builder.network(env[result.name].index), dropped_softmax)
        else:
            used_by_softmax = [arg for arg in _node_args(node) if arg in softmax_nodes]
            if used_by_softmax:
                raise Unsupported(f"non-linear softmax used inside the network at {node.name}")
            value, is_softmax = _lower(node, env, modules, builder)
            env[node.name] = value
            if is_softmax:
                softmax_nodes.add(node.name)
    raise Unsupported("the traced graph has no output")


def _node_args(node: torch.fx.Node) -> list[str]:
    return [arg.name for arg in node.all_input_nodes]


def _lower(node: torch.fx.Node, env: dict[str, object], modules: dict[str, nn.Module], builder: _Builder):
    """The value one graph node produces, and whether it is a softmax (kept as its input's value)."""
    if node.op == "call_module":
        return _lower_module(modules[node.target], str(node.target), node, env, builder), _is_softmax_module(
            modules[node.target])
    if node.op == "call_function":
        return _lower_function(node, env, builder)
    if node.op == "call_method":
        return _lower_method(node, env, builder), node.target in ("softmax", "log_softmax")
    if node.op == "get_attr":
        raise Unsupported(f"unsupported layer: parameter access `{node.target}` in forward at {node.name}")
    raise Unsupported(f"unsupported graph node {node.op} at {node.name}")


def _is_softmax_module(module: nn.Module) -> bool:
    return isinstance(module, nn.Softmax | nn.LogSoftmax)


def _value(env: dict[str, object], arg: object, where: str) -> _Value:
    value = env.get(arg.name) if isinstance(arg, torch.fx.Node) else None
    if not isinstance(value, _Value):
        raise Unsupported(f"unsupported operand {arg!r} at {where}: expected a tensor of the network")
    return value


def _lower_module(module: nn.Module, path: str, node, env, builder: _Builder) -> _Value:
    source = _value(env, node.args[0], path)
    kind = type(module).__name__
    if isinstance(module, nn.Linear):
        if len(source.shape) != 1:
            raise Unsupported(f"unsupported layer Linear over a {len(source.shape) + 1}-d input at {path}")
        bias = module.bias.detach() if module.bias is not None else torch.zeros(module.out_features)
        affine = Affine(source.index, module.weight.detach().to(torch.float64), bias.to(torch.float64))
        index = builder.add(affine, path)
        return _Value(index, (module.out_features,))
    if isinstance(module, nn.ReLU):
        return _Value(builder.add(Relu(source.index), path), source.shape)
    if isinstance(module, nn.Identity | nn.Dropout | nn.Softmax | nn.LogSoftmax):
        return source
    if isinstance(module, nn.Flatten):
        return _flatten(source, module.start_dim, module.end_dim, path)
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise Unsupported(
                f"unsupported layer Conv2d with padding {module.padding!r} ({module.padding_mode}) at {path}"
            )
        weight, bias, shape = conv2d_affine(
            module.weight, module.bias, source.shape, module.stride, module.padding, module.dilation, module.groups,
        )
        return _Value(builder.add(Affine(source.index, weight, bias), path), shape)
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or not module.count_include_pad or module.divisor_override is not None:
            raise Unsupported(f"unsupported layer AvgPool2d with ceil_mode/count_include_pad/divisor options at {path}")
        weight, bias, shape = avgpool2d_affine(source.shape, module.kernel_size, module.stride, module.padding)
        return _Value(builder.add(Affine(source.index, weight, bias), path), shape)
    if isinstance(module, nn.MaxPool2d):
        if module.ceil_mode or module.dilation not in (1, (1, 1)) or module.return_indices:
            raise Unsupported(f"unsupported layer MaxPool2d with ceil_mode/dilation/return_indices at {path}")
        groups, shape = maxpool2d_groups(source.shape, module.kernel_size, module.stride, module.padding)
        return _Value(builder.add(MaxGroups(source.index, groups), path), shape)
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        if module.training:
            raise Unsupported(f"BatchNorm at {path} is in training mode: call module.eval() before verifying")
        if module.running_mean is None or module.running_var is None:
            raise Unsupported(f"unsupported layer {kind} without running statistics at {path}")
        weight, bias = batchnorm_affine(
            module.running_mean, module.running_var, module.weight, module.bias, module.eps, source.shape,
        )
        return _Value(builder.add(Affine(source.index, weight, bias), path), source.shape)
    raise Unsupported(f"unsupported layer {kind} at {path}")


def _flatten(source: _Value, start_dim: int, end_dim: int, where: str) -> _Value:
    """Flatten in torch's row-major order changes no value; only the per-sample shape."""
    if start_dim != 1 or end_dim not in (-1, len(source.shape)):
        raise Unsupported(f"unsupported flatten(start_dim={start_dim}, end_dim={end_dim}) at {where}")
    return _Value(source.index, (_numel(source.shape),))


def _lower_function(node, env, builder: _Builder) -> tuple[object, bool]:
    target = node.target
    where = node.name
    if target in _RELU_FUNCTIONS:
        source = _value(env, node.args[0], where)
        return _Value(builder.add(Relu(source.index), where), source.shape), False
    if target in _ADD_FUNCTIONS:
        return _add(node, env, builder), False
    if target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return _flatten(_value(env, node.args[0], where), start, end, where), False
    if target is torch.cat:
        return _concat(node, env, builder), False
    if target in _SOFTMAX_FUNCTIONS:
        return _value(env, node.args[0], where), True
    if target is operator.getitem and env.get(getattr(node.args[0], "name", "")) is _SHAPE and node.args[1] == 0:
        return _BATCH, False
    if target is getattr and node.args[1] == "shape":
        _value(env, node.args[0], where)
        return _SHAPE, False
    name = getattr(target, "__name__", repr(target))
    raise Unsupported(f"unsupported layer {name} at {where}")


_SHAPE = object()  # the traced `x.shape`, only ever indexed at 0 for a reshape


def _lower_method(node, env, builder: _Builder) -> object:
    where = node.name
    if node.target == "size" and node.args[1:] == (0,):
        return _BATCH
    source = _value(env, node.args[0], where)
    if node.target in ("softmax", "log_softmax", "contiguous"):
        return source
    if node.target == "relu":
        return _Value(builder.add(Relu(source.index), where), source.shape)
    if node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return _flatten(source, start, end, where)
    if node.target in ("view", "reshape"):
        sizes = tuple(env.get(arg.name) if isinstance(arg, torch.fx.Node) else arg for arg in node.args[1:])
        return _reshape(source, sizes, where)
    if node.target == "add":
        return _add(node, env, builder)
    raise Unsupported(f"unsupported layer .{node.target}() at {where}")


def _reshape(source: _Value, shape: tuple, where: str) -> _Value:
    """`view`/`reshape` whose first size is the batch (x.size(0) or -1 with the rest fixed)."""
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    if any(size is not _BATCH and not isinstance(size, int) for size in shape):
        raise Unsupported(f"unsupported reshape at {where}: sizes must be constants or the batch size")
    if not shape or not (shape[0] is _BATCH or shape[0] == -1):
        raise Unsupported(f"unsupported reshape {shape!r} at {where}: the first size must be the batch")
    rest = [int(size) for size in shape[1:]]
    total = _numel(source.shape)
    if rest.count(-1) == 1:
        known = _numel(tuple(size for size in rest if size != -1))
        rest = [total // known if size == -1 else size for size in rest]
    if _numel(tuple(rest)) != total:
        raise Unsupported(f"unsupported reshape {shape!r} at {where}: it changes the batch size")
    return _Value(source.index, tuple(rest))


def _add(node, env, builder: _Builder) -> _Value:
    where = node.name
    left, right = node.args[0], node.args[1]
    if isinstance(left, torch.fx.Node) and isinstance(right, torch.fx.Node):
        a, b = _value(env, left, where), _value(env, right, where)
        if a.shape != b.shape:
            raise Unsupported(f"unsupported broadcasting add of {a.shape} and {b.shape} at {where}")
        return _Value(builder.add(Add(a.index, b.index), where), a.shape)
    tensor, constant = (left, right) if isinstance(left, torch.fx.Node) else (right, left)
    if not isinstance(constant, int | float):
        raise Unsupported(f"unsupported add of {constant!r} at {where}")
    source = _value(env, tensor, where)
    size = _numel(source.shape)
    affine = Affine(source.index, torch.eye(size, dtype=torch.float64), torch.full((size,), float(constant),
                                                                                  dtype=torch.float64))
    return _Value(builder.add(affine, where), source.shape)


def _concat(node, env, builder: _Builder) -> _Value:
    where = node.name
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    values = [_value(env, t, where) for t in tensors]
    rank = len(values[0].shape)
    # Concatenating along the first per-sample axis is concatenating the flat vectors (row-major).
    if dim != 1 and not (rank == 1 and dim == -1):
        raise Unsupported(f"unsupported torch.cat along dim {dim} at {where}")
    if any(v.shape[1:] != values[0].shape[1:] for v in values):
        raise Unsupported(f"torch.cat of mismatched shapes at {where}")
    shape = (sum(v.shape[0] for v in values), *values[0].shape[1:])
    return _Value(builder.add(Concat(tuple(v.index for v in values)), where), shape)


def _extract_concern(module, input_shape: tuple[int, ...], allow_softmax: bool) -> Extraction:
    """ConcernView(m, k) outputs (m(x)[k], max over j != k of m(x)[j]): one MaxGroups node."""
    inner = extract(module.module, input_shape, allow_softmax=allow_softmax)
    network = inner.network
    classes = network.size(network.output)
    if classes < 2 or module.label >= classes:
        raise Unsupported(f"ConcernView for label {module.label} over {classes} outputs")
    rivals = [j for j in range(classes) if j != module.label]
    groups = torch.tensor([[module.label] * len(rivals), rivals], dtype=torch.int64)
    nodes = (*network.nodes, MaxGroups(network.output, groups))
    lowered = Network(network.input_shape, nodes, len(nodes), (*network.names, "concern"))
    return Extraction(lowered, inner.dropped_softmax)
