"""`python "pkg.mod:factory"` bindings: import a factory the way LANGUAGE.md section 8 says.

The spec file's directory comes first on the import path, then the current
directory; the factory takes no arguments. Import failures become
`BindingError` with the binding's text, for the CLI to report as exit 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mdl_lang import ir


class BindingError(Exception):
    """A binding that cannot be resolved or whose factory fails."""


class MissingBinding(BindingError):
    """A module or data set the spec gives no `python "..."` binding."""


@contextmanager
def _import_path(spec_dir: Path) -> Iterator[None]:
    added = [str(spec_dir.resolve()), str(Path.cwd())]
    saved = list(sys.path)
    sys.path[:0] = [entry for entry in added if entry not in sys.path[:2]]
    try:
        yield
    finally:
        sys.path[:] = saved


def resolve(target: str, spec_file: str | Path) -> Callable[[], object]:
    """The factory a binding names; `spec_file` anchors the import path."""
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise BindingError(f'binding "{target}" must read "package.module:factory"')
    with _import_path(Path(spec_file).parent):
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise BindingError(f'cannot import `{module_name}` for binding "{target}": {error}') from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise BindingError(f'`{module_name}` has no callable `{attribute}` (binding "{target}")')
    return factory


def instantiate(target: str, spec_file: str | Path) -> object:
    """Call a binding's factory, turning its failure into a BindingError."""
    factory = resolve(target, spec_file)
    try:
        return factory()
    except Exception as error:
        raise BindingError(f'binding "{target}" failed: {type(error).__name__}: {error}') from error


def module_for(component: ir.Module, spec_file: str | Path) -> object:
    """The nn.Module a module's binding makes (LANGUAGE.md section 8: its factory returns one)."""
    from torch import nn

    if component.binding is None:
        raise MissingBinding(f'module `{component.name}` has no `python "..."` binding')
    made = instantiate(component.binding, spec_file)
    if not isinstance(made, nn.Module):
        raise BindingError(
            f'binding "{component.binding}" of `{component.name}` returned {type(made).__name__}, not an nn.Module'
        )
    return made


def parts_for(spec: ir.Spec, composition: ir.Composition) -> dict[str, object]:
    """Every module a composition needs, made through their bindings (each resolved beside the file declaring it)."""
    parts = {}
    for name in composition.parts:
        component = spec.component(name)
        if isinstance(component, ir.Module):
            parts[name] = module_for(component, component.file)
    return parts
