"""Label sets, dims and tensor types: from syntax to IR values, with their static checks.

Top-level `labels` and `dim` declarations may refer to each other in any
order; each is evaluated once, on first use, and a declaration that needs
itself is reported as recursive.
"""

from __future__ import annotations

import math

from mdl_lang import ir
from mdl_lang.diagnostics import Note
from mdl_lang.semantics.context import KIND_NOUNS, Env, FileScope, Reporter, Symbol, did_you_mean
from mdl_lang.semantics.shapes import fold_dim
from mdl_lang.span import Span
from mdl_lang.syntax import ast

BUILTIN_CONSTANTS = {"inf": float("inf"), "pi": 3.141592653589793, "true": True, "false": False}
ARGUMENT_EXAMPLES = {"a label set": "`Digit` or `{0..9}`", "a dimension": "`8` or the name of a `dim`"}
# Larger ranges are typos (`0..99999999`), and would take the checker minutes to build.
MAX_RANGE_LABELS = 100_000
CONSTANT_HELP = "use numbers, constant dims and `+ - * / **` (e.g. `1/255`, `-inf`)"
DTYPE_HINT = "dtypes are " + ", ".join(ir.DTYPES) + " and `float` (any floating dtype); `finite` forbids NaN and inf"


class Declarations:
    """Evaluates label sets, dims and types for every file of one check."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._label_cache: dict[tuple[str, str], ir.LabelSet | None] = {}
        self._dim_cache: dict[tuple[str, str], ir.Dim | None] = {}
        self._in_progress: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ names

    def lookup(self, name: str, span: Span, env: Env) -> Symbol | ir.LabelSet | ir.Dim | None:
        """A generic parameter's value, or the declaration `name` (possibly dotted) refers to."""
        if name in env.params:
            return env.params[name]
        return env.scope.lookup(ast.QualifiedName(tuple(name.split(".")), span))

    def undefined(self, name: str, span: Span, scope: FileScope, wanted: str, kinds: tuple[str, ...]) -> None:
        alias = name.partition(".")[0]
        if "." in name and alias in scope.imports and scope.imports[alias] is None:
            return  # its import failed, and said so: each use of the alias would only repeat that error
        help_text = did_you_mean(name, _names_of_kind(name, scope, kinds)) or (
            f"declare it in this file, or import the file that does and write `alias.{name}`"
            if "." not in name else "check the alias and that the imported file declares this name"
        )
        self.reporter.error("E0101", f"undefined {wanted} `{name}`", span, help=help_text)

    def wrong_kind(self, name: str, span: Span, symbol: Symbol, wanted: str) -> None:
        self.reporter.error(
            "E0107", f"`{name}` is {KIND_NOUNS[symbol.kind]}, not {wanted}", span,
            help=f"`{name}` is declared at {symbol.span}",
        )

    def _guarded(self, symbol: Symbol, cache: dict, evaluate):
        key = (symbol.scope.path, symbol.name)
        if key in cache:
            return cache[key]
        if key in self._in_progress:
            self.reporter.error(
                "E0115", f"`{symbol.name}` is defined in terms of itself", symbol.span,
                help="break the cycle: a label set or dim cannot depend on its own value",
            )
            return None
        self._in_progress.add(key)
        try:
            value = evaluate()
        finally:
            self._in_progress.discard(key)
        cache[key] = value
        return value

    # ------------------------------------------------------------ label sets

    def declared_labels(self, symbol: Symbol) -> ir.LabelSet | None:
        node: ast.LabelsDecl = symbol.node  # type: ignore[assignment]

        def evaluate() -> ir.LabelSet | None:
            env = Env(symbol.scope)
            value = self.label_set(node.value, env)
            if value is None:
                return None
            if node.parent is not None:
                self._check_within(symbol.name, value, node.parent, env)
            return ir.LabelSet(value.labels, symbol.name, value.opaque)

        return self._guarded(symbol, self._label_cache, evaluate)

    def _check_within(self, name: str, value: ir.LabelSet, parent_expr: ast.Expr, env: Env) -> None:
        """`labels NAME = ... within PARENT`: every label of the set is one of the parent's."""
        parent = self.label_set(parent_expr, env)
        if parent is None or parent.opaque:
            return
        parent_labels = set(parent.labels)
        outside = [label for label in value.labels if label not in parent_labels]
        if outside:
            parent_name = _set_name(parent_expr)
            self.reporter.error(
                "E0201", f"`{name}` is not within {parent_name}: {_labels_phrase(outside)} not in it",
                parent_expr.span, help=f"{parent_name} is {ir.LabelSet(parent.labels).describe()}",
            )

    def label_set(self, expr: ast.Expr, env: Env) -> ir.LabelSet | None:
        """The label set an expression denotes, or None after reporting why it is none."""
        match expr:
            case ast.Name(id=name):
                return self._named_label_set(name, expr.span, env)
            case ast.OtherLabel():
                return ir.LabelSet((ir.OTHER,))
            case ast.LabelSetLiteral(items=items):
                return self._literal_labels(items, env)
            case ast.Binary(op="|" | "-" as op, left=left, right=right):
                left_set, right_set = self.label_set(left, env), self.label_set(right, env)
                if left_set is None or right_set is None:
                    return None
                return left_set.union(right_set) if op == "|" else left_set.difference(right_set)
        self.reporter.error(
            "E0205", "expected a label set", expr.span,
            help="a label set is a name, a literal like `{0..9}` or `{\"cat\", \"dog\"}`, `other`, `A | B` or `A - B`",
        )
        return None

    def _named_label_set(self, name: str, span: Span, env: Env) -> ir.LabelSet | None:
        found = self.lookup(name, span, env)
        if isinstance(found, ir.LabelSet):
            return found
        if isinstance(found, ir.DimLabels):
            return found.labels
        if isinstance(found, Symbol):
            if found.kind == "labels":
                return self.declared_labels(found)
            self.wrong_kind(name, span, found, "a label set")
            return None
        if found is not None:
            self._argument_of_wrong_kind(name, span, env, "a label set", "a dimension", "as a label set")
            return None
        self.undefined(name, span, env.scope, "label set", ("labels",))
        return None

    def _literal_labels(self, items: tuple, env: Env) -> ir.LabelSet | None:
        labels: list[ir.Label] = []
        seen: set[ir.Label] = set()  # a set: a range may hold many labels
        ok = True
        for item in items:
            for label, span in self._literal_item(item, env):
                if label is None:
                    ok = False
                elif label in seen:
                    self.reporter.warning(
                        "W0201", f"label {ir.format_label(label)} is listed twice", span,
                        help="a label set holds each label once; remove the repetition",
                    )
                else:
                    labels.append(label)
                    seen.add(label)
        return ir.LabelSet(tuple(labels)) if ok else None

    def _literal_item(self, item, env: Env) -> list[tuple[ir.Label | None, Span]]:
        if isinstance(item, ast.LabelRange):
            low, high = self.constant_int(item.low, env), self.constant_int(item.high, env)
            if low is None or high is None:
                return [(None, item.span)]
            if low > high:
                self.reporter.error(
                    "E0202", f"label range {low}..{high} is empty", item.span,
                    help=f"write the smaller bound first: `{high}..{low}`",
                )
                return [(None, item.span)]
            if high - low >= MAX_RANGE_LABELS:
                self.reporter.error(
                    "E0206", f"label range {low}..{high} has {high - low + 1} labels; a range holds at most "
                    f"{MAX_RANGE_LABELS:,}", item.span,
                    help="a label set names the classes of a module's scores; check the bounds of the range",
                )
                return [(None, item.span)]
            return [(label, item.span) for label in range(low, high + 1)]
        label = self.label_literal(item, env)
        if label is not None:
            return [(label, item.span)]
        if isinstance(item, (ast.Name, ast.Binary)):
            members = self.label_set(item, env)
            return [(label, item.span) for label in members.labels] if members else [(None, item.span)]
        what = f"`{item.text}`" if isinstance(item, ast.Number) else "this"
        self.reporter.error(
            "E0203", f"{what} is not a label", item.span, help="labels are integers, strings or `other`",
        )
        return [(None, item.span)]

    def label_literal(self, expr: ast.Expr, env: Env) -> ir.Label | None:
        """An integer, string or `other` written as a label; None if the expression is none of these."""
        match expr:
            case ast.String(value=value):
                return value
            case ast.OtherLabel():
                return ir.OTHER
            case ast.Number() if expr.is_integer and not expr.suffix:
                return int(expr.value)
            case ast.Unary(op="-", operand=ast.Number() as number) if number.is_integer and not number.suffix:
                return -int(number.value)
        return None

    # ------------------------------------------------------------ dims

    def declared_dim(self, symbol: Symbol) -> ir.Dim | None:
        item: ast.DimItem = symbol.node  # type: ignore[assignment]

        def evaluate() -> ir.Dim | None:
            if item.kind == "batch":
                return ir.DimVar(symbol.name, batch=True)
            if item.kind == "free":
                return ir.DimVar(symbol.name)
            value = self.dim(item.value, Env(symbol.scope), allow_labels=False)
            if isinstance(value, ir.DimConst) and value.value <= 0:
                self.reporter.error(
                    "E0302", f"dimension `{symbol.name}` is {value.value}; a dimension must be positive",
                    item.value.span, help="a dimension counts the elements of an axis: at least 1",
                )
                return None
            return value

        return self._guarded(symbol, self._dim_cache, evaluate)

    def dim(self, expr: ast.Expr, env: Env, allow_labels: bool = True) -> ir.Dim | None:
        """A dimension (`8`, `H * W`, `S - 1`, `_`, `...`, a label set) as IR."""
        match expr:
            case ast.Number():
                if not expr.is_integer or expr.suffix or expr.value <= 0:
                    self.reporter.error(
                        "E0302", f"dimension `{expr.text}` is not a positive integer", expr.span,
                        help="a dimension is a positive whole number of elements, such as `8`",
                    )
                    return None
                return ir.DimConst(int(expr.value))
            case ast.Wildcard():
                return ir.DimAny()
            case ast.EllipsisDims():
                return ir.DimEllipsis()
            case ast.Name(id=name):
                return self._named_dim(name, expr.span, env, allow_labels)
            case ast.Binary(op="+" | "-" | "*" | "//" | "/" as op, left=left, right=right):
                return self._dim_arithmetic(op, left, right, expr, env, allow_labels)
            case ast.LabelSetLiteral() | ast.OtherLabel() | ast.Binary(op="|") if allow_labels:
                return self._label_axis(self.label_set(expr, env), expr.span)
        self.reporter.error(
            "E0302", "expected a dimension", expr.span,
            help="a dimension is an integer, a dim name, arithmetic over them, `_`, `...` or a label set",
        )
        return None

    def _named_dim(self, name: str, span: Span, env: Env, allow_labels: bool) -> ir.Dim | None:
        found = self.lookup(name, span, env)
        if isinstance(found, ir.LabelSet):
            if found.opaque and not allow_labels:
                return ir.DimVar(name)  # an unbound generic parameter used as a size
            if allow_labels:
                return self._label_axis(found, env.arg_spans.get(name, span))
            self._argument_of_wrong_kind(name, span, env, "a dimension", "a label set", "in dimension arithmetic")
            return None
        if found is not None and not isinstance(found, Symbol):
            return found
        if isinstance(found, Symbol):
            if found.kind == "dim":
                return self.declared_dim(found)
            if found.kind == "labels":
                if not allow_labels:
                    return self._labels_in_arithmetic(name, span)
                return self._label_axis(self.declared_labels(found), span)
            self.wrong_kind(name, span, found, "a dimension")
            return None
        self.undefined(name, span, env.scope, "dimension", ("dim", "labels"))
        return None

    def _label_axis(self, labels: ir.LabelSet | None, span: Span) -> ir.DimLabels | None:
        """An axis indexed by a label set; an empty set would make an axis of size 0, which no tensor has
        a use for (`argmax` over it has no answer), so it is reported where the set is written."""
        if labels is None:
            return None
        if not labels.labels and not labels.opaque:
            self.reporter.error(
                "E0302", "this axis has no labels: its label set is empty", span,
                help="a label-indexed axis has one position per label; give the label set at least one label",
            )
            return None
        return ir.DimLabels(labels)

    def _argument_of_wrong_kind(self, name: str, use: Span, env: Env, wanted: str, given: str, how: str) -> None:
        """A generic uses parameter `name` as `wanted` but was given `given`: blame the argument, not the generic."""
        self.reporter.error(
            "E0109", f"this type argument must be {wanted}, not {given}", env.arg_spans.get(name, use),
            help=f"pass {wanted}, such as {ARGUMENT_EXAMPLES[wanted]}",
            notes=(Note(f"the generic uses `{name}` {how} here", use),),
        )

    def _labels_in_arithmetic(self, name: str, span: Span) -> None:
        self.reporter.error(
            "E0303", f"label set `{name}` used in dimension arithmetic", span,
            help="a label set stands for a whole axis; declare a `dim` for its size",
        )

    def _dim_arithmetic(self, op: str, left, right, expr, env: Env, allow_labels: bool) -> ir.Dim | None:
        if op == "-" and allow_labels and self.is_label_set_expr(left, env):
            return self._label_axis(self.label_set(expr, env), expr.span)
        if op == "/":
            self.reporter.error(
                "E0303", "`/` in a dimension", expr.span, help="dimensions are integers: use `//` for floor division",
            )
            return None
        left_dim = self.dim(left, env, allow_labels=False)
        right_dim = self.dim(right, env, allow_labels=False)
        if left_dim is None or right_dim is None:
            return None
        for operand, operand_expr in ((left_dim, left), (right_dim, right)):
            if isinstance(operand, (ir.DimAny, ir.DimEllipsis)):
                self.reporter.error("E0303", f"`{operand}` cannot take part in arithmetic", operand_expr.span)
                return None
        if op == "//" and isinstance(right_dim, ir.DimConst) and right_dim.value == 0:
            self.reporter.error("E0303", "division by zero in a dimension", expr.span)
            return None
        folded = fold_dim(ir.DimBinary(op, left_dim, right_dim))
        if isinstance(folded, ir.DimConst) and folded.value <= 0:
            self.reporter.error(
                "E0302", f"this dimension evaluates to {folded.value}; a dimension must be positive", expr.span,
                help="a dimension counts the elements of an axis: at least 1",
            )
            return None
        return folded

    def is_label_set_expr(self, expr: ast.Expr, env: Env) -> bool:
        """Whether an expression reads as a label set (a literal, `other`, a labels name, `A | B`, `A - B`)."""
        if isinstance(expr, (ast.LabelSetLiteral, ast.OtherLabel)):
            return True
        if isinstance(expr, ast.Binary) and expr.op in "|-":
            return self.is_label_set_expr(expr.left, env)
        if isinstance(expr, ast.Name):
            found = self.lookup(expr.id, expr.span, env)
            return isinstance(found, ir.LabelSet) or (isinstance(found, Symbol) and found.kind == "labels")
        return False

    # ------------------------------------------------------------ constants

    def constant(self, expr: ast.Expr, env: Env) -> float | None:
        """A number known before anything runs (`0`, `1/255`, `-inf`, a constant dim)."""
        match expr:
            case ast.Number():
                if expr.suffix:
                    self.reporter.error(
                        "E0313", f"`{expr.text}`: the suffixes k, M and G are for cost clauses", expr.span,
                        help=f"write the number out: {expr.value}",
                    )
                    return None
                return expr.value
            case ast.Unary(op="-", operand=operand):
                value = self.constant(operand, env)
                return -value if value is not None else None
            case ast.Binary(op="+" | "-" | "*" | "/" | "**" as op, left=left, right=right):
                return self._constant_arithmetic(op, left, right, expr.span, env)
            case ast.Name(id=name) if name in BUILTIN_CONSTANTS and name not in env.params:
                return float(BUILTIN_CONSTANTS[name])
            case ast.Name(id=name):
                return self._named_constant(name, expr.span, env)
        self.reporter.error("E0312", "expected a constant number", expr.span, help=CONSTANT_HELP)
        return None

    def _named_constant(self, name: str, span: Span, env: Env) -> float | None:
        """The value of a constant dim; any other name is reported for what it is."""
        if name in env.ports or name in env.variables:
            self.reporter.error("E0312", f"`{name}` varies per sample, not a constant", span, help=CONSTANT_HELP)
            return None
        found = self.lookup(name, span, env)
        if found is None:
            self.undefined(name, span, env.scope, "name", ("dim",))
            return None
        if isinstance(found, Symbol) and found.kind == "dim":
            value = self.declared_dim(found)
            if not isinstance(value, ir.DimConst):
                if value is not None:
                    self.reporter.error(
                        "E0312", f"`{name}` is a dimension bound per call, not a constant", span, help=CONSTANT_HELP,
                    )
                return None
            return value.value
        what = KIND_NOUNS[found.kind] if isinstance(found, Symbol) else "a generic parameter"
        self.reporter.error("E0312", f"`{name}` is {what}, not a constant", span, help=CONSTANT_HELP)
        return None

    def _constant_arithmetic(self, op: str, left, right, span: Span, env: Env) -> float | None:
        a, b = self.constant(left, env), self.constant(right, env)
        if a is None or b is None:
            return None
        try:
            value = ir.ARITHMETIC[op](float(a) if op == "**" else a, b)
        except ZeroDivisionError:
            self.reporter.error("E0312", "division by zero", span)
        except OverflowError:
            self.reporter.error("E0312", "this constant overflows", span)
        else:
            problem = not_a_real_number(value)
            if problem is None:
                return value
            self.reporter.error("E0314", f"this constant {problem}", span, help=CONSTANT_HELP)
        return None

    def constant_int(self, expr: ast.Expr, env: Env) -> int | None:
        value = self.constant(expr, env)
        if value is None:
            return None
        if isinstance(value, float) and not value.is_integer():
            self.reporter.error("E0203", f"{value} is not an integer label", expr.span)
            return None
        return int(value)

    # ------------------------------------------------------------ types

    def generic_args(self, args: tuple[ast.Expr, ...], env: Env) -> list[ir.LabelSet | ir.Dim | None]:
        """Type arguments: label-set expressions become label sets, anything else a dim."""
        values: list[ir.LabelSet | ir.Dim | None] = []
        for arg in args:
            if self.is_label_set_expr(arg, env):
                values.append(self.label_set(arg, env))
            elif isinstance(arg, ast.Name) and self.lookup(arg.id, arg.span, env) is None:
                self.undefined(arg.id, arg.span, env.scope, "label set or dimension", ("labels", "dim"))
                values.append(None)
            else:
                values.append(self.dim(arg, env))
        return values

    def bind_params(
        self, params: tuple[ast.Identifier, ...], args: tuple[ast.Expr, ...], span: Span, env: Env, what: str,
        scope: FileScope,
    ) -> Env | None:
        """The environment of a generic's body (declared in `scope`) with its parameters bound to `args`."""
        if len(params) != len(args):
            expected = ", ".join(param.name for param in params)
            self.reporter.error(
                "E0108", f"`{what}` takes {len(params)} type argument{'s' if len(params) != 1 else ''}, "
                f"{len(args)} given", span,
                help=f"write `{what}[{expected}]`" if params else f"write `{what}` without brackets",
            )
            return None
        values = self.generic_args(args, env)
        if any(value is None for value in values):
            return None
        bound = {param.name: value for param, value in zip(params, values, strict=True)}
        spans = {param.name: _written_at(arg, env) for param, arg in zip(params, args, strict=True)}
        return Env(scope, bound, arg_spans=spans)  # type: ignore[arg-type]

    def type_expr(self, node: ast.TypeExpr, env: Env) -> ir.TensorType | None:
        """A tensor type with its refinements applied; None if any part of it is wrong."""
        base = self._type_head(node.head, env)
        if base is None:
            return None
        return self._refine(base, node.refinements, env)

    def _type_head(self, head: ast.TensorType | ast.TypeRef, env: Env) -> ir.TensorType | None:
        if isinstance(head, ast.TensorType):
            return self._tensor(head, env)
        symbol = env.scope.lookup(head.name)
        name = head.name.dotted
        if symbol is None:
            self.undefined(name, head.name.span, env.scope, "type", ("type",))
            return None
        if symbol.kind != "type":
            self.wrong_kind(name, head.name.span, symbol, "a type")
            return None
        decl: ast.TypeDecl = symbol.node  # type: ignore[assignment]
        bound = self.bind_params(decl.params, head.args, head.span, env, name, symbol.scope)
        if bound is None:
            return None
        key = (symbol.scope.path, symbol.name)
        if key in self._in_progress:
            self.reporter.error(
                "E0115", f"type `{symbol.name}` is defined in terms of itself", symbol.span,
                help="a type is a tensor type or another type refined; it cannot contain itself",
            )
            return None
        self._in_progress.add(key)
        try:
            return self.type_expr(decl.value, bound)
        finally:
            self._in_progress.discard(key)

    def _tensor(self, node: ast.TensorType, env: Env) -> ir.TensorType | None:
        dims = [self.dim(dim, env) for dim in node.dims]
        if any(dim is None for dim in dims):
            return None
        ellipses = [dim for dim in node.dims if isinstance(dim, ast.EllipsisDims)]
        if len(ellipses) > 1:
            self.reporter.error(
                "E0304", "`...` appears more than once in this shape", ellipses[1].span,
                help="`...` stands for any number of axes; with two, the split between them is ambiguous",
            )
            return None
        for position, dim in enumerate(dims[1:], start=1):
            if isinstance(dim, ir.DimVar) and dim.batch:
                self.reporter.error(
                    "E0311", f"the batch dimension `{dim.name}` is axis {position}, not the first axis",
                    node.dims[position].span, help="put the batch dimension first: clauses see one sample at a time",
                )
                return None
        return ir.TensorType(tuple(dims), span=node.span)  # type: ignore[arg-type]

    def _refine(self, base: ir.TensorType, refinements, env: Env) -> ir.TensorType | None:
        dtype, value_range, finite = base.dtype, base.value_range, base.finite
        ok = True
        for refinement in refinements:
            if isinstance(refinement, ast.RangeRefinement):
                new_range = self._value_range(refinement, env)
                if new_range is None:
                    ok = False
                    continue
                narrowed = _intersect(value_range, new_range)
                if narrowed is None:
                    self.reporter.error(
                        "E0310", f"{_format_range(new_range)} does not overlap {_format_range(value_range)}, "
                        "the range the type already has", refinement.span,
                        help="a range refinement narrows the type's range; the two must share some values",
                    )
                    ok = False
                value_range = narrowed
                continue
            word = refinement.name.name
            if word == "finite":
                finite = True
            elif word in ir.DTYPES or word == ir.ANY_FLOAT:
                if dtype is not None and not _dtype_refines(dtype, word):
                    self.reporter.error(
                        "E0309", f"dtype `{word}` conflicts with `{dtype}`", refinement.span,
                        help="a tensor has one dtype",
                    )
                    ok = False
                dtype = word if dtype in (None, ir.ANY_FLOAT) else dtype
            else:
                self.reporter.error(
                    "E0308", f"unknown dtype or refinement `{word}`", refinement.span,
                    help=did_you_mean(word, (*ir.DTYPES, ir.ANY_FLOAT, "finite")) or DTYPE_HINT,
                )
                ok = False
        if not ok:
            return None
        return ir.TensorType(base.dims, dtype, value_range, finite, base.span)

    def _value_range(self, refinement: ast.RangeRefinement, env: Env) -> tuple[float, float] | None:
        low, high = self.constant(refinement.low, env), self.constant(refinement.high, env)
        if low is None or high is None:
            return None
        if low > high:
            self.reporter.error(
                "E0310", f"empty range: {low} > {high}", refinement.span, help="write the lower bound first",
            )
            return None
        return (float(low), float(high))


def not_a_real_number(value: complex | float) -> str | None:
    """Why a computed constant is no real number (`(-8) ** 0.5` is complex, `inf - inf` NaN), or None.

    Every check and backend compares constants as reals; a complex or NaN bound would crash them
    or make every comparison false."""
    if isinstance(value, complex):
        return "is not a real number: a negative number to a fractional power is complex"
    if math.isnan(value):
        return "is not a number (NaN)"
    return None


def _dtype_refines(current: str, new: str) -> bool:
    return current == new or (ir.ANY_FLOAT in (current, new) and (
        current in ir.FLOAT_DTYPES or new in ir.FLOAT_DTYPES or current == new
    ))


def _intersect(old: tuple[float, float] | None, new: tuple[float, float]) -> tuple[float, float] | None:
    if old is None:
        return new
    low, high = max(old[0], new[0]), min(old[1], new[1])
    return (low, high) if low <= high else None


def _names_of_kind(name: str, scope: FileScope, kinds: tuple[str, ...]) -> list[str]:
    """The names `name` may have been meant as: for `alias.name`, those the imported file declares."""
    alias, dot, _ = name.rpartition(".")
    if not dot:
        return scope.names_of_kind(*kinds)
    target: FileScope | None = scope
    for part in alias.split("."):
        target = target.imports.get(part) if target is not None else None
    return [f"{alias}.{known}" for known in target.names_of_kind(*kinds)] if target is not None else []


def _written_at(arg: ast.Expr, env: Env) -> Span:
    """Where a generic argument comes from: a parameter passed on is traced back to its own argument."""
    if isinstance(arg, ast.Name) and arg.id in env.arg_spans:
        return env.arg_spans[arg.id]
    return arg.span


def _labels_phrase(labels: list[ir.Label]) -> str:
    """`label 10 is` or `labels 10, 11 are`, to say which labels a check found."""
    shown = ", ".join(ir.format_label(label) for label in labels)
    return f"label {shown} is" if len(labels) == 1 else f"labels {shown} are"


def _format_range(value_range: tuple[float, float]) -> str:
    low, high = (f"{bound:g}" for bound in value_range)
    return f"[{low}, {high}]"


def _set_name(expr: ast.Expr) -> str:
    if isinstance(expr, ast.Name):
        return f"`{expr.id}`"
    return "its parent"
