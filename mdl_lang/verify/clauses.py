"""From a module's typed clauses to verification queries.

Three forms are translated exactly:
- output ranges and linear arithmetic `ensures` over the output (`y in [lo, hi]`, `all(y >= 0)`,
  `y[3] - y[1] <= 2`, chains, `and`, `or`), checked over the input port's value range and its linear
  `requires`;
- `forall x2 within EPS of x (linf): argmax(self(x2)) == argmax(y)`, one query per point, the ball
  intersected with the input's range and `requires`;
- the output port's own value range (`Tensor[...] in [0, 1]`).
Everything else is `Untranslatable` with the reason, which the CLI reports as `unknown`; clauses of
the statistical and cost fragments are not verification clauses and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mdl_lang import ir
from mdl_lang.verify.query import LinearConstraint, Query


class Untranslatable(Exception):
    """A clause (or a `requires` it depends on) outside the linear fragment the verifier decides."""


@dataclass(frozen=True)
class Form:
    """Rows of linear forms `matrix @ v + constant` over one port's flat vector v (k rows, or 1 to broadcast)."""

    matrix: torch.Tensor
    constant: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])


@dataclass(frozen=True)
class InputRegion:
    """The input box and linear input constraints from the port's range and the `requires`.

    `value_range` is the port type's own range and `origins` names, per constraint, the `requires`
    it comes from: a robustness centre outside either is no input the clause speaks about."""

    lower: torch.Tensor
    upper: torch.Tensor
    constraints: tuple[LinearConstraint, ...]
    value_range: tuple[float, float] | None = None
    origins: tuple[str, ...] = ()

    def excluded_because(self, point: torch.Tensor) -> str | None:
        """Why `point` (one sample) is not an input of the module: outside the port's range, or breaking a
        `requires`; None when it is one. Exact in float64, as the constraints are."""
        flat = point.reshape(1, -1).to(torch.float64)
        if self.value_range is not None:
            low, high = self.value_range
            outside = ((flat < low) | (flat > high)).flatten().nonzero().flatten()
            if outside.numel():
                index = int(outside[0])
                return f"element {index} is {float(flat[0, index]):.6g}, outside the input's range [{low:g}, {high:g}]"
        for constraint, origin in zip(self.constraints, self.origins, strict=False):
            if not bool(constraint.holds(flat)[0]):
                return f"it breaks the requires `{origin}`"
        return None


@dataclass(frozen=True)
class Robustness:
    """A robustness clause: the L-infinity radius around each point, and the premise about the point
    (`max(y) >= 0.9 implies forall ...`) under which it is promised, if any."""

    radius: float
    premise: ir.Expr | None = None


Unsafe = tuple[tuple[LinearConstraint, ...], ...]


def port_shape(port: ir.Port, fallback: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """One sample's concrete shape from the port type; symbolic dims take `fallback` (from the points)."""
    shape = []
    for dim in port.type.sample_dims:
        if isinstance(dim, ir.DimConst):
            shape.append(dim.value)
        elif isinstance(dim, ir.DimLabels):
            shape.append(len(dim.labels))
        elif fallback is not None:
            return tuple(fallback)
        else:
            raise Untranslatable(f"the shape of `{port.name}` is not fixed ({ir.format_shape(port.type.dims)}); "
                                 "pass --points to give one sample's shape")
    return tuple(shape)


def single_ports(component: ir.Module) -> tuple[ir.Port, ir.Port]:
    inputs, outputs = component.interface.inputs, component.interface.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise Untranslatable("only modules with one input and one output port are verified")
    return inputs[0], outputs[0]


def input_region(component: ir.Module, input_shape: tuple[int, ...]) -> InputRegion:
    """The box of the input port's value range, narrowed by linear `requires` (kept also as constraints)."""
    port, _ = single_ports(component)
    size = _numel(input_shape)
    low, high = port.type.value_range if port.type.value_range is not None else (float("-inf"), float("inf"))
    lower = torch.full((size,), float(low), dtype=torch.float64)
    upper = torch.full((size,), float(high), dtype=torch.float64)
    constraints: list[LinearConstraint] = []
    origins: list[str] = []
    for clause in component.all_clauses:
        if clause.kind != "requires":
            continue
        for constraint in _conditions(clause.expr, port.name, input_shape, f"the requires `{clause.name}`"):
            constraints.append(constraint)
            origins.append(clause.name)
            _narrow_box(constraint, lower, upper)
    return InputRegion(lower, upper, tuple(constraints), port.type.value_range, tuple(origins))


def _narrow_box(constraint: LinearConstraint, lower: torch.Tensor, upper: torch.Tensor) -> None:
    """A constraint on one coordinate narrows the box; widened by a relative 1e-12 so rounding the
    division never cuts off a feasible point (the constraint itself stays exact)."""
    nonzero = torch.nonzero(constraint.coefficients).flatten()
    if nonzero.numel() != 1:
        return
    index = int(nonzero[0])
    weight = float(constraint.coefficients[index])
    limit = -constraint.constant / weight
    widened = abs(limit) * 1e-12 + 1e-300
    if weight > 0:
        upper[index] = min(float(upper[index]), limit + widened)
    else:
        lower[index] = max(float(lower[index]), limit - widened)


def _conditions(expr: ir.Expr, port: str, shape: tuple[int, ...], what: str) -> list[LinearConstraint]:
    """A conjunction of linear atoms as the constraints that say it holds, strictness kept exactly
    (`a < b` is d < 0). Used for `requires` and for the premise of `implies` / the operand of `not`."""
    if isinstance(expr, ir.Logic) and expr.op == "and":
        return _conditions(expr.left, port, shape, what) + _conditions(expr.right, port, shape, what)
    if isinstance(expr, ir.Call) and expr.function == "finite":
        return []  # every point of a box, and every value a ReLU network computes on it, is finite
    if isinstance(expr, ir.Call) and expr.function == "all" and len(expr.args) == 1:
        return _conditions(expr.args[0], port, shape, what)
    if isinstance(expr, ir.InRange):
        value = _form(expr.value, port, shape)
        return _holds(_difference(_form(expr.low, port, shape), value), False) + _holds(
            _difference(value, _form(expr.high, port, shape)), False)
    if isinstance(expr, ir.Compare):
        constraints: list[LinearConstraint] = []
        for left, op, right in zip(expr.operands, expr.ops, expr.operands[1:], strict=False):
            difference = _difference(_form(left, port, shape), _form(right, port, shape))
            if op in ("<", "<="):
                constraints += _holds(difference, op == "<")
            elif op in (">", ">="):
                constraints += _holds(_negate(difference), op == ">")
            elif op == "==":
                tolerance = _constant(expr.tolerance) if expr.tolerance is not None else 0.0
                constraints += _holds(_shift(difference, -tolerance), False) + _holds(
                    _shift(_negate(difference), -tolerance), False)
            else:
                raise Untranslatable(f"{what} uses `{op}`, which is not convex")
        return constraints
    raise Untranslatable(f"{what} is not a conjunction of linear constraints on `{port}`")


def _holds(form: Form, strict: bool) -> list[LinearConstraint]:
    return [LinearConstraint(form.matrix[row].clone(), float(form.constant[row]), strict) for row in range(form.rows)]


def robustness(clause: ir.Clause, input_port: str, output_port: str) -> Robustness | None:
    """The radius when `clause` is `forall x2 within EPS of x (linf): argmax(self(x2)) == argmax(y)`, maybe
    behind a premise (`P implies forall ...`): P speaks of the point alone, so it is evaluated there."""
    expr, premise = clause.expr, None
    if isinstance(expr, ir.Logic) and expr.op == "implies" and isinstance(expr.right, ir.BallQuantifier):
        premise, expr = expr.left, expr.right
    if not isinstance(expr, ir.BallQuantifier):
        return None
    if expr.norm != "linf":
        raise Untranslatable(f"the {expr.norm} ball is not piecewise-linear; only (linf) balls are verified")
    if expr.center != input_port:
        raise Untranslatable(f"the ball is centred on `{expr.center}`, not the input `{input_port}`")
    body = expr.body
    if not (isinstance(body, ir.Compare) and body.ops == ("==",) and body.tolerance is None):
        raise Untranslatable("only `argmax(self(x2)) == argmax(y)` is verified inside a ball")
    sides = {_argmax_side(operand, expr.var, output_port) for operand in body.operands}
    if sides != {"perturbed", "original"}:
        raise Untranslatable("only `argmax(self(x2)) == argmax(y)` is verified inside a ball")
    radius = _constant(expr.radius)
    if radius < 0:
        raise Untranslatable(f"negative radius {radius}")
    return Robustness(radius, premise)


def _argmax_side(operand: ir.Expr, var: str, output_port: str) -> str | None:
    if not (isinstance(operand, ir.Call) and operand.function == "argmax" and len(operand.args) == 1):
        return None
    inner = operand.args[0]
    if isinstance(inner, ir.Call) and inner.function == "softmax" and len(inner.args) == 1:
        inner = inner.args[0]  # softmax is monotone: the argmax is the same
    if isinstance(inner, ir.SelfCall) and len(inner.args) == 1 and isinstance(inner.args[0], ir.VarRef) \
            and inner.args[0].name == var and inner.output == output_port:
        return "perturbed"
    if isinstance(inner, ir.PortRef) and inner.port == output_port:
        return "original"
    return None


def robustness_unsafe(label: int, classes: int) -> Unsafe:
    """argmax(y) != label, with torch's tie rule (the first maximum wins): y_j >= y_label for j < label,
    y_j > y_label for j > label."""
    return tuple(
        (LinearConstraint.less_equal(classes, {label: 1.0, j: -1.0}, 0.0, strict=j > label),)
        for j in range(classes) if j != label
    )


def robustness_query(radius: float, point: torch.Tensor, label: int, classes: int, region: InputRegion,
                     name: str) -> Query | None:
    """The ball around `point` intersected with the input region; None when that is empty."""
    flat = point.reshape(-1).to(torch.float64)
    lower = torch.maximum(flat - radius, region.lower)
    upper = torch.minimum(flat + radius, region.upper)
    if bool((lower > upper).any()):
        return None
    return Query(lower, upper, robustness_unsafe(label, classes), region.constraints, name)


def ensures_unsafe(expr: ir.Expr, output_port: str, output_size: int) -> Unsafe:
    """The violations of a linear `ensures` over the output, in disjunctive normal form."""
    shape = (output_size,)
    if isinstance(expr, ir.Logic) and expr.op == "and":
        return ensures_unsafe(expr.left, output_port, output_size) + ensures_unsafe(expr.right, output_port,
                                                                                    output_size)
    if isinstance(expr, ir.Logic) and expr.op == "or":
        left = ensures_unsafe(expr.left, output_port, output_size)
        right = ensures_unsafe(expr.right, output_port, output_size)
        if len(left) * len(right) > 4096:
            raise Untranslatable("the `or` expands to more than 4096 cases")
        return tuple(a + b for a in left for b in right)
    if isinstance(expr, ir.Call) and expr.function == "all" and len(expr.args) == 1:
        return ensures_unsafe(expr.args[0], output_port, output_size)
    if isinstance(expr, ir.Logic) and expr.op == "implies":
        # Violated where the premise holds and the conclusion fails.
        premise = tuple(_conditions(expr.left, output_port, shape, "the premise of `implies`"))
        return tuple(premise + case for case in ensures_unsafe(expr.right, output_port, output_size))
    if isinstance(expr, ir.Not):
        return (tuple(_conditions(expr.operand, output_port, shape, "the operand of `not`")),)
    if isinstance(expr, ir.InRange):
        value = _form(expr.value, output_port, shape)
        return _violations(_form(expr.low, output_port, shape), "<=", value) + _violations(
            value, "<=", _form(expr.high, output_port, shape))
    if isinstance(expr, ir.Compare):
        unsafe: Unsafe = ()
        for left, op, right in zip(expr.operands, expr.ops, expr.operands[1:], strict=False):
            tolerance = _constant(expr.tolerance) if expr.tolerance is not None else None
            unsafe += _violations(_form(left, output_port, shape), op, _form(right, output_port, shape), tolerance)
        return unsafe
    raise Untranslatable(f"{described(expr)} is outside the linear fragment the verifier decides")


def _violations(left: Form, op: str, right: Form, tolerance: float | None = None) -> Unsafe:
    """The ways `left op right` fails, elementwise: one conjunction per element and way."""
    difference = _difference(left, right)
    negated = _negate(difference)
    if op == "<=":  # fails where d > 0, i.e. -d < 0
        return _each_row(negated, strict=True)
    if op == "<":  # fails where d >= 0
        return _each_row(negated, strict=False)
    if op == ">=":  # fails where d < 0
        return _each_row(difference, strict=True)
    if op == ">":
        return _each_row(difference, strict=False)
    if op == "==":
        slack = tolerance or 0.0
        # |d| > tolerance: d - tol > 0 or -d - tol > 0.
        return _each_row(_shift(negated, slack), strict=True) + _each_row(_shift(difference, slack), strict=True)
    if op == "!=":
        return tuple(
            (LinearConstraint(difference.matrix[r].clone(), float(difference.constant[r])),
             LinearConstraint(negated.matrix[r].clone(), float(negated.constant[r])))
            for r in range(difference.rows)
        )
    raise Untranslatable(f"comparison `{op}`")


def _each_row(form: Form, strict: bool) -> Unsafe:
    return tuple(
        (LinearConstraint(form.matrix[r].clone(), float(form.constant[r]), strict),) for r in range(form.rows)
    )


def _difference(left: Form, right: Form) -> Form:
    return _combine(left, right, -1.0)


def _negate(form: Form) -> Form:
    return Form(-form.matrix, -form.constant)


def _shift(form: Form, amount: float) -> Form:
    return Form(form.matrix, form.constant + amount)


def _combine(left: Form, right: Form, sign: float) -> Form:
    if left.rows != right.rows and 1 not in (left.rows, right.rows):
        raise Untranslatable(f"shapes with {left.rows} and {right.rows} elements do not broadcast")
    rows = max(left.rows, right.rows)
    return Form(
        left.matrix.expand(rows, -1) + sign * right.matrix.expand(rows, -1),
        left.constant.expand(rows) + sign * right.constant.expand(rows),
    )


def _constant(expr: ir.Expr | None) -> float:
    if isinstance(expr, ir.Const) and not isinstance(expr.value, bool):
        return float(expr.value)
    if isinstance(expr, ir.Neg):
        return -_constant(expr.operand)
    if isinstance(expr, ir.Arith) and expr.op in ("+", "-", "*", "/"):
        left, right = _constant(expr.left), _constant(expr.right)
        return {"+": left + right, "-": left - right, "*": left * right, "/": left / right}[expr.op]
    raise Untranslatable("a radius or tolerance that is not a constant")


def _form(expr: ir.Expr, port: str, shape: tuple[int, ...]) -> Form:
    """A linear expression over one sample of `port` (flat, `shape`) as rows of linear forms."""
    size = _numel(shape)
    if isinstance(expr, ir.PortRef) and expr.port == port:
        return Form(torch.eye(size, dtype=torch.float64), torch.zeros(size, dtype=torch.float64))
    if isinstance(expr, ir.Const | ir.Neg | ir.Arith) and _is_constant(expr):
        return Form(torch.zeros(1, size, dtype=torch.float64), torch.tensor([_constant(expr)], dtype=torch.float64))
    if isinstance(expr, ir.Neg):
        return _negate(_form(expr.operand, port, shape))
    if isinstance(expr, ir.Arith):
        if expr.op in ("+", "-"):
            sign = 1.0 if expr.op == "+" else -1.0
            return _combine(_form(expr.left, port, shape), _form(expr.right, port, shape), sign)
        if expr.op == "*" and _is_constant(expr.left):
            return _scale(_form(expr.right, port, shape), _constant(expr.left))
        if expr.op in ("*", "/") and _is_constant(expr.right):
            factor = _constant(expr.right)
            return _scale(_form(expr.left, port, shape), factor if expr.op == "*" else 1.0 / factor)
        raise Untranslatable(f"`{expr.op}` of two non-constant values is not linear")
    if isinstance(expr, ir.Index) and isinstance(expr.value, ir.PortRef) and expr.value.port == port:
        return _index(expr, shape)
    if isinstance(expr, ir.Call) and expr.function in ("sum", "mean") and len(expr.args) == 1 and not expr.options:
        inner = _form(expr.args[0], port, shape)
        factor = 1.0 if expr.function == "sum" else 1.0 / inner.rows
        return Form(inner.matrix.sum(0, keepdim=True) * factor, inner.constant.sum(0, keepdim=True) * factor)
    raise Untranslatable(f"{described(expr)} is not linear in `{port}`")


def _is_constant(expr: ir.Expr) -> bool:
    try:
        _constant(expr)
    except Untranslatable:
        return False
    return True


def _scale(form: Form, factor: float) -> Form:
    return Form(form.matrix * factor, form.constant * factor)


def _index(expr: ir.Index, shape: tuple[int, ...]) -> Form:
    """Constant positions (labels already resolved to positions) select one element."""
    if len(expr.items) != len(shape) or not all(isinstance(item, ir.IndexPosition) for item in expr.items):
        raise Untranslatable("only indexing every axis by a constant position or label is verified")
    flat = 0
    for item, size in zip(expr.items, shape, strict=True):
        flat = flat * size + item.position
    size = _numel(shape)
    matrix = torch.zeros(1, size, dtype=torch.float64)
    matrix[0, flat] = 1.0
    return Form(matrix, torch.zeros(1, dtype=torch.float64))


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


_FORMS = {
    "SelfCall": "`self(...)`", "LabelQuantifier": "a `forall`/`exists` over labels",
    "BallQuantifier": "a `forall ... within ... of` ball", "Statistic": "a statistical measure",
    "InLabels": "a label-set test (`in L`)", "Logic": "`or`", "Not": "`not`", "Neg": "a negation",
    "Index": "an index", "VarRef": "a quantified variable", "DimValue": "a dim", "LabelConst": "a label",
}
"""How a reason names an expression the verifier does not take, in the spec's words."""


def described(expr: ir.Expr) -> str:
    """An expression as a reason names it: a call by its function, other forms as the spec writes them."""
    if isinstance(expr, ir.Call):
        return f"`{expr.function}(...)`"
    if isinstance(expr, ir.Logic):
        return f"`{expr.op}`"
    return _FORMS.get(type(expr).__name__, "this expression")
