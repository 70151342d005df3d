"""CNN decomposition (ICSE 2022) on sklearn digits: voted modules against the model, masks, errors, persistence."""

from __future__ import annotations

import copy
import io
import json
import pickle
from dataclasses import dataclass
from functools import cache

import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.composed import vote
from mdl_lang.modular.concern import ConcernView
from mdl_lang.modular.decompose import DecomposeError, Decomposition, format_table
from mdl_lang.modular.decompose_cnn import (
    PositionMask,
    UnsupportedLayer,
    class_count,
    decompose_cnn,
    is_cnn,
    layer_entry,
    layer_from_entry,
    position_masks,
    size_table,
)
from mdl_lang.threads import one_thread

CLASSES = 10
VOTE_SPEC = """\
labels Digit = {0..9}
dim B : batch
type Image = Tensor[B, 1, 8, 8] float32 in [0, 1]
type Probabilities[L] = Tensor[B, L] float32 in [0, 1]

interface Concern[L] {
  input  x: Image
  output y: Probabilities[L]
  ensures share: sum(y) <= 1 + 1e-5
}

interface Classifier[L] {
  input  x: Image
  output y: Probabilities[L]
  ensures finite(y)
}

""" + "".join(f"module m{k} : Concern[{{{k}}} | other]\n" for k in range(CLASSES)) + (
    "compose voted : Classifier[Digit] = vote(" + ", ".join(f"m{k}" for k in range(CLASSES)) + ")\n"
)


@dataclass(frozen=True)
class Digits:
    """sklearn's 8x8 digits as (N, 1, 8, 8) in [0, 1]: 1,257 training and 540 test images, stratified, seed 0.

    The test keeps its own split, so that a change elsewhere cannot move its figures.
    """

    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor


@cache
def digits_split() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    train, test = train_test_split(range(len(labels)), test_size=0.3, random_state=0, stratify=digits.target)
    return Digits(images[train], labels[train], images[test], labels[test])


@dataclass(frozen=True)
class Setup:
    model: nn.Sequential
    decomposition: Decomposition
    held_out_inputs: torch.Tensor
    held_out_labels: torch.Tensor


def small_cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, CLASSES), nn.Softmax(dim=1),
    )


def train(model: nn.Sequential, inputs: torch.Tensor, labels: torch.Tensor, epochs: int = 25) -> nn.Sequential:
    """Minibatch Adam on the log of the softmax output; seeded, about a second on one thread."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), 64):
            batch = order[start : start + 64]
            loss = nn.functional.nll_loss(torch.log(model(inputs[batch]) + 1e-9), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup() -> Setup:
    split = digits_split()
    with one_thread():
        model = train(small_cnn(seed=0), split.train_inputs, split.train_labels)
        # Half of the test set identifies the concerns, the other half measures the modules.
        decomposition = decompose_cnn(model, split.test_inputs[::2], split.test_labels[::2])
    return Setup(model, decomposition, split.test_inputs[1::2], split.test_labels[1::2])


def voted_decisions(decomposition: Decomposition, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        scores = [decomposition.modules[k](inputs) for k in range(CLASSES)]
    part_labels = tuple(ir.LabelSet((k, ir.OTHER)) for k in range(CLASSES))
    return vote(scores, part_labels, ir.LabelSet(tuple(range(CLASSES))), 0.0).argmax(dim=1)


def test_voted_modules_keep_the_models_accuracy(setup):
    with torch.no_grad():
        model_accuracy = (setup.model(setup.held_out_inputs).argmax(dim=1) == setup.held_out_labels).float().mean()
    voted_accuracy = (voted_decisions(setup.decomposition, setup.held_out_inputs) == setup.held_out_labels).float()
    voted_accuracy = voted_accuracy.mean()
    print(f"held-out accuracy: model {model_accuracy:.4f}, voted modules {voted_accuracy:.4f}")
    assert model_accuracy >= 0.93, "the CNN did not train; the comparison would mean nothing"
    assert abs(float(voted_accuracy) - float(model_accuracy)) <= 0.02


def test_every_module_scores_its_concern_against_other_as_probabilities(setup):
    inputs, labels = setup.held_out_inputs, setup.held_out_labels
    assert sorted(setup.decomposition.modules) == list(range(CLASSES))
    assert setup.decomposition.input_shape == (1, 8, 8) and setup.decomposition.probabilities
    for label, module in setup.decomposition.modules.items():
        with torch.no_grad():
            scores = module(inputs)
        assert scores.shape == (len(labels), 2)
        # (p_k, best rival) of the module's softmax over all ten classes: two of its probabilities.
        assert (scores >= 0).all() and (scores.sum(dim=1) <= 1 + 1e-6).all()
        # A module claims k exactly where its own argmax is k: most of its class, few of the others.
        claims = scores.argmax(dim=1) == 0
        assert claims[labels == label].float().mean() >= 0.9, f"module {label} misses its own class"
        assert claims[labels != label].float().mean() <= 0.1, f"module {label} claims other classes"


def test_masks_deactivate_positions_the_model_uses(setup):
    inputs = setup.held_out_inputs
    masks = {label: position_masks(module) for label, module in setup.decomposition.modules.items()}
    assert all(len(found) == 2 for found in masks.values()), "both convolutions a ReLU follows are masked"
    seen: list[torch.Tensor] = []
    mask = masks[3][1]
    handle = mask.register_forward_hook(lambda layer, args, output: seen.append(output))
    try:
        with torch.no_grad():
            setup.decomposition.modules[3](inputs)
    finally:
        handle.remove()
    masked_output = seen[0]
    assert (~mask.keep).any(), "module 3 masks some position of its second convolution"
    assert (masked_output[:, ~mask.keep] == 0).all()
    # Those positions are not dead in the model: some input switches them on, so the mask changes something.
    original = setup.model[:4](inputs)
    assert (original[:, ~mask.keep] > 0).any()
    # The modules differ: a concern is not the same set of positions for every class.
    keeps = torch.stack([torch.cat([m.keep.flatten() for m in found]) for found in masks.values()])
    assert (keeps != keeps[0]).any(dim=1).sum() >= CLASSES - 1


def test_a_module_gives_what_the_model_would_with_its_positions_zeroed(setup):
    """The module is the model with the masks applied: no other change to the convolution part."""
    module = setup.decomposition.modules[7]
    inputs = setup.held_out_inputs[:32]
    first, second = position_masks(module)
    with torch.no_grad():
        value = setup.model[0](inputs) * first.keep
        value = setup.model[3](setup.model[2](setup.model[1](value))) * second.keep
        features = setup.model[5](setup.model[4](value))
        modular = module[:8](inputs)
    torch.testing.assert_close(modular, features)


def test_modules_survive_pickle_and_state_dict(setup, tmp_path):
    inputs = setup.held_out_inputs[:16]
    module = setup.decomposition.modules[4]
    with torch.no_grad():
        expected = module(inputs)
        restored = pickle.loads(pickle.dumps(module))
        torch.testing.assert_close(restored(inputs), expected)
        state = module.state_dict()
        assert any(key.endswith("keep") for key in state), "the masks travel in the state dict"
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        blank = copy.deepcopy(module)
        for tensor in [*blank.parameters(), *blank.buffers()]:
            tensor.zero_()
        blank.load_state_dict(torch.load(buffer, weights_only=True))
        torch.testing.assert_close(blank(inputs), expected)
        whole = pickle.loads(pickle.dumps(setup.decomposition))
        torch.testing.assert_close(whole.modules[4](inputs), expected)


def test_voted_modules_bind_to_a_spec_vote(setup, tmp_path):
    path = tmp_path / "cnn.mdl"
    path.write_text(VOTE_SPEC)
    spec = mdl_lang.load(path)
    parts = {f"m{k}": module for k, module in setup.decomposition.modules.items()}
    voted = spec.bind("voted", parts=parts, mode="raise", replay_dir=None)
    with torch.no_grad():
        decided = voted(setup.held_out_inputs).argmax(dim=1)
    assert torch.equal(decided, voted_decisions(setup.decomposition, setup.held_out_inputs))


def test_a_module_refuses_inputs_of_another_size(setup):
    with pytest.raises(ValueError, match=r"PositionMask expects convolution outputs \(N, 8, 8, 8\)"):
        setup.decomposition.modules[0](torch.zeros(2, 1, 10, 10))


@pytest.mark.parametrize(
    ("model", "path", "reason"),
    [
        (nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), nn.ReLU(), nn.Flatten(),
                       nn.Linear(144, 10)), "0.1", "BatchNorm2d"),
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.ReLU(), nn.Flatten(),
                       nn.Linear(64, 10)), "2", "depthwise"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Sigmoid()), "4", "Sigmoid"),
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.ReLU(), nn.Linear(144, 10)), "1", "right before"),
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(144, 10)), "1", "Tanh"),
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), "<model>", "no Linear"),
        (nn.Conv2d(1, 4, 3), "<model>", "must be an nn.Sequential"),
    ],
)
def test_unsupported_layers_are_named_by_path(model, path, reason):
    with pytest.raises(UnsupportedLayer, match=reason) as raised:
        decompose_cnn(model, torch.rand(20, 1, 8, 8), torch.arange(20) % 10)
    assert raised.value.path == path
    assert f"layer `{path}`" in str(raised.value)
    assert isinstance(raised.value, DecomposeError), "the dense decomposition's callers catch it unchanged"


def test_rates_and_data_are_checked(setup):
    inputs, labels = setup.held_out_inputs, setup.held_out_labels
    with pytest.raises(DecomposeError, match="concern_rate must lie in"):
        decompose_cnn(setup.model, inputs, labels, concern_rate=0.0)
    with pytest.raises(DecomposeError, match=r"must be \(N, C, H, W\)"):
        decompose_cnn(setup.model, inputs.flatten(1), labels)
    with pytest.raises(DecomposeError, match="N > 0"):
        decompose_cnn(setup.model, inputs[:0], labels[:0])
    with pytest.raises(DecomposeError, match="classes must be distinct"):
        decompose_cnn(setup.model, inputs, labels, classes=[3, 3])
    with pytest.raises(DecomposeError, match="class 2: no example"):
        decompose_cnn(setup.model, inputs[labels != 2], labels[labels != 2], classes=[2])


def test_some_classes_and_progress(setup):
    messages: list[str] = []
    part = decompose_cnn(
        setup.model, setup.held_out_inputs, setup.held_out_labels, classes=[1, 8], progress=messages.append,
    )
    assert sorted(part.modules) == [1, 8] and sorted(part.masks) == [1, 8]
    assert [message.split(":")[0] for message in messages] == ["module 1", "module 8"]
    assert "convolution positions kept" in messages[0]
    assert all(isinstance(layer, PositionMask) for layer in position_masks(part.modules[1]))


def test_size_table_counts_kept_positions_and_unrolled_edges(setup):
    rows = size_table(setup.decomposition)
    assert [row.label for row in rows] == list(range(CLASSES))
    for row in rows:
        assert row.model_hidden_units == (8 * 8 * 8, 16 * 4 * 4, 32)
        assert all(0 < kept <= total for kept, total in zip(row.hidden_units, row.model_hidden_units, strict=True))
        assert row.hidden_units[:2] != row.model_hidden_units[:2], "some position is masked"
        assert 0 < row.jaccard < 1
        assert row.params < row.model_params, "the head's output layer shrinks from 10 outputs to 2"
    assert "m9" in format_table(rows)
    assert class_count(setup.model) == CLASSES


def test_manifest_entries_rebuild_the_convolutional_layers(setup):
    module = setup.decomposition.modules[2]
    rebuilt = []
    for layer in module:
        entry = layer_entry(layer)
        if entry is None:
            # The dense layers are the artifact writer's; stand them in the way it rebuilds them.
            assert isinstance(layer, (nn.ReLU, nn.Flatten, nn.Linear, nn.Softmax, ConcernView))
            rebuilt.append(copy.deepcopy(layer))
        else:
            rebuilt.append(layer_from_entry(json.loads(json.dumps(entry))))
    assert sum(isinstance(layer, PositionMask) for layer in rebuilt) == 2
    copy_of = nn.Sequential(*rebuilt)
    copy_of.load_state_dict(module.state_dict())
    torch.testing.assert_close(copy_of(setup.held_out_inputs), module(setup.held_out_inputs))
    assert layer_from_entry({"kind": "linear"}) is None


def test_nested_avgpool_dropout_and_logits():
    split = digits_split()
    torch.manual_seed(3)
    features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Dropout(0.1))
    model = nn.Sequential(features, nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with one_thread():
        for _ in range(150):
            loss = nn.functional.cross_entropy(model(split.train_inputs), split.train_labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert is_cnn(model) and not is_cnn(nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES)))
    # Left in training mode: the decomposition measures it with Dropout off, then leaves the mode as it was.
    decomposition = decompose_cnn(model, split.test_inputs[::2], split.test_labels[::2])
    assert model.training
    model.eval()
    again = decompose_cnn(model, split.test_inputs[::2], split.test_labels[::2])
    for label in range(CLASSES):
        for first, second in zip(position_masks(decomposition.modules[label]), position_masks(again.modules[label]),
                                 strict=True):
            assert torch.equal(first.keep, second.keep)
    assert not decomposition.probabilities
    inputs, labels = split.test_inputs[1::2], split.test_labels[1::2]
    with torch.no_grad():
        model_accuracy = float((model(inputs).argmax(dim=1) == labels).float().mean())
    voted_accuracy = float((voted_decisions(decomposition, inputs) == labels).float().mean())
    print(f"logits model, no hidden dense layer: model {model_accuracy:.4f}, voted modules {voted_accuracy:.4f}")
    assert model_accuracy >= 0.9
    assert abs(voted_accuracy - model_accuracy) <= 0.03


FACTORY = '''
from torch import nn


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(dim=1),
    )
'''


def test_cli_decomposes_a_cnn_from_its_factory_and_writes_loadable_modules(setup, tmp_path, monkeypatch, capsys):
    from mdl_lang.cli import main
    from mdl_lang.modular.artifacts import load_module

    (tmp_path / "cnn_factory_for_cli.py").write_text(FACTORY)
    torch.save(setup.model.state_dict(), tmp_path / "weights.pt")
    torch.save({"inputs": setup.held_out_inputs, "labels": setup.held_out_labels}, tmp_path / "data.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["decompose", "cnn_factory_for_cli:small_cnn", "--weights", "weights.pt", "--data", "data.pt",
                 "--out", "out", "--spec-name", "digits_cnn", "--input-type", "Tensor[B, 1, 8, 8] float32 in [0, 1]"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "jaccard" in out.lower()
    assert main(["check", "out/digits_cnn.mdl"]) == 0, capsys.readouterr().out
    module = load_module(tmp_path / "out" / "m3.pt")
    assert len(position_masks(module)) == 2
    with torch.no_grad():
        scores = module(setup.held_out_inputs[:16])
    assert scores.shape == (16, 2)
    assert (scores.sum(dim=1) <= 1 + 1e-5).all()
