"""Formatter properties: the printed tree parses back to itself, and formatting twice changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from mdl_lang.syntax import ast
from mdl_lang.syntax.format import format_spec, format_text
from mdl_lang.syntax.parser import parse
from tests.syntax.strategies import spec_files

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.mdl"))

# Generated trees are big; their size, not a slow test, is what the health check would flag.
GENERATED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reparsed(text: str) -> ast.SpecFile:
    result = parse(text, "formatted.mdl")
    assert result.tree is not None, f"formatted text does not parse: {result.diagnostics}\n{text}"
    return result.tree


@GENERATED
@given(spec_files())
def test_a_formatted_tree_parses_back_to_the_same_tree(tree):
    assert reparsed(format_spec(tree)) == tree


@GENERATED
@given(spec_files())
def test_formatting_formatted_text_changes_nothing(tree):
    text = format_spec(tree)
    assert format_text(text, "formatted.mdl").text == text


def node_types(node: object) -> Iterator[type]:
    """The class of every syntax node in a tree."""
    if isinstance(node, tuple):
        for item in node:
            yield from node_types(item)
    elif dataclasses.is_dataclass(node):
        yield type(node)
        for field in dataclasses.fields(node):
            yield from node_types(getattr(node, field.name))


def test_the_generated_trees_hold_every_node_type_but_comments():
    every_node_type = {
        value for value in vars(ast).values() if isinstance(value, type) and dataclasses.is_dataclass(value)
    }
    seen: set[type] = set()

    @settings(max_examples=200, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(spec_files())
    def collect(tree: ast.SpecFile) -> None:
        seen.update(node_types(tree))

    collect()
    assert every_node_type - seen == {ast.Comment}


@pytest.mark.parametrize("path", SPECS, ids=[path.name for path in SPECS])
def test_a_spec_file_formats_to_the_same_tree_and_comments(path):
    text = path.read_text(encoding="utf-8")
    original = parse(text, path.name).tree
    formatted = format_text(text, path.name).text
    assert formatted is not None
    assert reparsed(formatted) == original


@pytest.mark.parametrize("path", SPECS, ids=[path.name for path in SPECS])
def test_a_formatted_spec_file_formats_to_itself(path):
    formatted = format_text(path.read_text(encoding="utf-8"), path.name).text
    assert formatted is not None
    assert format_text(formatted, path.name).text == formatted
