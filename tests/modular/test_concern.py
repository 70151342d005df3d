"""ConcernView: a ten-output module seen as `{k} | other`, vectorised over the batch."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch
from torch import nn

from mdl_lang.modular.concern import ConcernView


@pytest.mark.parametrize("label", [0, 4, 9])
def test_the_view_is_own_score_then_best_rival(label):
    generator = torch.Generator().manual_seed(label)
    scores = torch.softmax(torch.randn(64, 10, generator=generator), dim=1)
    view = ConcernView(nn.Identity(), label)(scores)
    rivals = torch.cat((scores[:, :label], scores[:, label + 1 :]), dim=1)
    assert view.shape == (64, 2)
    torch.testing.assert_close(view[:, 0], scores[:, label])
    torch.testing.assert_close(view[:, 1], rivals.max(dim=1).values)
    assert torch.equal(view.argmax(dim=1) == 0, scores.argmax(dim=1) == label)


def test_a_label_outside_the_scores_is_refused():
    with pytest.raises(ValueError, match=r"label 10 .* got shape \(3, 10\)"):
        ConcernView(nn.Identity(), 10)(torch.zeros(3, 10))


def test_forward_has_no_python_loop_over_samples():
    tree = ast.parse(textwrap.dedent(inspect.getsource(ConcernView)))
    loops = (ast.For, ast.While, ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)
    assert not [node for node in ast.walk(tree) if isinstance(node, loops)]
