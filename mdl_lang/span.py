"""Source positions shared by the syntax tree, the IR and every diagnostic."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Span:
    """A half-open region of one source file; lines and columns count from 1."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    def cover(self, other: Span) -> Span:
        """The smallest span holding both spans (which must share a file)."""
        first = self if self.start <= other.start else other
        tail = other if other.end >= self.end else self
        return Span(self.file, first.line, first.column, tail.end_line, tail.end_column, first.start, tail.end)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


NO_SPAN = Span("<builtin>", 1, 1, 1, 1)
