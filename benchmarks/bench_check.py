"""Front-end throughput: parse and full check of a generated 10,000-line spec.

Prints lines per second for lexing alone (the baseline, measured in the same
run), for parsing, and for the full check, with their ratios to the baseline.
The target is the full check of 10,000 lines in under 2 s on a 2-core machine.

    python benchmarks/bench_check.py [--lines 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mdl_lang.semantics.checker import check_paths
from mdl_lang.syntax.parser import _parser, parse

HEADER = """\
spec generated
labels Digit = {0..9}
labels Even = {0, 2, 4, 6, 8} within Digit
dim B : batch
dim H = 8, W = 8
dim F = H * W
type Image = Tensor[B, 1, H, W] float32 in [0, 1]
type Flat = Tensor[B, F] float32
type Scores[L] = Tensor[B, L] float32 in [0, 1]
"""


def interface(index: int) -> str:
    return f"""
interface Classifier{index}[L] {{
  input  x: Image
  output y: Scores[L]
  requires finite(x) and 0 <= x <= 1
  ensures  finite(y)
  ensures  sum(y) == 1 within 1e-4
}}
"""


def module(index: int, interfaces: int) -> str:
    label = index % 10
    return f"""
module m{index} : Classifier{index % interfaces}[{{{label}}} | other] {{
  python "generated.models:load_{index}"
  ensures y[{label}] >= 0 and y[other] <= 1
  cost {{ params <= 50k, flops <= 2M per sample }}
}}
"""


def composition(index: int, interfaces: int) -> str:
    parts = ", ".join(f"m{index * 10 + k}" for k in range(10))
    return f"""
compose voted{index} : Classifier{index % interfaces}[Digit] = vote({parts}) {{
  ensures argmax(y) in Digit
}}
"""


def generate(lines: int) -> str:
    """A spec of about `lines` lines: interfaces, ten modules per vote, one vote per ten modules."""
    interfaces = 100
    chunks = [HEADER] + [interface(i) for i in range(interfaces)]
    modules = 0
    while sum(chunk.count("\n") for chunk in chunks) < lines:
        for _ in range(10):
            chunks.append(module(modules, interfaces))
            modules += 1
        chunks.append(composition(modules // 10 - 1, interfaces))
    return "".join(chunks)


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--lines", type=int, default=10_000)
    options.add_argument("--repeat", type=int, default=3)
    args = options.parse_args()

    text = generate(args.lines)
    line_count = text.count("\n")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.mdl"
        path.write_text(text)
        lexer = _parser()
        result = check_paths([path])
        assert not result.has_errors, "the generated spec must check clean"
        lex = best_of(args.repeat, lambda: list(lexer.lex(text)))
        parse_time = best_of(args.repeat, lambda: parse(text, "generated.mdl"))
        check_time = best_of(args.repeat, lambda: check_paths([path]))

    modules = text.count("\nmodule ")
    print(f"spec: {line_count} lines, {modules} modules, {text.count('interface ')} interfaces, "
          f"{text.count('compose ')} compositions")
    print(f"{'phase':<12}{'seconds':>10}{'lines/s':>12}{'x lex':>8}")
    for name, seconds in (("lex", lex), ("parse", parse_time), ("check", check_time)):
        print(f"{name:<12}{seconds:>10.3f}{line_count / seconds:>12,.0f}{seconds / lex:>8.1f}")
    verdict = "meets" if check_time < 2.0 else "MISSES"
    print(f"full check of {line_count} lines: {check_time:.2f} s ({verdict} the 2 s target)")


if __name__ == "__main__":
    main()
