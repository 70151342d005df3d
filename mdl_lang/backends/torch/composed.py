"""Executable compositions: `>>`, `vote` and `replace` as one `nn.Module`, each part monitored.

Every part is checked at its own boundary and told who supplied its input,
so a failed `requires` inside the composition blames the upstream part or
the composition (LANGUAGE.md section 7), never the caller.

The vote follows Pan & Rajan (ESEC/FSE 2020): a part claims its argmax
label unless that is `other`; one claiming part wins; among several, the
highest claimed score wins; with none claiming, the highest score of any
part for one of its own labels wins. The output scores every label of the
interface with its owner's score; when some part claims, labels whose owner
abstains are lowered to the bottom of the score range, so that `argmax(y)`
is exactly the vote's decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mdl_lang import blame, ir
from mdl_lang.backends.torch.boundary import Boundary
from mdl_lang.backends.torch.monitor import (
    MonitorOptions,
    Session,
    Switchable,
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
    parts: tuple
    part_labels: tuple[ir.LabelSet, ...]
    labels: ir.LabelSet
    overlap_max: bool


def module_key(name: str) -> str:
    """A part name as an `nn.ModuleDict` key (which may not contain dots)."""
    return name.replace(".", "__")


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
        self.plan = self._plan(composition.expr, spec, dict(parts), {})
        unused = sorted(set(parts) - {key.replace("__", ".") for key in self.parts})
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
            labels = tuple(_output_labels(self._component(step, spec)) for step in steps)
            return VoteStep(steps, labels, node.labels, node.overlap_max)
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
        self.parts[module_key(name)] = parts[name]
        return PartStep(name, module_key(name))

    def _component(self, step, spec: ir.Spec) -> ir.Component:
        if isinstance(step, (PartStep, NestedStep)):
            return spec.component(step.name)
        raise CompositionError("a vote part must be a module or a named composition")

    # ------------------------------------------------------------ running

    def forward(self, *args, **kwargs):
        boundary = self._boundaries.get(self.contract_name)
        if boundary is None:
            # Built once: `setdefault` would compile a whole Boundary on every call only to drop it.
            boundary = self._boundaries[self.contract_name] = Boundary(
                self.contract_name, self.composition, self.sources,
            )
        values = port_values(boundary.inputs, args, kwargs)
        inputs = tuple(values[port.name] for port in boundary.inputs if port.name in values)
        if not self._should_check():
            return _single(self._run(self.plan, inputs, None, (), None, self.contract_name)[0])
        session = Session(self.options, self.sources, self.reports)
        path = (self.contract_name,)

        def inner():
            outputs, _ = self._run(self.plan, inputs, session, path, blame.caller(path), self.contract_name)
            return _single(outputs)

        def own_ensures(clause: str):
            failed = tuple(session.failed_parts)
            return blame.for_composition_ensures(self.contract_name, clause, path, failed)

        raw, _ = run_part(boundary, inner, values, blame.caller(path), path, session, own_ensures)
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
            return _as_outputs(self.parts[step.key](*inputs)), None
        part_path = (*path, step.name)
        boundary = self._boundaries[step.name]
        if isinstance(step, NestedStep):
            def call():
                outputs, _ = self._run(step.plan, inputs, session, part_path, upstream, step.name)
                return _single(outputs)

            def own_ensures(clause: str):
                failed = tuple((n, p) for n, p in session.failed_parts if p[: len(part_path)] == part_path)
                return blame.for_composition_ensures(step.name, clause, part_path, failed)
        else:
            module = self.parts[step.key]

            def call():
                return module(*inputs)

            own_ensures = None
        _, outcome = run_part(
            boundary, call, port_values(boundary.inputs, inputs, {}), upstream, part_path, session, own_ensures,
        )
        return outcome.outputs, blame.part(step.name, part_path, owner, outcome.failed_ensures)

    def _vote(self, step: VoteStep, inputs: tuple, session, path, upstream, owner: str):
        scores, feeders = [], []
        for part in step.parts:
            outputs, feeder = self._run(part, inputs, session, path, upstream, owner)
            scores.append(outputs[0])
            feeders.append(feeder)
        failed = [feeder for feeder in feeders if feeder is not None and feeder.failed_ensures]
        # Downstream blame goes to a part whose ensures failed, else to the composition.
        feeder = failed[0] if failed else (None if session is None else blame.part("vote", path, owner, ()))
        return (vote(scores, step.part_labels, step.labels, self._floor()),), feeder

    def _floor(self) -> float:
        outputs = self.composition.interface.outputs
        value_range = outputs[0].type.value_range if outputs else None
        return value_range[0] if value_range is not None else float("-inf")

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


def _as_outputs(raw) -> tuple:
    if isinstance(raw, torch.Tensor):
        return (raw,)
    return tuple(raw.values()) if isinstance(raw, dict) else tuple(raw)


def _output_labels(component: ir.Component) -> ir.LabelSet:
    last = component.interface.outputs[0].type.dims[-1]
    assert isinstance(last, ir.DimLabels), "the checker only admits vote parts scoring a label set"
    return last.labels


def vote(
    scores: list[torch.Tensor], part_labels: tuple[ir.LabelSet, ...], labels: ir.LabelSet, floor: float,
) -> torch.Tensor:
    """Combine per-part scores into scores over `labels` whose argmax is the ESEC/FSE 2020 decision."""
    batch = scores[0].shape[0]
    reference = scores[0]
    output = torch.full((batch, len(labels)), float("-inf"), dtype=reference.dtype, device=reference.device)
    abstaining = torch.zeros((batch, len(labels)), dtype=torch.bool, device=reference.device)
    claims = []
    for part_scores, own in zip(scores, part_labels, strict=True):
        claim = _claims(part_scores, own)
        claims.append(claim)
        for position, label in enumerate(own.labels):
            if label is ir.OTHER or label not in labels:
                continue
            target = labels.position(label)
            output[:, target] = torch.maximum(output[:, target], part_scores[:, position].to(output.dtype))
            abstaining[:, target] |= ~claim
    anyone_claims = torch.stack(claims).any(dim=0)
    lowered = torch.full_like(output, floor)
    return torch.where(anyone_claims.unsqueeze(1) & abstaining, lowered, output)


def _claims(part_scores: torch.Tensor, own: ir.LabelSet) -> torch.Tensor:
    """True per sample where the part's argmax is one of its own labels, not `other`."""
    if not own.has_other:
        return torch.ones(part_scores.shape[0], dtype=torch.bool, device=part_scores.device)
    return part_scores.argmax(dim=1) != own.position(ir.OTHER)
