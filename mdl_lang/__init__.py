"""mdl: contracts and interfaces for modular deep learning.

`mdl_lang.load(path)` checks a `.mdl` file and returns its typed IR.
"""

from mdl_lang.compiler import SpecError, check_paths, load

__all__ = ["SpecError", "check_paths", "load"]
__version__ = "0.1.0"
