"""Benchmark: robustness queries on digits MLPs, `mdl verify` against Marabou and plain Z3.

What it times: three MLPs trained here on sklearn's 8x8 digits (64-16-10, 64-32-16-10, 64-64-64-10;
inputs scaled to [0, 1], fixed seeds, a few seconds each), exported once with `torch.onnx.export`;
for each, `--points` correctly classified test points and the L-infinity radii in EPSILONS
(the ball cut to [0, 1]). Each query is written as a VNN-COMP-style VNN-LIB file (unsafe when
some other class j scores y_j >= y_true) by mdl's exporter. Every verifier answers the same files:

- (a) mdl, as `mdl verify --vnnlib` runs it: the ONNX loaded by `mdl_lang.interop.onnx`, the
  VNN-LIB read back by `mdl_lang.interop.vnnlib`, then `verify_cases` (a short joint
  `verify_query`: bounds, attack, branch and bound; then one query per unsafe class);
- (b) plain Z3: the exact ReLU encoding (`If`) handed straight to `z3.Solver`, no bounds, a short
  timeout, on a subset (`--plain-z3-limit`): the baseline without any of mdl's machinery;
- (c) Marabou (`maraboupy` 2.0.0): the same network in an InputQuery and the same VNN-LIB file
  read by Marabou's own parser (`MarabouCore.loadProperty`). Marabou's ONNX reader needs
  onnxruntime, which mdl does not depend on, so the network comes from mdl's ONNX loader.

mdl's refutations are replayed in float32 on the torch model by `verify_query` itself; a peer's
`sat` counts as refuted, and the report says how many of their points did not replay in float32.
Targets: verdicts agree with Marabou on every query both solve; mdl solves every query Marabou
solves; mdl's total time is at most 2x Marabou's. Plain Z3 is expected to be far behind.
Not a test: figures are read by people (benchmarks/README.md).

    .venv/bin/python benchmarks/bench_verify.py              # 3 models x 20 points x 4 eps (240 queries)
    .venv/bin/python benchmarks/bench_verify.py --quick      # 1 model x 5 points x 4 eps, smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mdl_lang.interop.onnx import load_onnx
from mdl_lang.interop.solve import verify_cases
from mdl_lang.interop.vnnlib import read_property, write_property
from mdl_lang.verify.engine import verify_query
from mdl_lang.verify.network import Affine, Network, Relu, evaluate
from mdl_lang.verify.query import LinearConstraint, Query, unsafe_margin

ARCHITECTURES: dict[str, tuple[int, ...]] = {
    "64-16-10": (16,),
    "64-32-16-10": (32, 16),
    "64-64-64-10": (64, 64),
}
EPSILONS = (0.01, 0.02, 0.05, 0.1)
VERIFIERS = ("mdl", "mdl_joint", "marabou", "plain_z3")
TITLES = {"mdl": "mdl verify", "mdl_joint": "mdl verify_query, joint", "marabou": "Marabou 2.0.0",
          "plain_z3": "plain Z3"}


@dataclass(frozen=True)
class Instance:
    """One robustness query: a model, a test point with its label, a radius, and its two files."""

    model: str
    point: int
    label: int
    eps: float
    onnx: str
    vnnlib: str


@dataclass(frozen=True)
class Answer:
    """A verifier's verdict on one instance: proved, refuted or unknown (timeouts included)."""

    verifier: str
    instance: int
    verdict: str
    seconds: float
    reason: str


# ---------------------------------------------------------------- data, models, files


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's digits scaled to [0, 1], split 75/25 with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    inputs = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(inputs, digits.target, test_size=0.25, random_state=0)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train).long(),
            torch.from_numpy(x_test), torch.from_numpy(y_test).long())


def train_mlp(hidden: tuple[int, ...], inputs: torch.Tensor, labels: torch.Tensor, seed: int = 0,
              steps: int = 400) -> nn.Sequential:
    """A ReLU MLP 64-hidden-10 trained full-batch with Adam (about a second on one core)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = inputs.shape[1]
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
    return model.eval()


def export_onnx(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 64),), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def robustness_query(point: torch.Tensor, label: int, eps: float, name: str) -> Query:
    """The linf ball cut to [0, 1]; unsafe when some other class scores at least the label's score."""
    flat = point.reshape(-1).to(torch.float64)
    unsafe = tuple((LinearConstraint.less_equal(10, {label: 1.0, other: -1.0}, 0.0),)
                   for other in range(10) if other != label)
    return Query((flat - eps).clamp(min=0.0), (flat + eps).clamp(max=1.0), unsafe, name=name)


def build_instances(quick: bool, points: int, folder: Path, log) -> tuple[list[Instance], dict[str, nn.Module]]:
    """Train, export and write every instance's files; check the ONNX import computes what torch does."""
    x_train, y_train, x_test, y_test = digits_split()
    names = ["64-16-10"] if quick else list(ARCHITECTURES)
    instances: list[Instance] = []
    models: dict[str, nn.Module] = {}
    for name in names:
        started = time.perf_counter()
        model = train_mlp(ARCHITECTURES[name], x_train, y_train)
        with torch.no_grad():
            predicted = model(x_test).argmax(dim=1)
        accuracy = float((predicted == y_test).float().mean())
        onnx_path = folder / f"mlp_{name}.onnx"
        export_onnx(model, onnx_path)
        network = load_onnx(onnx_path)
        with torch.no_grad():
            gap = float((evaluate(network, x_test.double()) - model(x_test).double()).abs().max())
        if gap > 1e-4:
            raise SystemExit(f"the ONNX import of {name} disagrees with torch by {gap:g}")
        log(f"model {name}: test accuracy {accuracy:.3f}, trained and exported in "
            f"{time.perf_counter() - started:.1f} s (ONNX import within {gap:.1e} of torch)")
        models[name] = model
        correct = torch.nonzero(predicted == y_test).flatten()[:points].tolist()
        for index in correct:
            label = int(y_test[index])
            for eps in EPSILONS:
                query = robustness_query(x_test[index], label, eps, f"{name} point {index} eps {eps}")
                path = folder / f"mlp_{name}_p{index}_eps{eps}.vnnlib"
                path.write_text(write_property(query, 10, comment=query.name), encoding="utf-8")
                instances.append(Instance(name, index, label, eps, str(onnx_path), str(path)))
    return instances, models


# ---------------------------------------------------------------- the verifiers


def replays(model: nn.Module, query: Query, point: np.ndarray | torch.Tensor) -> bool:
    """Does the candidate, rounded to float32 and kept inside the box, violate the property in torch?"""
    flat = torch.as_tensor(np.asarray(point, dtype=np.float64)).reshape(-1)
    flat = torch.minimum(torch.maximum(flat, query.lower), query.upper).to(torch.float32)
    with torch.no_grad():
        output = model(flat.reshape(1, -1))
    return float(unsafe_margin(query, output)[0]) <= 0.0


def _sat_reason(model: nn.Module, query: Query, point: np.ndarray) -> str:
    """A peer's `sat` counts as refuted (it is their verdict); whether its point replays is noted."""
    if replays(model, query, point):
        return "sat, replayed in float32"
    return "sat, but its point does not violate the property in float32 (a tie or rounding)"


def run_mdl(network: Network, query: Query, model: nn.Module, timeout_s: float, joint: bool = False
            ) -> tuple[str, str]:
    """`verify_cases` as `mdl verify --vnnlib` runs it, or (`joint`) one `verify_query` on the whole disjunction."""
    def reference(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(batch.reshape(batch.shape[0], -1).to(torch.float32))

    decide = verify_query if joint else verify_cases
    outcome = decide(network, query, timeout_s=timeout_s, reference=reference)
    return outcome.verdict, outcome.reason


def _rational(z3, value: float):
    fraction = Fraction(float(value))
    return z3.RealVal(f"{fraction.numerator}/{fraction.denominator}")


def run_plain_z3(network: Network, query: Query, model: nn.Module, timeout_s: float) -> tuple[str, str]:
    """The exact encoding with no bounds: x in the box, h = W x + b, r = If(h > 0, h, 0), unsafe as Or(And)."""
    import z3

    solver = z3.Solver()
    solver.set("timeout", max(1, int(timeout_s * 1000)))
    inputs = [z3.Real(f"x{i}") for i in range(network.input_size)]
    for variable, low, high in zip(inputs, query.lower.tolist(), query.upper.tolist(), strict=True):
        solver.add(variable >= _rational(z3, low), variable <= _rational(z3, high))
    values: list[list] = [inputs]
    for position, node in enumerate(network.nodes, start=1):
        if isinstance(node, Affine):
            source = values[node.src]
            layer = []
            for row, (weights, bias) in enumerate(zip(node.weight.tolist(), node.bias.tolist(), strict=True)):
                variable = z3.Real(f"h{position}_{row}")
                terms = [_rational(z3, w) * v for w, v in zip(weights, source, strict=True) if w != 0.0]
                solver.add(variable == z3.Sum([*terms, _rational(z3, bias)]))
                layer.append(variable)
            values.append(layer)
        elif isinstance(node, Relu):
            layer = []
            for row, pre in enumerate(values[node.src]):
                variable = z3.Real(f"r{position}_{row}")
                solver.add(variable == z3.If(pre > 0, pre, z3.RealVal(0)))
                layer.append(variable)
            values.append(layer)
        else:
            return "unknown", f"plain Z3 encoding has no {type(node).__name__}"
    outputs = values[network.output]
    cases = []
    for conjunction in query.unsafe:
        rows = [z3.Sum([_rational(z3, c) * y for c, y in zip(constraint.coefficients.tolist(), outputs, strict=True)
                        if c != 0.0]) + _rational(z3, constraint.constant) <= 0 for constraint in conjunction]
        cases.append(z3.And(rows))
    solver.add(z3.Or(cases))
    answer = solver.check()
    if answer == z3.unsat:
        return "proved", "unsat"
    if answer == z3.sat:
        found = solver.model()
        point = [float(Fraction(str(found.eval(v, model_completion=True).as_fraction()))) for v in inputs]
        return "refuted", _sat_reason(model, query, np.array(point))
    return "unknown", f"z3: {solver.reason_unknown()}"


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Marabou's C++ side prints to file descriptor 1 (`Property: ...`); keep the report readable."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def marabou_available() -> str | None:
    """None when maraboupy imports, else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from maraboupy import MarabouCore  # noqa: F401
    except ImportError as error:
        return f"maraboupy is not installed ({error}); `.venv/bin/pip install maraboupy==2.0.0`"
    return None


def run_marabou(network: Network, vnnlib: str, query: Query, model: nn.Module, timeout_s: float
                ) -> tuple[str, str]:
    """The network as Marabou equations and ReLU constraints, the property by Marabou's VNN-LIB parser."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import MarabouCore

    variables: list[list[int]] = [list(range(network.input_size))]
    count = network.input_size
    equations: list[tuple[list[tuple[float, int]], float]] = []
    relus: list[tuple[int, int]] = []
    for node in network.nodes:
        if isinstance(node, Affine):
            outputs = list(range(count, count + int(node.weight.shape[0])))
            source = variables[node.src]
            for row, out in enumerate(outputs):
                terms = [(w, v) for w, v in zip(node.weight[row].tolist(), source, strict=True) if w != 0.0]
                equations.append(([*terms, (-1.0, out)], -float(node.bias[row])))
        elif isinstance(node, Relu):
            outputs = list(range(count, count + len(variables[node.src])))
            relus += list(zip(variables[node.src], outputs, strict=True))
        else:
            return "unknown", f"no Marabou encoding for {type(node).__name__} here"
        count += len(outputs)
        variables.append(outputs)
    input_query = MarabouCore.InputQuery()
    input_query.setNumberOfVariables(count)
    for index, variable in enumerate(variables[0]):
        input_query.markInputVariable(variable, index)
    for index, variable in enumerate(variables[network.output]):
        input_query.markOutputVariable(variable, index)
    for terms, scalar in equations:
        equation = MarabouCore.Equation(MarabouCore.Equation.EQ)
        for weight, variable in terms:
            equation.addAddend(weight, variable)
        equation.setScalar(scalar)
        input_query.addEquation(equation)
    for before, after in relus:
        MarabouCore.addReluConstraint(input_query, before, after)
    options = MarabouCore.Options()
    options._timeoutInSeconds = max(1, math.ceil(timeout_s))
    options._verbosity = 0
    options._numWorkers = 1
    with _quiet_stdout():
        MarabouCore.loadProperty(input_query, vnnlib)
        exit_code, assignment, _ = MarabouCore.solve(input_query, options, "")
    if exit_code == "unsat":
        return "proved", "unsat"
    if exit_code == "sat":
        return "refuted", _sat_reason(model, query, np.array([assignment[v] for v in variables[0]]))
    return "unknown", f"Marabou: {exit_code}"


# ---------------------------------------------------------------- the run and the report


def plain_z3_subset(instances: list[Instance], limit: int) -> set[int]:
    """`limit` instances spread over every (model, eps): the first points of each."""
    groups: dict[tuple[str, float], list[int]] = {}
    for index, instance in enumerate(instances):
        groups.setdefault((instance.model, instance.eps), []).append(index)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(g) for g in groups.values()):
        for members in groups.values():
            if depth < len(members) and len(chosen) < limit:
                chosen.append(members[depth])
        depth += 1
    return set(chosen)


def run(args: argparse.Namespace, folder: Path, log) -> tuple[list[Instance], list[Answer], str | None]:
    instances, models = build_instances(args.quick, args.points, folder, log)
    networks = {path: load_onnx(path) for path in {i.onnx for i in instances}}
    marabou_missing = None if args.no_marabou else marabou_available()
    if args.no_marabou:
        marabou_missing = "--no-marabou"
    z3_subset = plain_z3_subset(instances, args.plain_z3_limit)
    answers: list[Answer] = []
    for index, instance in enumerate(instances):
        (query,) = read_property(Path(instance.vnnlib).read_text(encoding="utf-8"), instance.vnnlib).queries
        network, model = networks[instance.onnx], models[instance.model]
        jobs = [("mdl", partial(run_mdl, network, query, model, args.timeout))]
        if args.mdl_joint:
            jobs.append(("mdl_joint", partial(run_mdl, network, query, model, args.timeout, joint=True)))
        if marabou_missing is None:
            jobs.append(("marabou", partial(run_marabou, network, instance.vnnlib, query, model, args.timeout)))
        if index in z3_subset:
            jobs.append(("plain_z3", partial(run_plain_z3, network, query, model, args.plain_z3_timeout)))
        line = []
        for verifier, job in jobs:
            started = time.perf_counter()
            verdict, reason = job()
            seconds = time.perf_counter() - started
            answers.append(Answer(verifier, index, verdict, seconds, reason))
            line.append(f"{verifier} {verdict} {seconds:.2f}s")
        log(f"[{index + 1}/{len(instances)}] {instance.model} point {instance.point} eps {instance.eps}: "
            + ", ".join(line))
    return instances, answers, marabou_missing


def _by(answers: list[Answer], verifier: str) -> dict[int, Answer]:
    return {a.instance: a for a in answers if a.verifier == verifier}


def _row(title: str, answers: list[Answer]) -> str:
    proved = sum(a.verdict == "proved" for a in answers)
    refuted = sum(a.verdict == "refuted" for a in answers)
    unknown = len(answers) - proved - refuted
    total = sum(a.seconds for a in answers)
    return f"| {title} | {len(answers)} | {proved + refuted} | {proved} | {refuted} | {unknown} | {total:.2f} |"


def report(instances: list[Instance], answers: list[Answer], marabou_missing: str | None, args) -> list[str]:
    lines = ["", "| verifier | queries | solved | proved | refuted | unknown/timeout | total s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for verifier in VERIFIERS:
        mine = [a for a in answers if a.verifier == verifier]
        if mine:
            title = TITLES[verifier]
            if verifier == "plain_z3":
                title += f" (subset, {args.plain_z3_timeout:g} s timeout)"
            lines.append(_row(title, mine))
    lines += ["", "| model | eps | mdl solved | mdl s | Marabou solved | Marabou s |",
              "| --- | --- | --- | --- | --- | --- |"]
    mdl, marabou, plain = _by(answers, "mdl"), _by(answers, "marabou"), _by(answers, "plain_z3")
    for model in dict.fromkeys(i.model for i in instances):
        for eps in EPSILONS:
            members = [n for n, i in enumerate(instances) if i.model == model and i.eps == eps]
            cells = []
            for table in (mdl, marabou):
                chosen = [table[n] for n in members if n in table]
                solved = sum(a.verdict != "unknown" for a in chosen)
                cells += [f"{solved}/{len(chosen)}" if chosen else "-",
                          f"{sum(a.seconds for a in chosen):.2f}" if chosen else "-"]
            lines.append(f"| {model} | {eps} | {' | '.join(cells)} |")
    joint = _by(answers, "mdl_joint")
    if joint:
        lines.append(f"mdl without the case split: {sum(a.verdict != 'unknown' for a in joint.values())} solved in "
                     f"{sum(a.seconds for a in joint.values()):.2f} s; with it: "
                     f"{sum(a.verdict != 'unknown' for a in mdl.values())} solved in "
                     f"{sum(a.seconds for a in mdl.values()):.2f} s")
    lines.append("")
    for verifier in VERIFIERS:
        reasons: dict[str, int] = {}
        for answer in answers:
            if answer.verifier == verifier and (answer.verdict == "unknown" or "but" in answer.reason):
                reasons[answer.reason] = reasons.get(answer.reason, 0) + 1
        for reason, count in reasons.items():
            lines.append(f"{TITLES[verifier]} x{count}: {reason}")
    disagreements = []
    for name, other in (("Marabou", marabou), ("plain Z3", plain), ("verify_query joint", joint)):
        if not other:
            continue
        both = [n for n in other if mdl[n].verdict != "unknown" and other[n].verdict != "unknown"]
        wrong = [n for n in both if mdl[n].verdict != other[n].verdict]
        lines.append(f"agreement mdl vs {name}: {len(both)} queries solved by both, {len(wrong)} disagreements")
        for n in wrong:
            instance = instances[n]
            disagreements.append(
                f"!!! DISAGREEMENT !!! {instance.vnnlib}: mdl {mdl[n].verdict} ({mdl[n].reason}), "
                f"{name} {other[n].verdict} ({other[n].reason})")
    lines += disagreements
    if marabou_missing is not None:
        lines.append(f"Marabou: skipped ({marabou_missing})")
    else:
        missed = [n for n in marabou if marabou[n].verdict != "unknown" and mdl[n].verdict == "unknown"]
        extra = [n for n in marabou if marabou[n].verdict == "unknown" and mdl[n].verdict != "unknown"]
        mdl_total = sum(a.seconds for a in mdl.values())
        marabou_total = sum(a.seconds for a in marabou.values())
        ratio = mdl_total / marabou_total if marabou_total > 0 else float("inf")
        lines.append(f"solved by Marabou but not by mdl: {len(missed)}; by mdl but not by Marabou: {len(extra)}")
        for n in missed:
            lines.append(f"  mdl missed {instances[n].vnnlib}: {mdl[n].reason}")
        lines.append(f"total time mdl / Marabou: {mdl_total:.2f} s / {marabou_total:.2f} s = {ratio:.2f}x")
        lines.append("targets: verdicts agree: " + ("met" if not disagreements else "MISSED")
                     + "; mdl solves all Marabou solves: " + ("met" if not missed else "MISSED")
                     + f"; time <= 2x Marabou: {'met' if ratio <= 2 else 'MISSED'} ({ratio:.2f}x)")
    if plain:
        subset = list(plain)
        plain_total = sum(plain[n].seconds for n in subset)
        mdl_subset = sum(mdl[n].seconds for n in subset)
        lines.append(f"plain Z3 on its {len(subset)} queries: {sum(plain[n].verdict != 'unknown' for n in subset)} "
                     f"solved in {plain_total:.1f} s; mdl on the same: "
                     f"{sum(mdl[n].verdict != 'unknown' for n in subset)} solved in {mdl_subset:.1f} s "
                     "(plain Z3 is far behind: no bounds, no attack, a short timeout)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one model, 5 points: a smoke run")
    parser.add_argument("--points", type=int, default=None, help="test points per model (default 20, quick 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-query timeout of mdl and Marabou, s")
    parser.add_argument("--plain-z3-timeout", type=float, default=10.0, help="per-query timeout of plain Z3, s")
    parser.add_argument("--plain-z3-limit", type=int, default=None,
                        help="run plain Z3 on this many queries spread over models and radii (default 24, quick 4)")
    parser.add_argument("--mdl-joint", action="store_true",
                        help="also time one verify_query on each whole disjunction (mdl without the case split)")
    parser.add_argument("--no-marabou", action="store_true", help="skip Marabou even if maraboupy is installed")
    parser.add_argument("--keep", type=Path, help="write the ONNX and VNN-LIB files here instead of a temp folder")
    parser.add_argument("--json", type=Path, help="write every instance and answer here")
    args = parser.parse_args(argv)
    args.points = args.points if args.points is not None else (5 if args.quick else 20)
    args.plain_z3_limit = args.plain_z3_limit if args.plain_z3_limit is not None else (4 if args.quick else 24)
    torch.set_num_threads(1)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        instances, answers, marabou_missing = run(args, folder, log)
    lines = report(instances, answers, marabou_missing, args)
    print(f"bench_verify: {len(instances)} queries, timeout {args.timeout:g} s, one CPU thread, "
          f"wall {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"instances": [asdict(i) for i in instances],
                                         "answers": [asdict(a) for a in answers]}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
