"""mdl: contracts and interfaces for modular deep learning.

`mdl_lang.load(path)` checks a `.mdl` file and returns the checked spec;
`spec.bind(name, module)` returns a monitored module. torch is imported only
when a monitor is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdl_lang.compiler import BindError, CheckedSpec, SpecError, check_paths, load

if TYPE_CHECKING:
    from mdl_lang.backends.torch.monitor import ContractViolation, monitor_mode

__all__ = ["BindError", "CheckedSpec", "ContractViolation", "SpecError", "check_paths", "load", "monitor_mode"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The monitor's names load torch; importing mdl_lang for `mdl check` must not.
    if name in ("ContractViolation", "monitor_mode", "ContractWarning"):
        from mdl_lang.backends.torch import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module 'mdl_lang' has no attribute {name!r}")
