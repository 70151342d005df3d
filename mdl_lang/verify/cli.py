"""`mdl verify` and `mdl export`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to `mdl`."""
    verify = commands.add_parser(
        "verify", help="prove or refute clauses of piecewise-linear modules (bounds, attack, branch and bound, Z3)",
    )
    verify.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".mdl files or folders of them")
    verify.add_argument(
        "--module", action="append", required=True, metavar="M", help="the module to verify (repeatable)",
    )
    verify.add_argument("--points", type=Path, metavar="P.pt",
                        help="robustness centres: a tensor (N, *input shape) saved with torch.save")
    verify.add_argument("--max-points", type=int, default=20, help="robustness centres used per clause (default 20)")
    verify.add_argument("--timeout", type=float, default=60.0, help="seconds per query (default 60)")
    verify.add_argument("--format", choices=("text", "json"), default="text", help="output for people or machines")
    verify.add_argument("--strict", action="store_true", help="treat unknown verdicts as failures")
    verify.add_argument("--seed", type=int, default=0, help="seed of the gradient attacks")
    verify.add_argument("--root", type=Path, help="the spec root imports must stay in")
    verify.add_argument("--replay-dir", type=Path, default=Path("reports"), help="where counterexamples are saved")
    verify.set_defaults(handler=_run_verify)
    from mdl_lang.interop.cli import add_interop_commands  # `mdl export`, `verify --vnnlib P --onnx N`

    add_interop_commands(commands)


def _run_verify(args: argparse.Namespace) -> int:
    from mdl_lang.bindings import BindingError, made_by, module_for
    from mdl_lang.cli import EXIT_FAILED, EXIT_OK, UsageError, _existing, replay_folder
    from mdl_lang.compiler import load
    from mdl_lang.report import Report, Verdict
    from mdl_lang.semantics.checker import check_paths, default_root

    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    if args.max_points < 1:
        raise UsageError(f"--max-points must be at least 1, got {args.max_points}")
    files = _existing(args.paths)
    replay_folder(args.replay_dir)
    points = _load_points(args.points, UsageError)
    checked = check_paths(args.paths, args.root)
    report = Report("verify", diagnostics=list(checked.diagnostics))
    if checked.has_errors:
        return _print(args, report, checked.sources, EXIT_FAILED)

    import torch

    from mdl_lang import ir
    from mdl_lang.verify.runner import PointsMismatch, VerifySettings, verify_module

    progress = None if args.format == "json" else (lambda line: print(line, file=sys.stderr, flush=True))
    wanted = list(dict.fromkeys(args.module))
    found: set[str] = set()
    for path in files:
        spec = load(path, args.root or default_root(args.paths))
        for name in wanted:
            component = spec.modules.get(name)
            if component is None:
                if name in spec.compositions:
                    raise UsageError(f"`{name}` is a composition: verify its modules one by one")
                continue
            found.add(name)
            try:
                model = module_for(component, component.file)
            except BindingError as error:
                raise UsageError(str(error)) from error

            def data_points(clause: ir.Clause, spec=spec) -> torch.Tensor | None:
                return _data_points(spec, clause, made_by, UsageError)

            settings = VerifySettings(
                timeout_s=args.timeout, points=points, data_points=data_points, max_points=args.max_points,
                replay_dir=args.replay_dir, seed=args.seed, progress=progress,
            )
            try:
                report.results.extend(verify_module(spec, name, model, settings))
            except BindingError as error:
                raise UsageError(str(error)) from error
            except PointsMismatch as error:
                source = "the robustness points of its data set" if error.from_data else f"--points {args.points}"
                raise UsageError(f"{source}: {error}") from error
    missing = [name for name in wanted if name not in found]
    if missing:
        raise UsageError(f"no module named {', '.join(missing)} in {', '.join(str(p) for p in args.paths)}")
    failed = any(r.verdict is Verdict.FAIL for r in report.results)
    undecided = args.strict and any(r.verdict is Verdict.UNKNOWN for r in report.results)
    return _print(args, report, checked.sources, EXIT_FAILED if failed or undecided else EXIT_OK)


def _load_points(path: Path | None, usage_error: type[Exception]):
    """`--points`: a tensor saved with torch.save, read with weights_only=True."""
    if path is None:
        return None
    import torch

    if not path.is_file():
        raise usage_error(f"--points {path}: no such file")
    try:
        loaded = torch.load(path, weights_only=True)
    except Exception as error:
        raise usage_error(f"--points {path}: not a tensor saved with torch.save ({error})") from error
    if not isinstance(loaded, torch.Tensor) or loaded.dim() < 2 or not loaded.is_floating_point():
        raise usage_error(f"--points {path}: expected a float tensor (N, *input shape)")
    return loaded


def _data_points(spec, clause, made_by, usage_error: type[Exception]):
    """Robustness centres from the clause's `on DATA` set, else the spec's only data set with a binding;
    inputs that do not keep the data declaration's input type are a usage error naming the declaration."""
    import torch

    candidates = []
    if clause.data is not None:
        head, _, rest = clause.data.partition(".")
        owner = spec.imports.get(head) if rest else spec
        data = owner.data.get(rest or head) if owner else None
        candidates = [data] if data is not None else []
    else:
        candidates = [data for data in spec.data.values() if data.binding is not None]
    if len(candidates) != 1 or candidates[0].binding is None:
        return None
    data = candidates[0]
    loaded = made_by(data, data.file)
    if isinstance(loaded, tuple) and len(loaded) == 2:
        inputs = torch.as_tensor(loaded[0])
    elif isinstance(loaded, torch.utils.data.Dataset):
        inputs = torch.stack([torch.as_tensor(loaded[i][0]) for i in range(len(loaded))])
    else:
        return None
    problem = _shape_problem(data, inputs)
    if problem is not None:
        where = f"{data.span.file}:{data.span.line}:{data.span.column}"
        raise usage_error(f"data `{data.name}` ({where}, binding `{data.binding}`): {problem}")
    return inputs


def _shape_problem(data, inputs) -> str | None:
    """Why the loaded inputs do not have the declared input type's sample shape (fixed sizes and label
    sets compared; a symbolic dim takes any size), or None when they do."""
    from mdl_lang import ir

    dims = data.input_type.sample_dims
    declared = data.input_type.describe()
    if any(isinstance(dim, ir.DimEllipsis) for dim in dims):
        return None
    sample = tuple(inputs.shape[1:])
    if inputs.dim() < 1 or len(sample) != len(dims):
        return f"its inputs have shape {list(inputs.shape)}, but the declaration gives {declared}"
    for axis, (dim, size) in enumerate(zip(dims, sample, strict=True)):
        wanted = dim.value if isinstance(dim, ir.DimConst) else (
            len(dim.labels) if isinstance(dim, ir.DimLabels) and not dim.labels.opaque else None)
        if wanted is not None and wanted != size:
            elements = f"{size} element{'s' if size != 1 else ''}"
            return f"its inputs have shape {list(inputs.shape)}: axis {axis + 1} has {elements}, but the " \
                   f"declaration gives {declared}"
    return None


def _print(args: argparse.Namespace, report, sources, status: int) -> int:
    from mdl_lang.diagnostics import render_all
    from mdl_lang.report import Verdict, render_result

    if args.format == "json":
        print(report.dumps())
        return status
    if report.diagnostics:
        print(render_all(report.diagnostics, sources))
    for result in report.results:
        print(f"{result.verdict.value:8} {result.component}.{result.clause}  {result.message}")
    for result in report.results:
        if result.verdict is Verdict.FAIL:
            print("\n" + render_result(result, sources))
    counts = report.summary()
    print(", ".join(f"{counts[v.value]} {label}" for v, label in (
        (Verdict.PASS, "proved"), (Verdict.FAIL, "refuted"), (Verdict.UNKNOWN, "unknown"), (Verdict.SKIP, "skipped"),
    )))
    return status
