"""Compositions: `>>` pipelines, `vote` and `replace`, checked before anything runs.

Each use of a part gets its own copy of the part's free dims (renamed apart),
so `a >> a` binds `S` twice; the batch dim is shared by the whole composition.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mdl_lang import ir
from mdl_lang.diagnostics import Note
from mdl_lang.semantics.components import Components
from mdl_lang.semantics.context import Env, Symbol
from mdl_lang.semantics.shapes import DimSolver, plain, rename_apart
from mdl_lang.span import Span
from mdl_lang.syntax import ast

# The help of a shape mismatch, by the code it is reported under.
UNIFY_HELP = {
    "E0501": "each stage's output must have the shape of the next stage's input: change a shape or put an "
             "adapter stage between them",
    "E0510": "the composition's ports must match its interface's: change the interface or the composed parts",
    "E0506": "the parts of a vote all read the same inputs: give them interfaces with the same input types",
}


@dataclass(frozen=True)
class Signature:
    """What a composed expression reads and produces, with its dims renamed apart."""

    node: ir.CompNode
    inputs: tuple[ir.Port, ...]
    outputs: tuple[ir.Port, ...]
    parts: tuple[str, ...]
    name: str


def _renamed(port: ir.Port, prefix: str) -> ir.Port:
    dims = tuple(rename_apart(dim, prefix) for dim in port.type.dims)
    tensor = ir.TensorType(dims, port.type.dtype, port.type.value_range, port.type.finite, port.type.span)
    return ir.Port(port.name, port.direction, tensor, port.span)


def _dtypes_agree(left: str | None, right: str | None) -> bool:
    if left is None or right is None or left == right:
        return True
    floating = (*ir.FLOAT_DTYPES, ir.ANY_FLOAT)
    return ir.ANY_FLOAT in (left, right) and left in floating and right in floating


class Compositions:
    """Builds and checks every `compose` declaration."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self.declarations = components.declarations
        self.reporter = components.reporter
        self._built: dict[tuple[str, str], ir.Composition | None] = {}
        self._building: set[tuple[str, str]] = set()
        self.obligations: list[ir.Implication] = []

    def composition(self, symbol: Symbol) -> ir.Composition | None:
        key = (symbol.scope.path, symbol.name)
        if key in self._built:
            return self._built[key]
        if key in self._building:
            self.reporter.error(
                "E0115", f"composition `{symbol.name}` contains itself", symbol.span,
                help="a composition cannot be one of its own parts",
            )
            return None
        self._building.add(key)
        try:
            built = _Builder(self, symbol).build()
        finally:
            self._building.discard(key)
        self._built[key] = built
        return built


class _Builder:
    """Checks one composition: resolves its parts, solves its dims, matches its interface."""

    def __init__(self, owner: Compositions, symbol: Symbol) -> None:
        self.owner = owner
        self.symbol = symbol
        self.decl: ast.ComposeDecl = symbol.node  # type: ignore[assignment]
        self.reporter = owner.reporter
        self.solver = DimSolver()
        self.uses = 0

    def build(self) -> ir.Composition | None:
        env = Env(self.symbol.scope)
        interface = self.owner.components.interface_ref(self.decl.interface, env)
        signature = self.expression(self.decl.expr)
        if interface is None or signature is None:
            return None
        signature = self._implements(signature, interface)
        if signature is None:
            return None
        env = Env(self.symbol.scope, {}, {port.name: port for port in interface.ports})
        taken = {clause.name: clause.span for clause in interface.clauses}
        clauses, costs = self.owner.components.clauses_and_costs(
            self.decl.members, env, f"composition {self.symbol.name}", taken=taken,
        )
        self.owner.components.check_data_clauses(interface.clauses + clauses, interface, self.symbol.name)
        # The interface is the composition's own contract: its requires must give its first parts what they
        # need, and its last part must establish its ensures and output shapes. Unification above only
        # binds dims; whether the parts' contracts imply the interface's is for the Z3 backend.
        self.owner.obligations.append(ir.Implication(
            "interface", f"{self.symbol.name} : {interface.name}", "kept by its parts", self.decl.expr.span,
            composition=self.symbol.name,
        ))
        return ir.Composition(
            self.symbol.name, interface, signature.node, clauses, costs, self.symbol.scope.path,
            tuple(dict.fromkeys(signature.parts)), self.decl.span,
        )

    # ------------------------------------------------------------ expressions

    def expression(self, node: ast.CompExpr) -> Signature | None:
        if isinstance(node, ast.CompRef):
            return self.reference(node)
        if isinstance(node, ast.Pipe):
            return self.pipe(node)
        if isinstance(node, ast.Vote):
            return self.vote(node)
        return self.replace(node)

    def _component(self, name: ast.QualifiedName) -> ir.Component | None:
        symbol = self.symbol.scope.lookup(name)
        if symbol is None:
            self.owner.declarations.undefined(
                name.dotted, name.span, self.symbol.scope, "module", ("module", "compose"),
            )
            return None
        if symbol.kind == "module":
            return self.owner.components.module(symbol)
        if symbol.kind == "compose":
            return self.owner.composition(symbol)
        self.owner.declarations.wrong_kind(name.dotted, name.span, symbol, "a module or composition")
        return None

    def reference(self, node: ast.CompRef) -> Signature | None:
        component = self._component(node.name)
        if component is None:
            return None
        self.uses += 1
        prefix = f"{node.name.dotted}#{self.uses}:"
        ports = component.interface.ports
        scope = ir.import_scope(node.name.dotted)
        inner = tuple(scope + part for part in component.parts) if isinstance(component, ir.Composition) else ()
        return Signature(
            ir.PartRef(node.name.dotted, node.span),
            tuple(_renamed(port, prefix) for port in ports if port.direction == "input"),
            tuple(_renamed(port, prefix) for port in ports if port.direction == "output"),
            (node.name.dotted, *inner),
            node.name.dotted,
        )

    def pipe(self, node: ast.Pipe) -> Signature | None:
        left, right = self.expression(node.left), self.expression(node.right)
        if left is None or right is None:
            return None
        if len(left.outputs) != len(right.inputs):
            self.reporter.error(
                "E0503", f"`{left.name}` has {len(left.outputs)} output(s) but `{right.name}` reads "
                f"{len(right.inputs)} input(s)", node.span,
                help="`a >> b` feeds the outputs of `a`, in order, to the inputs of `b`",
            )
            return None
        if len(right.inputs) == 1:
            left = _in_label_order_of(left, right.inputs[0])
        ok = True
        for output, port in zip(left.outputs, right.inputs, strict=True):
            ok = self._connect(output, port, left.name, right.name, node.span) and ok
        if not ok:
            return None
        self.owner.obligations.append(
            ir.Implication(
                "pipe", f"{left.name} ensures", f"{right.name} requires", node.span, left.node, right.node,
                self.symbol.name,
            )
        )
        stages = _stages(left.node) + _stages(right.node)
        return Signature(
            ir.Pipeline(stages, node.span), left.inputs, right.outputs, left.parts + right.parts,
            f"{left.name} >> {right.name}",
        )

    def _connect(self, output: ir.Port, port: ir.Port, source: str, target: str, span: Span) -> bool:
        what = f"output `{output.name}` of `{source}` ({_shown(output.type)}) feeds input `{port.name}` of " \
               f"`{target}` ({_shown(port.type)})"
        if not self._unify(output.type.dims, port.type.dims, span, "E0501", f"`>>` shapes do not unify: {what}"):
            return False
        if not _dtypes_agree(output.type.dtype, port.type.dtype):
            self.reporter.error(
                "E0502", f"`>>` dtypes do not agree: {what}", span,
                help="convert inside one of the modules so that both sides name the same dtype",
            )
            return False
        return True

    def _unify(self, left, right, span: Span, code: str, message: str) -> bool:
        ok = True
        for problem in self.solver.unify_shapes(left, right):
            if problem.kind == "undecided":
                self.reporter.warning(
                    "W0501", f"cannot decide whether dims agree: {problem.message}", span,
                    help="the Z3 backend of `mdl check` settles such equations; until then they are not checked",
                )
                self.owner.obligations.append(ir.Implication(
                    "dims", plain(f"{problem.equation[0]} == {problem.equation[1]}"), "a solution", span,
                    composition=self.symbol.name, equation=problem.equation,
                ))
            elif problem.kind == "no-solution":
                self.reporter.error(
                    "E0511", problem.message, span, notes=(Note(message),),
                    help="every dimension is a positive integer: change a shape so that the sizes can agree",
                )
                ok = False
            else:
                self.reporter.error(code, message, span, notes=(Note(problem.message),), help=UNIFY_HELP.get(code))
                ok = False
        return ok

    def vote(self, node: ast.Vote) -> Signature | None:
        overlap_max = self._overlap_option(node)
        parts = [self.expression(part) for part in node.parts]
        if overlap_max is None or any(part is None for part in parts):
            return None
        signatures: list[Signature] = parts  # type: ignore[assignment]
        labels = self._vote_labels(signatures, node, overlap_max is True)
        if labels is None:
            return None
        first = signatures[0]
        for other, part_node in zip(signatures[1:], node.parts[1:], strict=True):
            if not self._same_inputs(first, other, part_node.span):
                return None
        if not self._comparable_scores(signatures, node):
            return None
        output = first.outputs[0]
        dims = (*output.type.dims[:-1], ir.DimLabels(labels))
        tensor = ir.TensorType(dims, output.type.dtype, output.type.value_range, output.type.finite, output.type.span)
        vote_port = ir.Port(output.name, "output", tensor, output.span)
        names = tuple(part.name for part in signatures)
        return Signature(
            ir.VoteNode(tuple(part.node for part in signatures), labels, overlap_max is True, node.span),
            first.inputs, (vote_port,), sum((part.parts for part in signatures), ()),
            f"vote({', '.join(names)})",
        )

    def _overlap_option(self, node: ast.Vote) -> bool | None:
        if node.overlap is None:
            return False
        if node.overlap.name != "max":
            self.reporter.error(
                "E0513", f"unknown vote option `overlap={node.overlap.name}`", node.overlap.span,
                help="the one option is `overlap=max`: overlapping labels take the highest score",
            )
            return None
        return True

    def _vote_labels(self, parts: list[Signature], node: ast.Vote, overlap_max: bool) -> ir.LabelSet | None:
        owners: dict[ir.Label, str] = {}  # in order of first appearance: the union of the parts' labels
        for part, part_node in zip(parts, node.parts, strict=True):
            labels = self._scored_labels(part, part_node.span)
            if labels is None:
                return None
            for label in labels.own_labels:
                if label in owners and not overlap_max:
                    self.reporter.error(
                        "E0504", f"label {ir.format_label(label)} is scored by both `{owners[label]}` and "
                        f"`{part.name}`", part_node.span,
                        help="give each label to one part, or write `vote(..., overlap=max)` to take the higher score",
                    )
                    return None
                owners.setdefault(label, part.name)
        return ir.LabelSet(tuple(owners))

    def _scored_labels(self, part: Signature, span: Span) -> ir.LabelSet | None:
        outputs = part.outputs
        last = outputs[0].type.dims[-1] if len(outputs) == 1 and outputs[0].type.dims else None
        if not isinstance(last, ir.DimLabels):
            self.reporter.error(
                "E0512", f"`{part.name}` cannot take part in a vote: its output is not scores over a label set",
                span, help="a vote part has one output whose last axis is a label set, e.g. `Tensor[B, {5} | other]`",
            )
            return None
        return last.labels

    def _same_inputs(self, first: Signature, other: Signature, span: Span) -> bool:
        if len(first.inputs) != len(other.inputs):
            self.reporter.error(
                "E0506", f"`{other.name}` reads {len(other.inputs)} input(s), `{first.name}` "
                f"{len(first.inputs)}", span, help="every part of a vote reads the same input",
            )
            return False
        for mine, theirs in zip(first.inputs, other.inputs, strict=True):
            message = f"`{other.name}` reads {_shown(theirs.type)} but `{first.name}` reads {_shown(mine.type)}"
            if not self._unify(mine.type.dims, theirs.type.dims, span, "E0506", message):
                return False
            if not _dtypes_agree(mine.type.dtype, theirs.type.dtype):
                self.reporter.error("E0506", message, span, help="every part of a vote reads the same input")
                return False
        return True

    def _comparable_scores(self, parts: list[Signature], node: ast.Vote) -> bool:
        first = parts[0].outputs[0].type
        for part, part_node in zip(parts[1:], node.parts[1:], strict=True):
            theirs = part.outputs[0].type
            if not _dtypes_agree(first.dtype, theirs.dtype) or first.value_range != theirs.value_range:
                self.reporter.error(
                    "E0507", f"`{part.name}` scores {_shown(theirs)}, `{parts[0].name}` scores "
                    f"{_shown(first)}", part_node.span,
                    help="a vote compares scores as they are: give every part the same dtype and value range "
                    "(apply `softmax` inside a part that emits logits)",
                )
                return False
        return True

    def replace(self, node: ast.Replace) -> Signature | None:
        base = self.expression(node.base)
        old, new = self._component(node.old), self._component(node.new)
        if base is None or old is None or new is None:
            return None
        if node.old.dotted not in base.parts:
            inner = [f"`{part}`" for part in dict.fromkeys(base.parts) if part != base.name]
            self.reporter.error(
                "E0508", f"`{node.old.dotted}` is not a part of `{base.name}`", node.old.span,
                help=f"its parts are {', '.join(inner)}" if inner else f"`{base.name}` is a module, not a composition",
            )
            return None
        if not _same_ports(old.interface, new.interface):
            self.reporter.error(
                "E0509", f"`{node.new.dotted}` implements {new.interface.name}, but `{node.old.dotted}` "
                f"implements {old.interface.name}", node.new.span,
                notes=tuple(Note(text) for text in _port_differences(old.interface, new.interface)),
                help="a replacement must implement the interface of the part it replaces",
            )
            return None
        self.owner.obligations.append(
            ir.Implication(
                "replace", f"{node.new.dotted} contract", f"{node.old.dotted} contract", node.span,
                ir.PartRef(node.new.dotted, node.new.span), ir.PartRef(node.old.dotted, node.old.span),
                self.symbol.name,
            )
        )
        return Signature(
            ir.ReplaceNode(base.node, node.old.dotted, node.new.dotted, node.span), base.inputs, base.outputs,
            tuple(node.new.dotted if part == node.old.dotted else part for part in base.parts),
            f"replace({base.name}, {node.old.dotted}, {node.new.dotted})",
        )

    # ------------------------------------------------------------ the declared interface

    def _implements(self, signature: Signature, interface: ir.Interface) -> Signature | None:
        """The signature as the interface sees it (a vote's columns in its label order), or None if it does not fit."""
        span = self.decl.expr.span
        if isinstance(signature.node, ir.VoteNode):
            covered = self._covers(signature, interface, span)
            if covered is None:
                return None
            signature = covered
        for kind, mine, declared in (
            ("input", signature.inputs, interface.inputs), ("output", signature.outputs, interface.outputs),
        ):
            if len(mine) != len(declared):
                self.reporter.error(
                    "E0510", f"`{signature.name}` has {len(mine)} {kind}(s), {interface.name} declares "
                    f"{len(declared)}", span, help=UNIFY_HELP["E0510"],
                )
                return None
            for port, wanted in zip(mine, declared, strict=True):
                message = f"{kind} `{wanted.name}` of {interface.name} is {_shown(wanted.type)}, " \
                          f"but `{signature.name}` has {_shown(port.type)}"
                if not self._unify(port.type.dims, wanted.type.dims, span, "E0510", message):
                    return None
                if not _dtypes_agree(port.type.dtype, wanted.type.dtype):
                    self.reporter.error("E0510", message, span, help=UNIFY_HELP["E0510"])
                    return None
        return signature

    def _covers(self, signature: Signature, interface: ir.Interface, span: Span) -> Signature | None:
        """The vote's signature with its scores in the interface's label order, if it covers them."""
        outputs = interface.outputs
        last = outputs[0].type.dims[-1] if len(outputs) == 1 and outputs[0].type.dims else None
        if not isinstance(last, ir.DimLabels) or last.labels.opaque:
            return signature
        voted: ir.LabelSet = signature.node.labels  # type: ignore[union-attr]
        wanted = set(last.labels.own_labels)
        voted_labels = set(voted.labels)
        missing = [label for label in last.labels.own_labels if label not in voted_labels]
        extra = [label for label in voted.labels if label not in wanted]
        if missing or extra:
            problems = []
            if missing:
                problems.append("no part scores " + ", ".join(ir.format_label(label) for label in missing))
            if extra:
                problems.append("the interface has no label " + ", ".join(ir.format_label(label) for label in extra))
            self.reporter.error(
                "E0505", f"the vote does not cover {interface.name}: {'; '.join(problems)}", span,
                help="the parts' label sets must together be exactly the interface's labels",
            )
            return None
        port = signature.outputs[0]
        dims = (*port.type.dims[:-1], last)
        tensor = ir.TensorType(dims, port.type.dtype, port.type.value_range, port.type.finite, port.type.span)
        outputs = (ir.Port(port.name, port.direction, tensor, port.span),)
        # The vote's columns follow the interface, not the order its parts name their labels in:
        # `vote(even, odd) : Classifier[Digit]` scores 0, 1, 2, ... as `Digit` does, not 0, 2, 4, ..., 1, 3.
        # An interface with `other` makes the vote score `other` too: it abstains when no part claims.
        node = replace(signature.node, labels=last.labels)
        return Signature(node, signature.inputs, outputs, signature.parts, signature.name)


def _in_label_order_of(signature: Signature, port: ir.Port) -> Signature:
    """An inline vote feeding `port`, its scores in the order of `port`'s labels when it scores the same ones.

    An inline vote has no interface of its own: it scores its parts' labels in the order they name them
    (`vote(even, odd)`: 0, 2, 4, ..., 1, 3, ...). The stage it feeds decides the order, as an interface does.
    """
    if not isinstance(signature.node, ir.VoteNode) or len(signature.outputs) != 1:
        return signature
    output = signature.outputs[0]
    wanted = port.type.dims[-1] if port.type.dims else None
    voted = output.type.dims[-1]
    if not isinstance(wanted, ir.DimLabels) or wanted.labels.opaque or not isinstance(voted, ir.DimLabels):
        return signature
    if set(wanted.labels.labels) != set(voted.labels.labels) or wanted.labels.labels == voted.labels.labels:
        return signature
    tensor = replace(output.type, dims=(*output.type.dims[:-1], wanted))
    node = replace(signature.node, labels=wanted.labels)
    return Signature(node, signature.inputs, (replace(output, type=tensor),), signature.parts, signature.name)


def _shown(tensor: ir.TensorType) -> str:
    """A part's port type as its spec writes it, without the renaming of its dims."""
    return plain(tensor.describe())


def _stages(node: ir.CompNode) -> tuple[ir.CompNode, ...]:
    return node.stages if isinstance(node, ir.Pipeline) else (node,)


def _port_differences(old: ir.Interface, new: ir.Interface) -> list[str]:
    """Where two interfaces' ports differ, port by port: what E0509 shows when their names read the same."""
    if len(old.ports) != len(new.ports):
        return [f"{len(new.ports)} ports against {len(old.ports)}"]
    return [
        f"port `{b.name}`: {b.direction} {_shown(b.type)} against {a.direction} `{a.name}` {_shown(a.type)}"
        for a, b in zip(old.ports, new.ports, strict=True) if not _same_port(a, b)
    ]


def _same_ports(old: ir.Interface, new: ir.Interface) -> bool:
    """Ports alike in name, direction, shape and dtype: what a replacement must keep to be wired in where
    the old part was. Their value ranges and `finite` may differ, as their clauses may: a behavioural
    subtype (LANGUAGE.md section 4) reads a wider range and produces a narrower one, which the Z3 backend
    proves with the clauses (E0604). Names of interfaces prove nothing: two files may each declare a
    `Classifier`, one over logits and one over probabilities."""
    if len(old.ports) != len(new.ports):
        return False
    return all(_same_port(a, b) for a, b in zip(old.ports, new.ports, strict=True))


def _same_port(old: ir.Port, new: ir.Port) -> bool:
    return old.name == new.name and old.direction == new.direction and _unrefined(old.type) == _unrefined(new.type)


def _unrefined(tensor: ir.TensorType) -> str:
    """A port type's shape and dtype, as written, without its value range and `finite`."""
    return replace(tensor, value_range=None, finite=False).describe()
