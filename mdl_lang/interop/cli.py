"""The interop side of the command line: `mdl verify --vnnlib P --onnx N` and `mdl export`.

`run_vnnlib` answers a VNN-COMP instance (an ONNX network and a VNN-LIB property) with mdl's
verifier; `mdl export` writes a module as ONNX and a clause at a point as a VNN-LIB property, so
other verifiers can check the same question. Heavy imports (torch, onnx, the verifier) happen
inside the functions, when a command actually runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mdl_lang.cli import EXIT_FAILED, EXIT_OK, UsageError
from mdl_lang.report import Report, Result, Verdict, Witness
from mdl_lang.span import Span

if TYPE_CHECKING:
    import torch

    from mdl_lang.verify.query import Outcome

# VNN-COMP's words for the three answers, printed beside mdl's.
VNNCOMP_ANSWER = {Verdict.PASS: "unsat", Verdict.FAIL: "sat", Verdict.UNKNOWN: "unknown"}


@dataclass(frozen=True)
class QueryVerdict:
    """mdl's verdict on one query of a property, with the counterexample and its ONNX output if refuted."""

    name: str
    verdict: Verdict
    reason: str
    elapsed_s: float
    counterexample: torch.Tensor | None = None
    output: torch.Tensor | None = None


def run_vnnlib(vnnlib_path: str | Path, onnx_path: str | Path, timeout_s: float = 60.0, format: str = "text",
               strict: bool = False) -> int:
    """Check a VNN-COMP instance and print the answer; the exit code follows `mdl`'s rules.

    The property holds (pass, VNN-COMP `unsat`) when every query is proved; it fails (`sat`) when
    one query is refuted by a counterexample replayed on the lowered network AND on the original
    ONNX graph (ONNX's reference evaluator); anything else, an operator outside the supported set
    included, is `unknown` with the reason, which exits 0 unless `strict`.
    """
    from mdl_lang.interop.onnx import OnnxImportError, network_from_onnx, read_model
    from mdl_lang.interop.vnnlib import VnnlibError, load_property

    if timeout_s <= 0:
        raise UsageError(f"--timeout must be positive, got {timeout_s:g}")
    vnnlib_file, onnx_file = Path(vnnlib_path), Path(onnx_path)
    for flag, path in (("--vnnlib", vnnlib_file), ("--onnx", onnx_file)):
        if not path.is_file():
            raise UsageError(f"{flag} {path}: no such file")
    try:
        prop = load_property(vnnlib_file)
    except VnnlibError as error:
        raise UsageError(str(error)) from error
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {vnnlib_file}: {error}") from error
    started = time.monotonic()
    try:
        model = read_model(onnx_file)
    except (OnnxImportError, OSError) as error:
        # A file that is no ONNX model at all is the user's to fix (exit 2); an unsupported graph is unknown.
        raise UsageError(f"--onnx {onnx_file}: {error}") from error
    try:
        network = network_from_onnx(model)
    except OnnxImportError as error:
        verdicts = [QueryVerdict(q.name, Verdict.UNKNOWN, str(error), 0.0) for q in prop.queries]
        return _finish(verdicts, vnnlib_file, onnx_file, format, strict, time.monotonic() - started)
    inputs, outputs = network.input_size, network.size(network.output)
    if (prop.input_size, prop.output_size) != (inputs, outputs):
        raise UsageError(
            f"{vnnlib_file} declares {prop.input_size} inputs and {prop.output_size} outputs; "
            f"{onnx_file} has {inputs} and {outputs}"
        )
    verdicts = _verify_all(network, model, prop.queries, timeout_s, format)
    return _finish(verdicts, vnnlib_file, onnx_file, format, strict, time.monotonic() - started)


def _verify_all(network, model, queries, timeout_s: float, format: str) -> list[QueryVerdict]:
    """Each query in turn within one overall time budget; the first refutation settles the property."""
    from mdl_lang.interop.solve import verify_cases

    reference = onnx_reference(model)
    deadline = time.monotonic() + timeout_s
    verdicts: list[QueryVerdict] = []
    for number, query in enumerate(queries, start=1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            verdicts.append(QueryVerdict(query.name, Verdict.UNKNOWN, f"not reached within {timeout_s:g} s", 0.0))
            continue
        outcome = verify_cases(network, query, timeout_s=remaining, reference=reference)
        verdict = query_verdict(query.name, outcome)
        verdicts.append(verdict)
        if format == "text":
            print(f"query {number}/{len(queries)} {query.name}: {verdict.verdict.value} in {verdict.elapsed_s:.2f} s "
                  f"({verdict.reason})", file=sys.stderr, flush=True)
        if verdict.verdict is Verdict.FAIL:
            break
    return verdicts


def onnx_reference(model):
    """The original ONNX graph as a function of a torch batch, for replaying counterexamples on it."""
    import numpy as np
    import torch

    from mdl_lang.interop.onnx import input_dtype, run_model

    dtype = input_dtype(model)

    def reference(batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().cpu().numpy().astype(dtype)
        return torch.from_numpy(np.ascontiguousarray(run_model(model, array)))

    return reference


def query_verdict(name: str, outcome: Outcome) -> QueryVerdict:
    verdict = {"proved": Verdict.PASS, "refuted": Verdict.FAIL}.get(outcome.verdict, Verdict.UNKNOWN)
    return QueryVerdict(name, verdict, outcome.reason, outcome.elapsed_s, outcome.counterexample,
                        outcome.replay_output)


def _overall(verdicts: list[QueryVerdict]) -> Verdict:
    if any(v.verdict is Verdict.FAIL for v in verdicts):
        return Verdict.FAIL
    if all(v.verdict is Verdict.PASS for v in verdicts):
        return Verdict.PASS
    return Verdict.UNKNOWN


def _summary(tensor: torch.Tensor) -> str:
    values = tensor.reshape(-1).tolist()
    shown = ", ".join(f"{v:.6g}" for v in values[:8])
    more = f", ... ({len(values)} values)" if len(values) > 8 else ""
    return f"[{shown}{more}]"


def _finish(verdicts: list[QueryVerdict], vnnlib_file: Path, onnx_file: Path, format: str, strict: bool,
            elapsed_s: float) -> int:
    overall = _overall(verdicts)
    report = Report("verify")
    for verdict in verdicts:
        witness = None
        if verdict.counterexample is not None:
            values = [("x", _summary(verdict.counterexample))]
            if verdict.output is not None:
                values.append(("y", _summary(verdict.output)))
            witness = Witness(samples=(0,), values=tuple(values))
        report.results.append(Result(
            component=str(onnx_file), clause=verdict.name, kind="vnnlib", fragment="relational", backend="z3",
            verdict=verdict.verdict, span=Span(str(vnnlib_file), 1, 1, 1, 1),
            message=f"{verdict.name} on {onnx_file.name}: {verdict.reason}", witness=witness,
        ))
    if format == "json":
        document = report.to_json()
        document["vnncomp"] = VNNCOMP_ANSWER[overall]
        print(json.dumps(document, indent=2))
    else:
        for verdict in verdicts:
            if verdict.counterexample is not None:
                print(f"counterexample for {verdict.name}: x = {_summary(verdict.counterexample)}")
                if verdict.output is not None:
                    print(f"  ONNX output y = {_summary(verdict.output)}")
            elif verdict.verdict is Verdict.UNKNOWN:
                print(f"unknown: {verdict.name}: {verdict.reason}")
        label = {Verdict.PASS: "holds", Verdict.FAIL: "violated", Verdict.UNKNOWN: "unknown"}[overall]
        print(f"{vnnlib_file.name} on {onnx_file.name}: {label} (VNN-COMP: {VNNCOMP_ANSWER[overall]}) "
              f"in {elapsed_s:.2f} s, {len(verdicts)} quer{'y' if len(verdicts) == 1 else 'ies'}")
    if overall is Verdict.FAIL or (strict and overall is Verdict.UNKNOWN):
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------- wiring into `mdl`


def add_interop_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `mdl export`, and the `--vnnlib P --onnx N` mode to the `verify` command already added.

    Called once, last, from `mdl_lang.verify.cli.add_commands`. `verify`'s spec paths and
    `--module` become optional at parse time; without `--vnnlib`/`--onnx` the original handler
    runs and they are required as before (a usage error, exit 2, names what is missing).
    """
    add_export_command(commands)
    verify = commands.choices.get("verify")
    if verify is None:
        return
    verify.add_argument("--vnnlib", type=Path, metavar="PROP.vnnlib",
                        help="a VNN-LIB property to check on --onnx (VNN-COMP mode; no spec needed)")
    verify.add_argument("--onnx", type=Path, metavar="NET.onnx", help="the ONNX network of --vnnlib")
    for action in verify._actions:
        if action.dest == "paths":
            action.nargs = "*"
            action.required = False
        elif action.dest == "module":
            action.required = False
    spec_handler = verify.get_default("handler")

    def handler(args: argparse.Namespace) -> int:
        if args.vnnlib is not None or args.onnx is not None:
            if args.vnnlib is None or args.onnx is None:
                raise UsageError("--vnnlib and --onnx go together: mdl verify --vnnlib PROP.vnnlib --onnx NET.onnx")
            if args.paths or args.module:
                raise UsageError("--vnnlib/--onnx check a VNN-COMP instance: give no spec PATH or --module with them")
            return run_vnnlib(args.vnnlib, args.onnx, args.timeout, args.format, args.strict)
        if not args.paths or not args.module:
            raise UsageError("verify needs spec PATHs and --module M (or --vnnlib PROP.vnnlib --onnx NET.onnx)")
        return spec_handler(args)

    verify.set_defaults(handler=handler)


# ---------------------------------------------------------------- mdl export


def add_export_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`mdl export`: a module as ONNX, a clause at a point as a VNN-LIB property."""
    export = commands.add_parser(
        "export", help="write a module as ONNX and/or a robustness clause at a point as VNN-LIB",
        description="Write a module (through its python binding) as ONNX, and/or one clause at one input "
                    "point as a VNN-LIB property whose asserted formula is the unsafe condition.",
    )
    export.add_argument("paths", nargs="+", type=Path, metavar="FILE", help="the .mdl spec files")
    export.add_argument("--module", required=True, metavar="M", help="the module to export")
    export.add_argument("--onnx", type=Path, metavar="OUT.onnx", help="write the module as ONNX here")
    export.add_argument("--vnnlib", type=Path, metavar="OUT.vnnlib", help="write the clause as VNN-LIB here")
    export.add_argument("--clause", metavar="NAME", help="the clause to write (with --vnnlib)")
    export.add_argument("--point", type=Path, metavar="POINT.pt",
                        help="a tensor saved with torch.save: the sample a robustness clause is centred on")
    export.add_argument("--root", type=Path, help="the spec root imports must stay in")
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from mdl_lang.bindings import BindingError, module_for

    if args.onnx is None and args.vnnlib is None:
        raise UsageError("export needs --onnx OUT.onnx, --vnnlib OUT.vnnlib or both")
    if args.vnnlib is not None and args.clause is None:
        raise UsageError("--vnnlib needs --clause NAME (and --point POINT.pt for a robustness clause)")
    component = _load_module(args.paths, args.module, args.root)
    try:
        module = module_for(component, component.file)
    except BindingError as error:
        raise UsageError(str(error)) from error
    module.eval()
    point = _load_point(args.point) if args.point is not None else None
    input_shape = _input_shape(component, point)
    if args.onnx is not None:
        try:
            export_onnx(module, input_shape, args.onnx)
        except OSError as error:
            raise UsageError(f"cannot write --onnx {args.onnx}: {error}") from error
        except Exception as error:  # torch's exporter raises many kinds; the user needs the module and why
            why = f"{type(error).__name__}: {error}"
            raise UsageError(f"torch.onnx.export cannot export `{args.module}`: {why}") from error
        print(f"wrote {args.onnx}")
    if args.vnnlib is not None:
        text = export_vnnlib(component, module, args.clause, point, input_shape)
        try:
            args.vnnlib.write_text(text, encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write --vnnlib {args.vnnlib}: {error}") from error
        print(f"wrote {args.vnnlib}")
    return EXIT_OK


def export_onnx(module, input_shape: tuple[int, ...], path: Path) -> None:
    """`torch.onnx.export` with the TorchScript exporter (`dynamo=False`): it works offline with the
    installed `onnx` alone, and writes the Gemm/Conv/Relu graphs the loader reads back."""
    import warnings

    import torch

    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def _load_module(paths: list[Path], name: str, root: Path | None):
    """The first module named `name` in the spec files of `paths`."""
    from mdl_lang import ir
    from mdl_lang.compiler import load
    from mdl_lang.semantics.checker import default_root, expand_paths

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    for file in expand_paths(paths):
        spec = load(file, root or default_root(paths))  # a SpecError: the command reports it and exits 1
        component = spec.component(name)
        if isinstance(component, ir.Module):
            return component
    raise UsageError(f"no module named `{name}` in {', '.join(str(p) for p in paths)}")


def _input_shape(component, point) -> tuple[int, ...]:
    """One sample's input shape from the module's interface; a symbolic dim takes the point's shape."""
    from mdl_lang.verify.clauses import Untranslatable, port_shape, single_ports

    try:
        input_port, _ = single_ports(component)
        return port_shape(input_port, None if point is None else tuple(point.shape))
    except Untranslatable as error:
        raise UsageError(f"module `{component.name}`: {error}") from error


def _load_point(path: Path):
    """The sample saved at `path`, one sample's shape (a leading batch of 1 is dropped)."""
    import torch

    if not path.is_file():
        raise UsageError(f"--point {path}: no such file")
    try:
        point = torch.load(path, weights_only=True)
    except Exception as error:
        raise UsageError(f"--point {path} is not a saved tensor: {error}") from error
    if not isinstance(point, torch.Tensor) or not point.is_floating_point():
        raise UsageError(f"--point {path} holds a {type(point).__name__}, not a floating-point tensor")
    return point[0] if point.dim() > 1 and point.shape[0] == 1 else point


def export_vnnlib(component, module, clause_name: str, point, input_shape: tuple[int, ...]) -> str:
    """One `ensures` of a module as VNN-LIB, translated by the verifier's own clause translation.

    A robustness clause (`forall x2 within EPS of x (linf): argmax(self(x2)) == argmax(y)`) needs
    the point: the label is the module's argmax there and the box is the ball cut to the input's
    range and `requires`. A linear `ensures` on the output needs no point: the box is the input's
    range. The asserted formula is the clause's violation, as VNN-COMP expects.
    """
    import torch

    from mdl_lang.interop.vnnlib import write_property
    from mdl_lang.verify.clauses import (
        Untranslatable,
        ensures_unsafe,
        input_region,
        robustness,
        robustness_query,
        single_ports,
    )
    from mdl_lang.verify.query import Query

    clause = next((c for c in component.all_clauses if c.name == clause_name and c.kind == "ensures"), None)
    if clause is None:
        names = ", ".join(c.name for c in component.all_clauses if c.kind == "ensures") or "none"
        raise UsageError(f"module `{component.name}` has no ensures clause `{clause_name}` (it has: {names})")
    if point is not None and point.numel() != _numel(input_shape):
        raise UsageError(f"--point has {point.numel()} values; `{component.name}` takes {input_shape}")
    example = torch.zeros(1, *input_shape) if point is None else point.reshape(1, *input_shape).to(torch.float32)
    with torch.no_grad():
        output = module(example).reshape(-1)
    where = f"{clause.span.file}:{clause.span.line}:{clause.span.column}"
    try:
        input_port, output_port = single_ports(component)
        region = input_region(component, input_shape)
        ball = robustness(clause, input_port.name, output_port.name)
        if ball is not None:
            if point is None:
                raise UsageError(f"clause `{clause_name}` is a robustness clause: give the point with --point")
            excluded = region.excluded_because(point)
            if excluded is not None:
                raise UsageError(f"--point is not an input of `{component.name}`: {excluded}; `{clause_name}` "
                                 "promises nothing there")
            label = int(output.argmax())
            query = robustness_query(ball.radius, point, label, output.numel(), region, clause_name)
            if query is None:
                raise UsageError(f"the ball of `{clause_name}` around --point lies outside the input's range")
            comment = f"label {label} (the module's argmax at the point), radius {ball.radius:g}"
        else:
            unsafe = ensures_unsafe(clause.expr, output_port.name, output.numel())
            query = Query(region.lower, region.upper, unsafe, region.constraints, clause_name)
            comment = "over the input's value range and requires"
    except Untranslatable as error:
        raise UsageError(f"{where}: clause `{clause_name}` cannot be written as VNN-LIB: {error}") from error
    header = (f"mdl export: ensures `{clause_name}` of module `{component.name}` ({where}), {comment}.\n"
              "The asserted formula is the clause's violation: unsat means the clause holds.")
    try:
        return write_property(query, output.numel(), comment=header)
    except ValueError as error:
        raise UsageError(f"{where}: clause `{clause_name}` cannot be written as VNN-LIB: {error}") from error


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total
