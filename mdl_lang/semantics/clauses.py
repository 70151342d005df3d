"""Type clause expressions into IR and tag each clause with its fragment.

A clause speaks about one sample: a port denotes one sample's tensor (batch
axis removed). Every operator and built-in is checked for the types and
shapes it accepts; label indices are resolved to positions here, once, so
that backends only ever index by position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from mdl_lang import ir
from mdl_lang.semantics.context import KIND_NOUNS, Env, Reporter, Symbol, did_you_mean
from mdl_lang.semantics.declarations import BUILTIN_CONSTANTS, Declarations, not_a_real_number
from mdl_lang.semantics.shapes import broadcast, dims_compatible, slice_length
from mdl_lang.span import Span
from mdl_lang.syntax import ast

ELEMENTWISE = ("abs", "exp", "log", "sqrt", "sigmoid", "relu")
REDUCTIONS = ("sum", "mean", "min", "max")
STATISTICS = ("accuracy", "recall", "precision")
NORMS = {"linf": "linf", "l2": "l2", "l1": "l1"}
BUILTIN_FUNCTIONS = (
    *ELEMENTWISE, *REDUCTIONS, *STATISTICS, "softmax", "clamp", "norm", "argmax", "argmin", "count", "all", "any",
    "finite", "flip", "monotone",
)
RELATIONAL_CALLS = ("monotone",)
USAGE = {  # the built-ins whose call is not `name(v)`
    "clamp": "clamp(v, lo, hi)", "norm": "norm(v)` or `norm(v, p)", "min": "min(v)` or `min(a, b)",
    "max": "max(v)` or `max(a, b)", "count": "count(condition)", "all": "all(condition)", "any": "any(condition)",
    "flip": "flip(v, dim=-1)", "monotone": "monotone(y[k], x[i])",
}
SHOWN_LABELS = 5  # labels named in one message before "..."


class ClauseTyper:
    """Turns one clause's syntax into a typed IR expression, reporting what does not type."""

    def __init__(self, declarations: Declarations) -> None:
        self.declarations = declarations
        self.reporter: Reporter = declarations.reporter
        # The value of each constant operation typed so far, keyed by the node's id; the node is kept
        # alongside so that its id cannot be reused by another node while the entry exists.
        self._constants: dict[int, tuple[ir.Expr, int | float]] = {}

    # ------------------------------------------------------------ clauses

    def clause(self, node: ast.Clause, env: Env, origin: str) -> ir.Clause | None:
        """The typed clause, or None when it has errors (already reported)."""
        count = len(self.reporter.diagnostics)
        env = replace(env, variables={}, clause_kind=node.kind, statistical_ok=node.data is not None)
        expr = self.expr(node.expr, env)
        if expr is None or self.reporter.errors_since(count):
            return None
        if expr.type.element is not ir.Element.BOOL:
            self.reporter.error(
                "E0401", f"this clause is {expr.type.describe()}, not a condition", node.expr.span,
                help="a clause must be true or false: compare the value, e.g. `... >= 0`",
            )
            return None
        fragment = self._fragment(expr, node)
        if fragment is None:
            return None
        confidence = self._confidence(node, env)
        if confidence is None:
            return None
        name = node.name.name if node.name else automatic_name(node.kind, node.span)
        data = node.data.data.dotted if node.data else None
        return ir.Clause(name, node.kind, expr, fragment, origin, data, confidence, node.span)

    def _fragment(self, expr: ir.Expr, node: ast.Clause) -> ir.Fragment | None:
        nodes = list(ir.walk(expr))
        relational = any(
            isinstance(n, (ir.SelfCall, ir.BallQuantifier))
            or (isinstance(n, ir.Call) and n.function in RELATIONAL_CALLS)
            for n in nodes
        )
        statistical = any(isinstance(n, ir.Statistic) for n in nodes)
        if relational and statistical:
            self.reporter.error(
                "E0419", "no backend can check a clause that is both statistical and relational", node.expr.span,
                help="split it in two clauses: one over the data set, one over perturbed inputs",
            )
            return None
        if (statistical and node.kind == "requires") or (relational and node.kind == "requires"):
            which = "statistical" if statistical else "relational"
            self.reporter.error(
                "E0416", f"a {which} clause cannot be a `requires`", node.expr.span,
                help="a caller's obligation is about the one input it passes; state this as an `ensures`",
            )
            return None
        if statistical:
            return ir.Fragment.STATISTICAL
        if node.data is not None:
            self.reporter.error(
                "E0410", "`on` names a data set, but this clause does not measure one", node.data.span,
                help="`on DATA` goes with `accuracy`, `recall` and `precision`",
            )
            return None
        return ir.Fragment.RELATIONAL if relational else ir.Fragment.PER_SAMPLE

    def _confidence(self, node: ast.Clause, env: Env) -> float | None:
        if node.data is None or node.data.confidence is None:
            return 0.95
        value = self.declarations.constant(node.data.confidence, env)
        if value is None:
            return None
        if not 0 < value < 1:
            self.reporter.error(
                "E0412", f"confidence {value} is outside (0, 1)", node.data.confidence.span,
                help="a confidence is a probability such as 0.95 or 0.99",
            )
            return None
        return float(value)

    # ------------------------------------------------------------ expressions

    def expr(self, node: ast.Expr, env: Env) -> ir.Expr | None:
        handler: Callable[[ast.Expr, Env], ir.Expr | None] | None = getattr(
            self, f"type_{type(node).__name__}", None
        )
        if handler is None:
            return self._not_a_value(node)
        return handler(node, env)

    def _not_a_value(self, node: ast.Expr) -> None:
        what = {
            ast.Wildcard: "`_` (it stands for a dimension of any size)",
            ast.EllipsisDims: "`...`",
            ast.LabelSetLiteral: "a label set",
            ast.SelfRef: "`self` without arguments",
        }.get(type(node), "this")
        self.reporter.error(
            "E0402", f"{what} is not a value here", node.span,
            help="a value is a port, a number, a dim, a label or a call such as `argmax(y)`",
        )

    def type_Number(self, node: ast.Number, env: Env) -> ir.Expr | None:
        if node.suffix:
            self.reporter.error(
                "E0313", f"`{node.text}`: the suffixes k, M and G are for cost clauses", node.span,
                help=f"write the number out: {node.value}",
            )
            return None
        value = node.value
        return ir.Const(value, ir.INT if isinstance(value, int) else ir.REAL, node.span)

    def type_String(self, node: ast.String, env: Env) -> ir.Expr | None:
        return ir.LabelConst(node.value, ir.ValueType(ir.Element.LABEL), node.span)

    def type_OtherLabel(self, node: ast.OtherLabel, env: Env) -> ir.Expr | None:
        """`other` as a value, as in `argmax(y) == other` (a part that abstains)."""
        return ir.LabelConst(ir.OTHER, ir.ValueType(ir.Element.LABEL), node.span)

    def type_Name(self, node: ast.Name, env: Env) -> ir.Expr | None:
        name = node.id
        if name in env.variables:
            return ir.VarRef(name, env.variables[name], node.span)
        if name in env.ports:
            return self._port(env.ports[name], node.span, env)
        if name in BUILTIN_CONSTANTS and name not in env.params:
            value = BUILTIN_CONSTANTS[name]
            element = ir.Element.BOOL if isinstance(value, bool) else ir.Element.REAL
            return ir.Const(value, ir.ValueType(element), node.span)
        found = self.declarations.lookup(name, node.span, env)
        if isinstance(found, Symbol) and found.kind == "dim":
            return self._dim_value(self.declarations.declared_dim(found), node.span)
        if isinstance(found, (ir.DimConst, ir.DimVar, ir.DimBinary)):
            return self._dim_value(found, node.span)
        if found is not None:
            what = "a label set" if isinstance(found, ir.LabelSet) else None
            what = what or ("a label set" if isinstance(found, Symbol) and found.kind == "labels" else None)
            self.reporter.error(
                "E0402", f"`{name}` is {what or 'not a value'}; it cannot be used as a value", node.span,
                help="test membership with `v in " + name + "` or quantify with `forall l in " + name + ": ...`"
                if what else None,
            )
            return None
        known = [*env.ports, *env.variables, *BUILTIN_CONSTANTS, *env.scope.names_of_kind("dim")]
        self.reporter.error(
            "E0101", f"undefined name `{name}`", node.span,
            help=did_you_mean(name, known) or "a clause names ports, quantified variables, dims and `inf` or `pi`",
        )
        return None

    def _dim_value(self, dim: ir.Dim | None, span: Span) -> ir.Expr | None:
        if dim is None:
            return None
        if isinstance(dim, ir.DimConst):
            return ir.Const(dim.value, ir.INT, span)
        return ir.DimValue(dim, ir.INT, span)

    def _port(self, port: ir.Port, span: Span, env: Env) -> ir.Expr | None:
        if port.direction == "output" and env.clause_kind == "requires":
            self.reporter.error(
                "E0406", f"`requires` cannot speak of the output `{port.name}`", span,
                help="a `requires` is checked before the module runs; move this to an `ensures`",
            )
            return None
        return ir.PortRef(port.name, port.direction, port_value_type(port.type), span)

    def type_Unary(self, node: ast.Unary, env: Env) -> ir.Expr | None:
        operand = self.expr(node.operand, env)
        if operand is None:
            return None
        if node.op == "not":
            if not self._require_bool(operand, "not", node.operand.span):
                return None
            return ir.Not(operand, ir.ValueType(ir.Element.BOOL, operand.type.shape, operand.type.axes), node.span)
        if not self._require_numeric(operand, "-", node.operand.span):
            return None
        negation = ir.Neg(operand, operand.type, node.span)
        value = self.constant_value(operand)
        if value is not None:
            self._constants[id(negation)] = (negation, -value)
        return negation

    def type_Binary(self, node: ast.Binary, env: Env) -> ir.Expr | None:
        if node.op == "|":
            self.reporter.error(
                "E0402", "`|` joins label sets; it is not an operation on values", node.span,
                help="for a condition use `or`",
            )
            return None
        left, right = self.expr(node.left, env), self.expr(node.right, env)
        if left is None or right is None:
            return None
        if node.op in ("and", "or", "implies"):
            if not (self._require_bool(left, node.op, node.left.span) and
                    self._require_bool(right, node.op, node.right.span)):
                return None
            return ir.Logic(node.op, left, right, ir.BOOL, node.span)
        if not (self._require_numeric(left, node.op, node.left.span) and
                self._require_numeric(right, node.op, node.right.span)):
            return None
        shape = self._broadcast(left, right, node)
        if shape is None:
            return None
        element = ir.Element.INT if (
            left.type.element is ir.Element.INT and right.type.element is ir.Element.INT and node.op != "/"
        ) else ir.Element.REAL
        arith = ir.Arith(node.op, left, right, ir.ValueType(element, *shape), node.span)
        return arith if self._fold(arith) else None

    def constant_value(self, expr: ir.Expr) -> int | float | None:
        """The value of an expression of constants typed by this typer (`3`, `-0.5`, `2 ** 3`), else None."""
        if isinstance(expr, ir.Const) and not isinstance(expr.value, bool):
            return expr.value
        known = self._constants.get(id(expr))
        return known[1] if known is not None and known[0] is expr else None

    def _fold(self, arith: ir.Arith) -> bool:
        """Compute an operation on two constants now; False after reporting a value that is no real number.

        Written arithmetic such as `y[2 ** 3]` or `within 1/0` is then checked like a literal, at compile
        time, instead of failing (or silently comparing with NaN) when a backend evaluates it."""
        left, right = self.constant_value(arith.left), self.constant_value(arith.right)
        if left is None or right is None:
            return True
        try:
            value = _arithmetic(arith.op, left, right)
        except ZeroDivisionError:
            self.reporter.error("E0312", "division by zero", arith.span, help="a constant divisor must not be 0")
            return False
        except OverflowError:
            self.reporter.error("E0312", "this constant overflows", arith.span, help="use a smaller number")
            return False
        problem = not_a_real_number(value)
        if problem is not None:
            self.reporter.error(
                "E0314", f"this constant {problem}", arith.span, help="a clause compares real numbers",
            )
            return False
        self._constants[id(arith)] = (arith, value)
        return True

    def _broadcast(self, left: ir.Expr, right: ir.Expr, node) -> tuple | None:
        result = broadcast(left.type, right.type)
        if isinstance(result, str):
            self.reporter.error(
                "E0307", f"shapes do not match: {result}", node.span,
                help="elementwise operations need equal shapes (or a scalar on one side)",
            )
            return None
        return result

    def _require_bool(self, operand: ir.Expr, op: str, span: Span) -> bool:
        if operand.type.element is ir.Element.BOOL:
            return True
        self.reporter.error(
            "E0402", f"`{op}` needs a condition, found {operand.type.describe()}", span,
            help="compare the value to make it a condition, e.g. `... > 0`",
        )
        return False

    def _require_numeric(self, operand: ir.Expr, op: str, span: Span) -> bool:
        if operand.type.is_numeric:
            return True
        self.reporter.error(
            "E0402", f"`{op}` needs numbers, found {operand.type.describe()}", span,
            help="arithmetic and `in [lo, hi]` take numbers; labels are compared with `==` or tested with `in`",
        )
        return False

    # ------------------------------------------------------------ comparisons and membership

    def type_Compare(self, node: ast.Compare, env: Env) -> ir.Expr | None:
        operands = [self.expr(operand, env) for operand in node.operands]
        if any(operand is None for operand in operands):
            return None
        typed: list[ir.Expr] = list(operands)  # type: ignore[arg-type]
        shape: tuple = ((), ())
        for position, op in enumerate(node.ops):
            pair = self._compare_pair(typed, position, op, node)
            if pair is None:
                return None
            shape = _wider(shape, pair)
        tolerance = None
        if node.tolerance is not None:
            if any(op != "==" for op in node.ops):
                self.reporter.error(
                    "E0408", "`within` gives a tolerance to `==` only", node.tolerance.span,
                    help="write `a == b within TOL`; `<` and `>` need no tolerance",
                )
                return None
            tolerance = self._distance(
                node.tolerance, env, "a tolerance cannot be negative",
                "`a == b within TOL` holds when |a - b| <= TOL; write TOL as a positive number such as `1e-5`",
            )
            if tolerance is None:
                return None
        result = ir.Compare(tuple(typed), node.ops, tolerance, ir.ValueType(ir.Element.BOOL, *shape), node.span)
        return self._check_probability_bound(result)

    def _distance(self, node: ast.Expr, env: Env, negative: str, help_text: str) -> ir.Expr | None:
        """A `within` amount (a tolerance or a ball's radius): a number, and not a negative constant."""
        distance = self.expr(node, env)
        if distance is None or not self._require_numeric(distance, "within", node.span):
            return None
        value = self.constant_value(distance)
        if value is None:
            return distance
        if value < 0:
            self.reporter.error("E0421", negative, node.span, help=help_text)
            return None
        if math.isinf(value):
            self.reporter.error(
                "E0314", f"this distance is {value}; it must be a finite number", node.span, help=help_text,
            )
            return None
        return distance

    def _compare_pair(self, typed: list[ir.Expr], position: int, op: str, node: ast.Compare) -> tuple | None:
        left, right = typed[position], typed[position + 1]
        left_label, right_label = left.type.element is ir.Element.LABEL, right.type.element is ir.Element.LABEL
        if left_label or right_label:
            return self._compare_labels(typed, position, op, node)
        if left.type.element is ir.Element.BOOL or right.type.element is ir.Element.BOOL:
            if op in ("==", "!=") and left.type.element is right.type.element:
                return self._broadcast(left, right, node)
            self.reporter.error(
                "E0402", f"`{op}` compares numbers, found a condition", node.operands[position + 1].span,
                help="conditions are combined with `and`, `or`, `implies` and `not`, or compared with `==`",
            )
            return None
        return self._broadcast(left, right, node)

    def _compare_labels(self, typed: list[ir.Expr], position: int, op: str, node: ast.Compare) -> tuple | None:
        spans = (node.operands[position].span, node.operands[position + 1].span)
        if op not in ("==", "!="):
            self.reporter.error(
                "E0402", f"labels are compared with `==` and `!=`, not `{op}`", spans[0],
                help="labels have no order; to compare scores, index the scores: `y[3] > y[5]`",
            )
            return None
        sides = [typed[position], typed[position + 1]]
        label_side = sides[0] if sides[0].type.element is ir.Element.LABEL else sides[1]
        labels = label_side.type.labels
        for index, side in enumerate(sides):
            converted = self._as_label(side, labels, spans[index])
            if converted is None:
                return None
            typed[position + index] = converted
        return ((), ())

    def _as_label(self, expr: ir.Expr, labels: ir.LabelSet | None, span: Span) -> ir.Expr | None:
        """A label operand, with an integer literal read as a label of `labels`."""
        if isinstance(expr, ir.Const) and expr.type.element is ir.Element.INT:
            expr = ir.LabelConst(int(expr.value), ir.ValueType(ir.Element.LABEL), span)
        if expr.type.element is not ir.Element.LABEL:
            self.reporter.error(
                "E0402", f"a label cannot be compared with {expr.type.describe()}", span,
                help="compare a label with a label (`argmax(y) == 3`) or an index of scores with a number",
            )
            return None
        if isinstance(expr, ir.LabelConst):
            if labels is not None and not labels.opaque and expr.label not in labels:
                self.reporter.error(
                    "E0204", f"label {ir.format_label(expr.label)} is not in {labels.describe()}", span,
                    help="use a label of the set, or add this one to the label set",
                )
                return None
            return ir.LabelConst(expr.label, ir.ValueType(ir.Element.LABEL, labels=labels), span)
        return expr

    def _check_probability_bound(self, compare: ir.Compare) -> ir.Expr | None:
        statistic_sides = [isinstance(operand, ir.Statistic) for operand in compare.operands]
        if not any(statistic_sides):
            return compare
        for operand in compare.operands:
            value = self.constant_value(operand)
            if value is not None and not 0 <= value <= 1:
                self.reporter.error(
                    "E0420", f"{value} is not a probability; accuracy, recall and precision lie in [0, 1]",
                    operand.span, help="write a fraction: 93% is `0.93`",
                )
                return None
        return compare

    def type_InInterval(self, node: ast.InInterval, env: Env) -> ir.Expr | None:
        value, low, high = (self.expr(part, env) for part in (node.value, node.low, node.high))
        if value is None or low is None or high is None:
            return None
        for part, span in ((value, node.value.span), (low, node.low.span), (high, node.high.span)):
            if not self._require_numeric(part, "in [lo, hi]", span):
                return None
        if not (low.type.is_scalar and high.type.is_scalar):
            self.reporter.error(
                "E0402", "the bounds of `in [lo, hi]` must be single numbers", node.low.span,
                help="index one element for a bound, e.g. `x in [0, y[0]]`",
            )
            return None
        shape = (value.type.shape, value.type.axes)
        return ir.InRange(value, low, high, ir.ValueType(ir.Element.BOOL, *shape), node.span)

    def type_InLabels(self, node: ast.InLabels, env: Env) -> ir.Expr | None:
        value = self.expr(node.value, env)
        labels = self.declarations.label_set(node.labels, env)
        if value is None or labels is None:
            return None
        converted = self._as_label(value, None, node.value.span)
        if converted is None:
            return None
        return ir.InLabels(converted, labels, ir.BOOL, node.span)

    # ------------------------------------------------------------ indexing

    def type_Index(self, node: ast.Index, env: Env) -> ir.Expr | None:
        value = self.expr(node.value, env)
        if value is None:
            return None
        value_type = value.type
        if value_type.is_scalar:
            self.reporter.error("E0305", f"cannot index {value_type.describe()}", node.span)
            return None
        return IndexTyper(self, value, node, env).result()

    # ------------------------------------------------------------ calls

    def type_Call(self, node: ast.Call, env: Env) -> ir.Expr | None:
        if isinstance(node.func, ast.SelfRef):
            return self._self_call(node, env)
        if not isinstance(node.func, ast.Name):
            self.reporter.error("E0403", "only built-in functions and `self` can be called", node.func.span)
            return None
        name = node.func.id
        if name not in BUILTIN_FUNCTIONS:
            self.reporter.error(
                "E0403", f"unknown function `{name}`", node.func.span,
                help=did_you_mean(name, BUILTIN_FUNCTIONS) or "see LANGUAGE.md section 5 for the built-ins",
            )
            return None
        if name in STATISTICS:
            return self._statistic(name, node, env)
        positional = [arg for arg in node.args if not isinstance(arg, ast.KeywordArg)]
        keywords = [arg for arg in node.args if isinstance(arg, ast.KeywordArg)]
        return BuiltinTyper(self, name, node, positional, keywords, env).result()

    def _self_call(self, node: ast.Call, env: Env) -> ir.Expr | None:
        if env.clause_kind != "ensures":
            self.reporter.error(
                "E0405", "`self` can only be used in an `ensures`", node.span,
                help="`self(...)` runs the module again; a `requires` is checked before it runs",
            )
            return None
        inputs = [port for port in env.ports.values() if port.direction == "input"]
        outputs = [port for port in env.ports.values() if port.direction == "output"]
        if len(outputs) != 1:
            self.reporter.error(
                "E0404", f"`self(...)` needs a module with one output; this one has {len(outputs)}", node.span,
                help="relate the outputs to the inputs directly; `self` stands for the module's single output",
            )
            return None
        if any(isinstance(arg, ast.KeywordArg) for arg in node.args) or len(node.args) != len(inputs):
            names = ", ".join(port.name for port in inputs)
            self.reporter.error(
                "E0404", f"`self` takes {len(inputs)} argument{'s' if len(inputs) != 1 else ''} ({names}), "
                f"{len(node.args)} given", node.span,
                help=f"pass one value per input, in order: `self({names})`",
            )
            return None
        args = [self.expr(arg, env) for arg in node.args]
        if any(arg is None for arg in args):
            return None
        for arg, port, arg_node in zip(args, inputs, node.args, strict=True):
            expected = port_value_type(port.type)
            if not dims_compatible(arg.type.shape, expected.shape):
                self.reporter.error(
                    "E0307", f"`self` expects `{port.name}` of shape {ir.format_shape(expected.shape)}, "
                    f"found {ir.format_shape(arg.type.shape)}", arg_node.span,
                    help=f"pass a value shaped like one sample of `{port.name}`",
                )
                return None
        output = outputs[0]
        return ir.SelfCall(tuple(args), output.name, port_value_type(output.type), node.span)  # type: ignore[arg-type]

    def _statistic(self, name: str, node: ast.Call, env: Env) -> ir.Expr | None:
        arity = 1 if name == "accuracy" else 2
        if len(node.args) != arity or any(isinstance(arg, ast.KeywordArg) for arg in node.args):
            usage = "accuracy(y)" if arity == 1 else f"{name}(y, LABEL)"
            self.reporter.error("E0404", f"`{name}` takes {arity} argument{'s' * (arity > 1)}", node.span,
                                help=f"write `{usage}`")
            return None
        if not env.statistical_ok:
            self.reporter.error(
                "E0409", f"`{name}` is measured on a data set, but this clause names none", node.span,
                help="add `on DATA` after the clause (and optionally `with confidence 0.95`)",
            )
            return None
        output = node.args[0]
        port = env.ports.get(output.id) if isinstance(output, ast.Name) else None
        if port is None or port.direction != "output":
            self.reporter.error(
                "E0402", f"`{name}` measures an output port's predictions", output.span,
                help=f"name the output of scores, e.g. `{name}(y)`",
            )
            return None
        axes = port_value_type(port.type).axes
        if len(axes) != 1 or axes[0] is None:
            self.reporter.error(
                "E0402", f"`{name}` needs scores over labels: `{port.name}` has no label-indexed axis",
                output.span, help="give the output a label set axis, e.g. `Tensor[B, Digit]`",
            )
            return None
        label = None
        if arity == 2:
            label = self._statistic_label(node.args[1], axes[0], env)
            if label is None:
                return None
        return ir.Statistic(name, port.name, label, ir.REAL, node.span)

    def _statistic_label(self, node: ast.Expr, labels: ir.LabelSet, env: Env) -> ir.Expr | None:
        literal = self.declarations.label_literal(node, env)
        label_type = ir.ValueType(ir.Element.LABEL, labels=labels)
        if literal is None and isinstance(node, ast.Name) and node.id in env.variables:
            bound = env.variables[node.id]
            if bound.element is ir.Element.LABEL:
                variable = ir.VarRef(node.id, bound, node.span)
                return variable if self.labels_fit(variable, labels, node.span, "the output does not score") else None
        if literal is None:
            self.reporter.error("E0203", "expected a label", node.span, help="write a label such as `5` or `\"cat\"`")
            return None
        if not labels.opaque and literal not in labels:
            self.reporter.error(
                "E0204", f"label {ir.format_label(literal)} is not in {labels.describe()}", node.span,
                help="use a label of the set, or add this one to the label set",
            )
            return None
        return ir.LabelConst(literal, label_type, node.span)

    def labels_fit(self, value: ir.Expr, labels: ir.LabelSet, span: Span, where: str) -> bool:
        """A label-valued index or argument takes only labels of `labels`: a backend has no position for others."""
        domain = value.type.labels
        if domain is None or domain.opaque or labels.opaque:
            return True
        axis = set(labels.labels)
        outside = [label for label in domain.labels if label not in axis]
        if not outside:
            return True
        shown = ", ".join(ir.format_label(label) for label in outside[:SHOWN_LABELS])
        if len(outside) > SHOWN_LABELS:
            shown += ", ..."
        subject = f"`{value.name}`" if isinstance(value, ir.VarRef) else "this label"
        self.reporter.error(
            "E0204", f"{subject} can be {shown}, which {where}: its labels are {labels.describe()}", span,
            help=f"quantify over {labels.name or 'these labels'} or a subset of them",
        )
        return False

    # ------------------------------------------------------------ quantifiers

    def type_LabelQuantifier(self, node: ast.LabelQuantifier, env: Env) -> ir.Expr | None:
        labels = self._quantifier_domain(node, env)
        if labels is None:
            return None
        variable = ir.ValueType(ir.Element.LABEL, labels=labels)
        body = self.expr(node.body, env.with_variable(node.var.name, variable))
        if body is None or not self._require_bool(body, node.quantifier, node.body.span):
            return None
        return ir.LabelQuantifier(node.quantifier, node.var.name, labels, body, ir.BOOL, node.span)

    def _quantifier_domain(self, node: ast.LabelQuantifier, env: Env) -> ir.LabelSet | None:
        """The label set a quantifier ranges over; a port, a dim or a number there is named for what it is."""
        domain = node.domain
        if isinstance(domain, ast.Name):
            found = self.declarations.lookup(domain.id, domain.span, env)
            if domain.id in env.ports:
                what = f"`{domain.id}`, a port"
            elif domain.id in env.variables:
                what = f"`{domain.id}`, a quantified variable"
            elif isinstance(found, Symbol) and found.kind != "labels":
                what = f"`{domain.id}`, {KIND_NOUNS[found.kind]}"
            else:
                return self.declarations.label_set(domain, env)
        elif self.declarations.is_label_set_expr(domain, env):
            return self.declarations.label_set(domain, env)
        else:
            what = "this expression"
        self.reporter.error(
            "E0413", f"`{node.quantifier}` ranges over the labels of a label set, not over {what}", domain.span,
            help=f"write `{node.quantifier} l in L: ...` with `L` a label set such as `Digit` or `{{0..9}}`; "
            "for a condition on every element of a tensor use `all(...)` or `any(...)`",
        )
        return None

    def type_BallQuantifier(self, node: ast.BallQuantifier, env: Env) -> ir.Expr | None:
        if env.clause_kind != "ensures":
            self.reporter.error(
                "E0416", "`forall ... within` quantifies over other inputs; it belongs in an `ensures`", node.span,
                help="a `requires` speaks of the one input a caller passes; state robustness as an `ensures`",
            )
            return None
        center = env.ports.get(node.center.id) if isinstance(node.center, ast.Name) else None
        if center is None or center.direction != "input":
            self.reporter.error(
                "E0417", "the ball must be centred on an input port", node.center.span,
                help="write `forall x2 within EPS of x` with `x` an input of the module",
            )
            return None
        norm = node.norm.name if node.norm else "linf"
        if norm not in NORMS:
            self.reporter.error(
                "E0414", f"unknown norm `{norm}`", node.norm.span if node.norm else node.span,
                help="the norms are `linf`, `l2` and `l1`",
            )
            return None
        radius = self._distance(
            node.radius, env, "the radius of a ball cannot be negative",
            "write the distance the perturbed input may move, e.g. `0.02`",
        )
        if radius is None:
            return None
        variable = port_value_type(center.type)
        body = self.expr(node.body, env.with_variable(node.var.name, variable))
        if body is None or not self._require_bool(body, "forall", node.body.span):
            return None
        return ir.BallQuantifier(node.var.name, radius, center.name, norm, body, ir.BOOL, node.span)


def automatic_name(kind: str, span: Span, file_stem: str | None = None) -> str:
    """The name of a clause written without one: its keyword and where it starts (`ensures@12:3`), with
    the stem of its file (`ensures@lib:12:3`) where it is seen from a component of another file."""
    where = f"{file_stem}:" if file_stem is not None else ""
    return f"{kind}@{where}{span.line}:{span.column}"


def port_value_type(tensor: ir.TensorType) -> ir.ValueType:
    """The type of one sample of a port."""
    dims = tensor.sample_dims
    if tensor.dtype in ("int64", "int32", "uint8"):
        element = ir.Element.INT
    elif tensor.dtype == "bool":
        element = ir.Element.BOOL
    else:
        element = ir.Element.REAL
    axes = tuple(dim.labels if isinstance(dim, ir.DimLabels) else None for dim in dims)
    return ir.ValueType(element, dims, axes)


def _wider(current: tuple, new: tuple) -> tuple:
    return new if len(new[0]) > len(current[0]) else current


class IndexTyper:
    """Resolves `v[i, ...]`: labels to positions on label axes, bounds on constant axes."""

    def __init__(self, typer: ClauseTyper, value: ir.Expr, node: ast.Index, env: Env) -> None:
        self.typer, self.value, self.node, self.env = typer, value, node, env
        self.reporter = typer.reporter

    def result(self) -> ir.Expr | None:
        shape, axes = self.value.type.shape, self.value.type.axes
        items = self.node.items
        has_shape_ellipsis = any(isinstance(dim, ir.DimEllipsis) for dim in shape)
        ellipsis_items = [i for i, item in enumerate(items) if isinstance(item, ast.EllipsisDims)]
        if len(ellipsis_items) > 1:
            self.reporter.error("E0304", "`...` appears more than once in this index", items[ellipsis_items[1]].span)
            return None
        fixed = len(items) - len(ellipsis_items)
        if not has_shape_ellipsis and fixed > len(shape):
            self.reporter.error(
                "E0305", f"{fixed} indices for a value with {len(shape)} ax{'e' if len(shape) != 1 else 'i'}s "
                f"(shape {ir.format_shape(shape)})", self.node.span,
                help="in a clause a port is one sample: its batch axis is not indexed"
                if isinstance(self.value, ir.PortRef) else None,
            )
            return None
        if has_shape_ellipsis:
            return self._untracked(items)
        targets = self._axis_positions(len(shape), items, ellipsis_items)
        resolved: list[ir.IndexItem] = []
        out_shape: list[ir.Dim] = []
        out_axes: list[ir.LabelSet | None] = []
        consumed = set()
        for item, axis in zip(items, targets, strict=True):
            if axis is None:
                resolved.append(ir.IndexEllipsis())
                continue
            consumed.add(axis)
            typed = self._item(item, shape[axis], axes[axis])
            if typed is None:
                return None
            resolved.append(typed)
            if isinstance(typed, ir.IndexSlice):
                out_shape.append(slice_length(shape[axis], typed))
                out_axes.append(axes[axis] if typed.start is None and typed.stop is None else None)
        remaining = [axis for axis in range(len(shape)) if axis not in consumed]
        final_shape, final_axes = self._assemble(targets, out_shape, out_axes, remaining, shape, axes)
        element_type = ir.ValueType(self.value.type.element, final_shape, final_axes)
        return ir.Index(self.value, tuple(resolved), element_type, self.node.span)

    def _assemble(self, targets, out_shape, out_axes, remaining, shape, axes):
        # Axes covered by `...` or left unindexed keep their place after the indexed ones, as in torch.
        dims = list(out_shape) + [shape[axis] for axis in remaining]
        labels = list(out_axes) + [axes[axis] for axis in remaining]
        return tuple(dims), tuple(labels)

    def _axis_positions(self, rank: int, items, ellipsis_items) -> list[int | None]:
        if not ellipsis_items:
            return list(range(len(items)))
        split = ellipsis_items[0]
        after = len(items) - split - 1
        return [*range(split), None, *range(rank - after, rank)]

    def _untracked(self, items) -> ir.Expr | None:
        # The value's rank is unknown (its type has `...`): index positions are checked at run time.
        resolved: list[ir.IndexItem] = []
        for item in items:
            typed = self._item(item, ir.DimAny(), None)
            if typed is None:
                return None
            resolved.append(typed)
        element_type = ir.ValueType(self.value.type.element, (ir.DimEllipsis(),), (None,))
        return ir.Index(self.value, tuple(resolved), element_type, self.node.span)

    def _item(self, item, dim: ir.Dim, labels: ir.LabelSet | None) -> ir.IndexItem | None:
        if isinstance(item, ast.EllipsisDims):
            return ir.IndexEllipsis()
        if isinstance(item, ast.Slice):
            return self._slice(item, dim, labels)
        if labels is not None:
            return self._label_index(item, labels)
        return self._position_index(item, dim)

    def _label_index(self, item, labels: ir.LabelSet) -> ir.IndexItem | None:
        literal = self.typer.declarations.label_literal(item, self.env)
        if literal is not None:
            if not labels.opaque and literal not in labels:
                help_text = (
                    "only a label set that includes `other` has a score for it, e.g. `{5} | other`"
                    if literal is ir.OTHER else "on a label-indexed axis an index is a label, not a position"
                )
                self.reporter.error(
                    "E0204", f"label {ir.format_label(literal)} is not in this axis' labels {labels.describe()}",
                    item.span, help=help_text,
                )
                return None
            position = labels.position(literal) if not labels.opaque else 0
            return ir.IndexPosition(position, literal)
        typed = self.typer.expr(item, self.env)
        if typed is None:
            return None
        if typed.type.element is not ir.Element.LABEL:
            self.reporter.error(
                "E0407", f"this axis is indexed by the labels {labels.describe()}, not by {typed.type.describe()}",
                item.span,
            )
            return None
        if not self.typer.labels_fit(typed, labels, item.span, "this axis does not have"):
            return None
        return ir.IndexDynamic(typed, labels)

    def _position_index(self, item, dim: ir.Dim) -> ir.IndexItem | None:
        if isinstance(item, (ast.String, ast.OtherLabel)):
            self.reporter.error(
                "E0407", "a label cannot index an axis that has no label set", item.span,
                help="only axes declared with a label set (e.g. `Tensor[B, Digit]`) take labels",
            )
            return None
        typed = self.typer.expr(item, self.env)
        if typed is None:
            return None
        if typed.type.element is not ir.Element.INT or not typed.type.is_scalar:
            self.reporter.error("E0407", f"an index must be an integer, found {typed.type.describe()}", item.span)
            return None
        value = self.typer.constant_value(typed)
        if value is None:
            return ir.IndexDynamic(typed, None)
        if not float(value).is_integer():  # `2 ** -1` has integer operands and the value 0.5
            self.reporter.error("E0407", f"an index must be an integer, found {value}", item.span)
            return None
        position = int(value)
        if isinstance(dim, ir.DimConst) and not -dim.value <= position < dim.value:
            self.reporter.error(
                "E0306", f"index {position} is out of range for an axis of size {dim.value}", item.span,
                help=f"valid indices run from 0 to {dim.value - 1} (or -{dim.value} to -1)",
            )
            return None
        return ir.IndexPosition(position)

    def _slice(self, item: ast.Slice, dim: ir.Dim, labels: ir.LabelSet | None) -> ir.IndexItem | None:
        bounds = []
        for bound in (item.start, item.stop):
            if bound is None:
                bounds.append(None)
                continue
            if labels is not None:
                self.reporter.error(
                    "E0407", "a label-indexed axis cannot be sliced by position", bound.span,
                    help="index single labels (`y[3]`) or take the whole axis with `:`",
                )
                return None
            value = self.typer.declarations.constant(bound, self.env)
            if value is None:
                return None
            if not float(value).is_integer():
                self.reporter.error("E0407", "slice bounds must be integers", bound.span)
                return None
            bounds.append(int(value))
        return ir.IndexSlice(bounds[0], bounds[1])


def _keywords_help(allowed: tuple[str, ...]) -> str:
    if not allowed:
        return "it takes no keyword arguments"
    if len(allowed) == 1:
        return f"its one keyword argument is `{allowed[0]}`"
    return "its keyword arguments are " + ", ".join(f"`{word}`" for word in allowed)


def _arithmetic(op: str, left: int | float, right: int | float) -> int | float | complex:
    """`left op right` as the backends compute it; an integer power goes through floats first so that
    `10 ** 10 ** 10` overflows at once instead of building a ten-billion-digit integer."""
    if op == "**" and isinstance(left, int) and isinstance(right, int) and right >= 0:
        float(left) ** right  # raises OverflowError when the exact power would be huge
        return left ** right
    return ir.ARITHMETIC[op](left, right)


class BuiltinTyper:
    """Types a call of a built-in function other than the statistics and `self`."""

    def __init__(self, typer: ClauseTyper, name: str, node: ast.Call, positional, keywords, env: Env) -> None:
        self.typer, self.name, self.node, self.env = typer, name, node, env
        self.positional, self.keywords = positional, keywords
        self.reporter = typer.reporter

    def result(self) -> ir.Expr | None:
        handler = getattr(self, f"call_{self.name}", None) or self._generic_handler()
        return handler()

    def _generic_handler(self):
        if self.name in ELEMENTWISE:
            return self._elementwise
        return self._reduction

    def _arity(self, low: int, high: int | None = None, allowed_keywords: tuple[str, ...] = ()) -> bool:
        high = low if high is None else high
        count = len(self.positional)
        for keyword in self.keywords:
            if keyword.name.name not in allowed_keywords:
                self.reporter.error(
                    "E0415", f"`{self.name}` has no argument `{keyword.name.name}`", keyword.name.span,
                    help=_keywords_help(allowed_keywords),
                )
                return False
        if not low <= count <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            self.reporter.error(
                "E0404", f"`{self.name}` takes {wanted} argument{'s' if high != 1 else ''}, {count} given",
                self.node.span, help=f"write `{USAGE.get(self.name, self.name + '(v)')}`",
            )
            return False
        return True

    def _args(self) -> list[ir.Expr] | None:
        args = [self.typer.expr(arg, self.env) for arg in self.positional]
        return None if any(arg is None for arg in args) else args  # type: ignore[return-value]

    def _numeric(self, arg: ir.Expr, position: int) -> bool:
        return self.typer._require_numeric(arg, self.name, self.positional[position].span)

    def _call(self, args, value_type: ir.ValueType, options=()) -> ir.Call:
        return ir.Call(self.name, tuple(args), tuple(options), value_type, self.node.span)

    def _elementwise(self) -> ir.Expr | None:
        if not self._arity(1):
            return None
        args = self._args()
        if args is None or not self._numeric(args[0], 0):
            return None
        value_type = args[0].type
        return self._call(args, ir.ValueType(ir.Element.REAL, value_type.shape, value_type.axes))

    def _reduction(self) -> ir.Expr | None:
        if self.name in ("min", "max") and len(self.positional) == 2:
            return self._pairwise()
        if not self._arity(1):
            return None
        args = self._args()
        if args is None or not self._numeric(args[0], 0):
            return None
        return self._call(args, ir.REAL)

    def _pairwise(self) -> ir.Expr | None:
        args = self._args()
        if args is None or not (self._numeric(args[0], 0) and self._numeric(args[1], 1)):
            return None
        shape = self.typer._broadcast(args[0], args[1], self.node)
        return None if shape is None else self._call(args, ir.ValueType(ir.Element.REAL, *shape))

    def call_softmax(self) -> ir.Expr | None:
        if not self._arity(1):
            return None
        args = self._args()
        if args is None or not self._numeric(args[0], 0):
            return None
        if args[0].type.is_scalar:
            self.reporter.error("E0402", "`softmax` needs a vector of scores, found a single number",
                                self.positional[0].span, help="pass the whole output of scores, e.g. `softmax(y)`")
            return None
        value_type = args[0].type
        return self._call(args, ir.ValueType(ir.Element.REAL, value_type.shape, value_type.axes))

    def call_clamp(self) -> ir.Expr | None:
        if not self._arity(3):
            return None
        args = self._args()
        if args is None or not all(self._numeric(arg, i) for i, arg in enumerate(args)):
            return None
        if not (args[1].type.is_scalar and args[2].type.is_scalar):
            self.reporter.error(
                "E0402", "the bounds of `clamp` must be single numbers", self.node.span,
                help="write the bounds as numbers, e.g. `clamp(y, 0, 1)`",
            )
            return None
        value_type = args[0].type
        return self._call(args, ir.ValueType(ir.Element.REAL, value_type.shape, value_type.axes))

    def call_norm(self) -> ir.Expr | None:
        if not self._arity(1, 2):
            return None
        args = self._args()
        if args is None or not self._numeric(args[0], 0):
            return None
        order = 2.0
        if len(args) == 2:
            if not isinstance(args[1], ir.Const) or float(args[1].value) not in (1.0, 2.0, float("inf")):
                self.reporter.error(
                    "E0414", "the order of `norm` must be 1, 2 or inf", self.positional[1].span,
                    help="write `norm(v, 2)`, `norm(v, 1)` or `norm(v, inf)`",
                )
                return None
            order = float(args[1].value)
        return self._call(args[:1], ir.REAL, (("p", ir.Const(order, ir.REAL, self.node.span)),))

    def call_argmax(self) -> ir.Expr | None:
        if not self._arity(1):
            return None
        args = self._args()
        if args is None or not self._numeric(args[0], 0):
            return None
        value_type = args[0].type
        if value_type.is_scalar:
            self.reporter.error("E0402", f"`{self.name}` needs a vector, found a single number",
                                self.positional[0].span, help=f"pass a tensor, e.g. `{self.name}(y)`")
            return None
        if len(value_type.axes) == 1 and value_type.axes[0] is not None:
            return self._call(args, ir.ValueType(ir.Element.LABEL, labels=value_type.axes[0]))
        return self._call(args, ir.INT)

    call_argmin = call_argmax

    def call_count(self) -> ir.Expr | None:
        if not self._arity(1):
            return None
        args = self._args()
        if args is None or not self.typer._require_bool(args[0], "count", self.positional[0].span):
            return None
        return self._call(args, ir.INT)

    def call_all(self) -> ir.Expr | None:
        if not self._arity(1):
            return None
        args = self._args()
        if args is None or not self.typer._require_bool(args[0], self.name, self.positional[0].span):
            return None
        return self._call(args, ir.BOOL)

    call_any = call_all

    def call_finite(self) -> ir.Expr | None:
        if not self._arity(1):
            return None
        args = self._args()
        if args is None or not self._numeric(args[0], 0):
            return None
        return self._call(args, ir.BOOL)

    def call_flip(self) -> ir.Expr | None:
        if not self._arity(1, 1, ("dim",)):
            return None
        args = self._args()
        if args is None or not self._numeric(args[0], 0):
            return None
        rank = len(args[0].type.shape)
        axis = -1
        for keyword in self.keywords:
            value = self.typer.declarations.constant(keyword.value, self.env)
            if value is None:
                return None
            if not float(value).is_integer() or not -rank <= value < rank:  # checked before int(): inf has no int
                self.reporter.error(
                    "E0306", f"`dim={value}` is not an axis of a value with {rank} axes", keyword.value.span,
                    help=f"its axes are {-rank} to {rank - 1} (negative ones count from the last)" if rank else None,
                )
                return None
            axis = int(value)
        if rank == 0:
            self.reporter.error(
                "E0402", "`flip` needs a tensor, found a single number", self.positional[0].span,
                help="flip a whole port, e.g. `flip(x, dim=-1)`",
            )
            return None
        option = ("dim", ir.Const(axis, ir.INT, self.node.span))
        return self._call(args, args[0].type, (option,))

    def call_monotone(self) -> ir.Expr | None:
        if self.env.clause_kind != "ensures":
            self.reporter.error(
                "E0405", "`monotone` compares the module at two inputs; it belongs in an `ensures`", self.node.span,
            )
            return None
        if not self._arity(2, 2, ("decreasing",)):
            return None
        args = self._args()
        if args is None or not (self._numeric(args[0], 0) and self._numeric(args[1], 1)):
            return None
        for position, arg in enumerate(args):
            if not arg.type.is_scalar:
                self.reporter.error(
                    "E0402", f"`monotone` relates two single numbers, found {arg.type.describe()}",
                    self.positional[position].span, help="index one element, e.g. `monotone(y[3], x[0, 5])`",
                )
                return None
        if not any(isinstance(node, ir.PortRef) and node.direction == "input" for node in ir.walk(args[1])):
            self.reporter.error(
                "E0402", "the second argument of `monotone` must be (an element of) an input",
                self.positional[1].span, help="write `monotone(y[k], x[i])` with `x` an input of the module",
            )
            return None
        return self._call(args, ir.BOOL)
