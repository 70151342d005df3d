"""The spec proofs of `mdl check`: vacuity, `a >> b`, behavioural subtyping and `replace`, with Z3.

Each check becomes queries over the per-sample clauses and type refinements of
the parts (statistical, relational and cost clauses are outside: they never
help a proof; `replace` compares those of `old` with `new`'s as written, and cost
bounds as numbers, and reports the rest unknown). A refuted implication is an error with a
counter-model in the spec's terms, blamed as LANGUAGE.md section 7 says: the
composition when `a >> b` does not fit, the module when subtyping fails. An
undecided one is a warning with its reason. Every answer is also a `Result`
(backend `z3`) for `mdl check --format json`.

Shapes: a symbolic dim takes its size from the port it is connected to when it
can; one that nothing binds (a free dim, `_`, `...`) is first tried at
`DEFAULT_DIM_SIZE`. An answer that reads a tensor of such a size holds for that
size only, so the question is asked again with those tensors summarised for every
size (`Prover.answer(every_size=True)`); what that does not settle is `unknown`,
naming the free dims and the size tried, never a proof or an error.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from mdl_lang import ir
from mdl_lang.backends.z3.encode import DEFAULT_DIM_SIZE
from mdl_lang.backends.z3.solve import (
    Answer,
    Fact,
    Outcome,
    Prover,
    Query,
    Settings,
    TensorVar,
    conflicting_dims,
    dims_follow,
    part_dims,
    plain_dims,
    render_model,
    solve_dims,
    verb,
)
from mdl_lang.diagnostics import Diagnostic, Note, SourceMap
from mdl_lang.report import Blame, Result, Role, Verdict
from mdl_lang.semantics.shapes import rename_apart
from mdl_lang.span import Span

OUTSIDE = "statistical and relational clauses are outside the Z3 spec check"


def _relaxed(outcome: Outcome, vote: str) -> Outcome:
    """A counter-model found with a vote's output known only by its value range: perhaps no vote of those parts
    gives it (each part's own ensures narrow what it scores), so it is no evidence of a misfit."""
    return Outcome(Answer.UNKNOWN, (
        f"a counter-model keeps the value range of `{vote}`'s output, but the vote's output is not any one "
        f"part's, so whether its parts' ensures allow it is not decided here ({render_model(outcome.model)})"
    ), free=outcome.free)


def _counter(outcome: Outcome, kept: str, broken: str) -> str:
    """A refutation's counter-model in spec terms: its values, what they keep and what they break."""
    return (f"{render_model(outcome.model)} {verb(outcome.model, 'satisfies', 'satisfy')} {kept} but "
            f"{verb(outcome.model, 'breaks', 'break')} {broken}")


class Misfit(NamedTuple):
    """What a refuted fit reports: its code, message, blame, notes and help."""

    code: str
    message: str
    blame: Blame
    notes: tuple[Note, ...]
    help: str


@dataclass(frozen=True)
class Party:
    """A component as one side of a check sees it, under the name the spec uses for it."""

    name: str
    component: ir.Component

    @property
    def inputs(self) -> tuple[ir.Port, ...]:
        return self.component.interface.inputs

    @property
    def outputs(self) -> tuple[ir.Port, ...]:
        return self.component.interface.outputs

    def clauses(self, kind: str, own_only: bool = False) -> tuple[ir.Clause, ...]:
        """Its per-sample clauses of one kind (`requires` or `ensures`)."""
        clauses = self.component.clauses if own_only else self.component.all_clauses
        return tuple(c for c in clauses if c.kind == kind and c.fragment is ir.Fragment.PER_SAMPLE)

    def outside(self, kind: str) -> tuple[ir.Clause, ...]:
        clauses = self.component.all_clauses
        return tuple(c for c in clauses if c.kind == kind and c.fragment is not ir.Fragment.PER_SAMPLE)


@dataclass(frozen=True)
class Goal:
    """What one query must show, and how to talk about it."""

    text: str
    name: str
    span: Span
    fact: Fact


class _Tensors:
    """The tensors of one query: sample shapes fixed, dims bound per party, names kept distinct, and per
    party the free dims that were given the size tried (`assumed`)."""

    def __init__(self) -> None:
        self.vars: list[TensorVar] = []
        self.dims: dict[str, dict[str, int]] = {}
        self.assumed: dict[str, set[str]] = {}

    def add(self, name: str, tensor: ir.TensorType, shape: tuple[int, ...], party: str, owner: str = "",
            sized_by: tuple[ir.TensorType, str] | None = None) -> int:
        """A tensor named `name`, or `owner.name` when that name is taken (`a`'s input `x` in `a >> b`).
        Its shape rests on free dims as the type of `sized_by` (a type and its party) does: by default its own."""
        taken = {var.name for var in self.vars}
        shown = name if name not in taken else f"{owner}.{name}" if owner else f"{name}#{len(self.vars)}"
        axes = tuple(dim.labels if isinstance(dim, ir.DimLabels) and not dim.labels.opaque else None
                     for dim in tensor.sample_dims if not isinstance(dim, ir.DimEllipsis))
        source, source_party = sized_by if sized_by is not None else (tensor, party)
        assumed = self.assumed.get(source_party, set())
        free = tuple(dict.fromkeys(name for dim in source.sample_dims for name in _free_in(dim, assumed)))
        self.vars.append(TensorVar(shown, shape, _element(tensor.dtype), axes if len(axes) == len(shape) else (),
                                   free))
        return len(self.vars) - 1

    def env(self, party: str) -> dict[str, int]:
        return self.dims.setdefault(party, {})

    def shape(self, tensor: ir.TensorType, party: str, fill: bool) -> tuple[int, ...] | None:
        """The sample shape under the party's bound dims; with `fill`, free dims get the size tried
        (`...` no axes), and are remembered as assumed."""
        env = self.env(party)
        shape = []
        for dim in tensor.sample_dims:
            if isinstance(dim, ir.DimEllipsis):
                if not fill:
                    return None
                continue
            size = _size(dim, env, self.assumed.setdefault(party, set()) if fill else None)
            if size is None:
                return None
            shape.append(size)
        return tuple(shape)

    def free_axes(self, tensor: ir.TensorType, party: str) -> tuple[bool, ...]:
        """Per axis (but `...`), whether its size rests on a free dim of the party."""
        assumed = self.assumed.get(party, set())
        return tuple(bool(_free_in(dim, assumed)) for dim in tensor.sample_dims
                     if not isinstance(dim, ir.DimEllipsis))

    def bind(self, tensor: ir.TensorType, shape: tuple[int, ...], party: str, free: tuple[bool, ...]) -> None:
        """The party's dims take the sizes of `shape`; one whose size was a free dim's stays free (`free`)."""
        dims = tensor.sample_dims
        if any(isinstance(dim, ir.DimEllipsis) for dim in dims) or len(dims) != len(shape):
            return
        env = self.env(party)
        for dim, size, assumed in zip(dims, shape, free, strict=False):
            if isinstance(dim, ir.DimVar) and dim.name not in env:
                env[dim.name] = size
                if assumed:
                    self.assumed.setdefault(party, set()).add(dim.name)

    def link(self, ports: tuple[ir.Port, ...], party: str, sources: tuple[ir.Port, ...], source_party: str,
             owner: str = "") -> list[int]:
        """One tensor per port of `party` (named as it names them), each also port `sources[i]` of
        `source_party` when there is one: the ports `>>` or a composition's interface connects. Each is
        sized by the port's type where the party's dims fix it, else by the source's (`_` on one side is
        sized by the other), else with free dims at the size tried; both parties' dims are bound to it."""
        positions = []
        for index, port in enumerate(ports):
            source = sources[index] if index < len(sources) else None
            shape, origin = self.shape(port.type, party, fill=False), (port.type, party)
            if shape is None and source is not None:
                shape, origin = self.shape(source.type, source_party, fill=False), (source.type, source_party)
            if shape is None:
                shape, origin = self.shape(port.type, party, fill=True) or (), (port.type, party)
            free = self.free_axes(*origin)
            self.bind(port.type, shape, party, free)
            if source is not None:
                self.bind(source.type, shape, source_party, free)
            positions.append(self.add(port.name, port.type, shape, party, owner, sized_by=origin))
        return positions

    def query(self, premises: list[Fact], goal: Fact | None) -> Query:
        return Query(tuple(self.vars), tuple(premises), goal)


def _size(dim: ir.Dim, env: dict[str, int], assumed: set[str] | None) -> int | None:
    """The size of a dim under `env`; with `assumed` given, a free one gets the size tried and is added to it."""
    match dim:
        case ir.DimConst(value=value):
            return value
        case ir.DimLabels(labels=labels):
            if labels.opaque:
                return DEFAULT_DIM_SIZE if assumed is not None else None
            return len(labels)
        case ir.DimVar(name=name):
            if name not in env and assumed is not None:
                env[name] = DEFAULT_DIM_SIZE
                assumed.add(name)
            return env.get(name)
        case ir.DimBinary(op=op, left=left, right=right):
            a, b = _size(left, env, assumed), _size(right, env, assumed)
            if a is None or b is None or (op == "//" and b == 0):
                return None
            return ir.ARITHMETIC[op](a, b)
    return DEFAULT_DIM_SIZE if assumed is not None else None


def _free_in(dim: ir.Dim, assumed: set[str]) -> list[str]:
    """The free dims a dim's size rests on, as the spec writes them (`S`, `_`, `...`, an opaque label set)."""
    match dim:
        case ir.DimVar(name=name):
            return [name] if name in assumed else []
        case ir.DimBinary(left=left, right=right):
            return _free_in(left, assumed) + _free_in(right, assumed)
        case ir.DimAny() | ir.DimEllipsis():
            return [str(dim)]
        case ir.DimLabels(labels=labels) if labels.opaque:
            return [str(dim)]
    return []


def _range_goals(kind: str, ports: tuple[ir.Port, ...], others: tuple[ir.Port, ...],
                 positions: list[int]) -> list[Goal]:
    """The value ranges of `ports` (at `positions`) as goals, where the matching port of `others` has another
    range: a range both sides declare alike holds by itself."""
    return [
        Goal(f"{kind} type `{port.name}: {port.type.describe()}`", f"type of {port.name}", port.span,
             Fact(None, tensor=position, value_range=port.type.value_range))
        for port, other, position in zip(ports, others, positions, strict=True)
        if port.type.value_range is not None and port.type.value_range != other.type.value_range
    ]


def _tried(free: tuple[str, ...]) -> str:
    """`S` = 3, `...` as no axes: the sizes the first answer was found with."""
    return ", ".join("`...` as no axes" if name == "..." else f"`{name}` = {DEFAULT_DIM_SIZE}" for name in free)


def _element(dtype: str | None) -> ir.Element:
    if dtype in ("int64", "int32", "uint8"):
        return ir.Element.INT
    return ir.Element.BOOL if dtype == "bool" else ir.Element.REAL


def _ports(ports: tuple[ir.Port, ...], positions: list[int]) -> tuple[tuple[str, int], ...]:
    return tuple((port.name, position) for port, position in zip(ports, positions, strict=True))


def _range_facts(ports: tuple[ir.Port, ...], positions: list[int]) -> list[Fact]:
    return [
        Fact(None, tensor=position, value_range=port.type.value_range)
        for port, position in zip(ports, positions, strict=True) if port.type.value_range is not None
    ]


class SpecProofs:
    """Runs every Z3 check of the specs it is given; collects diagnostics and results."""

    def __init__(self, sources: SourceMap, settings: Settings | None = None) -> None:
        self.sources = sources
        self.prover = Prover(settings)
        self.diagnostics: list[Diagnostic] = []
        self.results: list[Result] = []
        self._reported: set[tuple[str, Span, Span | None]] = set()
        self._vacuity: dict[tuple, tuple[Outcome, int]] = {}

    def check(self, spec: ir.Spec) -> None:
        for name, component in spec.components().items():
            party = Party(name, component)
            self.vacuity(party)
            if isinstance(component, ir.Module):
                self.subtyping(party)
        equations: dict[str, list[ir.Implication]] = {}
        for obligation in spec.obligations:
            if obligation.kind == "pipe":
                self.pipe(spec, obligation)
            elif obligation.kind == "replace":
                self.replace(spec, obligation)
            elif obligation.kind == "interface":
                self.interface(spec, obligation)
            elif obligation.kind == "dims" and obligation.equation is not None:
                equations.setdefault(obligation.composition, []).append(obligation)
        for composition, undecided in equations.items():
            self.dims(spec, composition, undecided)

    def _text(self, clause: ir.Clause) -> str:
        """The clause as written, without its keyword (`0 <= x <= 1`, or `name: ...`)."""
        text = self.sources.excerpt(clause.span) or clause.name
        return text.removeprefix(clause.kind).strip()

    def _once(self, code: str, span: Span, detail: Span | None = None) -> bool:
        """False when this code was already reported there (an interface's clause is shared by its modules)."""
        key = (code, span, detail)
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    def _answer(self, query: Query, universal: bool = True) -> Outcome:
        """The answer to a query, for every size of the free dims it reads.

        `universal` questions (an implication: for every size and input) and the existential one of vacuity
        (some size and input) differ in what the size tried settles: a witness found with it is one, a proof
        or a refutation with it is not. The rest is asked again with every tensor of a free size summarised
        for all its sizes: unsatisfiable there is a proof (or, for vacuity, no input at any size); what it
        leaves open is `unknown`, naming the free dims and the size tried."""
        outcome = self.prover.answer(query)
        free = tuple(dict.fromkeys(name for var in query.tensors for name in var.free))
        if not free or (not universal and outcome.answer is Answer.PROVED):
            return outcome
        general = self.prover.answer(query, every_size=True)
        if general.answer is not Answer.UNKNOWN:
            return general
        if outcome.answer is Answer.UNKNOWN:
            found = f"{outcome.reason} (with {_tried(free)})"
        elif not universal:
            found = f"with {_tried(free)} no input keeps them"
        elif outcome.answer is Answer.PROVED:
            found = f"it holds with {_tried(free)}"
        else:
            found = f"with {_tried(free)} it fails ({render_model(outcome.model)})"
        names = ", ".join(f"`{name}`" for name in free)
        verb, pronoun = ("is", "it") if len(free) == 1 else ("are", "them")
        return Outcome(Answer.UNKNOWN, f"{found}, but {names} {verb} free (nothing binds {pronoun}) and the "
                       "min/max/sum summary that covers every size does not settle it", free=free)

    # ------------------------------------------------------------ vacuity

    def vacuity(self, party: Party) -> None:
        """Some input of the ports' types keeps every `requires`; else the first one that empties it is an error."""
        requires = party.clauses("requires")
        if not requires:
            return
        # The same source clauses, instantiated with the same arguments over the same input types, ask the
        # same question: a key that is cheap to hash spares building and hashing the query per module.
        key = (tuple(c.span for c in requires), party.component.interface.args,
               tuple(port.type for port in party.inputs))
        if key not in self._vacuity:
            self._vacuity[key] = self._vacuity_answer(party, requires)
        outcome, emptied = self._vacuity[key]
        if outcome.answer is Answer.PROVED:
            self._result(party.name, requires[-1], "requires", Verdict.PASS, "some input keeps every `requires`",
                         None)
            return
        if outcome.answer is Answer.UNKNOWN:
            self._unknown(party.name, requires[-1], "requires", f"whether any input keeps the `requires` of "
                          f"`{party.name}`", outcome, requires[-1].span)
            return
        self._vacuous(party, requires[emptied - 1], requires[:emptied - 1])

    def _vacuity_answer(self, party: Party, requires: tuple[ir.Clause, ...]) -> tuple[Outcome, int]:
        """Whether some input keeps every `requires`; when none does, how many of them first leave none."""
        tensors = _Tensors()
        positions = [tensors.add(port.name, port.type, tensors.shape(port.type, party.name, fill=True) or (),
                                 party.name) for port in party.inputs]
        ports = _ports(party.inputs, positions)
        premises = _range_facts(party.inputs, positions)
        outcome = self._answer(tensors.query(premises + [Fact(c.expr, ports) for c in requires], None),
                               universal=False)
        if outcome.answer is not Answer.REFUTED:
            return outcome, 0
        for count in range(1, len(requires)):
            facts = premises + [Fact(c.expr, ports) for c in requires[:count]]
            if self._answer(tensors.query(facts, None), universal=False).answer is Answer.REFUTED:
                return outcome, count
        return outcome, len(requires)

    def _vacuous(self, party: Party, clause: ir.Clause, before: tuple[ir.Clause, ...]) -> None:
        types = ", ".join(f"`{port.name}`: {port.type.describe()}" for port in party.inputs)
        message = f"no input satisfies `requires {self._text(clause)}` of `{party.name}`"
        self._result(party.name, clause, "requires", Verdict.FAIL, message,
                     Blame(party.name, Role.MODULE, (party.name,), "its `requires` admits no input"))
        if not self._once("E0601", clause.span):
            return
        notes = [Note(f"given the port types ({types})")]
        notes += [Note("and this earlier `requires`", earlier.span) for earlier in before]
        self.diagnostics.append(Diagnostic(
            "E0601", message, clause.span, help="a `requires` no input keeps makes every contract of the module "
            "vacuous: weaken it, or widen the port's type", notes=tuple(notes),
        ))

    # ------------------------------------------------------------ a >> b

    def pipe(self, spec: ir.Spec, obligation: ir.Implication) -> None:
        premise = _premise_party(spec, obligation.premise_node, {})
        conclusions = _conclusion_parties(spec, obligation.conclusion_node, {})
        if not conclusions:
            return
        tensors = _Tensors()
        first = conclusions[0]
        link = tensors.link(first.inputs, first.name, premise.outputs if premise else (),
                            premise.name if premise else "")
        premises: list[Fact] = []
        if premise is not None:
            inputs = [tensors.add(port.name, port.type, tensors.shape(port.type, premise.name, fill=True) or (),
                                  premise.name, premise.name) for port in premise.inputs]
            ports = _ports(premise.inputs, inputs) + _ports(premise.outputs, link[:len(premise.outputs)])
            premises += _range_facts(premise.inputs, inputs)
            premises += [Fact(c.expr, ports) for c in premise.clauses("requires")]
            premises += _range_facts(premise.outputs[:len(link)], link[:len(premise.outputs)])
            premises += [Fact(c.expr, ports) for c in premise.clauses("ensures")]
        else:
            premises += _range_facts(_voted_ports(spec, obligation.premise_node), link[:1])
        left = premise.name if premise is not None else _node_name(obligation.premise_node)
        for party in conclusions:
            for goal in self._input_goals(party, link):
                outcome = self._answer(tensors.query(premises, goal.fact))
                if premise is None and outcome.answer is Answer.REFUTED:
                    outcome = _relaxed(outcome, left)
                self._pipe_outcome(obligation, left, party.name, goal, outcome, _renamings(premise, party))

    def _input_goals(self, party: Party, link: list[int]) -> list[Goal]:
        """What a part needs of the tensors `link` it reads: its input types' value ranges and its requires."""
        ports = _ports(party.inputs, link)
        goals = [
            Goal(f"input type `{port.name}: {port.type.describe()}`", f"type of {port.name}", port.span,
                 Fact(None, tensor=position, value_range=port.type.value_range))
            for port, position in zip(party.inputs, link, strict=True) if port.type.value_range is not None
        ]
        return goals + [Goal(f"`requires {self._text(c)}`", c.name, c.span, Fact(c.expr, ports))
                        for c in party.clauses("requires")]

    def _pipe_outcome(self, obligation: ir.Implication, left: str, right: str, goal: Goal, outcome: Outcome,
                      renamings: tuple[Note, ...]) -> None:
        owner = obligation.composition or f"{left} >> {right}"

        def misfit() -> Misfit:
            return Misfit(
                "E0602",
                f"`{left} >> {right}`: the parts do not fit: "
                + _counter(outcome, f"`{left}`'s ensures", f"`{right}`'s {goal.text}"),
                Blame(owner, Role.COMPOSITION, (owner, right), f"`{left}` promises too little for `{right}`"),
                (Note(f"`{right}` requires this", goal.span), *renamings),
                f"strengthen the ensures of `{left}`, weaken the requires of `{right}`, or put a stage between "
                "them that establishes it",
            )

        self._settle(owner, goal, outcome, obligation.span, "requires",
                     f"`{left}`'s ensures imply `{right}`'s {goal.text}", misfit)

    def _settle(self, owner: str, goal: Goal, outcome: Outcome, span: Span, kind: str, question: str,
                misfit: Callable[[], Misfit]) -> None:
        """Record the answer to whether `goal` holds: a pass, an unknown (W0601), or the misfit the counter-model
        shows, reported once at `span`."""
        if outcome.answer is Answer.PROVED:
            self._goal_result(owner, goal, Verdict.PASS, question, None, kind)
            return
        if outcome.answer is Answer.UNKNOWN:
            self._unknown(owner, None, kind, f"whether {question}", outcome, span, goal)
            return
        found = misfit()
        self._goal_result(owner, goal, Verdict.FAIL, found.message, found.blame, kind)
        if self._once(found.code, span, goal.span):
            self.diagnostics.append(Diagnostic(found.code, found.message, span, notes=found.notes, help=found.help))

    # ------------------------------------------------------------ a composition against its own interface

    def interface(self, spec: ir.Spec, obligation: ir.Implication) -> None:
        """A composition keeps the interface it declares: its requires and input types give its first parts
        what they need (W0602), its parts' contracts establish its ensures and output types (W0603), and its
        parts' dims its declared shapes (W0604). Warnings, not errors: such a composition runs, and its
        monitor blames it (LANGUAGE.md section 7), which is what a spec may bind it to watch."""
        composition = spec.component(obligation.composition)
        if not isinstance(composition, ir.Composition):
            return
        self._entry(spec, composition, obligation.span)
        self._exit(spec, composition, obligation.span)
        self._interface_dims(spec, composition, obligation.span)

    def _entry(self, spec: ir.Spec, composition: ir.Composition, span: Span) -> None:
        """Every input the composition admits (its input types and requires) keeps the input types and
        requires of each part that reads it: a pipeline's first stage, every part of a vote."""
        conclusions = _conclusion_parties(spec, composition.expr, {})
        if not conclusions:
            return
        whole = Party(composition.name, composition)
        tensors = _Tensors()
        link = tensors.link(conclusions[0].inputs, conclusions[0].name, whole.inputs, whole.name)
        premises = _range_facts(whole.inputs, link)
        premises += [Fact(c.expr, _ports(whole.inputs, link)) for c in whole.clauses("requires")]
        for party in conclusions:
            renamings = tuple(Note(f"`{port.name}` is `{whole.name}`'s input `{source.name}`")
                              for source, port in zip(whole.inputs, party.inputs, strict=False)
                              if source.name != port.name)
            for goal in self._input_goals(party, link):
                outcome = self._answer(tensors.query(premises, goal.fact))
                self._entry_outcome(whole, party.name, goal, outcome, span, renamings)

    def _entry_outcome(self, whole: Party, part: str, goal: Goal, outcome: Outcome, span: Span,
                       renamings: tuple[Note, ...]) -> None:
        owner = whole.name

        def misfit() -> Misfit:
            return Misfit(
                "W0602",
                f"`{owner}` admits inputs its part `{part}` rejects: "
                + _counter(outcome, f"`{owner}`'s requires and input types", f"`{part}`'s {goal.text}"),
                Blame(owner, Role.COMPOSITION, (owner, part), f"its interface admits inputs `{part}` rejects"),
                (Note(f"`{part}` requires this", goal.span), *renamings),
                f"weaken the requires of `{part}`, or strengthen the requires or input types of `{owner}` "
                f"(its interface {whole.component.interface.name}); as it stands the monitor blames `{owner}` "
                "for such inputs",
            )

        self._settle(owner, goal, outcome, span, "requires",
                     f"`{owner}`'s requires and input types imply `{part}`'s {goal.text}", misfit)

    def _exit(self, spec: ir.Spec, composition: ir.Composition, span: Span) -> None:
        """Whenever the composition's requires and every part's contract hold, its output types and ensures
        (its interface's and its own block's) hold too. The whole chain of stages is encoded, so that an
        ensures relating the output to the composition's input (`z == x`) can be proved. A vote's output is
        not any one part's output: only its value range is known, so a chain through a vote proves or skips,
        never refutes."""
        whole = Party(composition.name, composition)
        for clause in whole.outside("ensures"):
            self._result(whole.name, clause, "ensures", Verdict.SKIP,
                         f"whether `{whole.name}`'s parts establish it is not asked: {OUTSIDE} (`mdl test` "
                         "checks it)", None)
        ensures = whole.clauses("ensures")
        if not ensures and all(port.type.value_range is None for port in whole.outputs):
            return
        stages = _chain(spec, composition.expr, {})
        if not stages:
            return
        tensors = _Tensors()
        keys = [f"{index}:{stage.name}" for index, stage in enumerate(stages)]
        head = tensors.link(whole.inputs, whole.name, stages[0].inputs, keys[0])
        premises: list[Fact] = []
        inputs = head
        for index, stage in enumerate(stages):
            if index + 1 < len(stages):
                following = stages[index + 1]
                outputs = tensors.link(following.inputs, keys[index + 1], stage.outputs, keys[index], following.name)
            else:
                outputs = tensors.link(whole.outputs, whole.name, stage.outputs, keys[index], whole.name)
            premises += _stage_facts(stage, inputs, outputs)
            inputs = outputs
        ports = _ports(whole.inputs, head) + _ports(whole.outputs, inputs)
        premises += _range_facts(whole.inputs, head) + [Fact(c.expr, ports) for c in whole.clauses("requires")]
        goals = [
            Goal(f"output type `{port.name}: {port.type.describe()}`", f"type of {port.name}", port.span,
                 Fact(None, tensor=position, value_range=port.type.value_range))
            for port, position in zip(whole.outputs, inputs, strict=True) if port.type.value_range is not None
        ]
        goals += [Goal(f"`ensures {self._text(c)}`", c.name, c.span, Fact(c.expr, ports)) for c in ensures]
        exact = all(stage.party is not None for stage in stages)
        for goal in goals:
            outcome = self._answer(tensors.query(premises, goal.fact))
            self._exit_outcome(composition, stages[-1].name, goal, outcome, span, exact)

    def _exit_outcome(self, composition: ir.Composition, last: str, goal: Goal, outcome: Outcome, span: Span,
                      exact: bool) -> None:
        owner, parts = composition.name, _node_name(composition.expr)
        if outcome.answer is not Answer.PROVED and not exact:
            self._goal_result(owner, goal, Verdict.SKIP, f"whether `{parts}` establishes `{owner}`'s {goal.text} "
                              "is left to the monitor and `mdl test`: a vote's output is not any one part's "
                              "output, and its value range alone does not settle it", None, "ensures")
            return

        def misfit() -> Misfit:
            return Misfit(
                "W0603",
                f"`{owner}`'s parts do not establish what it promises: "
                + _counter(outcome, f"the contracts of `{parts}`", f"`{owner}`'s {goal.text}"),
                Blame(owner, Role.COMPOSITION, (owner,), "its parts' contracts are too weak to establish it"),
                (Note(f"`{owner}` promises this", goal.span),),
                f"strengthen the ensures of `{last}` (its last part), weaken what `{owner}` promises, or add a "
                f"stage that establishes it; as it stands the monitor blames `{owner}` whenever its parts' "
                "output breaks it",
            )

        self._settle(owner, goal, outcome, span, "ensures",
                     f"the contracts of `{parts}` establish `{owner}`'s {goal.text}", misfit)

    def _interface_dims(self, spec: ir.Spec, composition: ir.Composition, span: Span) -> None:
        """The dims of the declared interface against its parts'. Unification binds a dim of either side to
        the other's; here the interface's input dims are the caller's to choose (for every size it admits,
        some sizes of the parts' dims must fit every connection), and its output dims are a promise (for
        every sizes that fit, the parts' output has the declared shape; a dim only the interface's outputs
        name may take any size). A dim a part's output alone names (`T` of `[B, S] -> [B, T]`) is the
        part's to choose, so it establishes nothing about the declared shape."""
        sides = _CompositionDims(spec).sides(composition)
        if sides is None:
            return
        internal, entry, exit_ = sides
        given = internal + entry
        timeout = self.prover.settings.timeout_ms
        if solve_dims(_pairs(given + exit_), timeout).answer is Answer.REFUTED:
            return  # no sizes at all: the front end's E0511 or E0605 of `dims` says so
        parts_dims = frozenset(name for equation in given + exit_ for name in equation.names if "#" in name)
        # A side whose equations name no symbolic dim was compared by the front end already (E0510).
        if any(equation.names for equation in entry):
            outcome, _ = dims_follow([], _pairs(given), parts_dims, timeout)
            self._interface_dims_outcome(composition, "input", outcome, entry, None, parts_dims, span)
        if any(equation.names for equation in exit_):
            bound = {name for equation in given for name in equation.names}
            promised = frozenset(name for equation in exit_ for name in equation.names
                                 if "#" not in name and name not in bound)
            outcome, broken = dims_follow(_pairs(given), _pairs(exit_), promised, timeout)
            self._interface_dims_outcome(composition, "output", outcome, exit_,
                                         exit_[broken] if broken is not None else None, parts_dims, span)

    def _interface_dims_outcome(self, composition: ir.Composition, side: str, outcome: Outcome,
                                equations: list[DimEquation], broken: DimEquation | None, parts_dims: frozenset[str],
                                span: Span) -> None:
        name, parts = composition.name, _node_name(composition.expr)
        clause = f"{side} dims"
        ports = composition.interface.inputs if side == "input" else composition.interface.outputs
        declared = Note(f"{composition.interface.name} declares the {side} shapes here", ports[0].span)
        if outcome.answer is Answer.PROVED:
            self.results.append(Result(name, clause, "dims", "static", "z3", Verdict.PASS, span,
                                       f"the dims of `{parts}` fit the {side} shapes of {composition.interface.name}"))
            return
        shapes = ", ".join(f"`{equation.shown}` ({equation.origin})" for equation in equations)
        if outcome.answer is Answer.UNKNOWN:
            message = f"cannot decide whether the dims of `{parts}` fit the {side} shapes of `{name}`'s interface " \
                      f"({shapes}): {outcome.reason}"
            self.results.append(Result(name, clause, "dims", "static", "z3", Verdict.UNKNOWN, span, message))
            if self._once("W0601", span, declared.span):
                self.diagnostics.append(Diagnostic(
                    "W0601", message, span, notes=(declared,),
                    help="Z3 decides linear equations between dims; give the dims a constant size or a linear "
                    "relation, or let the monitor check the shapes at run time",
                ))
            return
        # The interface's dims, and those of the equation the sizes break: the other parts' dims are noise.
        hidden = {part_dims(name) for name in parts_dims} - {part_dims(name) for name in broken.names} \
            if broken is not None else {part_dims(name) for name in parts_dims}
        sizes = render_model(tuple((dim, size) for dim, size in outcome.model if dim not in hidden))
        if side == "input":
            message = f"`{name}` admits input shapes its parts reject: with {sizes}, which its interface " \
                      f"admits, no sizes of the dims of `{parts}` fit both its inputs and its connections"
            fix = "give the interface's inputs the shape its first part reads, or change that part"
        else:
            breaks = f"`{broken.shown}` ({broken.origin})" if broken is not None else shapes
            message = f"`{name}`'s parts do not always produce its declared output shape: with {sizes}, which " \
                      f"the shapes of `{parts}` allow, {breaks} fails"
            fix = "give the interface's outputs the shape its last part produces (a dim that only the " \
                  "interface's outputs name may take any size), or change that part"
        blame = Blame(name, Role.COMPOSITION, (name,), f"its parts do not produce the {side} shapes it declares")
        self.results.append(Result(name, clause, "dims", "static", "z3", Verdict.FAIL, span, message, blame))
        if self._once("W0604", span, declared.span):
            self.diagnostics.append(Diagnostic(
                "W0604", message, span, notes=(declared,),
                help=f"{fix}; as it stands the monitor blames `{name}` for such shapes",
            ))

    # ------------------------------------------------------------ subtyping

    def subtyping(self, party: Party) -> None:
        """A module's own `requires` are added to its interface's: they must not demand more than those do.

        (Its own `ensures` are added too, so they only strengthen: nothing to prove there.)"""
        own = party.clauses("requires", own_only=True)
        if not own:
            return
        interface = party.component.interface
        tensors = _Tensors()
        positions = [tensors.add(port.name, port.type, tensors.shape(port.type, party.name, fill=True) or (),
                                 party.name) for port in party.inputs]
        ports = _ports(party.inputs, positions)
        premises = _range_facts(party.inputs, positions)
        premises += [Fact(c.expr, ports) for c in interface.clauses
                     if c.kind == "requires" and c.fragment is ir.Fragment.PER_SAMPLE]
        for clause in own:
            goal = Goal(f"`requires {self._text(clause)}`", clause.name, clause.span, Fact(clause.expr, ports))
            outcome = self._answer(tensors.query(premises, goal.fact))
            self._subtype_outcome(party.name, interface.name, goal, outcome, clause.span, "E0603",
                                  f"module `{party.name}` strengthens the `requires` of {interface.name}", "requires")

    def replace(self, spec: ir.Spec, obligation: ir.Implication) -> None:
        """`replace(c, old, new)`: old's requires imply new's; new's ensures, where both requires hold, imply old's.

        The two have the same ports (E0509 otherwise), but their value ranges may differ: new's input types are
        requires (old's input types and requires must imply them), and old's output types are ensures (new's
        must imply them). (`finite` is kept as a `finite(...)` clause is: proofs hold over the reals.)"""
        new = _premise_party(spec, obligation.premise_node, {})
        old = _premise_party(spec, obligation.conclusion_node, {})
        if new is None or old is None:
            return
        tensors = _Tensors()
        positions = [tensors.add(port.name, port.type, tensors.shape(port.type, old.name, fill=True) or (),
                                 old.name) for port in old.component.interface.ports]
        old_ports = _ports(old.component.interface.ports, positions)
        new_ports = _ports(new.component.interface.ports, positions)
        inputs = [position for port, position in zip(old.component.interface.ports, positions, strict=True)
                  if port.direction == "input"]
        outputs = [position for port, position in zip(old.component.interface.ports, positions, strict=True)
                   if port.direction == "output"]
        premises = _range_facts(old.inputs, inputs) + [Fact(c.expr, old_ports) for c in old.clauses("requires")]
        what = f"`{new.name}` is not a behavioural subtype of `{old.name}`"
        goals = _range_goals("input", new.inputs, old.inputs, inputs)
        goals += [Goal(f"`requires {self._text(c)}`", c.name, c.span, Fact(c.expr, new_ports))
                  for c in new.clauses("requires")]
        for goal in goals:
            outcome = self._answer(tensors.query(premises, goal.fact))
            self._subtype_outcome(new.name, old.name, goal, outcome, obligation.span, "E0604",
                                  f"{what}: it requires more", "requires")
        premises += _range_facts(new.inputs, inputs) + [Fact(c.expr, new_ports) for c in new.clauses("requires")]
        premises += _range_facts(new.outputs, outputs) + [Fact(c.expr, new_ports) for c in new.clauses("ensures")]
        goals = _range_goals("output", old.outputs, new.outputs, outputs)
        goals += [Goal(f"`ensures {self._text(clause)}`", clause.name, clause.span, Fact(clause.expr, old_ports))
                  for clause in old.clauses("ensures")]
        for goal in goals:
            outcome = self._answer(tensors.query(premises, goal.fact))
            self._subtype_outcome(new.name, old.name, goal, outcome, obligation.span, "E0604",
                                  f"{what}: it ensures less", "ensures")
        for clause in old.outside("ensures"):
            self._outside_ensures(new, old, clause, obligation.span)
        for bound in old.component.all_costs:
            self._cost_bound(new, old, bound, obligation.span)

    def _outside_ensures(self, new: Party, old: Party, clause: ir.Clause, span: Span) -> None:
        """A statistical or relational `ensures` of `old`: kept when `new` promises it or a stronger form of it
        (a higher threshold or confidence on the same data, a wider ball); else unknown, never assumed."""
        text = f"`ensures {self._text(clause)}`"
        promised = (mine for mine in new.component.all_clauses if mine.kind == "ensures")
        keeping = next((mine for mine in promised if _implies(mine, clause)), None)
        if keeping is not None:
            self._result(new.name, clause, "ensures", Verdict.PASS, f"`{new.name}` keeps {text} of `{old.name}`: it "
                         f"promises `{self._text(keeping)}`", None)
            return
        message = f"cannot decide whether `{new.name}` keeps {text} of `{old.name}`: {OUTSIDE}, and `{new.name}` " \
                  "promises no clause that implies it as written"
        self._result(new.name, clause, "ensures", Verdict.UNKNOWN, message, None)
        if self._once("W0601", span, clause.span):
            self.diagnostics.append(Diagnostic(
                "W0601", message, span, notes=(Note(f"`{old.name}` promises this", clause.span),),
                help=f"give `{new.name}` the same clause (or one with a higher threshold, a higher confidence or a "
                "wider ball) to settle it here; `mdl test` checks each module's own clauses",
            ))

    def _cost_bound(self, new: Party, old: Party, bound: ir.CostClause, span: Span) -> None:
        """A cost bound of `old` is kept when `new` bounds the same measure at least as tightly."""
        text = f"`{_cost_text(bound)}`"
        same = [mine for mine in new.component.all_costs if mine.metric == bound.metric]
        keeping = [mine for mine in same if mine.batch == bound.batch]
        if keeping and _tighter(keeping[0], bound):
            self._cost_result(new.name, bound, Verdict.PASS, f"`{new.name}` keeps {text} of `{old.name}`: it "
                              f"promises `{_cost_text(keeping[0])}`", None)
            return
        if same and not keeping:
            message = f"cannot decide whether `{new.name}` keeps {text} of `{old.name}`: it bounds " \
                      f"{bound.metric} only at another batch (`{_cost_text(same[0])}`)"
            self._cost_result(new.name, bound, Verdict.UNKNOWN, message, None)
            if self._once("W0601", span, bound.span):
                self.diagnostics.append(Diagnostic("W0601", message, span, notes=(Note("this bound", bound.span),)))
            return
        promised = f"promises only `{_cost_text(keeping[0])}`" if keeping else f"promises no {bound.metric} bound"
        message = f"`{new.name}` is not a behavioural subtype of `{old.name}`: it {promised}, which does not keep " \
                  f"{text}"
        blame = Blame(new.name, Role.MODULE, (new.name,),
                      "a module may only weaken `requires` and strengthen `ensures`")
        self._cost_result(new.name, bound, Verdict.FAIL, message, blame)
        self.diagnostics.append(Diagnostic(
            "E0604", message, span, notes=(Note(f"`{old.name}` promises this", bound.span),),
            help="a behavioural subtype accepts every input its parent accepts and promises at least as much",
        ))

    def _cost_result(self, component: str, bound: ir.CostClause, verdict: Verdict, message: str,
                     blame: Blame | None) -> None:
        self.results.append(Result(component, bound.name, "ensures", ir.Fragment.COST.value, "static", verdict,
                                   bound.span, message, blame))

    def _subtype_outcome(self, module: str, parent: str, goal: Goal, outcome: Outcome, span: Span, code: str,
                         headline: str, kind: str) -> None:
        if outcome.answer is Answer.PROVED:
            self._goal_result(module, goal, Verdict.PASS, f"`{module}` keeps {goal.text} of `{parent}`", None,
                              kind)
            return
        if outcome.answer is Answer.UNKNOWN:
            self._unknown(module, None, kind, f"whether `{module}` is a behavioural subtype of `{parent}` "
                          f"({goal.text})", outcome, span, goal)
            return
        model = render_model(outcome.model)
        satisfies, breaks = verb(outcome.model, "satisfies", "satisfy"), verb(outcome.model, "breaks", "break")
        if kind == "requires":
            detail = f"{model} {satisfies} `{parent}`'s requires but {breaks} {goal.text}"
        else:
            detail = f"{model} {satisfies} `{module}`'s contract but {breaks} `{parent}`'s {goal.text}"
        message = f"{headline}: {detail}"
        blame = Blame(module, Role.MODULE, (module,), "a module may only weaken `requires` and strengthen `ensures`")
        self._goal_result(module, goal, Verdict.FAIL, message, blame, kind)
        self.diagnostics.append(Diagnostic(
            code, message, span, notes=(Note("this clause", goal.span),) if goal.span != span else (),
            help="a behavioural subtype accepts every input its parent accepts and promises at least as much",
        ))

    # ------------------------------------------------------------ dims

    def dims(self, spec: ir.Spec, composition: str, undecided: list[ir.Implication]) -> None:
        """The dims of a composition whose equations the front end left undecided, solved over the positive
        integers: every equation the composition makes (re-derived, see `_CompositionDims`), so that a binding
        the front end made after it gave up still counts. The equations that leave no solution are an error."""
        component = spec.component(composition)
        equations = _CompositionDims(spec).equations_of(component) if isinstance(component, ir.Composition) \
            else None
        if not equations:
            equations = [DimEquation(*obligation.equation, obligation.span, "left undecided")  # type: ignore[misc]
                         for obligation in undecided]
        pairs = [(equation.left, equation.right) for equation in equations]
        timeout = self.prover.settings.timeout_ms
        outcome = solve_dims(pairs, timeout)
        last = undecided[-1]
        if outcome.answer is Answer.UNKNOWN:
            self._dims_result(composition, last.premise, last.span, Verdict.UNKNOWN,
                              f"cannot decide whether {last.premise} has a solution: {outcome.reason}")
            return
        if outcome.answer is Answer.PROVED:
            self._dims_result(composition, last.premise, last.span, Verdict.PASS,
                              f"the dims solve: {render_model(outcome.model)}")
            return
        conflict = [equations[position] for position in conflicting_dims(pairs, timeout)] or equations
        failing, others = conflict[-1], conflict[:-1]
        message = f"`{failing.text}` ({failing.origin}) has no solution in positive integers"
        if others:
            message += " together with " + ", ".join(f"`{other.text}` ({other.origin})" for other in others)
        self._dims_result(composition, failing.text, failing.span, Verdict.FAIL, message)
        self.diagnostics.append(Diagnostic(
            "E0605", message, failing.span,
            notes=tuple(Note(f"`{other.text}` is required {'here' if other.span != failing.span else 'too'}",
                             other.span if other.span != failing.span else None) for other in others),
            help="every symbolic dim is a positive integer: change a shape so that the sizes can agree",
        ))

    def _dims_result(self, composition: str, equation: str, span: Span, verdict: Verdict, message: str) -> None:
        self.results.append(Result(composition, f"dims {equation}", "dims", "static", "z3", verdict, span, message))
        if verdict is Verdict.UNKNOWN:
            self.diagnostics.append(Diagnostic("W0601", message, span))

    # ------------------------------------------------------------ results

    def _result(self, component: str, clause: ir.Clause, kind: str, verdict: Verdict, message: str,
                blame: Blame | None) -> None:
        self.results.append(Result(component, clause.name, kind, clause.fragment.value, "z3", verdict, clause.span,
                                   message, blame))

    def _goal_result(self, component: str, goal: Goal, verdict: Verdict, message: str, blame: Blame | None,
                     kind: str = "requires") -> None:
        self.results.append(Result(component, goal.name, kind, ir.Fragment.PER_SAMPLE.value, "z3", verdict,
                                   goal.span, message, blame))

    def _unknown(self, component: str, clause: ir.Clause | None, kind: str, question: str, outcome: Outcome,
                 span: Span, goal: Goal | None = None) -> None:
        message = f"cannot decide {question}: {outcome.reason}"
        if goal is not None:
            self._goal_result(component, goal, Verdict.UNKNOWN, message, None, kind)
        elif clause is not None:
            self._result(component, clause, kind, Verdict.UNKNOWN, message, None)
        if outcome.free:
            names = ", ".join(f"`{name}`" for name in outcome.free)
            advice = f"give {names} a size (a constant, or a dim a connected port binds), or state the clause so " \
                   "that it holds for every size (`all(x <= c)`, `max`, `min` rather than `sum`)"
        else:
            advice = "Z3 proves linear arithmetic over the reals; rewrite the clause in that fragment, raise the " \
                   "timeout, or let `mdl test` check it"
        if self._once("W0601", span, goal.span if goal is not None else None):
            self.diagnostics.append(Diagnostic("W0601", message, span, help=advice))


# ---------------------------------------------------------------- static comparison of clauses Z3 leaves out


def _implies(mine: ir.Clause, theirs: ir.Clause) -> bool:
    """Whether clause `mine` promises at least what `theirs` does, as written: the same clause, a statistical
    bound with a threshold and confidence at least as high on the same data, or a robustness ball at least
    as wide. (Nothing else is compared: a clause Z3 leaves out is otherwise unknown.)"""
    if mine.data != theirs.data or mine.confidence < theirs.confidence:
        return False
    return mine.expr == theirs.expr or _higher_threshold(mine.expr, theirs.expr) or _wider_ball(mine.expr, theirs.expr)


def _lower_bound(expr: ir.Expr) -> tuple[ir.Expr, str, float] | None:
    """`STAT >= p` (or `>`) as (STAT, op, p)."""
    if isinstance(expr, ir.Compare) and len(expr.ops) == 1 and expr.ops[0] in (">=", ">") \
            and expr.tolerance is None and isinstance(expr.operands[1], ir.Const):
        return expr.operands[0], expr.ops[0], float(expr.operands[1].value)
    return None


def _higher_threshold(mine: ir.Expr, theirs: ir.Expr) -> bool:
    mine_bound, their_bound = _lower_bound(mine), _lower_bound(theirs)
    if mine_bound is None or their_bound is None or mine_bound[0] != their_bound[0]:
        return False
    (_, my_op, mine_p), (_, their_op, their_p) = mine_bound, their_bound
    return mine_p > their_p or (mine_p == their_p and (my_op == ">" or their_op == ">="))


def _wider_ball(mine: ir.Expr, theirs: ir.Expr) -> bool:
    if not (isinstance(mine, ir.BallQuantifier) and isinstance(theirs, ir.BallQuantifier)):
        return False
    if (mine.var, mine.center, mine.norm, mine.body) != (theirs.var, theirs.center, theirs.norm, theirs.body):
        return False
    if not (isinstance(mine.radius, ir.Const) and isinstance(theirs.radius, ir.Const)):
        return False
    return float(mine.radius.value) >= float(theirs.radius.value)


def _tighter(mine: ir.CostClause, theirs: ir.CostClause) -> bool:
    """`mine` (`<=` or `<` a limit) implies `theirs` for the same measure."""
    if theirs.op == "<" and mine.op != "<":
        return mine.limit < theirs.limit
    return mine.limit <= theirs.limit


def _cost_text(bound: ir.CostClause) -> str:
    limit = f"{bound.limit:g}"
    if bound.metric == "flops":
        return f"flops {bound.op} {limit} per sample"
    if bound.metric == "latency":
        return f"latency {bound.op} {limit} ms at batch {bound.batch}"
    return f"{bound.metric} {bound.op} {limit}"


# ---------------------------------------------------------------- the parts of a composition


def _resolve(spec: ir.Spec, name: str, replaced: dict[str, str]) -> Party | None:
    name = replaced.get(name, name)
    component = spec.component(name)
    return Party(name, component) if component is not None else None


def _premise_party(spec: ir.Spec, node: ir.CompNode | None, replaced: dict[str, str]) -> Party | None:
    """Whose ensures describe what a part produces: the part itself, or the last stage of a pipeline.
    A vote promises nothing per sample of its own here (None: no premise, which is only weaker)."""
    match node:
        case ir.PartRef(name=name):
            return _resolve(spec, name, replaced)
        case ir.Pipeline(stages=stages):
            return _premise_party(spec, stages[-1], replaced)
        case ir.ReplaceNode(base=base, old=old, new=new):
            return _premise_party(spec, base, {**replaced, old: new})
    return None


def _voted_ports(spec: ir.Spec, node: ir.CompNode | None) -> tuple[ir.Port, ...]:
    """What a vote's output keeps of its own: its parts' output type, whose range they share (E0507) and
    the vote stays in (it lowers to the range's bottom). Its parts' ensures are about their own labels."""
    if not isinstance(node, ir.VoteNode) or not node.parts:
        return ()
    first = _premise_party(spec, node.parts[0], {})
    return first.outputs[:1] if first is not None else ()


def _conclusion_parties(spec: ir.Spec, node: ir.CompNode | None, replaced: dict[str, str]) -> list[Party]:
    """Whose requires a part's input must keep: the part, the first stage of a pipeline, every part of a vote."""
    match node:
        case ir.PartRef(name=name):
            party = _resolve(spec, name, replaced)
            return [party] if party is not None else []
        case ir.Pipeline(stages=stages):
            return _conclusion_parties(spec, stages[0], replaced)
        case ir.VoteNode(parts=parts):
            return [party for part in parts for party in _conclusion_parties(spec, part, replaced)]
        case ir.ReplaceNode(base=base, old=old, new=new):
            return _conclusion_parties(spec, base, {**replaced, old: new})
    return []


@dataclass(frozen=True)
class _Stage:
    """One stage of a composition as its exit check sees it: a part, whose contract is all that is known
    of it, or (`party` None) a vote, of whose output only the value range its parts share is known."""

    name: str
    inputs: tuple[ir.Port, ...]
    outputs: tuple[ir.Port, ...]
    party: Party | None = None


def _chain(spec: ir.Spec, node: ir.CompNode | None, replaced: dict[str, str]) -> list[_Stage] | None:
    """The stages a composed expression runs, in order (nested pipelines flattened, a replaced part by its
    replacement, a vote as one stage), or None when a part cannot be found."""
    match node:
        case ir.PartRef(name=name):
            party = _resolve(spec, name, replaced)
            return [_Stage(party.name, party.inputs, party.outputs, party)] if party is not None else None
        case ir.Pipeline(stages=stages):
            flat: list[_Stage] = []
            for stage in stages:
                chain = _chain(spec, stage, replaced)
                if not chain:
                    return None
                flat += chain
            return flat
        case ir.ReplaceNode(base=base, old=old, new=new):
            return _chain(spec, base, {**replaced, old: new})
        case ir.VoteNode(parts=parts) if parts:
            first = _chain(spec, parts[0], replaced)
            return [_Stage(_node_name(node), first[0].inputs, first[-1].outputs[:1])] if first else None
    return None


def _stage_facts(stage: _Stage, inputs: list[int], outputs: list[int]) -> list[Fact]:
    """What holds of a stage's tensors when its contract does: its port types' ranges, requires and ensures;
    of a vote's, its output's value range (it stays in its parts' shared range)."""
    if stage.party is None:
        return _range_facts(stage.outputs, outputs)
    ports = _ports(stage.inputs, inputs) + _ports(stage.outputs, outputs)
    return (_range_facts(stage.inputs, inputs) + [Fact(c.expr, ports) for c in stage.party.clauses("requires")]
            + _range_facts(stage.outputs, outputs) + [Fact(c.expr, ports) for c in stage.party.clauses("ensures")])


def _renamings(premise: Party | None, party: Party) -> tuple[Note, ...]:
    """`x` is `a`'s output `z`: counter-models name connected ports as the requiring part does."""
    if premise is None:
        return ()
    return tuple(
        Note(f"`{port.name}` is `{premise.name}`'s output `{source.name}`")
        for source, port in zip(premise.outputs, party.inputs, strict=False) if source.name != port.name
    )


def _node_name(node: ir.CompNode | None) -> str:
    match node:
        case ir.PartRef(name=name):
            return name
        case ir.VoteNode(parts=parts):
            return f"vote({', '.join(_node_name(part) for part in parts)})"
        case ir.Pipeline(stages=stages):
            return " >> ".join(_node_name(stage) for stage in stages)
        case ir.ReplaceNode(base=base, old=old, new=new):
            return f"replace({_node_name(base)}, {old}, {new})"
    return "?"


# ---------------------------------------------------------------- the dims of a composition


@dataclass(frozen=True)
class DimEquation:
    """Two dims a composition makes equal, and where: a `>>` connection, a vote's inputs, an interface port."""

    left: ir.Dim
    right: ir.Dim
    span: Span
    origin: str

    @property
    def text(self) -> str:
        return plain_dims(f"{self.left} == {self.right}")

    @property
    def shown(self) -> str:
        """The equation with each part's dims named by their part (`a.T == S`)."""
        return part_dims(f"{self.left} == {self.right}")

    @property
    def names(self) -> set[str]:
        """The symbolic dims it relates, as renamed apart (`a#1:T`)."""
        return _dim_names(self.left) | _dim_names(self.right)


def _dim_names(dim: ir.Dim) -> set[str]:
    match dim:
        case ir.DimVar(name=name):
            return {name}
        case ir.DimBinary(left=left, right=right):
            return _dim_names(left) | _dim_names(right)
    return set()


def _pairs(equations: list[DimEquation]) -> list[tuple[ir.Dim, ir.Dim]]:
    return [(equation.left, equation.right) for equation in equations]


class _CompositionDims:
    """The dim equations of one composition, re-derived as the front end makes them: each use of a part
    gets its own copy of its free dims (`sq#2:S`), and every connection, vote input and port of the
    declared interface equates the dims it lines up. The front end binds dims as it goes and hands Z3 only
    the equations it gave up on; those alone miss a later binding (`16 == S * S`, then the interface's
    `S == 5`)."""

    def __init__(self, spec: ir.Spec) -> None:
        self.spec = spec
        self.uses = 0
        self.equations: list[DimEquation] = []

    def equations_of(self, composition: ir.Composition) -> list[DimEquation]:
        sides = self.sides(composition)
        return [] if sides is None else [equation for side in sides for equation in side]

    def sides(self, composition: ir.Composition) -> tuple[list[DimEquation], ...] | None:
        """The equations the composition makes inside (its connections, its votes' inputs), then those its
        interface's input ports make, then those its output ports make."""
        signature = self._signature(composition.expr)
        if signature is None:
            return None
        sides = [list(self.equations)]
        interface = composition.interface
        for kind, mine, declared in (("input", signature[0], interface.inputs),
                                     ("output", signature[1], interface.outputs)):
            before = len(self.equations)
            for dims, port in zip(mine, declared, strict=False):
                self._equate(dims, port.type.dims, composition.expr.span,
                             f"{kind} `{port.name}` of {interface.name}")
            sides.append(self.equations[before:])
        return tuple(sides)

    def _signature(self, node: ir.CompNode) -> tuple[list[tuple[ir.Dim, ...]], list[tuple[ir.Dim, ...]]] | None:
        """The dims of what a node reads and produces; equations of its inner connections are recorded."""
        match node:
            case ir.PartRef(name=name):
                component = self.spec.component(name)
                if component is None:
                    return None
                self.uses += 1
                prefix = f"{name}#{self.uses}:"
                inputs, outputs = ([tuple(rename_apart(dim, prefix) for dim in port.type.dims) for port in ports]
                                   for ports in (component.interface.inputs, component.interface.outputs))
                return inputs, outputs
            case ir.Pipeline(stages=stages):
                signature = self._signature(stages[0])
                for before, stage in itertools.pairwise(stages):
                    following = self._signature(stage)
                    if signature is None or following is None:
                        return None
                    for output, input_ in zip(signature[1], following[0], strict=False):
                        self._equate(output, input_, before.span.cover(stage.span),
                                     f"`{_node_name(before)} >> {_node_name(stage)}`")
                    signature = (signature[0], following[1])
                return signature
            case ir.VoteNode(parts=parts, labels=labels, span=span):
                signatures = [self._signature(part) for part in parts]
                if any(signature is None for signature in signatures) or not signatures[0][1]:  # type: ignore
                    return None
                first = signatures[0]
                for other in signatures[1:]:
                    for mine, theirs in zip(first[0], other[0], strict=False):  # type: ignore[index]
                        self._equate(mine, theirs, span, "the inputs of the vote")
                scores = first[1][0]  # type: ignore[index]
                return first[0], [(*scores[:-1], ir.DimLabels(labels))]  # type: ignore[index]
            case ir.ReplaceNode(base=base):
                return self._signature(base)  # the new part has the old one's ports (E0509 otherwise)
        return None

    def _equate(self, left: tuple[ir.Dim, ...], right: tuple[ir.Dim, ...], span: Span, origin: str) -> None:
        for a, b in _aligned(left, right):
            if _sized(a) and _sized(b) and not (isinstance(a, ir.DimLabels) and isinstance(b, ir.DimLabels)):
                self.equations.append(DimEquation(a, b, span, origin))


def _aligned(left: tuple[ir.Dim, ...], right: tuple[ir.Dim, ...]) -> list[tuple[ir.Dim, ir.Dim]]:
    """Axes paired as the front end pairs them: `...` absorbs the axes the other side has in its place."""
    def dots(dims: tuple[ir.Dim, ...]) -> int | None:
        return next((i for i, dim in enumerate(dims) if isinstance(dim, ir.DimEllipsis)), None)

    left_dots, right_dots = dots(left), dots(right)
    if left_dots is None and right_dots is None:
        return list(zip(left, right, strict=False)) if len(left) == len(right) else []
    head = min(len(left) if left_dots is None else left_dots, len(right) if right_dots is None else right_dots)
    tail = min(len(left) - (len(left) if left_dots is None else left_dots + 1),
               len(right) - (len(right) if right_dots is None else right_dots + 1))
    return list(zip(left[:head], right[:head], strict=False)) + (
        list(zip(left[-tail:], right[-tail:], strict=False)) if tail else [])


def _sized(dim: ir.Dim) -> bool:
    """A dim with a size to solve for: not `_`, `...`, the batch dim or a label set of unknown size."""
    match dim:
        case ir.DimConst() | ir.DimBinary():
            return True
        case ir.DimVar(batch=batch):
            return not batch
        case ir.DimLabels(labels=labels):
            return not labels.opaque
    return False


def check_specs(specs: list[ir.Spec], sources: SourceMap, settings: Settings | None = None) -> SpecProofs:
    """Every Z3 check of these specs (each spec once); the proofs object holds diagnostics, results, counts."""
    proofs = SpecProofs(sources, settings)
    for spec in specs:
        proofs.check(spec)
    return proofs
