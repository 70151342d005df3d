"""Interfaces, modules and data sets: instantiation, members and their checks."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import PurePath

from mdl_lang import ir
from mdl_lang.semantics.clauses import SHOWN_LABELS, ClauseTyper, automatic_name, port_value_type
from mdl_lang.semantics.context import Env, FileScope, Symbol
from mdl_lang.semantics.declarations import Declarations
from mdl_lang.semantics.shapes import dims_compatible
from mdl_lang.span import Span
from mdl_lang.syntax import ast

COST_METRICS = ("params", "flops", "latency")
TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _args_key(args: tuple) -> tuple:
    return tuple(repr(arg) for arg in args)


def _seen_from(interface: ir.Interface, file: str) -> ir.Interface:
    """The interface as a component declared in `file` holds it.

    An automatic clause name (`ensures@5:3`) is unique within its own file only: the clauses of an
    interface from another file are named with that file's stem too (`ensures@lib:5:3`), so that
    they differ from the component's own clauses at the same line and column."""
    clauses = tuple(
        replace(clause, name=automatic_name(clause.kind, clause.span, PurePath(clause.span.file).stem))
        if clause.span.file != file and clause.name == automatic_name(clause.kind, clause.span) else clause
        for clause in interface.clauses
    )
    unchanged = all(new is old for new, old in zip(clauses, interface.clauses, strict=True))
    return interface if unchanged else replace(interface, clauses=clauses)


class Components:
    """Builds the IR of interfaces, modules and data sets of every file in one check."""

    def __init__(self, declarations: Declarations) -> None:
        self.declarations = declarations
        self.reporter = declarations.reporter
        self.typer = ClauseTyper(declarations)
        self._interfaces: dict[tuple, ir.Interface | None] = {}
        self._modules: dict[tuple[str, str], ir.Module | None] = {}
        self._data: dict[tuple[str, str], ir.Data | None] = {}
        # Where each statistical clause names its data set, and the file that name is resolved in:
        # an interface's clause names data of the interface's file, whoever implements it.
        self._data_names: dict[Span, tuple[ast.QualifiedName, FileScope]] = {}

    # ------------------------------------------------------------ interfaces

    def interface_ref(self, ref: ast.TypeRef, env: Env) -> ir.Interface | None:
        """The interface a module or composition declares, instantiated with its arguments."""
        symbol = env.scope.lookup(ref.name)
        name = ref.name.dotted
        if symbol is None:
            self.declarations.undefined(name, ref.name.span, env.scope, "interface", ("interface",))
            return None
        if symbol.kind != "interface":
            self.declarations.wrong_kind(name, ref.name.span, symbol, "an interface")
            return None
        decl: ast.InterfaceDecl = symbol.node  # type: ignore[assignment]
        bound = self.declarations.bind_params(decl.params, ref.args, ref.span, env, name, symbol.scope)
        if bound is None:
            return None
        interface = self.instantiate(symbol, bound)
        return _seen_from(interface, env.scope.path) if interface is not None else None

    def instantiate(self, symbol: Symbol, bound: Env) -> ir.Interface | None:
        """The interface with its parameters bound as `bound` says, built once per distinct arguments."""
        key = (symbol.scope.path, symbol.name, _args_key(tuple(bound.params.values())))
        if key not in self._interfaces:
            self._interfaces[key] = None  # a self-referring interface finds None, not a loop
            self._interfaces[key] = self._build_interface(symbol, bound)
        return self._interfaces[key]

    def abstract_interface(self, symbol: Symbol) -> ir.Interface | None:
        """The interface checked before instantiation: generic parameters stay opaque."""
        decl: ast.InterfaceDecl = symbol.node  # type: ignore[assignment]
        params = {param.name: ir.LabelSet((), param.name, opaque=True) for param in decl.params}
        return self.instantiate(symbol, Env(symbol.scope, params))

    def _build_interface(self, symbol: Symbol, env: Env) -> ir.Interface | None:
        decl: ast.InterfaceDecl = symbol.node  # type: ignore[assignment]
        params = env.params
        ports = self._ports(decl, env)
        if ports is None:
            return None
        env = replace(env, ports={port.name: port for port in ports})
        origin = f"interface {symbol.name}"
        clauses, costs = self.clauses_and_costs(decl.members, env, origin, allow=(ast.Port,))
        shown_args = ", ".join(_describe_arg(value) for value in params.values())
        name = f"{symbol.name}[{shown_args}]" if params else symbol.name
        return ir.Interface(name, symbol.name, tuple(params.values()), ports, clauses, costs, decl.span)

    def _ports(self, decl: ast.InterfaceDecl, env: Env) -> tuple[ir.Port, ...] | None:
        ports: list[ir.Port] = []
        seen: dict[str, Span] = {}
        ok = True
        for member in decl.members:
            if not isinstance(member, ast.Port):
                continue
            if member.name.name in seen:
                self.reporter.error(
                    "E0110", f"port `{member.name.name}` is declared twice", member.name.span,
                    help=f"the first `{member.name.name}` is at {seen[member.name.name]}",
                )
                ok = False
                continue
            seen[member.name.name] = member.name.span
            port_type = self.declarations.type_expr(member.type, env)
            if port_type is None:
                ok = False
                continue
            ports.append(ir.Port(member.name.name, member.direction, port_type, member.span))
        directions = {port.direction for port in ports}
        if ok and directions != {"input", "output"}:
            missing = "input" if "input" not in directions else "output"
            self.reporter.error(
                "E0112", f"interface `{decl.name.name}` has no {missing} port", decl.name.span,
                help="declare ports with `input x: TYPE` and `output y: TYPE`",
            )
            ok = False
        return tuple(ports) if ok else None

    # ------------------------------------------------------------ members

    def clauses_and_costs(
        self, members, env: Env, origin: str, allow: tuple[type, ...] = (), taken: dict[str, Span] | None = None,
    ) -> tuple[tuple[ir.Clause, ...], tuple[ir.CostClause, ...]]:
        """Type every clause and cost item of a member list; report members that do not belong."""
        clauses: list[ir.Clause] = []
        costs: list[ir.CostClause] = []
        names: dict[str, Span] = dict(taken or {})
        for member in members:
            if isinstance(member, ast.Clause):
                if member.name is not None:
                    self._claim_name(member.name.name, member.name.span, names, "clause name")
                typed = self.typer.clause(member, env, origin)
                if typed is not None:
                    clauses.append(typed)
                    if member.data is not None:
                        self._data_names[typed.span] = (member.data.data, env.scope)
            elif isinstance(member, ast.CostBlock):
                for item in member.items:
                    cost = self.cost(item, env, origin)
                    if cost is not None:
                        self._claim_name(cost.name, item.span, names, "cost metric")
                        costs.append(cost)
            elif not isinstance(member, allow):
                self._misplaced(member, origin)
        return tuple(clauses), tuple(costs)

    def _claim_name(self, name: str, span: Span, names: dict[str, Span], what: str) -> None:
        """Enter a clause's name; a cost clause is named by its metric, so each metric is limited once."""
        if name in names:
            why = "give each metric one limit" if what == "cost metric" else "clause names identify clauses in reports"
            self.reporter.error(
                "E0111", f"{what} `{name}` is used twice", span, help=f"the first `{name}` is at {names[name]}; {why}",
            )
        else:
            names[name] = span

    def _misplaced(self, member, origin: str) -> None:
        kind, _, _ = origin.partition(" ")
        noun = "an interface" if kind == "interface" else f"a {kind}"
        if isinstance(member, ast.Port):
            message = f"{noun} cannot declare ports; they come from its interface"
            help_text = "declare the port in the interface"
        else:
            message = f"{noun} cannot have a `python` binding" if kind != "module" else "a second `python` binding"
            help_text = "a `python` binding belongs to a module or a data set, once"
        self.reporter.error("E0113", message, member.span, help=help_text)

    def cost(self, item: ast.CostItem, env: Env, origin: str) -> ir.CostClause | None:
        limit = self._cost_number(item.value, env)
        if limit is None:
            return None
        if not math.isfinite(limit):
            self.reporter.error(
                "E0314", f"a cost limit of {limit} limits nothing", item.value.span,
                help="write the limit as a finite number, or leave the metric out of the cost block",
            )
            return None
        name = item.metric
        if item.metric == "params":
            if item.per_sample or item.unit or item.batch is not None:
                return self._cost_form(item, "`params` takes a plain count: `params <= 50k`")
            return ir.CostClause(name, "params", item.op, limit, origin, span=item.span)
        if item.metric == "flops":
            if not item.per_sample or item.unit or item.batch is not None:
                return self._cost_form(item, "FLOPs are counted per sample: `flops <= 2M per sample`")
            return ir.CostClause(name, "flops", item.op, limit, origin, span=item.span)
        if item.unit is None or item.per_sample:
            return self._cost_form(item, "a latency needs a unit and may name a batch: `latency <= 5 ms at batch 32`")
        batch = 1
        if item.batch is not None:
            value = self._cost_number(item.batch, env)
            if value is None:
                return None
            if not float(value).is_integer() or value < 1:
                return self._cost_form(item, "the batch of a latency clause is a positive integer")
            batch = int(value)
        milliseconds = limit * TIME_UNITS[item.unit]
        return ir.CostClause(name, "latency", item.op, milliseconds, origin, "ms", batch, item.span)

    def _cost_number(self, expr: ast.Expr, env: Env) -> float | None:
        if isinstance(expr, ast.Number):
            return float(expr.value)
        return self.declarations.constant(expr, env)

    def _cost_form(self, item: ast.CostItem, help_text: str) -> None:
        self.reporter.error("E0418", f"`{item.metric}` clause of the wrong form", item.span, help=help_text)

    # ------------------------------------------------------------ modules and data

    def module(self, symbol: Symbol) -> ir.Module | None:
        key = (symbol.scope.path, symbol.name)
        if key not in self._modules:
            self._modules[key] = None
            self._modules[key] = self._build_module(symbol)
        return self._modules[key]

    def _build_module(self, symbol: Symbol) -> ir.Module | None:
        decl: ast.ModuleDecl = symbol.node  # type: ignore[assignment]
        env = Env(symbol.scope)
        interface = self.interface_ref(decl.interface, env)
        bindings = [member for member in decl.members if isinstance(member, ast.Binding)]
        for extra in bindings[1:]:
            self._misplaced(extra, f"module {symbol.name}")
        members = [member for member in decl.members if member not in bindings[:1]]
        if interface is None:
            return None
        env = Env(symbol.scope, {}, {port.name: port for port in interface.ports})
        taken = {clause.name: clause.span for clause in interface.clauses}
        clauses, costs = self.clauses_and_costs(members, env, f"module {symbol.name}", taken=taken)
        module = ir.Module(
            symbol.name, interface, clauses, costs, bindings[0].target if bindings else None,
            symbol.scope.path, decl.span,
        )
        self.check_data_clauses(module.all_clauses, interface, symbol.name)
        return module

    def data(self, symbol: Symbol) -> ir.Data | None:
        key = (symbol.scope.path, symbol.name)
        if key not in self._data:
            decl: ast.DataDecl = symbol.node  # type: ignore[assignment]
            env = Env(symbol.scope)
            input_type = self.declarations.type_expr(decl.input_type, env)
            labels = self.declarations.label_set(decl.labels, env)
            self._data[key] = None if input_type is None or labels is None else ir.Data(
                symbol.name, input_type, labels, decl.binding.target if decl.binding else None,
                symbol.scope.path, decl.span,
            )
        return self._data[key]

    def check_data_clauses(self, clauses, interface: ir.Interface, component: str) -> None:
        """Statistical clauses of `component` name a data set whose labels and inputs fit it."""
        for clause in clauses:
            written = self._data_names.get(clause.span)
            if written is None:
                continue
            name, scope = written
            data = self._data_named(name, scope)
            if data is None:
                continue
            self._check_data_labels(clause, data, interface, component, name.span)
            self._check_data_inputs(data, interface, component, name.span)

    def _data_named(self, name: ast.QualifiedName, scope: FileScope) -> ir.Data | None:
        symbol = scope.lookup(name)
        if symbol is None:
            self.declarations.undefined(name.dotted, name.span, scope, "data set", ("data",))
            return None
        if symbol.kind != "data":
            self.declarations.wrong_kind(name.dotted, name.span, symbol, "a data set")
            return None
        return self.data(symbol)

    def _check_data_labels(
        self, clause: ir.Clause, data: ir.Data, interface: ir.Interface, component: str, span: Span,
    ) -> None:
        statistics = [node for node in ir.walk(clause.expr) if isinstance(node, ir.Statistic)]
        for statistic in statistics:
            port = interface.port(statistic.output)
            labels = port_value_type(port.type).axes[0] if port else None
            if labels is None or labels.opaque or labels.has_other or data.labels.opaque:
                continue
            predicted = set(labels.labels)
            outside = [label for label in data.labels.labels if label not in predicted]
            if outside:
                shown = ", ".join(ir.format_label(label) for label in outside[:SHOWN_LABELS])
                if len(outside) > SHOWN_LABELS:
                    shown += f", ... ({len(outside)} in all)"
                self.reporter.error(
                    "E0411", f"data set `{data.name}` has labels that `{component}` cannot predict: {shown}", span,
                    help="give the output an `other` label, or use a data set over the module's labels",
                )

    def _check_data_inputs(self, data: ir.Data, interface: ir.Interface, component: str, span: Span) -> None:
        inputs = interface.inputs
        if len(inputs) != 1:
            return
        expected = inputs[0].type
        if not dims_compatible(data.input_type.sample_dims, expected.sample_dims):
            self.reporter.error(
                "E0411", f"data set `{data.name}` holds inputs of type {data.input_type.describe()}, "
                f"but input `{inputs[0].name}` of `{component}` is {expected.describe()}", span,
                help="a data set's inputs are shaped like one sample of the module's input",
            )


def _describe_arg(value: ir.LabelSet | ir.Dim) -> str:
    if isinstance(value, ir.LabelSet):
        return value.name or value.describe()
    return str(value)
