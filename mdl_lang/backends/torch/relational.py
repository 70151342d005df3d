"""Relational clauses checked on a module: `self(...)`, balls searched for counterexamples, `monotone`.

A relational clause speaks of the module at inputs other than the one it was
given. `self(...)` is evaluated exactly, by calling the module again. A
`forall x2 within EPS of x` claims something of infinitely many inputs: a
search can refute it, never prove it. The search tries the centre, random
points of the ball, then a projected gradient attack that descends a
quantitative score of the body (positive where the body holds, negative where
it fails). `monotone(a, b)` is refuted the same way, by moving the input
element that `b` reads. Every point a search proposes is re-run through the
module under `no_grad` and kept only where the body is false by its exact
boolean semantics, inside the ball and the input type's range, and admissible.
So a failing sample here always reproduces; a passing one means that no
counterexample was found.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mdl_lang import ir
from mdl_lang.backends.torch.predicates import (
    CallContext,
    Closure,
    PredicateCompiler,
    UnsupportedClause,
    Value,
    aligner,
    as_float,
    outputs_by_port,
    per_sample,
    sample_rank,
)
from mdl_lang.backends.torch.refinements import check_call_shape, summarize

Admissible = Callable[[dict[str, torch.Tensor]], torch.Tensor]
Score = torch.Tensor | float
ScoreClosure = Callable[[CallContext], Score]

# A point counts as inside the ball when its distance is at most the radius times this
# (projection itself keeps points within the radius exactly; this only absorbs float64 sums).
_RADIUS_SLACK = 1 + 1e-7
# How often the projection may move a point further inside before giving up on it.
_PULL_ATTEMPTS = 12
# An attack step's iterate is checked exactly when its score is this close to failing (relative).
_SUSPICION = 1e-3
# Fractions of the room to the range's bound (or of 10 x the element's magnitude) `monotone` moves by.
_MONOTONE_FRACTIONS = (1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
# A decrease of `monotone`'s first argument smaller than this (relative) is rounding, not a counterexample.
_MONOTONE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RelationalVerdict:
    """The outcome of one relational clause on one batch.

    `failing` lists the samples with a confirmed counterexample (or where the
    clause is false when evaluated exactly). `counterexample` holds, for the
    first failing sample, every input port (batch of 1) and the inputs a search
    found (e.g. `x2`, or `x_low` and `x_high` for `monotone`), all re-run and
    confirmed. `values` are named values of that sample for the report.
    """

    failing: tuple[int, ...]
    counterexample: dict[str, torch.Tensor] | None
    values: tuple[tuple[str, str], ...]
    reason: str


def check_relational(
    clause: ir.Clause,
    module: Callable[..., object],
    inputs: dict[str, torch.Tensor],
    ports: tuple[ir.Port, ...],
    *,
    generator: torch.Generator,
    restarts: int = 3,
    steps: int = 30,
    samples: int = 32,
    admissible: Admissible | None = None,
    first_only: bool = False,
) -> RelationalVerdict:
    """Check a clause on a batch of inputs that keep the requires; searches for counterexamples where it quantifies.

    `module` is called with the input ports' tensors in port order. The outputs
    are computed here, by one call on `inputs` (output tensors in `inputs` are
    ignored), so that the clause sees what this module returns. `ports` are the
    interface's ports. Each ball gets `samples` random points and `restarts`
    attacks of `steps` steps; `admissible(batch) -> bool[N]` (the input ports,
    the perturbed one replaced) rejects points outside non-linear requires.
    `first_only` stops each search at the first confirmed counterexample (a test
    needs one), instead of looking for one in every sample (a report of the batch).
    Raises `UnsupportedClause` when the clause cannot be evaluated here.
    """
    if clause.fragment in (ir.Fragment.STATISTICAL, ir.Fragment.COST):
        raise UnsupportedClause(f"a {clause.fragment.value} clause is not checked on a batch of inputs")
    search = Search(
        tuple(p for p in ports if p.direction == "input"), tuple(p for p in ports if p.direction == "output"),
        generator, restarts, steps, samples, admissible, first_only,
    )
    check_search_positions(clause.expr)
    compiler = RelationalCompiler(search)
    evaluate = compiler.emit(clause.expr)
    ctx = search.context(module, inputs)
    with torch.no_grad():
        holds = per_sample(evaluate(ctx), ctx.batch)
    failing = tuple(int(i) for i in (~holds).nonzero().flatten().tolist())
    if not failing:
        return RelationalVerdict((), None, (), _passed(compiler.findings, ctx.batch))
    return _failed(clause, search, compiler.findings, ctx, failing)


def _passed(findings: list[Finding], batch: int) -> str:
    if not findings:
        return f"holds on all {batch} samples, evaluated exactly"
    efforts = "; ".join(dict.fromkeys(f"`{finding.search}`: {finding.effort}" for finding in findings))
    return f"no counterexample on {batch} samples ({efforts})"


def _failed(
    clause: ir.Clause, search: Search, findings: list[Finding], ctx: CallContext, failing: tuple[int, ...],
) -> RelationalVerdict:
    first = failing[0]
    counterexample = {port.name: ctx.values[port.name][first:first + 1] for port in search.inputs}
    hits = []
    for finding in findings:
        # One witness per name: a ball unrolled over labels searches the same `x2` once per label.
        if bool(finding.found[first]) and not counterexample.keys() & finding.tensors.keys():
            counterexample.update({name: tensor[first:first + 1] for name, tensor in finding.tensors.items()})
            hits.append(finding)
    count = f"{len(failing)} of {ctx.batch} sample{'s' if ctx.batch != 1 else ''}"
    if hits:
        values = tuple(value for hit in hits for value in hit.describe(first))
        reason = (f"`{hits[0].search}` is refuted on {count}: a search found a counterexample, "
                  "confirmed by re-running the module on it")
    else:
        values = _exact_values(clause.expr, search, ctx, first)
        reason = f"the clause is false on {count}, evaluated exactly"
    return RelationalVerdict(failing, counterexample, values, reason)


def _exact_values(
    expr: ir.Expr, search: Search, ctx: CallContext, sample: int,
) -> tuple[tuple[str, str], ...]:
    """The outputs and every `self(...)` outside a search, for one sample: what a failure without a search shows."""
    single = CallContext(
        {name: value[sample:sample + 1] for name, value in ctx.values.items()}, ctx.dims, 1, module=ctx.module,
    )
    shown = {port.name: summarize(ctx.values[port.name][sample]) for port in search.outputs}
    for node in _outside_searches(expr):
        if not isinstance(node, ir.SelfCall) or describe(node) in shown:
            continue
        try:
            with torch.no_grad():
                shown[describe(node)] = summarize(PredicateCompiler().emit(node)(single)[0])
        except UnsupportedClause:
            continue
    return tuple(shown.items())


def _outside_searches(expr: ir.Expr):
    """Every node of an expression except those under a search (their values depend on the point searched)."""
    if _is_search(expr):
        return
    yield expr
    for child in ir.children(expr):
        yield from _outside_searches(child)


# ---------------------------------------------------------------- where searches may stand


def _is_search(expr: ir.Expr) -> bool:
    return isinstance(expr, ir.BallQuantifier) or (isinstance(expr, ir.Call) and expr.function == "monotone")


def _contains_search(expr: ir.Expr) -> bool:
    return any(_is_search(node) for node in ir.walk(expr))


def check_search_positions(expr: ir.Expr, positive: bool = True) -> None:
    """Searches may stand only where a counterexample refutes the whole clause.

    A search refutes a universal claim and never proves one, so it must sit in
    positive position (under `and`, `or`, the right of `implies`, quantifiers
    over labels, `all`/`any`); under `not` or left of `implies` a failed search
    would be taken for a proof. A search inside another is not run either.
    """
    if _is_search(expr):
        if not positive:
            raise UnsupportedClause(
                f"`{describe(expr)}` is negated here: a search can refute it but not prove it",
            )
        if any(_contains_search(child) for child in ir.children(expr)):
            raise UnsupportedClause(f"`{describe(expr)}` contains another search; nested searches are not run")
        return
    match expr:
        case ir.Logic(op="implies"):
            check_search_positions(expr.left, not positive)
            check_search_positions(expr.right, positive)
        case ir.Logic():
            check_search_positions(expr.left, positive)
            check_search_positions(expr.right, positive)
        case ir.Not():
            check_search_positions(expr.operand, not positive)
        case ir.LabelQuantifier():
            check_search_positions(expr.body, positive)
        case ir.Call(function="all" | "any"):
            for arg in expr.args:
                check_search_positions(arg, positive)
        case _:
            if any(_contains_search(child) for child in ir.children(expr)):
                raise UnsupportedClause(
                    f"a search inside `{describe(expr)}` cannot decide it; write it as a clause of its own",
                )


# ---------------------------------------------------------------- the search settings and its findings


@dataclass(frozen=True)
class Search:
    """What every search of one check shares: the interface's ports, randomness, budget, admissibility."""

    inputs: tuple[ir.Port, ...]
    outputs: tuple[ir.Port, ...]
    generator: torch.Generator
    restarts: int
    steps: int
    samples: int
    admissible: Admissible | None
    first_only: bool = False

    def finished(self, found: torch.Tensor) -> bool:
        """Whether the search may stop: every sample refuted, or any one when one counterexample is enough."""
        return bool(found.any()) if self.first_only else bool(found.all())

    def input(self, name: str) -> ir.Port:
        port = next((port for port in self.inputs if port.name == name), None)
        if port is None:
            raise UnsupportedClause(f"`{name}` is not an input of the interface")
        return port

    def context(self, module: Callable[..., object], inputs: dict[str, torch.Tensor]) -> CallContext:
        """The call's context: the inputs, the module's outputs on them, and the dims their shapes bind."""
        missing = [port.name for port in self.inputs if port.name not in inputs]
        if missing:
            raise ValueError(f"no tensor for input port{'s' * (len(missing) > 1)} {', '.join(missing)}")
        values = {port.name: inputs[port.name].detach() for port in self.inputs}
        batch = next((value.shape[0] for value in values.values() if value.dim() > 0), 1)
        values.update(self._outputs(module, values))
        dims: dict[str, int] = {}
        for port in (*self.inputs, *self.outputs):
            check_call_shape(port, values.get(port.name), dims)
        return CallContext(values, dims, batch, module=module)

    def _outputs(self, module: Callable[..., object], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            raw = module(*(inputs[port.name] for port in self.inputs))
        outputs = outputs_by_port(raw, tuple(port.name for port in self.outputs))
        return {name: value.detach() for name, value in outputs.items()}

    def moved(self, ctx: CallContext, port: str, tensor: torch.Tensor) -> CallContext:
        """The context with one input replaced and the outputs recomputed: the module re-run there."""
        values = dict(ctx.values)
        values[port] = tensor
        values.update(self._outputs(ctx.module, values))
        return CallContext(values, ctx.dims, ctx.batch, module=ctx.module)

    def admits(self, ctx: CallContext, port: str, tensor: torch.Tensor) -> torch.Tensor:
        """Per sample, whether the inputs with `port` replaced by `tensor` keep the non-linear requires."""
        if self.admissible is None:
            return torch.ones(ctx.batch, dtype=torch.bool, device=tensor.device)
        batch = {p.name: ctx.values[p.name] for p in self.inputs}
        batch[port] = tensor
        with torch.no_grad():
            return self.admissible(batch).reshape(-1).to(device=tensor.device, dtype=torch.bool)


@dataclass(frozen=True)
class Finding:
    """What one search (a ball, or a `monotone`) established over the batch.

    `found` marks the samples with a confirmed counterexample; `tensors` holds
    the inputs that show it (valid on those rows); `describe(i)` names values of
    sample i for the report; `effort` says how hard the search looked.
    """

    search: str
    effort: str
    found: torch.Tensor
    tensors: dict[str, torch.Tensor]
    describe: Callable[[int], tuple[tuple[str, str], ...]]


# ---------------------------------------------------------------- the compiler


class RelationalCompiler(PredicateCompiler):
    """Compiles a clause whose balls and `monotone`s run searches; each search leaves a Finding in `findings`."""

    def __init__(self, search: Search) -> None:
        super().__init__()
        self.search = search
        self.findings: list[Finding] = []

    def emit_BallQuantifier(self, expr: ir.BallQuantifier) -> Closure:
        port = self.search.input(expr.center)
        if port.type.dtype in ("int64", "int32", "uint8", "bool"):
            raise UnsupportedClause(f"`{port.name}` is {port.type.dtype}: a ball needs a floating-point input")
        radius = self.emit(expr.radius)
        body = self.emit(expr.body)
        scorer = ScoreCompiler(expr.var, self._labels)
        score = scorer.score(expr.body)
        attack = score if scorer.graded else None
        title = describe(expr)

        def quantified(ctx: CallContext) -> torch.Tensor:
            center = ctx.values[expr.center]
            if not center.is_floating_point():
                raise UnsupportedClause(f"`{expr.center}` holds {center.dtype}: a ball needs a floating-point input")
            ball = Ball.around(center, _per_sample(radius(ctx), ctx.batch, center.device), expr.norm, port)
            finding = _search_ball(BallProblem(expr.var, port.name, ball, body, attack, title), ctx, self.search)
            self.findings.append(finding)
            return ~finding.found

        return quantified

    def call_monotone(self, args: list[Closure], options: dict, expr: ir.Call) -> Closure:
        if expr.options:
            named = ", ".join(name for name, _ in expr.options)
            raise UnsupportedClause(f"`monotone` is checked as non-decreasing; its option {named} is not supported")
        response, moved_value = args
        port_name, position = self._moved_element(expr.args[1])
        port = self.search.input(port_name)
        problem = MonotoneProblem(port, position, response, moved_value, describe(expr.args[0]),
                                  describe(expr.args[1]))

        def monotone(ctx: CallContext) -> torch.Tensor:
            finding = _search_monotone(problem, ctx, self.search)
            self.findings.append(finding)
            return ~finding.found

        return monotone

    def _moved_element(self, expr: ir.Expr) -> tuple[str, tuple[int, ...]]:
        """The input port and constant position that `monotone`'s second argument reads."""
        if isinstance(expr, ir.PortRef) and expr.direction == "input" and sample_rank(expr.type) == 0:
            return expr.port, ()
        if isinstance(expr, ir.Index) and isinstance(expr.value, ir.PortRef) and expr.value.direction == "input":
            items = tuple(self._unrolled(item) for item in expr.items)
            if all(isinstance(item, ir.IndexPosition) for item in items) and len(items) == sample_rank(
                expr.value.type,
            ):
                return expr.value.port, tuple(item.position for item in items)
        raise UnsupportedClause(
            f"`monotone` moves one input element: `{describe(expr)}` is not an input indexed at constant positions",
        )


def _per_sample(value: Value, batch: int, device: torch.device) -> torch.Tensor:
    """A per-sample number (a radius) as a float64 tensor of shape [N]."""
    tensor = torch.as_tensor(value, dtype=torch.float64, device=device).detach()
    return tensor.expand(batch) if tensor.dim() == 0 else tensor.reshape(batch)


# ---------------------------------------------------------------- balls


@dataclass(frozen=True)
class Ball:
    """The balls of one batch: centres, radii (float64, [N]), the norm, and the input type's range.

    `low` and `high` are the range's bounds in the centre's dtype, rounded
    inwards, so that a point clamped to them is inside the range exactly.
    """

    center: torch.Tensor
    radius: torch.Tensor
    norm: str
    low: torch.Tensor
    high: torch.Tensor
    bounds: tuple[float, float]

    @classmethod
    def around(cls, center: torch.Tensor, radius: torch.Tensor, norm: str, port: ir.Port) -> Ball:
        low, high = port.type.value_range or (-math.inf, math.inf)
        return cls(center.detach(), radius, norm, _inward(low, center, up=True), _inward(high, center, up=False),
                   (low, high))

    def spread(self, per_sample: torch.Tensor) -> torch.Tensor:
        """A per-sample tensor shaped to broadcast against the centres."""
        return per_sample.reshape(-1, *([1] * (self.center.dim() - 1)))

    def distance(self, points: torch.Tensor) -> torch.Tensor:
        """Each point's distance from its centre in the ball's norm, in float64."""
        delta = (points.detach().double() - self.center.double()).reshape(points.shape[0], -1)
        if delta.shape[1] == 0:
            return torch.zeros(points.shape[0], dtype=torch.float64, device=points.device)
        if self.norm == "linf":
            return delta.abs().amax(dim=1)
        if self.norm == "l2":
            return torch.linalg.vector_norm(delta, ord=2, dim=1)
        return delta.abs().sum(dim=1)

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        """Per sample: inside its ball (up to float64 rounding) and inside the type's range exactly."""
        exact = points.detach().double().reshape(points.shape[0], -1)
        low, high = self.bounds
        in_range = ((exact >= low) & (exact <= high)).all(dim=1)
        return in_range & (self.distance(points) <= self.radius * _RADIUS_SLACK)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """The points moved into their balls, then into the range (that keeps them in: the centre is in range)."""
        delta = points.double() - self.center.double()
        if self.norm == "linf":
            radius = self.spread(self.radius)
            delta = torch.maximum(torch.minimum(delta, radius), -radius)
        elif self.norm == "l2":
            lengths = torch.linalg.vector_norm(delta.reshape(delta.shape[0], -1), ord=2, dim=1)
            delta = delta * self.spread(torch.clamp(self.radius / lengths, max=1.0).nan_to_num(1.0))
        else:
            delta = _project_l1(delta.reshape(delta.shape[0], -1), self.radius).reshape(delta.shape)
        moved = torch.clamp(self.center + delta.to(self.center.dtype), self.low, self.high)
        return self._pulled_inside(moved)

    def _pulled_inside(self, points: torch.Tensor) -> torch.Tensor:
        """Points that rounding left just outside their ball moved back in: the radius holds exactly."""
        for attempt in range(_PULL_ATTEMPTS):
            outside = self.distance(points) > self.radius
            if not outside.any():
                break
            if self.norm == "linf":
                points = torch.where(self._beyond(points) & self.spread(outside), self._on_face(points), points)
            else:
                shrink = max(0.0, 1 - 1e-6 * 4 ** attempt)
                points = torch.where(self.spread(outside), self.center + (points - self.center) * shrink, points)
            points = torch.clamp(points, self.low, self.high)
        return points

    def _beyond(self, points: torch.Tensor) -> torch.Tensor:
        """The coordinates farther from the centre than the radius, exactly (float64 differences of floats)."""
        return (points.double() - self.center.double()).abs() > self.spread(self.radius)

    def _on_face(self, points: torch.Tensor) -> torch.Tensor:
        """Each coordinate put at the radius on its side, one step back towards the centre where rounding overshot."""
        offset = (points.double() - self.center.double()).sign() * self.spread(self.radius)
        face = (self.center.double() + offset).to(points.dtype)
        return torch.where(self._beyond(face), torch.nextafter(face, self.center), face)

    def random_points(self, round_: int, generator: torch.Generator) -> torch.Tensor:
        """Random points of the balls: on the boundary (corners for linf) in even rounds, inside them in odd ones."""
        batch, size = self.center.shape[0], self.center[0].numel()
        surface = round_ % 2 == 0
        if self.norm == "linf":
            uniform = _uniform((batch, size), generator)
            delta = torch.where(uniform < 0.5, -1.0, 1.0) if surface else uniform * 2 - 1
        elif self.norm == "l2":
            direction = torch.randn((batch, size), generator=generator, device=generator.device, dtype=torch.float64)
            direction = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True).clamp_min(1e-300)
            length = 1.0 if surface else _uniform((batch, 1), generator) ** (1.0 / max(size, 1))
            delta = direction * length
        else:
            magnitudes = -torch.log1p(-_uniform((batch, size), generator))
            signs = torch.where(_uniform((batch, size), generator) < 0.5, -1.0, 1.0)
            total = magnitudes.sum(dim=1, keepdim=True)
            if not surface:
                total = total - torch.log1p(-_uniform((batch, 1), generator))
            delta = signs * magnitudes / total.clamp_min(1e-300)
        delta = delta.to(self.center.device) * self.radius.reshape(-1, 1)
        return self.project(self.center + delta.reshape(self.center.shape).to(self.center.dtype))

    def descent(self, gradient: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The steepest unit step down the score in the ball's norm, not pushing against the range's bounds."""
        step = -torch.nan_to_num(gradient, nan=0.0, posinf=0.0, neginf=0.0)
        blocked = ((points <= self.low) & (step < 0)) | ((points >= self.high) & (step > 0))
        flat = step.masked_fill(blocked, 0.0).reshape(step.shape[0], -1)
        if self.norm == "linf":
            direction = flat.sign()
        elif self.norm == "l2":
            direction = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(1e-30)
        else:
            strongest = flat.abs().argmax(dim=1, keepdim=True)
            direction = torch.zeros_like(flat).scatter(1, strongest, flat.gather(1, strongest).sign())
        return direction.reshape(step.shape)

    def step(self, points: torch.Tensor, gradient: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """One attack step of a quarter radius for the `moving` samples, projected back into ball and range."""
        size = self.spread(self.radius / 4 * moving).to(points.dtype)
        return self.project(points + size * self.descent(gradient, points))


def _inward(bound: float, like: torch.Tensor, up: bool) -> torch.Tensor:
    """A range bound in `like`'s dtype, rounded to the inside of the range (`up` for a lower bound)."""
    tensor = torch.tensor(bound, dtype=like.dtype, device=like.device)
    outside = tensor.double() < bound if up else tensor.double() > bound
    if bool(outside):
        tensor = torch.nextafter(tensor, torch.tensor(math.inf if up else -math.inf, dtype=like.dtype,
                                                      device=like.device))
    return tensor


def _uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)


def _project_l1(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the l1 ball of its radius (Duchi et al., 2008), vectorised."""
    magnitude = delta.abs()
    ordered = magnitude.sort(dim=1, descending=True).values
    cumulative = ordered.cumsum(dim=1)
    counts = torch.arange(1, delta.shape[1] + 1, device=delta.device, dtype=delta.dtype)
    active = ordered - (cumulative - radius.reshape(-1, 1)) / counts > 0
    kept = active.sum(dim=1).clamp_min(1)
    threshold = (cumulative.gather(1, (kept - 1).reshape(-1, 1)).squeeze(1) - radius) / kept
    projected = delta.sign() * torch.clamp(magnitude - threshold.reshape(-1, 1), min=0)
    inside = magnitude.sum(dim=1) <= radius
    return torch.where(inside.reshape(-1, 1), delta, projected)


@dataclass(frozen=True)
class BallProblem:
    """One ball quantifier to search on one batch: its variable, centre port, balls, body and score."""

    var: str
    port: str
    ball: Ball
    body: Closure
    score: ScoreClosure | None
    title: str


def _search_ball(problem: BallProblem, ctx: CallContext, search: Search) -> Finding:
    """Look for points of the balls where the body is false: centre, random points, attack; then confirm them."""
    ball = problem.ball
    found = torch.zeros(ctx.batch, dtype=torch.bool, device=ball.center.device)
    points = ball.center.clone()

    def refuted(candidates: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            at_point = _with_value(ctx, problem.var, candidates)
            false = ~per_sample(problem.body(at_point), ctx.batch).to(candidates.device)
            return false & ball.contains(candidates) & search.admits(ctx, problem.port, candidates)

    def consider(candidates: torch.Tensor) -> None:
        new = refuted(candidates) & ~found
        points[new] = candidates[new]
        found.logical_or_(new)

    consider(ball.center)
    for round_ in range(search.samples):
        if search.finished(found):
            break
        consider(ball.random_points(round_, search.generator))
    if problem.score is not None:
        _attack(problem, ctx, search, consider, found)
    confirmed = found & refuted(points) if found.any() else found
    effort = f"the centre, {search.samples} random points and "
    effort += (f"{search.restarts} x {search.steps} attack steps per sample" if problem.score is not None
               else "no attack (the body gives no gradient)")
    outputs = search.moved(ctx, problem.port, points).values if confirmed.any() else {}
    return Finding(problem.title, effort, confirmed, {problem.var: points},
                   lambda sample: _ball_values(problem, ctx, search, points, outputs, sample))


def _attack(
    problem: BallProblem, ctx: CallContext, search: Search, consider: Callable[[torch.Tensor], None],
    found: torch.Tensor,
) -> None:
    """Projected gradient descent on the body's score, from the centre and then from random points.

    Iterates whose score is near or below zero are checked exactly as the attack
    goes, and the last one of each restart always; samples already refuted stop moving.
    """
    ball = problem.ball
    with torch.enable_grad():
        for restart in range(search.restarts):
            if search.finished(found):
                return
            points = ball.center.clone() if restart == 0 else ball.random_points(restart, search.generator)
            for _ in range(search.steps):
                points = points.detach().requires_grad_(True)
                scores = problem.score(_with_value(ctx, problem.var, points))
                if not isinstance(scores, torch.Tensor) or not scores.requires_grad:
                    return
                moving = ~found
                (gradient,) = torch.autograd.grad(scores[moving].sum(), points, allow_unused=True)
                if gradient is None:
                    return
                points = points.detach()
                level = scores.detach()
                if (moving & (level <= _SUSPICION * (1 + level.abs()))).any():
                    consider(points)
                    if search.finished(found):
                        return
                points = ball.step(points, gradient, ~found)
            consider(points.detach())


def _with_value(ctx: CallContext, name: str, value: torch.Tensor) -> CallContext:
    return CallContext({**ctx.values, name: value}, ctx.dims, ctx.batch, module=ctx.module)


def _ball_values(
    problem: BallProblem, ctx: CallContext, search: Search, points: torch.Tensor,
    outputs: dict[str, torch.Tensor], sample: int,
) -> tuple[tuple[str, str], ...]:
    """The distance of the counterexample, and each output there and at the centre (as a label where it has one)."""
    ball = problem.ball
    distance = float(ball.distance(points)[sample])
    values = [(f"{ball.norm} distance of {problem.var} from {problem.port}",
               f"{distance:.6g} (radius {float(ball.radius[sample]):.6g})")]
    for port in search.outputs:
        if port.name not in outputs:
            continue
        for where, tensor in ((problem.var, outputs[port.name]), (problem.port, ctx.values[port.name])):
            values += _output_values(port, where, tensor[sample])
    return tuple(values)


def _output_values(port: ir.Port, where: str, value: torch.Tensor) -> list[tuple[str, str]]:
    """An output at one point: its values, and for scores over labels the label they pick too (a clause
    about the scores themselves, `norm(self(x2) - y, 2) <= 0.1`, is read from the values)."""
    shown = [(f"{port.name} at {where}", summarize(value))]
    dims = port.type.sample_dims
    if len(dims) == 1 and isinstance(dims[0], ir.DimLabels) and value.numel() == len(dims[0].labels):
        label = dims[0].labels.labels[int(value.argmax())]
        shown.insert(0, (f"argmax({port.name}) at {where}", ir.format_label(label)))
    return shown


# ---------------------------------------------------------------- monotone


@dataclass(frozen=True)
class MonotoneProblem:
    """`monotone(response, moved)`: the input element `moved` reads (port and position) and both arguments."""

    port: ir.Port
    position: tuple[int, ...]
    response: Closure
    moved: Closure
    response_text: str
    moved_text: str

    @property
    def title(self) -> str:
        return f"monotone({self.response_text}, {self.moved_text})"


def _search_monotone(problem: MonotoneProblem, ctx: CallContext, search: Search) -> Finding:
    """Move the element along a ladder of values; a pair where the input rises and the response falls refutes it.

    Every pair of rungs is compared by the values of both arguments as the
    clause computes them; the worst pair per sample is then re-run and confirmed.
    """
    base = ctx.values[problem.port.name]
    if not base.is_floating_point():
        raise UnsupportedClause(f"`{problem.port.name}` holds {base.dtype}: `monotone` moves a floating-point input")
    index = (slice(None), *problem.position)
    low, high = problem.port.type.value_range or (-math.inf, math.inf)
    bounds = (_inward(low, base, up=True), _inward(high, base, up=False))
    rungs = _ladder(base[index].double(), low, high)
    inputs = [_with_element(base, index, rung, bounds) for rung in rungs]
    measured = [_monotone_arguments(problem, ctx, search, moved) for moved in inputs]
    response = torch.stack([m[0] for m in measured])
    value = torch.stack([m[1] for m in measured])
    usable = torch.stack([m[2] for m in measured])
    lower, higher = _worst_pairs(response, value, usable)
    found = lower >= 0
    samples = torch.arange(ctx.batch, device=base.device)
    low_input = torch.stack(inputs)[lower.clamp_min(0), samples]
    high_input = torch.stack(inputs)[higher.clamp_min(0), samples]
    response_low, value_low, usable_low = _monotone_arguments(problem, ctx, search, low_input)
    response_high, value_high, usable_high = _monotone_arguments(problem, ctx, search, high_input)
    falls = _decreases(response_low, response_high) & (value_low < value_high)
    confirmed = found & falls & usable_low & usable_high
    name = problem.port.name
    return Finding(
        problem.title, f"{len(rungs) - 1} moves of {problem.moved_text} per sample", confirmed,
        {f"{name}_low": low_input, f"{name}_high": high_input},
        lambda sample: (
            (f"{problem.moved_text} (lower, higher)",
             f"{float(value_low[sample]):.6g}, {float(value_high[sample]):.6g}"),
            (f"{problem.response_text} at them",
             f"{float(response_low[sample]):.6g}, {float(response_high[sample]):.6g}"),
        ),
    )


def _ladder(element: torch.Tensor, low: float, high: float) -> list[torch.Tensor]:
    """Values of the element from below it to above it, within the range (10 x its magnitude where unbounded)."""
    reach = 10 * element.abs().clamp_min(1.0)
    room_up = (high - element) if math.isfinite(high) else reach
    room_down = (element - low) if math.isfinite(low) else reach
    downs = [element - fraction * room_down for fraction in reversed(_MONOTONE_FRACTIONS)]
    ups = [element + fraction * room_up for fraction in _MONOTONE_FRACTIONS]
    return [*downs, element, *ups]


def _with_element(
    base: torch.Tensor, index: tuple, value: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    moved = base.clone()
    moved[index] = torch.clamp(value.to(base.dtype), *bounds)
    return moved


def _monotone_arguments(
    problem: MonotoneProblem, ctx: CallContext, search: Search, moved: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both arguments (float64, [N]) with the module re-run on the moved input, and which samples are admissible."""
    with torch.no_grad():
        at = search.moved(ctx, problem.port.name, moved)
        response = _per_sample(problem.response(at), ctx.batch, moved.device)
        value = _per_sample(problem.moved(at), ctx.batch, moved.device)
    return response, value, search.admits(ctx, problem.port.name, moved)


def _decreases(earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
    """Whether the response fell by more than rounding from `earlier` to `later`."""
    scale = torch.maximum(earlier.abs(), later.abs()).clamp_min(1.0)
    return earlier - later > _MONOTONE_TOLERANCE * scale


def _worst_pairs(
    response: torch.Tensor, value: torch.Tensor, usable: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the rungs (lower, higher) where the response falls most as the value rises; -1 where none does."""
    rungs = response.shape[0]
    falls = _decreases(response[:, None], response[None, :]) & (value[:, None] < value[None, :])
    falls &= usable[:, None] & usable[None, :]
    drop = (response[:, None] - response[None, :]).masked_fill(~falls, -math.inf)
    worst = drop.reshape(rungs * rungs, -1).argmax(dim=0)
    some = falls.reshape(rungs * rungs, -1).any(dim=0)
    lower = torch.where(some, worst // rungs, -1)
    higher = torch.where(some, worst % rungs, -1)
    return lower, higher


# ---------------------------------------------------------------- the quantitative semantics


def _lowest(value: Score, batch: int) -> Score:
    """A score reduced to one per sample by `min` (a boolean tensor means all of it)."""
    if not isinstance(value, torch.Tensor):
        return float(value)
    if value.dim() == 0:
        return value.expand(batch)
    return value if value.dim() == 1 else value.reshape(value.shape[0], -1).amin(dim=1)


def _highest(value: Score, batch: int) -> Score:
    """A score reduced to one per sample by `max` (for `any`)."""
    if not isinstance(value, torch.Tensor):
        return float(value)
    if value.dim() == 0:
        return value.expand(batch)
    return value if value.dim() == 1 else value.reshape(value.shape[0], -1).amax(dim=1)


def _meet(left: Score, right: Score) -> Score:
    """Elementwise minimum of two scores, numbers or tensors."""
    if not isinstance(left, torch.Tensor) and not isinstance(right, torch.Tensor):
        return min(left, right)
    if not isinstance(left, torch.Tensor):
        return right.clamp(max=left)
    if not isinstance(right, torch.Tensor):
        return left.clamp(max=right)
    return torch.minimum(left, right)


def _join(left: Score, right: Score) -> Score:
    return -_meet(-left, -right)


def _gap(op: str, left: Value, right: Value, tolerance: Value | None) -> Score:
    """How far one comparison is from failing: positive where it holds with room, negative where it fails."""
    if op in ("<", "<="):
        return right - left
    if op in (">", ">="):
        return left - right
    distance = abs(left - right)
    if op == "!=":
        return distance
    return tolerance - distance if tolerance is not None else -distance


def _is_extremum(expr: ir.Expr) -> bool:
    return isinstance(expr, ir.Call) and expr.function in ("argmax", "argmin") and expr.args[0].type.is_numeric


class ScoreCompiler(PredicateCompiler):
    """Compiles a ball's body into a score per sample: positive where it holds, negative where it fails.

    The attack descends this score; its sign only guides the search, which
    confirms every point with the exact boolean semantics. `a <= b` scores
    `b - a`, `a == b within t` scores `t - |a - b|`; `and`/`all` take the
    minimum, `or`/`any` the maximum, `not` negates, `A implies B` is
    `max(-A, B)`; a label equality `argmax(v) == l` scores v's margin for `l`,
    `argmax(v) in L` the best score in L minus the best outside. Anything else
    scores +1 or -1 by its truth, which gives no gradient. `graded` turns True
    once some part of the score varies smoothly with the perturbed input;
    otherwise there is nothing for the attack to follow.
    """

    def __init__(self, variable: str, labels: dict[str, ir.Label]) -> None:
        super().__init__(labels=labels)
        self.variable = variable
        self.graded = False

    def score(self, expr: ir.Expr) -> ScoreClosure:
        signed = self._signed(expr)
        return lambda ctx: _lowest(signed(ctx), ctx.batch)

    def _signed(self, expr: ir.Expr) -> ScoreClosure:
        """A score that may still be elementwise (a comparison of tensors), reduced by the caller."""
        handler = getattr(self, f"score_{type(expr).__name__}", None)
        return handler(expr) if handler is not None else self._truth(expr)

    def _truth(self, expr: ir.Expr) -> ScoreClosure:
        """+1 where the expression holds, -1 where not: a score without gradient."""
        value = self.emit(expr)

        def truth(ctx: CallContext) -> Score:
            result = value(ctx)
            if not isinstance(result, torch.Tensor):
                return 1.0 if result else -1.0
            return torch.where(result.bool(), 1.0, -1.0)

        return truth

    def _varies(self, *exprs: ir.Expr) -> bool:
        return any(isinstance(node, ir.VarRef) and node.name == self.variable
                   for expr in exprs for node in ir.walk(expr))

    def score_Const(self, expr: ir.Const) -> ScoreClosure:
        value = 1.0 if expr.value else -1.0
        return lambda ctx: value

    def score_Logic(self, expr: ir.Logic) -> ScoreClosure:
        left, right = self.score(expr.left), self.score(expr.right)
        if expr.op == "and":
            return lambda ctx: _meet(left(ctx), right(ctx))
        if expr.op == "or":
            return lambda ctx: _join(left(ctx), right(ctx))
        return lambda ctx: _join(-left(ctx), right(ctx))

    def score_Not(self, expr: ir.Not) -> ScoreClosure:
        operand = self.score(expr.operand)
        return lambda ctx: -operand(ctx)

    def score_LabelQuantifier(self, expr: ir.LabelQuantifier) -> ScoreClosure:
        bodies = []
        for label in expr.labels.labels:
            self._labels[expr.var] = label
            bodies.append(self.score(expr.body))
        self._labels.pop(expr.var, None)
        combine = _meet if expr.quantifier == "forall" else _join
        empty = 1.0 if expr.quantifier == "forall" else -1.0

        def quantified(ctx: CallContext) -> Score:
            result: Score = empty
            for position, body in enumerate(bodies):
                result = body(ctx) if position == 0 else combine(result, body(ctx))
            return result

        return quantified

    def score_Call(self, expr: ir.Call) -> ScoreClosure:
        if expr.function in ("all", "any"):
            inner = self._signed(expr.args[0])
            reduce = _lowest if expr.function == "all" else _highest
            return lambda ctx: reduce(inner(ctx), ctx.batch)
        return self._truth(expr)

    def score_InRange(self, expr: ir.InRange) -> ScoreClosure:
        if not self._varies(expr.value) or not expr.value.type.is_numeric:
            return self._truth(expr)
        self.graded = True
        value, low, high = self.emit(expr.value), self.emit(expr.low), self.emit(expr.high)
        fit_low, fit_high = aligner(expr.value, expr.low), aligner(expr.value, expr.high)

        def room(ctx: CallContext) -> Score:
            v = as_float(value(ctx))
            above = _gap(">=", *fit_low(v, low(ctx)), None)
            below = _gap("<=", *fit_high(v, high(ctx)), None)
            return _meet(above, below)

        return room

    def score_Compare(self, expr: ir.Compare) -> ScoreClosure:
        links = []
        for position, op in enumerate(expr.ops):
            link = self._link(expr.operands[position], expr.operands[position + 1], op, expr.tolerance)
            if link is None:
                return self._truth(expr)
            links.append(link)

        def chain(ctx: CallContext) -> Score:
            result = links[0](ctx)
            for link in links[1:]:
                result = _meet(_lowest(result, ctx.batch), _lowest(link(ctx), ctx.batch))
            return result

        return chain

    def _link(self, left: ir.Expr, right: ir.Expr, op: str, tolerance: ir.Expr | None) -> ScoreClosure | None:
        """The score of one comparison of a chain, or None when it has no quantitative reading."""
        if _is_extremum(left) or _is_extremum(right):
            return self._label_margin(left, right, op)
        if not (left.type.is_numeric and right.type.is_numeric):
            return None
        if self._varies(left, right):
            self.graded = True
        a, b = self.emit(left), self.emit(right)
        fit = aligner(left, right)
        allowed = self.emit(tolerance) if tolerance is not None else None

        def gap(ctx: CallContext) -> Score:
            x, y = fit(as_float(a(ctx)), as_float(b(ctx)))
            return _gap(op, x, y, allowed(ctx) if allowed is not None else None)

        return gap

    def _label_margin(self, left: ir.Expr, right: ir.Expr, op: str) -> ScoreClosure | None:
        """`argmax(v) == l`: v's score for `l` minus its best other score (`!=` negates it; argmin flips v)."""
        if op not in ("==", "!="):
            return None
        candidates = [expr for expr in (left, right) if _is_extremum(expr)]
        scored = next((expr for expr in candidates if self._varies(expr)), candidates[0])
        target = right if scored is left else left
        table = _label_table(target.type.labels, scored.type.labels)
        if self._varies(scored):
            self.graded = True
        scores, labels = self.emit(scored.args[0]), self.emit(target)
        sign = 1.0 if scored.function == "argmax" else -1.0
        direction = 1.0 if op == "==" else -1.0

        def margin(ctx: CallContext) -> Score:
            values = as_float(scores(ctx))
            flat = values.reshape(values.shape[0], -1) * sign
            positions = torch.as_tensor(labels(ctx), device=flat.device).long().expand(flat.shape[0])
            if table is not None:
                positions = table.to(flat.device)[positions]
            known = positions >= 0
            chosen = flat.gather(1, positions.clamp_min(0)[:, None])
            others = flat.scatter(1, positions.clamp_min(0)[:, None], -math.inf).amax(dim=1)
            return direction * torch.where(known, chosen.squeeze(1) - others, -1.0)

        return margin

    def score_InLabels(self, expr: ir.InLabels) -> ScoreClosure:
        """`argmax(v) in L`: v's best score in L minus its best score outside L."""
        value = expr.value
        labels = value.type.labels
        if not _is_extremum(value) or labels is None:
            return self._truth(expr)
        member = torch.tensor([label in expr.labels for label in labels.labels], dtype=torch.bool)
        if bool(member.all()) or not bool(member.any()):
            return self._truth(expr)
        if self._varies(value):
            self.graded = True
        scores = self.emit(value.args[0])
        sign = 1.0 if value.function == "argmax" else -1.0

        def margin(ctx: CallContext) -> Score:
            values = as_float(scores(ctx))
            flat = values.reshape(values.shape[0], -1) * sign
            inside = member.to(flat.device)
            return flat.masked_fill(~inside, -math.inf).amax(dim=1) - flat.masked_fill(inside, -math.inf).amax(dim=1)

        return margin


def _label_table(source: ir.LabelSet | None, target: ir.LabelSet | None) -> torch.Tensor | None:
    """Positions in `source` mapped to positions in `target` (-1 where absent); None when they coincide."""
    if source is None or target is None or source.labels == target.labels:
        return None
    return torch.tensor([target.position(label) if label in target else -1 for label in source.labels])


# ---------------------------------------------------------------- names for reports


def describe(expr: ir.Expr) -> str:
    """A compact text of an expression, to name values in reports (the source text is the caller's to show)."""
    match expr:
        case ir.Const(value=bool() as value):
            return "true" if value else "false"
        case ir.Const(value=value):
            return f"{value:g}" if isinstance(value, float) else str(value)
        case ir.LabelConst(label=label):
            return ir.format_label(label)
        case ir.DimValue(dim=dim):
            return str(dim)
        case ir.PortRef(port=name) | ir.VarRef(name=name):
            return name
        case ir.Neg(operand=operand):
            return f"-{_operand(operand)}"
        case ir.Arith(op=op, left=left, right=right):
            return f"{_operand(left)} {op} {_operand(right)}"
        case ir.Call(function=function, args=args, options=options):
            shown = [describe(arg) for arg in args] + [f"{name}={describe(value)}" for name, value in options]
            return f"{function}({', '.join(shown)})"
        case ir.SelfCall(args=args):
            return f"self({', '.join(describe(arg) for arg in args)})"
        case ir.Index(value=value, items=items):
            return f"{_operand(value)}[{', '.join(_index_text(item) for item in items)}]"
        case ir.BallQuantifier(var=var, radius=radius, center=center, norm=norm):
            return f"forall {var} within {describe(radius)} of {center} ({norm})"
    return type(expr).__name__


def _operand(expr: ir.Expr) -> str:
    text = describe(expr)
    return f"({text})" if isinstance(expr, (ir.Arith, ir.Neg)) else text


def _index_text(item: ir.IndexItem) -> str:
    match item:
        case ir.IndexPosition(position=position, label=label):
            return ir.format_label(label) if label is not None else str(position)
        case ir.IndexSlice(start=start, stop=stop):
            return f"{'' if start is None else start}:{'' if stop is None else stop}"
        case ir.IndexDynamic(expr=inner):
            return describe(inner)
    return "..."
