"""Results of checking clauses, with blame, rendered for people and as mdl-report/1 JSON.

Backends produce `Result`s; this module only formats them. Rendering follows
Racket's order (what broke, the values, the path, the blamed party, where the
contract comes from) in the layout of a compiler error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from mdl_lang.diagnostics import Diagnostic, SourceMap, snippet
from mdl_lang.span import Span

SCHEMA = "mdl-report/1"


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"
    SKIP = "skip"


class Role(str, Enum):
    CALLER = "caller"
    MODULE = "module"
    COMPOSITION = "composition"


@dataclass(frozen=True)
class Blame:
    """The one party at fault and why, with the path to it through the composition."""

    party: str
    role: Role
    path: tuple[str, ...]
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"party": self.party, "role": self.role.value, "path": list(self.path), "reason": self.reason}


@dataclass(frozen=True)
class Witness:
    """What shows the failure: sample indices, sub-expression values of the first one, a replay file."""

    samples: tuple[int, ...] = ()
    values: tuple[tuple[str, str], ...] = ()
    replay: str | None = None
    dims: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "samples": list(self.samples), "values": {name: json_value(text) for name, text in self.values},
        }
        if self.replay:
            entry["replay"] = self.replay
        if self.dims:
            entry["dims"] = dict(self.dims)
        return entry


@dataclass(frozen=True)
class Result:
    """The verdict on one clause of one component, as one backend found it."""

    component: str
    clause: str
    kind: str
    fragment: str
    backend: str
    verdict: Verdict
    span: Span
    message: str = ""
    blame: Blame | None = None
    witness: Witness | None = None

    def to_json(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "module": self.component,
            "clause": self.clause,
            "kind": self.kind,
            "fragment": self.fragment,
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "backend": self.backend,
            "verdict": self.verdict.value,
        }
        if self.message:
            entry["message"] = self.message
        if self.blame:
            entry["blame"] = self.blame.to_json()
        if self.witness:
            entry["witness"] = self.witness.to_json()
        return entry

    @classmethod
    def from_json(cls, entry: dict) -> Result:
        """The inverse of `to_json`, for `mdl blame REPORT.json`. A result without a verdict, or naming neither
        a module nor a file (`mdl check` gives one result per file), is malformed (KeyError), not undecided."""
        blame = entry.get("blame")
        witness = entry.get("witness")
        line, column = int(entry.get("line", 1)), int(entry.get("column", 1))
        return cls(
            component=str(entry["module"] if "module" in entry else entry["file"]),
            clause=str(entry.get("clause", "")),
            kind=str(entry.get("kind", "")),
            fragment=str(entry.get("fragment", "")),
            backend=str(entry.get("backend", "")),
            verdict=Verdict(entry["verdict"]),
            span=Span(str(entry.get("file", "?")), line, column, line, column),
            message=str(entry.get("message", "")),
            blame=Blame(
                str(blame["party"]), Role(blame["role"]), tuple(blame.get("path", ())), str(blame.get("reason", "")),
            ) if blame else None,
            witness=_witness_from_json(witness) if witness else None,
        )


def _text(value: object) -> str:
    """A witness value back as text, as the report renders it (the inverse of `json_value`)."""
    return str(value) if not isinstance(value, float) else f"{value:.6g}"


def json_value(text: str) -> object:
    """A witness value as JSON holds it: a number or a boolean as such (`"recall(5)": 0.41`), else its text
    (a tensor's summary, a label)."""
    if text in ("True", "False"):
        return text == "True"
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text  # JSON has no NaN or infinity
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _witness_from_json(entry: dict) -> Witness:
    values = tuple((str(key), _text(value)) for key, value in entry.get("values", {}).items())
    return Witness(tuple(entry.get("samples", ())), values, entry.get("replay"), tuple(entry.get("dims", {}).items()))


@dataclass
class Report:
    """All results and diagnostics of one command run."""

    command: str
    results: list[Result] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {verdict.value: sum(r.verdict is verdict for r in self.results) for verdict in Verdict}

    def to_json(self) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "command": self.command,
            "diagnostics": [d.to_json() for d in self.diagnostics],
            "results": [r.to_json() for r in self.results],
            "summary": self.summary(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def render_result(result: Result, sources: SourceMap | None = None) -> str:
    """A failed or undecided clause as a compiler-style message with its blame."""
    sources = sources or SourceMap()
    _ensure_source(sources, result.span.file)
    headline = result.message or f"{result.kind} `{result.clause}` of `{result.component}`: {result.verdict.value}"
    label = {"fail": "contract violation", "unknown": "undecided", "skip": "skipped", "pass": "holds"}
    lines = [f"{label[result.verdict.value]}: {headline}"]
    lines += snippet(result.span, sources)
    if result.blame is not None:
        lines.append(f"blame: {result.blame.party} ({result.blame.role.value}) — {result.blame.reason}")
        lines.append(f"path: {' > '.join(result.blame.path)}")
    witness = result.witness
    if witness is not None:
        if witness.samples:
            shown = ", ".join(str(s) for s in witness.samples[:10])
            more = f" and {len(witness.samples) - 10} more" if len(witness.samples) > 10 else ""
            lines.append(f"samples: {shown}{more}")
        if witness.values:
            # Values of a statistical clause are over the whole data set, not one sample.
            lines.append(f"values (sample {witness.samples[0]}):" if witness.samples else "values:")
            lines += [f"  {expression} = {value}" for expression, value in witness.values]
        if witness.dims:
            lines.append("dims: " + ", ".join(f"{name}={size}" for name, size in witness.dims))
        if witness.replay:
            lines.append(f"replay: mdl replay {witness.replay}")
    lines.append(f"backend: {result.backend}")
    return "\n".join(lines)


def _ensure_source(sources: SourceMap, file: str) -> None:
    if sources.line(file, 1) is None and Path(file).is_file():
        try:
            sources.add(file, Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return
