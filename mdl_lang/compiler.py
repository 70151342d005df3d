"""The front end's public face: check files into IR, load one checked spec, bind it to modules."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from mdl_lang import ir
from mdl_lang.diagnostics import Diagnostic, SourceMap, render_all
from mdl_lang.semantics.checker import Checker, CheckResult, check_paths, default_root, prove_specs

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BindError", "CheckResult", "CheckedSpec", "SpecError", "check_paths", "load"]


class SpecError(Exception):
    """A spec that does not check; `diagnostics` holds every error, `str()` renders them."""

    def __init__(self, result: CheckResult) -> None:
        self.diagnostics: list[Diagnostic] = [d for d in result.diagnostics if d.is_error]
        self.rendered = render_all(self.diagnostics, result.sources)
        super().__init__(self.rendered)


class BindError(Exception):
    """`bind` was asked for something the spec does not declare, or given the wrong parts."""


@dataclass(frozen=True)
class CheckedSpec(ir.Spec):
    """A checked spec: its IR, plus the source text reports quote, plus `bind`."""

    sources: SourceMap = field(default_factory=SourceMap, compare=False, repr=False)

    def bind(
        self,
        name: str,
        module: nn.Module | None = None,
        *,
        parts: dict[str, nn.Module] | None = None,
        mode: str = "raise",
        every: int = 1,
        replay_dir: str | Path | None = "reports",
    ) -> nn.Module:
        """A monitored `nn.Module` for the module or composition `name`.

        A module takes the `nn.Module` that implements it; a composition takes
        its parts by name (`parts={"m0": ..., ...}`) and becomes executable.
        """
        from torch import nn

        from mdl_lang.backends.torch.composed import ComposedModel, CompositionError
        from mdl_lang.backends.torch.monitor import MonitoredModule, MonitorOptions

        component = self.component(name)
        if component is None:
            close = difflib.get_close_matches(name, list(self.components()), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise BindError(f"`{self.file}` declares no module or composition `{name}`{hint}")
        options = MonitorOptions(mode, every, Path(replay_dir) if replay_dir is not None else None, self.file)
        if isinstance(component, ir.Module):
            if module is None or parts:
                raise BindError(f"`{name}` is a module: bind it with the nn.Module that implements it")
            if not isinstance(module, nn.Module):
                raise BindError(f"`{name}` must be bound to an nn.Module, not a {type(module).__name__}: "
                                "wrap a function in a module whose forward calls it")
            return MonitoredModule(module, name, component, self.sources, options)
        if module is not None or not parts:
            raise BindError(f"`{name}` is a composition: bind it with its parts, parts={{'part': module, ...}}")
        try:
            return ComposedModel(self, name, component, parts, self.sources, options)
        except CompositionError as error:
            raise BindError(str(error)) from error


def load(path: str | Path, root: str | Path | None = None, *, prove: bool = False) -> CheckedSpec:
    """The checked spec of one file; raises SpecError if it has errors, FileNotFoundError if missing.

    With `prove`, it is checked as `mdl check` checks it, Z3 spec proofs included: a spec whose
    `requires`, `>>` or `replace` is refuted (E0601-E0604) is rejected with the same diagnostics; an
    undecided proof is only a warning. Without it, a spec whose parts are known not to fit still
    loads, so that the runtime monitors can be watched blaming them."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no spec file at {file}")
    checker = Checker(Path(root) if root is not None else default_root([file]))
    spec = checker.check(file)
    result = checker.result()
    if prove and spec is not None and not result.has_errors:
        prove_specs(result)
    if spec is None or result.has_errors:
        raise SpecError(result)
    values = {item.name: getattr(spec, item.name) for item in fields(ir.Spec)}
    return CheckedSpec(**values, sources=result.sources)
