"""The `mdl` command line: `check`, `fmt`, `test`, `blame`, `replay`, and the
commands that other packages add (`verify`, `export`, `decompose`, `demo`).

Exit codes, for every command: 0 everything checked holds; 1 a spec error or
a failed clause; 2 usage or environment error. No input ends in a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mdl_lang.compiler import SpecError
from mdl_lang.diagnostics import Diagnostic, SourceMap, render_all
from mdl_lang.report import Report, Result, Verdict, render_result
from mdl_lang.semantics.checker import CheckResult, check_paths, default_root, display_path, expand_paths

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
SCHEMA = "mdl-report/1"

# What a package's `add_commands` receives: the subparsers of `mdl`. Each subparser sets
# `handler`, a function of the parsed arguments that returns the exit code.
CommandPlugin = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class UsageError(Exception):
    """A bad flag or a missing file: exit 2 with a one-line message."""


def _json_error(args: argparse.Namespace, message: str) -> None:
    """With `--format json`, a usage or environment error is still one mdl-report/1 object on stdout
    (its `error` field says what went wrong), so that a program reading it never gets nothing."""
    if getattr(args, "format", None) != "json":
        return
    document = Report(args.command).to_json()
    document["error"] = message
    print(json.dumps(document, indent=2))


def _silence_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit does not raise the broken pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code not in (0, None) else EXIT_OK
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"mdl: error: {error}", file=sys.stderr)
        _json_error(args, str(error))
        return EXIT_USAGE
    except SpecError as error:
        # A spec that does not check is a failure of what was checked (LANGUAGE.md section 8: exit 1).
        print(error.rendered, file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("mdl: interrupted", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`mdl ... | head`): what is left to print has no one to read it.
        _silence_stdout()
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - a user must never see a traceback
        print(f"mdl: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        print("mdl: this is a bug in mdl; please report it with the spec that caused it", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdl", description="Contracts and interfaces for modular deep learning.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="parse, resolve and check specs")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".mdl files or folders of them")
    check.add_argument("--format", choices=("text", "json"), default="text", help="output for people or machines")
    check.add_argument("--strict", action="store_true", help="treat warnings and unknown verdicts as failures")
    check.add_argument("--root", type=Path, help="the spec root imports must stay in (default: the inputs' folder)")
    check.add_argument("--z3-timeout", type=_positive_ms, default=None, metavar="MS",
                       help="time limit of each Z3 spec proof in milliseconds (default 2000); a timeout is unknown")
    check.set_defaults(handler=_run_check)

    fmt = commands.add_parser("fmt", help="rewrite specs in the canonical layout")
    fmt.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".mdl files or folders of them")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    fmt.set_defaults(handler=_run_fmt)

    test = commands.add_parser("test", help="bind modules through their bindings and test every clause")
    test.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".mdl files or folders of them")
    test.add_argument("--module", action="append", metavar="M", help="test only this component (repeatable)")
    test.add_argument("--format", choices=("text", "json"), default="text", help="output for people or machines")
    test.add_argument("--seed", type=int, default=0, help="seed of the generated inputs and attacks")
    test.add_argument("--max-examples", type=int, default=100, help="generated batches per clause")
    test.add_argument("--strict", action="store_true", help="treat unknown verdicts as failures")
    test.add_argument("--root", type=Path, help="the spec root imports must stay in")
    test.add_argument("--replay-dir", type=Path, default=Path("reports"), help="where failing inputs are saved")
    test.set_defaults(handler=_run_test)

    blame = commands.add_parser("blame", help="render a saved mdl-report/1 JSON report for people")
    blame.add_argument("report", type=Path, metavar="REPORT.json")
    blame.set_defaults(handler=_run_blame)

    replay = commands.add_parser("replay", help="re-run a saved failing input through its module")
    replay.add_argument("replay", type=Path, metavar="REPLAY.pt")
    replay.add_argument("--spec", type=Path, help="the spec file (default: the one recorded in the replay)")
    replay.add_argument("--format", choices=("text", "json"), default="text", help="output for people or machines")
    replay.set_defaults(handler=_run_replay)

    for add_commands in _command_plugins():
        add_commands(commands)
    return parser


def _command_plugins() -> list[CommandPlugin]:
    """Commands owned by other packages, each adding its subparsers; imported here, not at the
    top, so that `mdl check` does not pay for the verifier or the modular workflows."""
    from mdl_lang.modular.cli import add_commands as modular_commands
    from mdl_lang.verify.cli import add_commands as verify_commands

    return [verify_commands, modular_commands]


def _existing(paths: list[Path]) -> list[Path]:
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    files = expand_paths(paths)
    if not files:
        raise UsageError(f"no .mdl files in {', '.join(str(path) for path in paths)}")
    return files


# ---------------------------------------------------------------- check


def _run_check(args: argparse.Namespace) -> int:
    files = _existing(args.paths)
    if args.root is not None and not args.root.is_dir():
        raise UsageError(f"--root {args.root} is not a directory")
    result = check_paths(args.paths, args.root, z3_timeout_ms=args.z3_timeout)
    # An `unknown` Z3 verdict is a W0601 warning: it fails the run only under --strict.
    failed = result.has_errors or (args.strict and bool(result.diagnostics))
    if args.format == "json":
        print(json.dumps(check_report(result, files), indent=2))
    else:
        _print_check_text(result, files)
    return EXIT_FAILED if failed else EXIT_OK


def _positive_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--z3-timeout takes a positive number of milliseconds, not `{text}`")
    return value


def check_report(result: CheckResult, files: list[Path]) -> dict[str, object]:
    """The mdl-report/1 object of `mdl check`: one static result per file checked, then the Z3 proofs
    (backend `z3`, one per clause proved, refuted or undecided)."""
    shown = [display_path(path.resolve()) for path in files]
    failing = {d.span.file for d in result.diagnostics if d.is_error}
    undecided = {d.span.file for d in result.diagnostics if d.code == "W0501"}
    results = [
        {
            "file": file,
            "backend": "static",
            "verdict": "fail" if file in failing else ("unknown" if file in undecided else "pass"),
        }
        for file in shown
    ]
    results += [proof.to_json() for proof in result.results]
    verdicts = ("pass", "fail", "unknown", "skip")
    summary = {verdict: sum(r["verdict"] == verdict for r in results) for verdict in verdicts}
    return {
        "schema": SCHEMA,
        "command": "check",
        "diagnostics": [d.to_json() for d in result.diagnostics],
        "results": results,
        "summary": summary,
    }


def _print_check_text(result: CheckResult, files: list[Path]) -> None:
    if result.diagnostics:
        print(render_all(result.diagnostics, result.sources))
    else:
        count = len(files)
        print(f"checked {count} file{'s' if count != 1 else ''}: no problems found")


# ---------------------------------------------------------------- fmt


def _run_fmt(args: argparse.Namespace) -> int:
    from mdl_lang.syntax.format import format_text

    files = _existing(args.paths)
    problems: list[Diagnostic] = []
    sources = SourceMap()
    unformatted: list[str] = []
    for path in files:
        shown = display_path(path.resolve())
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read {shown}: {error}") from error
        sources.add(shown, text)
        formatted = format_text(text, shown)
        if formatted.text is None:
            problems.extend(formatted.diagnostics)
            continue
        if formatted.text != text:
            unformatted.append(shown)
            if not args.check:
                path.write_text(formatted.text, encoding="utf-8")
    if problems:
        print(render_all(problems, sources))
    for shown in unformatted:
        print(f"{'would reformat' if args.check else 'reformatted'} {shown}")
    if problems or (args.check and unformatted):
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------- test


def replay_folder(folder: Path | None) -> None:
    """`--replay-dir` must be a folder, or a place to make one: found out before any work, not after."""
    if folder is not None and folder.exists() and not folder.is_dir():
        raise UsageError(f"--replay-dir {folder} is a file, not a folder")


def _run_test(args: argparse.Namespace) -> int:
    from mdl_lang.bindings import BindingError
    from mdl_lang.compiler import load
    from mdl_lang.testing import ContractTester, PartlyUntested, TestSettings

    files = _existing(args.paths)
    if args.max_examples < 1:
        raise UsageError(f"--max-examples must be a positive number of batches, not {args.max_examples}")
    replay_folder(args.replay_dir)
    checked = check_paths(args.paths, args.root)
    report = Report("test", diagnostics=list(checked.diagnostics))
    if checked.has_errors:
        return _print_test_report(args, report, checked.sources)
    settings = TestSettings(
        seed=args.seed, max_examples=args.max_examples, replay_dir=args.replay_dir,
        progress=None if args.format == "json" else lambda line: print(line, file=sys.stderr, flush=True),
    )
    wanted = set(args.module or ())
    found: set[str] = set()
    # A binding that cannot be imported is an environment error (exit 2), but of that component only:
    # the others are still tested and reported, and the errors come last.
    unbound: list[str] = []
    for path in files:
        spec = load(path, args.root or default_root(args.paths))
        tester = ContractTester(spec, settings)
        for name in spec.components():
            if wanted and name not in wanted:
                continue
            found.add(name)
            try:
                report.results.extend(tester.run(name))
            except PartlyUntested as error:  # a data set's binding failed: its clauses are unknown, the rest ran
                report.results.extend(error.results)
                unbound.append(str(error))
            except BindingError as error:
                unbound.append(str(error))
        report.diagnostics.extend(tester.diagnostics)
    unknown_names = wanted - found
    if unknown_names:
        raise UsageError(f"no module or composition named {', '.join(sorted(unknown_names))}")
    status = _print_test_report(args, report, checked.sources, unbound)
    if status == EXIT_OK and args.strict and any(r.verdict is Verdict.UNKNOWN for r in report.results):
        return EXIT_FAILED
    return status


def _print_test_report(
    args: argparse.Namespace, report: Report, sources: SourceMap, errors: Sequence[str] = (),
) -> int:
    """The report for people or as JSON; `errors` are environment errors met on the way (exit 2)."""
    if args.format == "json":
        document = report.to_json()
        if errors:
            document["error"] = "\n".join(errors)
        print(json.dumps(document, indent=2))
    else:
        if report.diagnostics:
            print(render_all(report.diagnostics, sources))
        for result in report.results:
            if result.verdict in (Verdict.FAIL, Verdict.UNKNOWN):
                print(render_result(result, sources) + "\n")
        for reason, count in _skip_reasons(report.results).items():
            print(f"skipped {count}: {reason}")
        counts = report.summary()
        print(", ".join(f"{counts[v.value]} {label}" for v, label in (
            (Verdict.PASS, "passed"), (Verdict.FAIL, "failed"), (Verdict.UNKNOWN, "unknown"), (Verdict.SKIP, "skipped"),
        )))
    for error in errors:
        print(f"mdl: error: {error}", file=sys.stderr)
    if errors:
        return EXIT_USAGE
    failed = any(d.is_error for d in report.diagnostics) or any(r.verdict is Verdict.FAIL for r in report.results)
    return EXIT_FAILED if failed else EXIT_OK


def _skip_reasons(results: list[Result]) -> dict[str, int]:
    """Skipped clauses counted by reason: one line each instead of a report per clause."""
    reasons: dict[str, int] = {}
    for result in results:
        if result.verdict is Verdict.SKIP:
            reasons[result.message] = reasons.get(result.message, 0) + 1
    return reasons


# ---------------------------------------------------------------- blame


def _run_blame(args: argparse.Namespace) -> int:
    try:
        document = json.loads(args.report.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise UsageError(f"no such file: {args.report}") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{args.report} is not a JSON report: {error}") from error
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema is not None and schema != "mdl-report/1":
        raise UsageError(f"{args.report} is a {schema!r} document, not an mdl-report/1 report")
    # A whole report (its results, maybe none), or one result saved alone.
    whole = isinstance(document, dict) and ("results" in document or schema is not None)
    entries = document.get("results", []) if whole else [document]
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise UsageError(f"{args.report} holds no mdl-report/1 results")
    try:
        results = [Result.from_json(entry) for entry in entries]
    except (KeyError, ValueError, TypeError) as error:
        raise UsageError(f"{args.report} has a malformed result: {error}") from error
    diagnostics = document.get("diagnostics", []) if isinstance(document, dict) else []
    if not isinstance(diagnostics, list) or not all(isinstance(entry, dict) for entry in diagnostics):
        raise UsageError(f"{args.report} has malformed diagnostics")
    shown = [_diagnostic_line(entry) for entry in diagnostics]
    # A file's own result (`mdl check`) is its diagnostics, shown above; it counts for the exit code only.
    shown += [render_result(r) for r in results if r.verdict is not Verdict.PASS and r.clause]
    print("\n\n".join(shown) if shown else "every result passed")
    errors = any(entry.get("severity", "error") == "error" for entry in diagnostics)  # as shown above
    return EXIT_FAILED if errors or any(r.verdict is Verdict.FAIL for r in results) else EXIT_OK


def _diagnostic_line(entry: dict) -> str:
    """A saved diagnostic as the compiler shows its headline and place (the source may be gone)."""
    where = f"{entry.get('file', '?')}:{entry.get('line', '?')}:{entry.get('column', '?')}"
    text = f"{entry.get('severity', 'error')}[{entry.get('code', '?')}]: {entry.get('message', '')}\n  --> {where}"
    return text + (f"\n  = help: {entry['help']}" if entry.get("help") else "")


# ---------------------------------------------------------------- replay


def _run_replay(args: argparse.Namespace) -> int:
    """The re-checked clause as text, or as an mdl-report/1 object with that one result; a spec that no longer
    checks is, in JSON, that object's diagnostics (exit 1, as for `mdl test`)."""
    from mdl_lang.replay import ReplayError, replay

    try:
        outcome = replay(args.replay, args.spec)
    except ReplayError as error:
        raise UsageError(str(error)) from error
    except SpecError as error:
        if args.format != "json":
            raise
        print(Report("replay", diagnostics=error.diagnostics).dumps())
        return EXIT_FAILED
    if args.format == "json":
        print(Report("replay", [outcome.result]).dumps())
    else:
        print(outcome.text)
    return EXIT_FAILED if outcome.reproduced else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
