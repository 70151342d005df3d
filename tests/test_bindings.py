"""`python "pkg.mod:factory"` bindings resolve beside the spec that declares them (LANGUAGE.md section 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

import mdl_lang
from mdl_lang.bindings import BindingError, module_for

SPEC = (
    "dim B : batch\ninterface I {\n  input x: Tensor[B, 2] float32\n  output y: Tensor[B, 2] float32\n}\n"
    'module m : I { python "same_name_models:make" }\n'
)


def _project(folder: Path, width: int) -> Path:
    folder.mkdir()
    factory = f"from torch import nn\n\n\ndef make():\n    return nn.Linear(2, {width})\n"
    (folder / "same_name_models.py").write_text(factory)
    (folder / "spec.mdl").write_text(SPEC)
    return folder / "spec.mdl"


def test_two_folders_with_a_factory_module_of_the_same_name_bind_their_own(tmp_path) -> None:
    first, second = _project(tmp_path / "a", 2), _project(tmp_path / "b", 3)
    made = []
    for path in (first, second, first):
        spec = mdl_lang.load(path)
        component = spec.component("m")
        made.append(module_for(component, component.file).out_features)
    assert made == [2, 3, 2]  # Python keeps one module per name: the second folder's file must not be ignored


def test_a_binding_that_fails_names_the_declaration_s_place(tmp_path) -> None:
    path = tmp_path / "spec.mdl"
    path.write_text(SPEC.replace("same_name_models:make", "no_such_module:make"))
    component = mdl_lang.load(path).component("m")
    with pytest.raises(BindingError, match=r"spec\.mdl:6:1: cannot import `no_such_module`"):
        module_for(component, component.file)
