"""Exact verification of piecewise-linear networks (`mdl verify`).

The public entry point is `verify_query(network, query, timeout_s=..., progress=...) -> Outcome`
(from `mdl_lang.verify.engine`); `Network` and its node kinds live in `mdl_lang.verify.network`,
`Query`, `LinearConstraint` and `Outcome` in `mdl_lang.verify.query`. They are exported here
lazily so that importing the package (as `mdl`'s command line does) does not import torch.
(`extract` stays in `mdl_lang.verify.extract`: a lazy name equal to a submodule's would be shadowed
by the submodule once imported.)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "verify_query": "mdl_lang.verify.engine",
    "Network": "mdl_lang.verify.network",
    "evaluate": "mdl_lang.verify.network",
    "Query": "mdl_lang.verify.query",
    "LinearConstraint": "mdl_lang.verify.query",
    "Outcome": "mdl_lang.verify.query",
    "Statistics": "mdl_lang.verify.query",
}

__all__ = [
    "LinearConstraint", "Network", "Outcome", "Query", "Statistics", "evaluate", "verify_query",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mdl_lang.verify' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
