"""Executable compositions: `>>`, `vote` and `replace` as one `nn.Module`, each part monitored.

Every part is checked at its own boundary and told who supplied its input,
so a failed `requires` inside the composition blames the upstream part or
the composition (LANGUAGE.md section 7), never the caller.

The vote follows Pan & Rajan (ESEC/FSE 2020): a part claims its argmax
label unless that is `other`; one claiming part wins; among several, the
highest claimed score wins; with none claiming, the highest score of any
part for one of its own labels wins, or, when the vote's own labels include
`other`, the vote abstains. Ties go to the label first in the vote's label
order, as `argmax` breaks them. The output scores every label of the
interface with its owner's score; when some part claims, labels whose owners
all abstain are lowered to the bottom of the vote's score range, so that
`argmax(y)` is exactly the vote's decision.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from mdl_lang import blame, ir
from mdl_lang.backends.torch.boundary import Boundary
from mdl_lang.backends.torch.monitor import (
    MonitorOptions,
    Requires,
    Session,
    Switchable,
    outputs_of,
    port_values,
    run_part,
    should_check,
)
from mdl_lang.diagnostics import SourceMap
from mdl_lang.report import Result


class CompositionError(Exception):
    """Parts missing or mismatched when a composition is bound."""


@dataclass(frozen=True)
class PartStep:
    """A module of the composition, run through its monitor boundary."""

    name: str
    key: str


@dataclass(frozen=True)
class NestedStep:
    """A named composition used as a part: its own boundary around its plan."""

    name: str
    plan: object


@dataclass(frozen=True)
class PipelineStep:
    stages: tuple


@dataclass(frozen=True)
class VoteStep:
    """A vote over its parts' scores; `floor` is the bottom of its own score range (None: it has none)."""

    parts: tuple
    part_labels: tuple[ir.LabelSet, ...]
    labels: ir.LabelSet
    overlap_max: bool
    floor: float | None


def module_key(parts: nn.ModuleDict, name: str) -> str:
    """A part name as a key of `parts`: without dots, which a key may not contain, and with a `-` (which no
    spec name has) after a name the dict has for something of its own (`half`, `cpu`, `keys`, `training`)."""
    key = name.replace(".", "__")
    return key + "-" if hasattr(parts, key) and key not in parts else key


class ComposedModel(Switchable, nn.Module):
    """A composition built from its parts, monitored at every part's boundary and at its own."""

    def __init__(
        self,
        spec: ir.Spec,
        name: str,
        composition: ir.Composition,
        parts: dict[str, nn.Module],
        sources: SourceMap,
        options: MonitorOptions,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.contract_name = name
        self.composition = composition
        self.sources = sources
        self.options = options
        self.reports: list[Result] = []
        self._calls = 0
        self._boundaries: dict[str, Boundary] = {}
        self.parts = nn.ModuleDict()
        self._bound: set[str] = set()
        self.plan = self._plan(composition.expr, spec, dict(parts), {})
        unused = sorted(set(parts) - self._bound)
        if unused:
            raise CompositionError(f"`{name}` has no part named {', '.join(unused)}")

    # ------------------------------------------------------------ building

    def _plan(
        self, node: ir.CompNode, spec: ir.Spec, parts: dict[str, nn.Module], replaced: dict[str, str],
        scope: str = "",
    ):
        """The steps of `node`; `scope` is the import alias (`a.`) that names, in the top spec, what an
        imported composition's own expression names without it."""
        if isinstance(node, ir.PartRef):
            name = scope + node.name
            return self._reference(replaced.get(name, name), spec, parts, replaced)
        if isinstance(node, ir.Pipeline):
            return PipelineStep(tuple(self._plan(stage, spec, parts, replaced, scope) for stage in node.stages))
        if isinstance(node, ir.VoteNode):
            steps = tuple(self._plan(part, spec, parts, replaced, scope) for part in node.parts)
            components = [self._component(step, spec) for step in steps]
            labels = tuple(_output_labels(component) for component in components)
            return VoteStep(steps, labels, node.labels, node.overlap_max, self._floor(node, components, spec))
        return self._plan(node.base, spec, parts, {**replaced, scope + node.old: scope + node.new}, scope)

    def _reference(self, name: str, spec: ir.Spec, parts: dict[str, nn.Module], replaced: dict[str, str]):
        component = spec.component(name)
        if component is None:
            raise CompositionError(f"no module or composition `{name}` in the spec")
        self._boundaries.setdefault(name, Boundary(name, component, self.sources))
        if isinstance(component, ir.Composition):
            return NestedStep(name, self._plan(component.expr, spec, parts, replaced, ir.import_scope(name)))
        if name not in parts:
            raise CompositionError(
                f"`{self.contract_name}` needs the module `{name}`: pass it in parts={{'{name}': ...}}"
            )
        key = module_key(self.parts, name)
        self.parts[key] = parts[name]
        self._bound.add(name)
        return PartStep(name, key)

    def _component(self, step, spec: ir.Spec) -> ir.Component:
        if isinstance(step, (PartStep, NestedStep)):
            return spec.component(step.name)
        raise CompositionError("a vote part must be a module or a named composition")

    # ------------------------------------------------------------ running

    @property
    def boundary(self) -> Boundary:
        """The composition's own compiled contract (`boundary.skipped`: the clauses its monitor leaves out)."""
        boundary = self._boundaries.get(self.contract_name)
        if boundary is None:
            # Built once: `setdefault` would compile a whole Boundary on every call only to drop it.
            boundary = self._boundaries[self.contract_name] = Boundary(
                self.contract_name, self.composition, self.sources,
            )
        return boundary

    def forward(self, *args, **kwargs):
        boundary = self.boundary
        values = port_values(boundary.inputs, args, kwargs)
        inputs = tuple(values[port.name] for port in boundary.inputs if port.name in values)
        if not self._should_check():
            return _single(self._run(self.plan, inputs, None, (), None, self.contract_name)[0])
        session = Session(self.options, self.sources, self.reports)
        path = (self.contract_name,)
        requires = Requires(boundary, values, blame.caller(path), path)
        entry = blame.composition_input(self.contract_name, path, requires.faults)

        def inner():
            outputs, _ = self._run(self.plan, inputs, session, path, entry, self.contract_name)
            return _single(outputs)

        raw, _ = run_part(boundary, inner, values, requires.upstream, path, session, True, requires=requires)
        return raw

    def _run(self, step, inputs: tuple, session: Session | None, path: tuple[str, ...], upstream, owner: str):
        """Run a plan step; returns its outputs and who supplied them (for the next stage's blame).

        With `session` None the step runs unmonitored (a call skipped by `every` or mode `off`).
        """
        if isinstance(step, (PartStep, NestedStep)):
            return self._run_part(step, inputs, session, path, upstream, owner)
        if isinstance(step, PipelineStep):
            values, feeder = inputs, upstream
            for stage in step.stages:
                values, feeder = self._run(stage, values, session, path, feeder, owner)
            return values, feeder
        return self._vote(step, inputs, session, path, upstream, owner)

    def _run_part(self, step, inputs: tuple, session: Session | None, path, upstream, owner: str):
        if session is None:
            if isinstance(step, NestedStep):
                return self._run(step.plan, inputs, None, path, None, step.name)
            return outputs_of(self.parts[step.key](*inputs), self._boundaries[step.name].outputs), None
        part_path = (*path, step.name)
        boundary = self._boundaries[step.name]
        in_values = port_values(boundary.inputs, inputs, {})
        requires = None
        if isinstance(step, NestedStep):
            # Its first parts are supplied by its own input, and blame it where its requires held.
            requires = Requires(boundary, in_values, upstream, part_path)
            entry = blame.composition_input(step.name, part_path, requires.faults)

            def call():
                outputs, _ = self._run(step.plan, inputs, session, part_path, entry, step.name)
                return _single(outputs)
        else:
            module = self.parts[step.key]

            def call():
                return module(*inputs)
        _, outcome = run_part(
            boundary, call, in_values, upstream, part_path, session, requires is not None, requires=requires,
        )
        return outcome.outputs, blame.part(step.name, part_path, owner, outcome.faults)

    def _vote(self, step: VoteStep, inputs: tuple, session, path, upstream, owner: str):
        scores, feeders = [], []
        for part in step.parts:
            outputs, feeder = self._run(part, inputs, session, path, upstream, owner)
            scores.append(outputs[0])
            feeders.append(feeder)
        # Downstream blame, per sample: a part whose ensures failed on it, else the composition.
        faults = tuple(fault for feeder in feeders if feeder is not None for fault in feeder.faults)
        feeder = None if session is None else blame.part("vote", path, owner, faults)
        return (vote(scores, step.part_labels, step.labels, step.floor),), feeder

    def _floor(self, node: ir.VoteNode, parts: list[ir.Component], spec: ir.Spec) -> float | None:
        """The bottom of the vote's own score range, where the labels out of the running score.

        That is the range of the composition the vote defines, if it is the whole of a named one (a
        vote feeding a pipeline is not bound by the pipeline's output range), else the range its parts
        share (the checker makes them agree, E0507). None where neither has one: `vote` then lowers to
        the sample's lowest score, which keeps finite scores finite.
        """
        named = (self.composition, *(spec.component(name) for name in self.composition.parts))
        defined = [
            component for component in named if isinstance(component, ir.Composition) and component.expr is node
        ]
        for component in (*defined, parts[0]):
            value_range = component.interface.outputs[0].type.value_range
            if value_range is not None:
                return value_range[0]
        return None

    def _should_check(self) -> bool:
        return should_check(self)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_boundaries"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._rebuild_boundaries()

    def _rebuild_boundaries(self) -> None:
        names = [self.contract_name, *self.composition.parts]
        for name in names:
            component = self.composition if name == self.contract_name else self.spec.component(name)
            if component is not None:
                self._boundaries[name] = Boundary(name, component, self.sources)


def _single(outputs: tuple):
    return outputs[0] if len(outputs) == 1 else outputs


def _output_labels(component: ir.Component) -> ir.LabelSet:
    last = component.interface.outputs[0].type.dims[-1]
    assert isinstance(last, ir.DimLabels), "the checker only admits vote parts scoring a label set"
    return last.labels


def vote(
    scores: list[torch.Tensor], part_labels: tuple[ir.LabelSet, ...], labels: ir.LabelSet,
    floor: float | None = None,
) -> torch.Tensor:
    """Scores over `labels` (last axis) whose argmax is the ESEC/FSE 2020 decision (LANGUAGE.md section 6).

    A label scores the highest score its owners give it, counting only the owners that claim when some
    part claims. A label that no counted owner scores, or that would take the argmax from the decision
    on a tie, scores `floor`, the bottom of the vote's score range; with None, the value just below the
    sample's lowest score of any part, so that finite scores stay finite. Where the decision's own score is
    the bottom of the range itself, it becomes the next value above it: nothing in the range lies below.
    """
    dtype = functools.reduce(torch.promote_types, (part_scores.dtype for part_scores in scores))
    ballots = [
        _ballot(part_scores.to(dtype), own, labels) for part_scores, own in zip(scores, part_labels, strict=True)
    ]
    spread = torch.stack([ballot.scores for ballot in ballots])
    owns = torch.stack([ballot.owns.expand_as(ballot.scores) for ballot in ballots])
    claimed = torch.stack([ballot.claimed for ballot in ballots])
    claims = torch.stack([ballot.claims for ballot in ballots]).unsqueeze(-1)
    anyone = claims.any(dim=0)
    counted = owns & (claims | ~anyone)
    bottom = _bottom(scores, floor, spread[0])
    values = torch.where(counted.any(dim=0), _highest(spread, counted), bottom)
    if labels.has_other:
        # A vote that scores `other` abstains when no part claims.
        unclaimed = torch.arange(len(labels), device=values.device) == labels.position(ir.OTHER)
    else:
        unclaimed = owns.any(dim=0)
    candidates = torch.where(anyone, claimed.any(dim=0), unclaimed)
    decided = _first_highest(torch.where(anyone, _highest(spread, claimed), values), candidates)
    return _keep_argmax(values, decided, bottom)


@dataclass(frozen=True)
class _Ballot:
    """One part's scores laid over the vote's labels, and what it claims per sample."""

    scores: torch.Tensor  # [..., L]: its score for each label of the vote it owns (meaningless elsewhere)
    owns: torch.Tensor  # [L]: the labels of the vote it scores
    claimed: torch.Tensor  # [..., L]: the label it claims (none where it abstains)
    claims: torch.Tensor  # [...]


def _ballot(part_scores: torch.Tensor, own: ir.LabelSet, labels: ir.LabelSet) -> _Ballot:
    index, owns = _layout(own, labels, part_scores.device)
    choice = part_scores.argmax(dim=-1)
    claims = _claims(choice, own)
    claimed = owns & (index == choice.unsqueeze(-1)) & claims.unsqueeze(-1)
    return _Ballot(part_scores.index_select(-1, index), owns, claimed, claims)


@functools.lru_cache(maxsize=256)
def _layout(own: ir.LabelSet, labels: ir.LabelSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each label of the vote, the part's position for it (0 where it has none) and whether it has one.

    `other` is one of them when both have it. Cached: built per call, these small tensors would be a
    host-to-device copy on every call of a vote on a GPU.
    """
    index = torch.tensor([own.position(label) if label in own else 0 for label in labels.labels], device=device)
    owns = torch.tensor([label in own for label in labels.labels], device=device)
    return index, owns


def _claims(choice: torch.Tensor, own: ir.LabelSet) -> torch.Tensor:
    """True per sample where the part's argmax (`choice`, its first highest score) is not `other`."""
    if not own.has_other:
        return torch.ones_like(choice, dtype=torch.bool)
    return choice != own.position(ir.OTHER)


def _highest(spread: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Per label, the highest of the parts' scores that count (-inf where none does)."""
    return torch.where(counted, spread, float("-inf")).amax(dim=0)


def _bottom(scores: list[torch.Tensor], floor: float | None, like: torch.Tensor) -> torch.Tensor:
    """The score of a label out of the running, shaped to broadcast over the vote's output."""
    if floor is not None:
        return like.new_full((1,) * like.dim(), floor)
    lowest = torch.stack([part_scores.amin(dim=-1) for part_scores in scores]).amin(dim=0).to(like.dtype)
    # Just below every score of the sample: the decision keeps its own score, and finite scores stay finite
    # (at the dtype's lowest finite value itself there is nothing below: `_keep_argmax` then raises the decision).
    below = torch.nextafter(lowest, torch.full_like(lowest, float("-inf")))
    return torch.where(torch.isinf(below) & torch.isfinite(lowest), lowest, below).unsqueeze(-1)


def _first_highest(key: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Per sample (`[..., 1]`), the first column among `candidates` with the highest `key`."""
    masked = torch.where(candidates, key, float("-inf"))
    best = candidates & (masked == masked.amax(dim=-1, keepdim=True))
    return best.to(torch.uint8).argmax(dim=-1, keepdim=True)


def _keep_argmax(values: torch.Tensor, decided: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """`values` with every label that would take the argmax from `decided` lowered to `bottom`.

    When the decision's score is at the bottom itself (or below it), lowering cannot make it win:
    it is raised to the next value above the bottom instead.
    """
    top = values.gather(-1, decided)
    ahead = torch.arange(values.shape[-1], device=values.device) < decided
    lowered = torch.where(_takes_argmax(values, top, ahead), bottom, values)
    still = _takes_argmax(lowered, top, ahead).any(dim=-1, keepdim=True)
    above = torch.nextafter(bottom, torch.full_like(bottom, float("inf")))
    return lowered.scatter(-1, decided, torch.where(still, above, top))


def _takes_argmax(values: torch.Tensor, top: torch.Tensor, ahead: torch.Tensor) -> torch.Tensor:
    """The labels `argmax` would pick over the decision: higher, or as high and before it."""
    return (values > top) | ((values == top) & ahead)
