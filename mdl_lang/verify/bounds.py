"""Sound bounds on every neuron of a lowered network: intervals, then linear back-substitution.

The bounds are computed for a batch of *domains* at once (branch and bound asks for many): each
domain is an input box plus, for every ReLU value, a split in {-1, 0, +1} per neuron (forced
inactive, free, forced active). Pre-activations are bounded by interval arithmetic and then by
DeepPoly/CROWN-style back-substitution to the input box; the tighter of the two is kept.

Soundness: everything is float64 and every concretised bound is widened by a relative slack
(`SLACK`, far above float64's accumulated rounding for networks of this size), so the bounds hold
for the network's real-number semantics, not only for some floating-point evaluation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mdl_lang.verify.network import Add, Affine, Concat, MaxGroups, Network, Relu, _sizes

# Relative widening of every concretised bound; float64 rounding over a few thousand terms is ~1e-13.
SLACK = 1e-9


@dataclass(frozen=True)
class Domains:
    """A batch of B sub-problems: input boxes (B, n0) and ReLU splits {relu value index: (B, size) int8}."""

    lower: torch.Tensor
    upper: torch.Tensor
    splits: dict[int, torch.Tensor]

    @property
    def count(self) -> int:
        return int(self.lower.shape[0])


@dataclass(frozen=True)
class LayerBounds:
    """Bounds of every value for a batch of domains, and which domains are empty.

    `lower[i]`, `upper[i]` are (B, size_i); a domain whose splits contradict its bounds is
    `infeasible` (no input reaches it), which proves anything about it.
    """

    lower: list[torch.Tensor]
    upper: list[torch.Tensor]
    infeasible: torch.Tensor


def relu_sources(network: Network) -> dict[int, int]:
    """Value index of every ReLU -> the value index it reads."""
    return {index + 1: node.src for index, node in enumerate(network.nodes) if isinstance(node, Relu)}


def _needs_tight_bounds(network: Network) -> set[int]:
    """Values whose bounds shape a relaxation: the inputs of ReLUs and of max-pools."""
    wanted = set()
    for node in network.nodes:
        if isinstance(node, Relu | MaxGroups):
            wanted.add(node.src)
    return wanted


def root_domains(network: Network, lower: torch.Tensor, upper: torch.Tensor) -> Domains:
    """One domain: the whole box, no splits."""
    sizes = _sizes(network)
    splits = {
        index: torch.zeros(1, sizes[index], dtype=torch.int8) for index in relu_sources(network)
    }
    return Domains(lower.reshape(1, -1).to(torch.float64), upper.reshape(1, -1).to(torch.float64), splits)


def compute_bounds(network: Network, domains: Domains) -> LayerBounds:
    """Interval bounds for every value, tightened by back-substitution on ReLU and max-pool inputs."""
    tight = _needs_tight_bounds(network)
    lowers: list[torch.Tensor] = [domains.lower]
    uppers: list[torch.Tensor] = [domains.upper]
    infeasible = torch.zeros(domains.count, dtype=torch.bool)
    for position, node in enumerate(network.nodes):
        index = position + 1
        low, high = _interval(node, lowers, uppers)
        lowers.append(low)
        uppers.append(high)
        if index in tight:
            size = low.shape[1]
            eye = torch.eye(size, dtype=torch.float64)
            coefficients = torch.cat([eye, -eye]).unsqueeze(0).expand(domains.count, -1, -1)
            result = back_substitute(network, lowers, uppers, domains, index, coefficients)
            lowers[index] = torch.maximum(low, result.lower[:, :size])
            uppers[index] = torch.minimum(high, -result.lower[:, size:])
        if isinstance(node, Relu) and index in domains.splits:
            # Splits clip the pre-activation; then the ReLU output is recomputed from it.
            split = domains.splits[index]
            source_low = torch.where(split > 0, lowers[node.src].clamp(min=0.0), lowers[node.src])
            source_high = torch.where(split < 0, uppers[node.src].clamp(max=0.0), uppers[node.src])
            infeasible |= (source_low > source_high).any(dim=1)
            lowers[node.src], uppers[node.src] = source_low, source_high
            lowers[index], uppers[index] = source_low.clamp(min=0.0), source_high.clamp(min=0.0)
    for low, high in zip(lowers, uppers, strict=True):
        infeasible |= (low > high).any(dim=1)
    return LayerBounds(lowers, uppers, infeasible)


def _interval(node, lowers: list[torch.Tensor], uppers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(node, Affine):
        middle = (lowers[node.src] + uppers[node.src]) / 2
        radius = (uppers[node.src] - lowers[node.src]) / 2
        center = middle @ node.weight.T + node.bias
        spread = radius @ node.weight.abs().T
        slack = SLACK * (center.abs() + spread + 1e-300)
        return center - spread - slack, center + spread + slack
    if isinstance(node, Relu):
        return lowers[node.src].clamp(min=0.0), uppers[node.src].clamp(min=0.0)
    if isinstance(node, Add):
        low, high = lowers[node.a] + lowers[node.b], uppers[node.a] + uppers[node.b]
        slack = SLACK * (low.abs() + high.abs())
        return low - slack, high + slack
    if isinstance(node, Concat):
        return torch.cat([lowers[s] for s in node.srcs], 1), torch.cat([uppers[s] for s in node.srcs], 1)
    if isinstance(node, MaxGroups):
        return lowers[node.src][:, node.groups].amax(2), uppers[node.src][:, node.groups].amax(2)
    raise TypeError(f"unknown network node {type(node).__name__}")


@dataclass(frozen=True)
class Relaxation:
    """Linear bounds of a ReLU per neuron: alpha * z <= relu(z) <= slope * z + offset."""

    alpha: torch.Tensor
    slope: torch.Tensor
    offset: torch.Tensor

    @property
    def unstable(self) -> torch.Tensor:
        return self.offset > 0


def relu_relaxation(low: torch.Tensor, high: torch.Tensor) -> Relaxation:
    """The CROWN relaxation from (already split-clipped) pre-activation bounds.

    The lower slope is 1 where the upper bound outweighs the lower one, else 0 (the area-minimising
    choice); stable neurons are exact.
    """
    active = low >= 0
    inactive = high <= 0
    unstable = ~(active | inactive)
    width = torch.where(unstable, high - low, torch.ones_like(low))
    slope = torch.where(unstable, high / width, active.to(low.dtype))
    offset = torch.where(unstable, -slope * low, torch.zeros_like(low))
    alpha = torch.where(unstable, (high > -low).to(low.dtype), active.to(low.dtype))
    return Relaxation(alpha, slope, offset)


@dataclass(frozen=True)
class Substitution:
    """A lower bound of coefficients @ value for each domain and row, with the ReLU-output
    coefficients met on the way (for branching scores)."""

    lower: torch.Tensor
    relu_coefficients: dict[int, torch.Tensor]
    input_coefficients: torch.Tensor


def back_substitute(
    network: Network,
    lowers: list[torch.Tensor],
    uppers: list[torch.Tensor],
    domains: Domains,
    target: int,
    coefficients: torch.Tensor,
    constant: torch.Tensor | None = None,
    keep_relu_coefficients: bool = False,
    alphas: dict[int, torch.Tensor] | None = None,
    betas: dict[int, torch.Tensor] | None = None,
) -> Substitution:
    """Lower bound of `coefficients @ value[target] + constant` over each domain's input box.

    `coefficients` is (B, m, size(target)); the result's `lower` is (B, m). The linear form is
    pushed back node by node (in decreasing index order, so each value's coefficients are complete
    when it is reached), replacing ReLUs and max-pools by their linear relaxations with the sign of
    each coefficient choosing the lower or upper one.

    `alphas` (per ReLU value, (B, m, size) in [0, 1]) replace the lower slopes of unstable neurons
    (alpha-CROWN); `betas` (same shape, >= 0) are Lagrange multipliers of the split constraints
    s * z >= 0 (beta-CROWN): f >= f - beta * s * z on the domain, so any values keep the bound sound.
    """
    count, rows = coefficients.shape[0], coefficients.shape[1]
    accumulated = torch.zeros(count, rows, dtype=torch.float64) if constant is None else constant.clone()
    magnitude = accumulated.abs()
    pending: dict[int, torch.Tensor] = {target: coefficients}
    relu_coefficients: dict[int, torch.Tensor] = {}

    def push(index: int, value: torch.Tensor) -> None:
        pending[index] = pending[index] + value if index in pending else value

    for index in range(target, 0, -1):
        if index not in pending:
            continue
        lam = pending.pop(index)
        node = network.nodes[index - 1]
        if isinstance(node, Affine):
            push(node.src, lam @ node.weight)
            term = lam @ node.bias
            accumulated = accumulated + term
            magnitude = magnitude + lam.abs() @ node.bias.abs()
        elif isinstance(node, Relu):
            if keep_relu_coefficients:
                relu_coefficients[index] = lam
            relaxation = relu_relaxation(lowers[node.src], uppers[node.src])
            positive, negative = lam.clamp(min=0.0), lam.clamp(max=0.0)
            alpha = relaxation.alpha.unsqueeze(1)
            if alphas is not None and index in alphas:
                alpha = torch.where(relaxation.unstable.unsqueeze(1), alphas[index], alpha)
            push(node.src, positive * alpha + negative * relaxation.slope.unsqueeze(1))
            if betas is not None and index in betas and index in domains.splits:
                push(node.src, -betas[index] * domains.splits[index].to(torch.float64).unsqueeze(1))
            term = negative @ relaxation.offset.unsqueeze(2)
            accumulated = accumulated + term.squeeze(2)
            magnitude = magnitude + term.squeeze(2).abs()
        elif isinstance(node, Add):
            push(node.a, lam)
            push(node.b, lam)
        elif isinstance(node, Concat):
            start = 0
            for source in node.srcs:
                width = lowers[source].shape[1]
                push(source, lam[:, :, start:start + width])
                start += width
        elif isinstance(node, MaxGroups):
            accumulated, magnitude = _max_backward(node, lam, lowers, uppers, accumulated, magnitude, push)
        else:
            raise TypeError(f"unknown network node {type(node).__name__}")
    lam = pending.pop(0, torch.zeros(count, rows, lowers[0].shape[1], dtype=torch.float64))
    positive, negative = lam.clamp(min=0.0), lam.clamp(max=0.0)
    low_in, high_in = lowers[0].unsqueeze(2), uppers[0].unsqueeze(2)
    value = (positive @ low_in + negative @ high_in).squeeze(2) + accumulated
    scale = (lam.abs() @ torch.maximum(low_in.abs(), high_in.abs())).squeeze(2) + magnitude
    return Substitution(value - SLACK * (scale + 1e-300), relu_coefficients, lam)


def _max_backward(node: MaxGroups, lam, lowers, uppers, accumulated, magnitude, push):
    """Relaxation of y_i = max_j z[g_ij]: y_i >= z[g_ij*] for the member with the best lower bound;
    y_i <= z[g_ij*] when that member dominates the others, else y_i <= the largest upper bound."""
    member_low = lowers[node.src][:, node.groups]
    member_high = uppers[node.src][:, node.groups]
    best = member_low.argmax(dim=2, keepdim=True)
    best_low = member_low.gather(2, best).squeeze(2)
    others_high = member_high.scatter(2, best, float("-inf")).amax(dim=2)
    dominated = best_low >= others_high
    column = node.groups.unsqueeze(0).expand(lam.shape[0], -1, -1).gather(2, best).squeeze(2)
    positive, negative = lam.clamp(min=0.0), lam.clamp(max=0.0)
    into_column = positive + negative * dominated.unsqueeze(1)
    size = lowers[node.src].shape[1]
    source = torch.zeros(lam.shape[0], lam.shape[1], size, dtype=torch.float64)
    source.scatter_add_(2, column.unsqueeze(1).expand(-1, lam.shape[1], -1), into_column)
    push(node.src, source)
    top = member_high.amax(dim=2) * (~dominated)
    term = (negative * (~dominated).unsqueeze(1)) @ top.unsqueeze(2)
    return accumulated + term.squeeze(2), magnitude + term.squeeze(2).abs()
