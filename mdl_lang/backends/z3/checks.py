"""The spec proofs of `mdl check`: vacuity, `a >> b`, behavioural subtyping and `replace`, with Z3.

Each check becomes queries over the per-sample clauses and type refinements of
the parts (statistical, relational and cost clauses are outside: they neither
help a proof nor are proved here). A refuted implication is an error with a
counter-model in the spec's terms, blamed as LANGUAGE.md section 7 says: the
composition when `a >> b` does not fit, the module when subtyping fails. An
undecided one is a warning with its reason. Every answer is also a `Result`
(backend `z3`) for `mdl check --format json`.

Shapes: a symbolic dim takes its size from the port it is connected to when it
can; one that nothing binds gets `DEFAULT_DIM_SIZE`, and the proof then holds for
that size (the docs say so).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    render_model,
    solve_dims,
    verb,
)
from mdl_lang.diagnostics import Diagnostic, Note, SourceMap
from mdl_lang.report import Blame, Result, Role, Verdict
from mdl_lang.span import Span

OUTSIDE = "statistical, relational and cost clauses are outside the Z3 spec check (`mdl test` checks them)"


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
    """The tensors of one query: sample shapes fixed, dims bound per party, names kept distinct."""

    def __init__(self) -> None:
        self.vars: list[TensorVar] = []
        self.dims: dict[str, dict[str, int]] = {}

    def add(self, name: str, tensor: ir.TensorType, shape: tuple[int, ...], owner: str = "") -> int:
        """A tensor named `name`, or `owner.name` when that name is taken (`a`'s input `x` in `a >> b`)."""
        taken = {var.name for var in self.vars}
        shown = name if name not in taken else f"{owner}.{name}" if owner else f"{name}#{len(self.vars)}"
        axes = tuple(dim.labels if isinstance(dim, ir.DimLabels) else None for dim in tensor.sample_dims
                     if not isinstance(dim, ir.DimEllipsis))
        self.vars.append(TensorVar(shown, shape, _element(tensor.dtype), axes if len(axes) == len(shape) else ()))
        return len(self.vars) - 1

    def env(self, party: str) -> dict[str, int]:
        return self.dims.setdefault(party, {})

    def shape(self, tensor: ir.TensorType, party: str, fill: bool) -> tuple[int, ...] | None:
        """The sample shape under the party's bound dims; with `fill`, unbound dims get the default size."""
        env = self.env(party)
        shape = []
        for dim in tensor.sample_dims:
            if isinstance(dim, ir.DimEllipsis):
                if not fill:
                    return None
                continue
            size = _size(dim, env, fill)
            if size is None:
                return None
            shape.append(size)
        return tuple(shape)

    def bind(self, tensor: ir.TensorType, shape: tuple[int, ...], party: str) -> None:
        dims = tensor.sample_dims
        if any(isinstance(dim, ir.DimEllipsis) for dim in dims) or len(dims) != len(shape):
            return
        env = self.env(party)
        for dim, size in zip(dims, shape, strict=True):
            if isinstance(dim, ir.DimVar) and dim.name not in env:
                env[dim.name] = size

    def query(self, premises: list[Fact], goal: Fact | None) -> Query:
        return Query(tuple(self.vars), tuple(premises), goal)


def _size(dim: ir.Dim, env: dict[str, int], fill: bool) -> int | None:
    match dim:
        case ir.DimConst(value=value):
            return value
        case ir.DimLabels(labels=labels):
            return None if labels.opaque else len(labels)
        case ir.DimVar(name=name):
            if name not in env and fill:
                env[name] = DEFAULT_DIM_SIZE
            return env.get(name)
        case ir.DimBinary(op=op, left=left, right=right):
            a, b = _size(left, env, fill), _size(right, env, fill)
            if a is None or b is None or (op == "//" and b == 0):
                return None
            return ir.ARITHMETIC[op](a, b)
    return DEFAULT_DIM_SIZE if fill else None


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
            elif obligation.kind == "dims" and obligation.equation is not None:
                equations.setdefault(obligation.composition, []).append(obligation)
        for composition, undecided in equations.items():
            self.dims(composition, undecided)

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
                          f"`{party.name}`", outcome.reason, requires[-1].span)
            return
        self._vacuous(party, requires[emptied - 1], requires[:emptied - 1])

    def _vacuity_answer(self, party: Party, requires: tuple[ir.Clause, ...]) -> tuple[Outcome, int]:
        """Whether some input keeps every `requires`; when none does, how many of them first leave none."""
        tensors = _Tensors()
        positions = [tensors.add(port.name, port.type, tensors.shape(port.type, party.name, fill=True) or ())
                     for port in party.inputs]
        ports = _ports(party.inputs, positions)
        premises = _range_facts(party.inputs, positions)
        outcome = self.prover.answer(tensors.query(premises + [Fact(c.expr, ports) for c in requires], None))
        if outcome.answer is not Answer.REFUTED:
            return outcome, 0
        for count in range(1, len(requires)):
            facts = premises + [Fact(c.expr, ports) for c in requires[:count]]
            if self.prover.answer(tensors.query(facts, None)).answer is Answer.REFUTED:
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
        link = []
        for index, port in enumerate(first.inputs):
            source = premise.outputs[index] if premise and index < len(premise.outputs) else None
            shape = tensors.shape(port.type, first.name, fill=False)
            if shape is None and source is not None:
                shape = tensors.shape(source.type, premise.name, fill=False)  # type: ignore[union-attr]
            if shape is None:
                shape = tensors.shape(port.type, first.name, fill=True) or ()
            tensors.bind(port.type, shape, first.name)
            if source is not None:
                tensors.bind(source.type, shape, premise.name)  # type: ignore[union-attr]
            link.append(tensors.add(port.name, port.type, shape))
        premises: list[Fact] = []
        if premise is not None:
            inputs = [tensors.add(port.name, port.type, tensors.shape(port.type, premise.name, fill=True) or (),
                                  premise.name) for port in premise.inputs]
            ports = _ports(premise.inputs, inputs) + _ports(premise.outputs, link[:len(premise.outputs)])
            premises += _range_facts(premise.inputs, inputs)
            premises += [Fact(c.expr, ports) for c in premise.clauses("requires")]
            premises += _range_facts(premise.outputs[:len(link)], link[:len(premise.outputs)])
            premises += [Fact(c.expr, ports) for c in premise.clauses("ensures")]
        left = premise.name if premise is not None else _node_name(obligation.premise_node)
        for party in conclusions:
            ports = _ports(party.inputs, link)
            goals = [
                Goal(f"input type `{port.name}: {port.type.describe()}`", f"type of {port.name}", port.span,
                     Fact(None, tensor=position, value_range=port.type.value_range))
                for port, position in zip(party.inputs, link, strict=True) if port.type.value_range is not None
            ]
            goals += [Goal(f"`requires {self._text(c)}`", c.name, c.span, Fact(c.expr, ports))
                      for c in party.clauses("requires")]
            for goal in goals:
                outcome = self.prover.answer(tensors.query(premises, goal.fact))
                self._pipe_outcome(obligation, left, party.name, goal, outcome, _renamings(premise, party))

    def _pipe_outcome(self, obligation: ir.Implication, left: str, right: str, goal: Goal, outcome: Outcome,
                      renamings: tuple[Note, ...]) -> None:
        owner = obligation.composition or f"{left} >> {right}"
        if outcome.answer is Answer.PROVED:
            self._goal_result(owner, goal, Verdict.PASS, f"`{left}`'s ensures imply `{right}`'s {goal.text}", None)
            return
        if outcome.answer is Answer.UNKNOWN:
            self._unknown(owner, None, "requires", f"whether `{left}`'s ensures imply `{right}`'s {goal.text}",
                          outcome.reason, obligation.span, goal)
            return
        model = render_model(outcome.model)
        message = f"`{left} >> {right}`: the parts do not fit: {model} " \
                  f"{verb(outcome.model, 'satisfies', 'satisfy')} `{left}`'s ensures but " \
                  f"{verb(outcome.model, 'breaks', 'break')} `{right}`'s {goal.text}"
        blame = Blame(owner, Role.COMPOSITION, (owner, right), f"`{left}` promises too little for `{right}`")
        self._goal_result(owner, goal, Verdict.FAIL, message, blame)
        if self._once("E0602", obligation.span, goal.span):
            self.diagnostics.append(Diagnostic(
                "E0602", message, obligation.span, notes=(Note(f"`{right}` requires this", goal.span), *renamings),
                help=f"strengthen the ensures of `{left}`, weaken the requires of `{right}`, or put a stage between "
                "them that establishes it",
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
        positions = [tensors.add(port.name, port.type, tensors.shape(port.type, party.name, fill=True) or ())
                     for port in party.inputs]
        ports = _ports(party.inputs, positions)
        premises = _range_facts(party.inputs, positions)
        premises += [Fact(c.expr, ports) for c in interface.clauses
                     if c.kind == "requires" and c.fragment is ir.Fragment.PER_SAMPLE]
        for clause in own:
            goal = Goal(f"`requires {self._text(clause)}`", clause.name, clause.span, Fact(clause.expr, ports))
            outcome = self.prover.answer(tensors.query(premises, goal.fact))
            self._subtype_outcome(party.name, interface.name, goal, outcome, clause.span, "E0603",
                                  f"module `{party.name}` strengthens the `requires` of {interface.name}", "requires")

    def replace(self, spec: ir.Spec, obligation: ir.Implication) -> None:
        """`replace(c, old, new)`: old's requires imply new's; new's ensures, where both requires hold, imply old's."""
        new = _premise_party(spec, obligation.premise_node, {})
        old = _premise_party(spec, obligation.conclusion_node, {})
        if new is None or old is None:
            return
        tensors = _Tensors()
        positions = [tensors.add(port.name, port.type, tensors.shape(port.type, old.name, fill=True) or ())
                     for port in old.component.interface.ports]
        old_ports = _ports(old.component.interface.ports, positions)
        new_ports = _ports(new.component.interface.ports, positions)
        inputs = [position for port, position in zip(old.component.interface.ports, positions, strict=True)
                  if port.direction == "input"]
        outputs = [position for port, position in zip(old.component.interface.ports, positions, strict=True)
                   if port.direction == "output"]
        premises = _range_facts(old.inputs, inputs) + [Fact(c.expr, old_ports) for c in old.clauses("requires")]
        what = f"`{new.name}` is not a behavioural subtype of `{old.name}`"
        for clause in new.clauses("requires"):
            goal = Goal(f"`requires {self._text(clause)}`", clause.name, clause.span, Fact(clause.expr, new_ports))
            outcome = self.prover.answer(tensors.query(premises, goal.fact))
            self._subtype_outcome(new.name, old.name, goal, outcome, obligation.span, "E0604",
                                  f"{what}: it requires more", "requires")
        premises += [Fact(c.expr, new_ports) for c in new.clauses("requires")]
        premises += _range_facts(new.outputs, outputs) + [Fact(c.expr, new_ports) for c in new.clauses("ensures")]
        for clause in old.clauses("ensures"):
            goal = Goal(f"`ensures {self._text(clause)}`", clause.name, clause.span, Fact(clause.expr, old_ports))
            outcome = self.prover.answer(tensors.query(premises, goal.fact))
            self._subtype_outcome(new.name, old.name, goal, outcome, obligation.span, "E0604",
                                  f"{what}: it ensures less", "ensures")
        for clause in old.outside("ensures"):
            self._result(new.name, clause, "ensures", Verdict.SKIP, f"`ensures {self._text(clause)}` of "
                         f"`{old.name}`: {OUTSIDE}", None)

    def _subtype_outcome(self, module: str, parent: str, goal: Goal, outcome: Outcome, span: Span, code: str,
                         headline: str, kind: str) -> None:
        if outcome.answer is Answer.PROVED:
            self._goal_result(module, goal, Verdict.PASS, f"`{module}` keeps {goal.text} of `{parent}`", None,
                              kind)
            return
        if outcome.answer is Answer.UNKNOWN:
            self._unknown(module, None, kind, f"whether `{module}` is a behavioural subtype of `{parent}` "
                          f"({goal.text})", outcome.reason, span, goal)
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

    def dims(self, composition: str, equations: list[ir.Implication]) -> None:
        """The dim equations the front end left undecided in one composition, solved together over the
        positive integers; the first one that leaves no solution is an error."""
        outcome = solve_dims([obligation.equation for obligation in equations],  # type: ignore[misc]
                             self.prover.settings.timeout_ms)
        last = equations[-1]
        if outcome.answer is Answer.UNKNOWN:
            self._dims_result(composition, last, Verdict.UNKNOWN, f"cannot decide whether {last.premise} has a "
                              f"solution: {outcome.reason}")
            return
        if outcome.answer is Answer.PROVED:
            self._dims_result(composition, last, Verdict.PASS, f"the dims solve: {render_model(outcome.model)}")
            return
        for count in range(1, len(equations) + 1):
            if solve_dims([o.equation for o in equations[:count]],  # type: ignore[misc]
                          self.prover.settings.timeout_ms).answer is Answer.REFUTED:
                failing = equations[count - 1]
                message = f"`{failing.premise}` has no solution in positive integers"
                if count > 1:
                    message += " together with " + ", ".join(f"`{o.premise}`" for o in equations[:count - 1])
                self._dims_result(composition, failing, Verdict.FAIL, message)
                self.diagnostics.append(Diagnostic(
                    "E0605", message, failing.span,
                    notes=tuple(Note(f"`{o.premise}` is required {'here' if o.span != failing.span else 'too'}",
                                     o.span if o.span != failing.span else None) for o in equations[:count - 1]),
                    help="every symbolic dim is a positive integer: change a shape so that the sizes can agree",
                ))
                return

    def _dims_result(self, composition: str, obligation: ir.Implication, verdict: Verdict, message: str) -> None:
        self.results.append(Result(composition, f"dims {obligation.premise}", "dims", "static", "z3", verdict,
                                   obligation.span, message))
        if verdict is Verdict.UNKNOWN:
            self.diagnostics.append(Diagnostic("W0601", message, obligation.span))

    # ------------------------------------------------------------ results

    def _result(self, component: str, clause: ir.Clause, kind: str, verdict: Verdict, message: str,
                blame: Blame | None) -> None:
        self.results.append(Result(component, clause.name, kind, clause.fragment.value, "z3", verdict, clause.span,
                                   message, blame))

    def _goal_result(self, component: str, goal: Goal, verdict: Verdict, message: str, blame: Blame | None,
                     kind: str = "requires") -> None:
        self.results.append(Result(component, goal.name, kind, ir.Fragment.PER_SAMPLE.value, "z3", verdict,
                                   goal.span, message, blame))

    def _unknown(self, component: str, clause: ir.Clause | None, kind: str, question: str, reason: str, span: Span,
                 goal: Goal | None = None) -> None:
        message = f"cannot decide {question}: {reason}"
        if goal is not None:
            self._goal_result(component, goal, Verdict.UNKNOWN, message, None, kind)
        elif clause is not None:
            self._result(component, clause, kind, Verdict.UNKNOWN, message, None)
        if self._once("W0601", span, goal.span if goal is not None else None):
            self.diagnostics.append(Diagnostic(
                "W0601", message, span,
                help="Z3 proves linear arithmetic over the reals; rewrite the clause in that fragment, raise the "
                "timeout, or let `mdl test` check it",
            ))


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


def check_specs(specs: list[ir.Spec], sources: SourceMap, settings: Settings | None = None) -> SpecProofs:
    """Every Z3 check of these specs (each spec once); the proofs object holds diagnostics, results, counts."""
    proofs = SpecProofs(sources, settings)
    for spec in specs:
        proofs.check(spec)
    return proofs
