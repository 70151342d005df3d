"""`python "pkg.mod:factory"` bindings: import a factory the way LANGUAGE.md section 8 says.

The spec file's directory comes first on the import path, then the current
directory; the factory takes no arguments. Import failures become
`BindingError` with the binding's text, for the CLI to report as exit 2.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

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
    spec_dir = Path(spec_file).parent
    with _import_path(spec_dir):
        try:
            module = _import_beside(module_name, spec_dir)
        except Exception as error:
            raise BindingError(f'cannot import `{module_name}` for binding "{target}": {error}') from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise BindingError(f'`{module_name}` has no callable `{attribute}` (binding "{target}")')
    return factory


def _import_beside(module_name: str, spec_dir: Path) -> ModuleType:
    """The module `module_name` as the spec's folder holds it.

    Python keeps one module per name: two decompositions that both wrote `digits_modules.py` in
    different folders would otherwise share the first one imported, and bind its modules for both.
    A file of that name beside the spec that is not the one already imported is imported under a
    name of its own (the file's path hashed into it).
    """
    local = spec_dir.resolve().joinpath(*module_name.split(".")).with_suffix(".py")
    loaded = sys.modules.get(module_name)
    loaded_file = getattr(loaded, "__file__", None)
    if loaded is None or not local.is_file() or (loaded_file and Path(loaded_file).resolve() == local):
        return importlib.import_module(module_name)
    own_name = f"{module_name}__{hashlib.sha1(str(local).encode()).hexdigest()[:10]}"
    if own_name in sys.modules:
        return sys.modules[own_name]
    found = importlib.util.spec_from_file_location(own_name, local)
    if found is None or found.loader is None:
        raise ImportError(f"cannot import {local}")
    module = importlib.util.module_from_spec(found)
    sys.modules[own_name] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        del sys.modules[own_name]
        raise
    return module


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
    made = made_by(component, spec_file)
    if not isinstance(made, nn.Module):
        raise BindingError(
            f'{_place(component)}: binding "{component.binding}" of `{component.name}` returned '
            f"{type(made).__name__}, not an nn.Module"
        )
    return made


def made_by(declared: ir.Module | ir.Data, spec_file: str | Path) -> object:
    """What the binding of a module or data declaration makes; a failure names the declaration's place."""
    try:
        return instantiate(declared.binding or "", spec_file)
    except BindingError as error:
        raise BindingError(f"{_place(declared)}: {error}") from error


def _place(declared: ir.Module | ir.Data) -> str:
    return f"{declared.span.file}:{declared.span.line}:{declared.span.column}"


def parts_for(spec: ir.Spec, composition: ir.Composition) -> dict[str, object]:
    """Every module a composition needs, made through their bindings (each resolved beside the file declaring it)."""
    parts = {}
    for name in composition.parts:
        component = spec.component(name)
        if isinstance(component, ir.Module):
            parts[name] = module_for(component, component.file)
    return parts
