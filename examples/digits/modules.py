"""Per-class modules for specs/digits_modules.mdl: the MLP of `models.load_mlp` decomposed into ten concerns.

`mdl_lang.modular.decompose` identifies each class's concern on the training
split and gives each module in the form of the ESEC/FSE 2020 artifact: the kept
hidden units with all ten outputs, seen through `{k} | other` (the best rival),
so module k claims k where k is its argmax. `m5_v2` is the module of class 5 of
the MLP retrained on more fives.
"""

from __future__ import annotations

import copy
from functools import cache, partial

from torch import nn

from mdl_lang.modular import digits

from . import models


@cache
def _decomposed(source: str) -> dict[int, nn.Module]:
    """The modules of one of the example MLPs, decomposed once per process."""
    from mdl_lang.modular.decompose import decompose

    model = models.load_mlp() if source == "mlp" else models.load_mlp_more_fives()
    inputs, labels = digits.train_split()
    return dict(decompose(model, inputs, labels).modules)


def load_module(label: int) -> nn.Module:
    """The module of class `label`, a fresh copy (callers may change its weights)."""
    return copy.deepcopy(_decomposed("mlp")[label])


def load_m5_v2() -> nn.Module:
    """The module of class 5 of the MLP retrained with every five shown four times."""
    return copy.deepcopy(_decomposed("more fives")[5])


load_m0 = partial(load_module, 0)
load_m1 = partial(load_module, 1)
load_m2 = partial(load_module, 2)
load_m3 = partial(load_module, 3)
load_m4 = partial(load_module, 4)
load_m5 = partial(load_module, 5)
load_m6 = partial(load_module, 6)
load_m7 = partial(load_module, 7)
load_m8 = partial(load_module, 8)
load_m9 = partial(load_module, 9)
