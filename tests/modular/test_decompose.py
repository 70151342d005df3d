"""`decompose` on small trained MLPs: the modules' shapes and ranges, the vote, the size table, the files
written, the generated spec under `mdl check`, and `mdl decompose` on the command line.

The helpers `blobs` and `trained_mlp` are shared with test_decompose_kmnist.py and test_cross_model.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mdl_lang
from mdl_lang import ir
from mdl_lang.backends.torch.composed import vote
from mdl_lang.bindings import module_for
from mdl_lang.cli import main
from mdl_lang.modular.artifacts import ArtifactError, load_module, write_decomposition
from mdl_lang.modular.decompose import DecomposeError, decompose, format_table, jaccard_table


def blobs(classes: int, features: int, per_class: int, seed: int, offset: float = 0.0):
    """Separable Gaussian clusters, one per class, in [0, 1] after a sigmoid: a data set an MLP learns in a second."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=generator) * 2.0 + offset
    labels = torch.arange(classes).repeat_interleave(per_class)
    inputs = centres[labels] + torch.randn(len(labels), features, generator=generator) * 0.9
    order = torch.randperm(len(labels), generator=generator)
    return torch.sigmoid(inputs[order]), labels[order]


def trained_mlp(inputs, labels, hidden: int, *, softmax: bool, seed: int) -> nn.Sequential:
    """Linear-ReLU-Linear(-Softmax) trained on the logits with cross entropy, deterministic under `seed`."""
    torch.manual_seed(seed)
    classes = int(labels.max()) + 1
    body = fitted(nn.Sequential(nn.Linear(inputs.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, classes)),
                  inputs, labels)
    layers = [*body, nn.Softmax(dim=-1)] if softmax else [*body]
    return nn.Sequential(*layers).eval()


def fitted(body: nn.Sequential, inputs, labels) -> nn.Sequential:
    """`body`, which outputs logits, after 150 full-batch Adam steps of cross entropy."""
    optimiser = torch.optim.Adam(body.parameters(), lr=0.05)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(body(inputs), labels).backward()
        optimiser.step()
    return body.eval()


def voted(modules: dict[int, nn.Module], inputs: torch.Tensor, classes: int, floor: float) -> torch.Tensor:
    """The label the ESEC/FSE 2020 vote picks, through the composition backend's own `vote`."""
    with torch.no_grad():
        scores = [modules[label](inputs) for label in range(classes)]
    parts = tuple(ir.LabelSet((label, ir.OTHER)) for label in range(classes))
    return vote(scores, parts, ir.LabelSet(tuple(range(classes))), floor).argmax(dim=1)


@pytest.fixture(scope="module")
def digits_like():
    inputs, labels = blobs(classes=5, features=12, per_class=60, seed=1)
    model = trained_mlp(inputs, labels, hidden=24, softmax=True, seed=1)
    return model, inputs, labels


def test_each_module_scores_its_class_and_best_rival_as_probabilities(digits_like):
    model, inputs, labels = digits_like
    decomposition = decompose(model, inputs, labels)
    assert sorted(decomposition.modules) == [0, 1, 2, 3, 4]
    assert decomposition.probabilities and decomposition.input_shape == (12,)
    assert decomposition.channel == "max"
    for label, module in decomposition.modules.items():
        with torch.no_grad():
            scores = module(inputs)
            ten = module[:-1](inputs)  # the pruned network's C probabilities, before the `{k} | other` view
        assert scores.shape == (len(inputs), 2) and ten.shape == (len(inputs), 5)
        assert scores.min() >= 0 and scores.max() <= 1
        assert bool((scores.sum(dim=1) <= 1 + 1e-6).all())
        rivals = torch.cat((ten[:, :label], ten[:, label + 1:]), dim=1).amax(dim=1)
        torch.testing.assert_close(scores, torch.stack((ten[:, label], rivals), dim=1))


def test_where_the_cut_units_are_silent_the_vote_decides_as_the_model(digits_like):
    model, inputs, labels = digits_like
    decomposition = decompose(model, inputs, labels, min_support=0.0)
    assert any(module[0].out_features < 24 for module in decomposition.modules.values()), "some unit is cut"
    with torch.no_grad():
        expected = model(inputs).argmax(dim=1)
    # min_support 0 keeps every unit and edge the identification data uses, so on that data nothing cut matters.
    assert torch.equal(voted(decomposition.modules, inputs, 5, 0.0), expected)


def test_a_logits_model_gives_logit_modules_whose_vote_still_follows_the_model(digits_like, tmp_path, capsys):
    _, inputs, labels = digits_like
    model = trained_mlp(inputs, labels, hidden=24, softmax=False, seed=3)
    decomposition = decompose(model, inputs, labels, min_support=0.0)
    assert not decomposition.probabilities
    assert not isinstance(decomposition.modules[0][-1], nn.Softmax)
    with torch.no_grad():
        expected = model(inputs).argmax(dim=1)
    assert torch.equal(voted(decomposition.modules, inputs, 5, float("-inf")), expected)
    spec_path = write_decomposition(decomposition, tmp_path, spec_name="blobs_logits")
    text = spec_path.read_text()
    assert "type Scores[L] = Tensor[B, L] float32\n" in text and "outputs logits, so do the modules" in text
    assert main(["check", str(spec_path)]) == 0, capsys.readouterr().out
    spec = mdl_lang.load(spec_path)
    parts = {name: module_for(spec.component(name), spec.file) for name in spec.compositions["voted"].parts}
    with torch.no_grad():
        decided = spec.bind("voted", parts=parts, replay_dir=None)(inputs).argmax(dim=1)
    assert torch.equal(decided, expected)


def test_a_module_claims_exactly_where_the_model_predicts_the_class(digits_like, tmp_path, capsys):
    model, inputs, labels = digits_like
    decomposition = decompose(model, inputs, labels, min_support=0.0)
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
        for label, module in decomposition.modules.items():
            scores = module(inputs)
            assert scores.shape == (len(inputs), 2) and bool((scores.sum(dim=1) <= 1 + 1e-6).all())
            assert torch.equal(scores.argmax(dim=1) == 0, predicted == label)
    assert torch.equal(voted(decomposition.modules, inputs, 5, 0.0), predicted)
    spec_path = write_decomposition(decomposition, tmp_path, spec_name="blobs_max")
    assert main(["check", str(spec_path)]) == 0, capsys.readouterr().out
    assert "ensures concern: sum(y) <= 1 + 1e-5" in spec_path.read_text()
    with torch.no_grad():
        torch.testing.assert_close(load_module(tmp_path / "m1.pt")(inputs), decomposition.modules[1](inputs))
    with pytest.raises(DecomposeError, match="channel must be one of mean, max"):
        decompose(model, inputs, labels, channel="sum")


def test_the_mean_channel_gives_two_way_softmax_modules_that_claim_more_often(digits_like, tmp_path, capsys):
    model, inputs, labels = digits_like
    decomposition = decompose(model, inputs, labels, min_support=0.0, channel="mean")
    assert decomposition.channel == "mean"
    claimed = 0
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
        for label, module in decomposition.modules.items():
            assert [layer.out_features for layer in module if isinstance(layer, nn.Linear)][-1] == 2
            scores = module(inputs)
            torch.testing.assert_close(scores.sum(dim=1), torch.ones(len(inputs)))
            claims = scores.argmax(dim=1) == 0
            # k beats the rivals' mean wherever it is the argmax, and on some inputs where it is not
            assert bool(claims[predicted == label].all())
            claimed += int(claims.sum())
    assert claimed > len(inputs)
    spec_path = write_decomposition(decomposition, tmp_path, spec_name="blobs_mean")
    assert main(["check", str(spec_path)]) == 0, capsys.readouterr().out
    assert "ensures probabilities: sum(y) == 1 within 1e-5" in spec_path.read_text()
    assert '"channel": "mean"' in (tmp_path / "manifest.json").read_text()
    with torch.no_grad():
        torch.testing.assert_close(load_module(tmp_path / "m1.pt")(inputs), decomposition.modules[1](inputs))


def test_deeper_and_shallower_networks_decompose_layer_by_layer(digits_like):
    _, inputs, labels = digits_like
    torch.manual_seed(4)
    deep = fitted(nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5)),
                  inputs, labels)
    decomposition = decompose(deep, inputs, labels, min_support=0.0)
    assert [len(masks.units) for masks in decomposition.masks.values()] == [2] * 5
    with torch.no_grad():
        expected = deep(inputs).argmax(dim=1)
    assert torch.equal(voted(decomposition.modules, inputs, 5, float("-inf")), expected)
    linear = nn.Sequential(*fitted(nn.Sequential(nn.Linear(12, 5)), inputs, labels), nn.Softmax(dim=-1))
    shallow = decompose(linear, inputs, labels)
    assert [layer.out_features for layer in shallow.modules[2] if isinstance(layer, nn.Linear)] == [5]
    [row] = [row for row in jaccard_table(linear, shallow) if row.label == 2]
    assert row.hidden_units == () and row.jaccard == 1.0


def test_units_no_example_switches_on_are_cut_out(digits_like):
    model, inputs, labels = digits_like
    dead = nn.Sequential(*[layer for layer in model])
    with torch.no_grad():
        dead[0].bias[:4] = -1e3  # four hidden units that never fire
    decomposition = decompose(dead, inputs, labels)
    for label, masks in decomposition.masks.items():
        assert not masks.units[0][:4].any()
        assert decomposition.modules[label][0].out_features <= 20
    rows = jaccard_table(dead, decomposition)
    edges = 24 * 12 + 5 * 24
    for row in rows:
        assert row.model_hidden_units == (24,) and row.model_edges == edges
        # kept hidden edges, then per kept unit its edges into the C outputs
        masks = decomposition.masks[row.label]
        shared = int(masks.edges[0].sum()) + 5 * int(masks.units[0].sum())
        assert row.jaccard == pytest.approx(shared / edges)
        assert row.jaccard <= 20 / 24
    table = format_table(rows)
    assert table.splitlines()[0].split() == ["module", "hidden", "units", "params", "edges", "jaccard"]
    assert len(table.splitlines()) == 6 and "/ 24" in table


def test_classes_chooses_the_modules_and_progress_reports_each(digits_like):
    model, inputs, labels = digits_like
    messages: list[str] = []
    decomposition = decompose(model, inputs, labels, classes=[3, 1], progress=messages.append)
    assert sorted(decomposition.modules) == [1, 3]
    assert [message.split(":")[0] for message in messages] == ["module 3", "module 1"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5)), "Linear, Tanh, Linear"),
        (nn.Linear(12, 5), "is a Linear"),
        (nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2)), "2 outputs"),
        (nn.Sequential(nn.Linear(12, 8), nn.ReLU()), "supported"),
    ],
)
def test_an_unsupported_model_is_refused_with_what_is_supported(digits_like, model, message):
    _, inputs, labels = digits_like
    with pytest.raises(DecomposeError, match=message):
        decompose(model, inputs, labels)


def test_bad_data_is_refused(digits_like):
    model, inputs, labels = digits_like
    with pytest.raises(DecomposeError, match="equal N"):
        decompose(model, inputs, labels[:-1])
    with pytest.raises(DecomposeError, match="takes 12"):
        decompose(model, inputs[:, :6], labels)
    with pytest.raises(DecomposeError, match=r"0\.\.4"):
        decompose(model, inputs, labels, classes=[7])
    with pytest.raises(DecomposeError, match="labels must lie in"):
        decompose(model, inputs, labels + 1)
    with pytest.raises(DecomposeError, match="no example is labelled 2"):
        decompose(model, inputs[labels != 2], labels[labels != 2])


def test_written_modules_load_back_with_weights_only(digits_like, tmp_path):
    model, inputs, labels = digits_like
    decomposition = decompose(model, inputs, labels)
    spec_path = write_decomposition(decomposition, tmp_path, spec_name="blobs_modules")
    assert spec_path == tmp_path / "blobs_modules.mdl"
    for label, module in decomposition.modules.items():
        loaded = load_module(tmp_path / f"m{label}.pt")
        with torch.no_grad():
            torch.testing.assert_close(loaded(inputs), module(inputs))
        assert torch.load(tmp_path / f"m{label}.pt", weights_only=True).keys() == module.state_dict().keys()
    sizes = (tmp_path / "sizes.txt").read_text()
    assert sizes.startswith("module") and sizes.count("\nm") == 5


def test_loading_without_its_manifest_says_which_file(digits_like, tmp_path):
    model, inputs, labels = digits_like
    write_decomposition(decompose(model, inputs, labels, classes=[0]), tmp_path, spec_name="one")
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.json"):
        load_module(tmp_path / "m0.pt")


def test_a_corrupt_module_file_is_named(digits_like, tmp_path):
    model, inputs, labels = digits_like
    write_decomposition(decompose(model, inputs, labels, classes=[0]), tmp_path, spec_name="one")
    (tmp_path / "m0.pt").write_bytes(b"\x80\x02junk")
    with pytest.raises(ArtifactError, match=r"m0\.pt: not a module file written by mdl decompose"):
        load_module(tmp_path / "m0.pt")


def test_the_generated_spec_checks_clean_and_its_vote_runs_as_the_modules(digits_like, tmp_path, capsys):
    model, inputs, labels = digits_like
    decomposition = decompose(model, inputs, labels)
    spec_path = write_decomposition(
        decomposition, tmp_path, spec_name="blobs_vote", input_type="Tensor[B, 12] float32 in [0, 1]",
    )
    assert main(["check", str(spec_path)]) == 0, capsys.readouterr().out
    assert main(["fmt", "--check", str(spec_path)]) == 0
    spec = mdl_lang.load(spec_path)
    assert spec.modules["m2"].interface.args[0].labels == (2, ir.OTHER)
    assert spec.compositions["voted"].interface.args[0].labels == tuple(range(5))
    parts = {name: module_for(spec.component(name), spec.file) for name in spec.compositions["voted"].parts}
    composed = spec.bind("voted", parts=parts, mode="record", replay_dir=None)
    with torch.no_grad():
        decided = composed(inputs).argmax(dim=1)
    assert torch.equal(decided, voted(decomposition.modules, inputs, 5, 0.0))
    assert composed.reports == [], "the modules keep the contracts the spec writes for them"


def test_mdl_test_passes_every_clause_the_generated_spec_writes(digits_like, tmp_path, capsys):
    model, inputs, labels = digits_like
    spec_path = write_decomposition(decompose(model, inputs, labels), tmp_path, spec_name="blobs_tested",
                                    input_type="Tensor[B, 12] float32 in [0, 1]")
    code = main(["test", str(spec_path), "--max-examples", "5", "--replay-dir", str(tmp_path / "replays")])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "0 failed, 0 unknown" in captured.out
    assert "m4 · params (cost): pass" in captured.err and "m4 · concern (pbt): pass" in captured.err


def test_a_partial_decomposition_votes_over_the_chosen_labels(digits_like, tmp_path, capsys):
    model, inputs, labels = digits_like
    decomposition = decompose(model, inputs, labels, classes=[0, 4])
    names = ["zero", "one", "two", "three", "four"]
    spec_path = write_decomposition(decomposition, tmp_path, spec_name="two_of_five", label_names=names)
    assert main(["check", str(spec_path)]) == 0, capsys.readouterr().out
    spec = mdl_lang.load(spec_path)
    assert spec.compositions["voted"].interface.args[0].labels == ("zero", "four")
    assert spec.modules["m4"].interface.args[0].labels == ("four", ir.OTHER)


def test_a_bad_input_type_is_refused_before_anything_is_written(digits_like, tmp_path):
    model, inputs, labels = digits_like
    with pytest.raises(ArtifactError, match="does not parse"):
        write_decomposition(decompose(model, inputs, labels, classes=[0]), tmp_path / "out", spec_name="bad",
                            input_type="Tensor[B, 12 float32")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the command line


@pytest.fixture()
def saved(digits_like, tmp_path):
    model, inputs, labels = digits_like
    torch.save(model.state_dict(), tmp_path / "blobs.pt")
    np.savez(tmp_path / "blobs.npz", inputs=inputs.numpy(), labels=labels.numpy())
    return tmp_path


def test_cli_decomposes_a_state_dict_model_and_prints_the_table(saved, capsys):
    out = saved / "modules"
    code = main(["decompose", str(saved / "blobs.pt"), "--softmax", "--data", str(saved / "blobs.npz"),
                 "--out", str(out), "--input-type", "Tensor[B, 12] float32 in [0, 1]"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines()[0].split()[0] == "module"
    assert "wrote" in captured.out and "blobs_modules.mdl" in captured.out
    assert "mdl decompose: module 4:" in captured.err
    assert main(["check", str(out / "blobs_modules.mdl")]) == 0
    assert isinstance(load_module(out / "m3.pt")[-2], nn.Softmax)


def test_cli_channel_mean_writes_two_output_modules(saved, capsys):
    out = saved / "mean"
    code = main(["decompose", str(saved / "blobs.pt"), "--softmax", "--data", str(saved / "blobs.npz"),
                 "--out", str(out), "--channel", "mean", "--classes", "0"])
    assert code == 0, capsys.readouterr().err
    module = load_module(out / "m0.pt")
    assert isinstance(module[-1], nn.Softmax)
    assert [layer.out_features for layer in module if isinstance(layer, nn.Linear)][-1] == 2


def test_cli_puts_a_flatten_before_a_state_dict_model_of_image_data(digits_like, tmp_path, capsys):
    model, inputs, labels = digits_like
    images = nn.Sequential(nn.Flatten(), *model)
    torch.save(images.state_dict(), tmp_path / "images.pt")
    torch.save({"x": inputs.reshape(-1, 3, 4), "y": labels}, tmp_path / "images_data.pt")
    code = main(["decompose", str(tmp_path / "images.pt"), "--softmax", "--data", str(tmp_path / "images_data.pt"),
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    module = load_module(tmp_path / "out" / "m2.pt")
    assert isinstance(module[0], nn.Flatten)
    assert "type Input = Tensor[B, 3, 4] float32" in (tmp_path / "out" / "images_modules.mdl").read_text()
    with torch.no_grad():
        claims = module(inputs.reshape(-1, 3, 4)).argmax(dim=1) == 0
        assert torch.equal(claims, model(inputs).argmax(dim=1) == 2)


def test_cli_takes_a_factory_and_weights(saved, capsys, monkeypatch):
    (saved / "blobs_factory.py").write_text(
        "from torch import nn\n\n\ndef model():\n"
        "    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 5), nn.Softmax(dim=-1))\n"
    )
    monkeypatch.chdir(saved)
    monkeypatch.syspath_prepend(str(saved))
    code = main(["decompose", "blobs_factory:model", "--weights", "blobs.pt", "--data", "blobs.npz",
                 "--out", "out", "--classes", "1", "2"])
    assert code == 0, capsys.readouterr().err
    assert sorted(path.name for path in (saved / "out").glob("m*.pt")) == ["m1.pt", "m2.pt"]
    assert (saved / "out" / "model_modules.mdl").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.h5", "--data", "blobs.npz", "--out", "o"], "no Keras model file at missing.h5"),
        (["blobs.pt", "--data", "nowhere.npz", "--out", "o"], "--data nowhere.npz: no such file"),
        (["blobs.npz", "--data", "blobs.npz", "--out", "o"], "MODEL blobs.npz: expected a .h5 file"),
        (["blobs.pt", "--data", "blobs.pt", "--out", "o"], "needs arrays `inputs` and `labels`"),
        (["blobs.pt", "--data", "blobs.npz", "--out", "o", "--classes", "9"], "classes must be distinct"),
        (["blobs.pt", "--data", "blobs.npz", "--out", "o", "--label-names", "a,b"], "2 label names"),
        (["blobs.pt", "--data", "corrupt.npz", "--out", "o"], "--data corrupt.npz: not a readable .npz"),
        (["blobs.pt", "--data", "blobs.npz", "--out", "afile"], "--out afile exists and is not a folder"),
        (["blobs_factory_bad:model", "--data", "blobs.npz", "--out", "o"], "returned tuple, not an nn.Module"),
        (["misfit.pt", "--softmax", "--data", "blobs.npz", "--out", "o"], "MODEL misfit.pt does not run on --data"),
        (["blobs.pt", "--softmax", "--data", "blobs.npz", "--out", "o", "--label-names", "a,a,b,c,d"],
         "does not check"),
        (["blobs.pt", "--softmax", "--data", "blobs.npz", "--out", "o", "--input-type", "Tensor[B, 3] float32"],
         "--input-type does not fit the data"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(saved, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(saved)
    monkeypatch.syspath_prepend(str(saved))
    (saved / "corrupt.npz").write_bytes(b"not a zip")
    (saved / "afile").write_text("")
    (saved / "blobs_factory_bad.py").write_text("def model():\n    return (1, 2)\n")
    torch.save({"0.weight": torch.zeros(20, 12), "0.bias": torch.zeros(20),
                "2.weight": torch.zeros(5, 30), "2.bias": torch.zeros(5)}, saved / "misfit.pt")
    assert main(["decompose", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_refuses_a_pickled_model_and_says_what_to_save(saved, capsys, digits_like):
    model, _, _ = digits_like
    torch.save(model, saved / "whole.pt")
    assert main(["decompose", str(saved / "whole.pt"), "--data", str(saved / "blobs.npz"), "--out", "o"]) == 2
    assert "save model.state_dict(), or pass pkg.mod:factory" in capsys.readouterr().err



def test_a_cnn_decomposes_with_either_channel_and_the_cli_passes_the_channel_on(digits_like, tmp_path, capsys):
    from mdl_lang.modular.decompose_cnn import decompose_cnn

    _, inputs, labels = digits_like
    images = inputs.reshape(-1, 1, 3, 4)
    torch.manual_seed(5)
    body = fitted(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5)),
                  images, labels)
    cnn = nn.Sequential(*body, nn.Softmax(dim=-1)).eval()
    best_rival = decompose_cnn(cnn, images, labels, classes=[1])
    assert best_rival.channel == "max"
    with torch.no_grad():
        scores = best_rival.modules[1](images)
        ten = best_rival.modules[1][:-1](images)
    assert ten.shape == (len(images), 5) and bool((scores.sum(dim=1) <= 1 + 1e-6).all())
    assert torch.equal(scores.argmax(dim=1) == 0, ten.argmax(dim=1) == 1)
    mean = decompose_cnn(cnn, images, labels, classes=[1], channel="mean")
    assert mean.channel == "mean"
    torch.save(cnn.state_dict(), tmp_path / "cnn.pt")
    (tmp_path / "cnn_factory.py").write_text(
        "from torch import nn\n\n\ndef model():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), "
        "nn.Flatten(), nn.Linear(48, 5), nn.Softmax(dim=-1))\n"
    )
    torch.save({"inputs": images, "labels": labels}, tmp_path / "images.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.syspath_prepend(str(tmp_path))
        code = main(["decompose", "cnn_factory:model", "--weights", "cnn.pt", "--data", "images.pt", "--out", "out",
                     "--classes", "1", "--channel", "mean"])
    assert code == 0, capsys.readouterr().err
    assert '"channel": "mean"' in (tmp_path / "out" / "manifest.json").read_text()
    with torch.no_grad():
        torch.testing.assert_close(load_module(tmp_path / "out" / "m1.pt")(images), mean.modules[1](images))


@pytest.mark.parametrize("channel", ["max", "mean"])
def test_a_model_without_biases_gives_modules_without_biases(digits_like, tmp_path, channel):
    _, inputs, labels = digits_like
    torch.manual_seed(5)
    body = fitted(nn.Sequential(nn.Linear(12, 24, bias=False), nn.ReLU(), nn.Linear(24, 5, bias=False)),
                  inputs, labels)
    model = nn.Sequential(*body, nn.Softmax(dim=-1)).eval()
    decomposition = decompose(model, inputs, labels, channel=channel)
    model_size = sum(parameter.numel() for parameter in model.parameters())
    for module in decomposition.modules.values():
        assert all(layer.bias is None for layer in module if isinstance(layer, nn.Linear))
        assert sum(parameter.numel() for parameter in module.parameters()) <= model_size
    write_decomposition(decomposition, tmp_path, spec_name="unbiased")
    loaded = load_module(tmp_path / "m0.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), decomposition.modules[0](inputs))


def keras_file(model: nn.Sequential, path):
    """`model`'s Linear layers as Dense layers of a Keras 2 file: relu between them, softmax after the last."""
    from tests.interop.test_keras_h5 import dense, write_keras_file

    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    layers = [dense(f"d{index}", layer.out_features, "relu" if index < len(linears) - 1 else "softmax")
              for index, layer in enumerate(linears)]
    weights = {f"d{index}": {"kernel": layer.weight.detach().T.numpy(), "bias": layer.bias.detach().numpy()}
               for index, layer in enumerate(linears)}
    return write_keras_file(path, layers, weights)


@pytest.mark.parametrize("name", ["MODEL.H5", "model.hdf5"])
def test_cli_reads_a_keras_file_of_either_suffix_in_any_case(saved, digits_like, capsys, name):
    keras_file(digits_like[0], saved / name)
    code = main(["decompose", str(saved / name), "--data", str(saved / "blobs.npz"), "--out", str(saved / "out"),
                 "--classes", "0"])
    assert code == 0, capsys.readouterr().err
    assert (saved / "out" / "m0.pt").is_file()


def test_cli_refuses_a_keras_file_whose_layers_do_not_chain_in_one_line(saved, digits_like, capsys):
    path = keras_file(nn.Sequential(nn.Linear(12, 5), nn.ReLU(), nn.Linear(6, 5)), saved / "chain.h5")
    assert main(["decompose", str(path), "--data", str(saved / "blobs.npz"), "--out", str(saved / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chain.h5: layer `d1` (Dense) takes 6 inputs" in err, err
