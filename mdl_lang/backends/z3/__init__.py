"""The Z3 backend: spec-level proofs for `mdl check` (vacuity, `>>`, behavioural subtyping, `replace`).

Importing it imports z3; `mdl check` does so only when a spec has something to prove.
"""

from mdl_lang.backends.z3.checks import SpecProofs, check_specs
from mdl_lang.backends.z3.solve import Settings

__all__ = ["Settings", "SpecProofs", "check_specs"]
