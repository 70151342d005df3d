"""No input makes the front end raise: mutated and truncated specs get diagnostics or check clean.

The inputs are derived from the spec files of `specs/` (from the golden cases when that
folder has none): a window of a few consecutive declarations of one file, or a whole
file, then one to three mutations: truncation, deleting, duplicating or swapping a token
or a line, inserting characters (quotes, backslashes, `#`, brackets, unicode, NUL, a byte
that is not UTF-8), turning a name into a keyword or into another name of the file,
changing a number. Each mutant goes through the parser,
the formatter, and the full checker from a file next to copies of the originals, so
that its imports resolve. The examples of all tests add up to more than 10,000;
hypothesis is derandomized and keeps no database, so every run tries the same inputs.
"""

from __future__ import annotations

import importlib
import itertools
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdl_lang.diagnostics import CODES, render_all
from mdl_lang.semantics.checker import check_paths
from mdl_lang.syntax.parser import keywords, parse

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"
GOLDEN_CASES = REPO / "tests" / "golden" / "cases"


def _source_folder() -> Path:
    """specs/ when it holds specs; otherwise the golden cases (mostly valid specs, and their lib/)."""
    return SPECS if any(SPECS.glob("*.mdl")) else GOLDEN_CASES


SOURCE_FOLDER = _source_folder()
SOURCE_FILES = sorted(SOURCE_FOLDER.rglob("*.mdl"))
SOURCES = {path.relative_to(SOURCE_FOLDER).as_posix(): path.read_bytes().decode("utf-8", "replace")
           for path in SOURCE_FILES}

try:
    format_text: Callable | None = importlib.import_module("mdl_lang.syntax.format").format_text
except ImportError:  # the formatter is another engineer's module; test it once it exists
    format_text = None

DECLARATION_START = re.compile(r"^(?=(?:spec|import|labels|dim|type|interface|module|data|compose)\b)", re.MULTILINE)
TOKEN = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?[kMG]?'
    r"|\.\.\.|\.\.|//|\*\*|<=|>=|==|!=|>>|\S"
)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"(?<![A-Za-z0-9_.])(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?[kMG]?(?![A-Za-z0-9_])")
KEYWORDS = sorted(keywords())
KEYWORD_SET = frozenset(KEYWORDS)
NUMBERS = ["0", "-1", "1", "7", "2.5", "1e-3", "1e309", "1e-400", "10k", "2M", "3G", "99999999999999999999", ".5"]
NASTY = ['"', "\\", "#", "(", ")", "[", "]", "{", "}", ",", ":", "|", "..", "...", ">>", "=", "-", "\x00", "\t",
         "\r", "\n", "\u00e9", "\u03bb", "\U0001d54f", "\U0001f600", "\u200b", "\ufeff", "\u2028", " ", "_", "9"]
CONTEXT = ("spec", "import", "labels", "dim", "type", "data")
BAD_BYTE = "\udcff"  # written with surrogateescape: the byte 0xff, which is not UTF-8

# ---------------------------------------------------------------- seeds


def _declarations(text: str) -> list[str]:
    """The file cut where top-level declarations start; comments go with the declaration before them."""
    starts = [match.start() for match in DECLARATION_START.finditer(text)]
    cuts = [0, *(start for start in starts if start > 0), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(cuts) if text[a:b]]


@dataclass(frozen=True)
class Seed:
    """Text to mutate, and the source file it comes from (whose folder resolves its imports)."""

    name: str
    text: str


@st.composite
def windows(draw: st.DrawFn) -> Seed:
    """A few consecutive declarations of one file, after the file's one-line declarations they may use.

    Small texts keep each example fast; the context (imports, labels, dims, types, data)
    lets the window's modules and compositions get past name resolution.
    """
    name = draw(st.sampled_from(sorted(SOURCES)))
    parts = _declarations(SOURCES[name])
    start = draw(st.integers(0, len(parts) - 1))
    window = range(start, min(start + draw(st.integers(1, 4)), len(parts)))
    context = [part for index, part in enumerate(parts) if part.startswith(CONTEXT) and index not in window]
    return Seed(name, "".join(context) + "".join(parts[index] for index in window))


whole_files = st.sampled_from(sorted(SOURCES)).map(lambda name: Seed(name, SOURCES[name]))

# ---------------------------------------------------------------- mutations


def _tokens(text: str) -> list[re.Match[str]]:
    return list(TOKEN.finditer(text))


def truncate(draw: st.DrawFn, text: str) -> str:
    return text[:draw(st.integers(0, len(text)))]


def delete_token(draw: st.DrawFn, text: str) -> str:
    tokens = _tokens(text)
    if not tokens:
        return text
    token = draw(st.sampled_from(tokens))
    return text[:token.start()] + text[token.end():]


def duplicate_token(draw: st.DrawFn, text: str) -> str:
    tokens = _tokens(text)
    if not tokens:
        return text
    token = draw(st.sampled_from(tokens))
    return text[:token.end()] + " " + token.group() + text[token.end():]


def swap_tokens(draw: st.DrawFn, text: str) -> str:
    tokens = _tokens(text)
    if len(tokens) < 2:
        return text
    first, second = sorted(draw(st.lists(st.sampled_from(tokens), min_size=2, max_size=2)), key=lambda m: m.start())
    if first.start() == second.start():
        return text
    return (text[:first.start()] + second.group() + text[first.end():second.start()] + first.group()
            + text[second.end():])


def delete_line(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    if not lines:
        return text
    del lines[draw(st.integers(0, len(lines) - 1))]
    return "".join(lines)


def duplicate_line(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    if not lines:
        return text
    index = draw(st.integers(0, len(lines) - 1))
    return "".join([*lines[:index + 1], lines[index], *lines[index + 1:]])


def swap_lines(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        return text
    a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[a], lines[b] = lines[b], lines[a]
    return "".join(lines)


def insert_characters(draw: st.DrawFn, text: str) -> str:
    position = draw(st.integers(0, len(text)))
    inserted = "".join(draw(st.lists(st.sampled_from(NASTY), min_size=1, max_size=4)))
    return text[:position] + inserted + text[position:]


def name_to_keyword(draw: st.DrawFn, text: str) -> str:
    names = list(NAME.finditer(text))
    if not names:
        return text
    name = draw(st.sampled_from(names))
    return text[:name.start()] + draw(st.sampled_from(KEYWORDS)) + text[name.end():]


def replace_name(draw: st.DrawFn, text: str) -> str:
    """One name written where another was: mostly still parses, so the checker's later phases run."""
    names = [match for match in NAME.finditer(text) if match.group() not in KEYWORD_SET]
    if not names:
        return text
    name = draw(st.sampled_from(names))
    other = draw(st.sampled_from(sorted({match.group() for match in names})))
    return text[:name.start()] + other + text[name.end():]


def change_number(draw: st.DrawFn, text: str) -> str:
    numbers = list(NUMBER.finditer(text))
    if not numbers:
        return insert_characters(draw, text)
    number = draw(st.sampled_from(numbers))
    return text[:number.start()] + draw(st.sampled_from(NUMBERS)) + text[number.end():]


def insert_bad_byte(draw: st.DrawFn, text: str) -> str:
    position = draw(st.integers(0, len(text)))
    return text[:position] + BAD_BYTE + text[position:]


Mutation = Callable[[st.DrawFn, str], str]
TEXT_MUTATIONS: list[Mutation] = [
    truncate, delete_token, duplicate_token, swap_tokens, delete_line, duplicate_line, swap_lines,
    insert_characters, name_to_keyword, replace_name, change_number,
]
SEMANTIC_MUTATIONS: list[Mutation] = [replace_name, replace_name, change_number, name_to_keyword, duplicate_line]


@st.composite
def mutants(draw: st.DrawFn, seeds: st.SearchStrategy[Seed], mutations: list[Mutation]) -> Seed:
    seed = draw(seeds)
    text = seed.text
    for _ in range(draw(st.integers(1, 3))):
        text = draw(st.sampled_from(mutations))(draw, text)
    return Seed(seed.name, text)


# ---------------------------------------------------------------- what must hold


@pytest.fixture(scope="module")
def spec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source folder: mutants are written into it, so their imports find the originals."""
    root = tmp_path_factory.mktemp("robustness") / "specs"
    shutil.copytree(SOURCE_FOLDER, root)
    return root


def parses_and_formats(text: str) -> None:
    result = parse(text, "mutant.mdl")
    assert result.tree is not None or result.diagnostics
    assert all(d.code in CODES for d in result.diagnostics)
    if format_text is not None:
        format_text(text, "mutant.mdl")


def checks(seed: Seed, root: Path) -> None:
    """Write the mutant next to its source file and run the whole checker; render what it reports."""
    path = (root / seed.name).with_name("mutant_of_" + Path(seed.name).name)
    path.write_text(seed.text, encoding="utf-8", errors="surrogateescape")
    result = check_paths([path], root=root)
    assert all(d.code in CODES for d in result.diagnostics)
    render_all(result.diagnostics, result.sources)


def robust(examples: int) -> Callable:
    return settings(
        max_examples=examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@robust(4000)
@given(mutants(windows(), TEXT_MUTATIONS))
def test_parser_and_formatter_never_raise(mutant: Seed) -> None:
    parses_and_formats(mutant.text)


@robust(3600)
@given(mutants(windows(), [*TEXT_MUTATIONS, insert_bad_byte]))
def test_checker_never_raises(spec_root: Path, mutant: Seed) -> None:
    checks(mutant, spec_root)


@robust(1500)
@given(mutants(windows(), SEMANTIC_MUTATIONS))
def test_checker_never_raises_on_renamed_names_and_changed_numbers(spec_root: Path, mutant: Seed) -> None:
    checks(mutant, spec_root)


@robust(1000)
@given(whole_files, st.integers(0, 10**6))
def test_truncated_whole_files_parse_format_and_check(spec_root: Path, seed: Seed, offset: int) -> None:
    truncated = Seed(seed.name, seed.text[:offset % (len(seed.text) + 1)])
    parses_and_formats(truncated.text)
    checks(truncated, spec_root)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_source_files_check_without_raising(spec_root: Path, name: str) -> None:
    parses_and_formats(SOURCES[name])
    checks(Seed(name, SOURCES[name]), spec_root)


CLASSIFIER = """
labels Digit = {0..9}
dim B : batch
type Image = Tensor[B, 1, 8, 8] float32 in [0, 1]
interface Classifier {
  input x: Image
  output y: Tensor[B, Digit] float32
  %s
}
"""

# Inputs the fuzzing of these tests once found raising, with the diagnostic they get now.
ONCE_RAISED = {
    "recursive type": ("dim B : batch\ntype Bright = Bright in [0, 1]\n", "E0115"),
    "NUL in an import path": ('import "\x00common.mdl" as common\n', "E0103"),
    "infinite flip axis": (CLASSIFIER % "ensures self(flip(x, dim=-1e309)) == y", "E0306"),
    "huge label range": ("labels Digit = {0..99999999999999999999}\n", "E0206"),
}


@pytest.mark.parametrize("name", sorted(ONCE_RAISED))
def test_inputs_that_once_raised(spec_root: Path, name: str) -> None:
    text, code = ONCE_RAISED[name]
    path = spec_root / "once_raised.mdl"
    path.write_text(text, encoding="utf-8")
    assert [d.code for d in check_paths([path], root=spec_root).diagnostics] == [code]
    parses_and_formats(text)


DEEP_SUM = """
labels Digit = {0..9}
dim B : batch
interface Classifier {
  input x: Tensor[B, 64] float32
  output y: Tensor[B, Digit] float32
  ensures total: %s <= 600
}
"""


def test_a_long_sum_checks_without_raising(spec_root: Path) -> None:
    terms = " + ".join(f"y[{index % 10}]" for index in range(600))
    checks(Seed("deep_sum.mdl", DEEP_SUM % terms), spec_root)
