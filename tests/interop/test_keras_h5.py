"""Keras HDF5 import: the ESEC/FSE 2020 KMNIST-1 fixtures reproduce the paper's figures; small files pin the rest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from examples.kmnist import fixtures
from mdl_lang.interop.keras_h5 import KerasImportError, load_keras_sequential

PAPER_MODEL_CORRECT = 7602
PAPER_VOTE_CORRECT = 7603
SUMMATION_ORDER_SLACK = 3


@pytest.fixture(scope="module")
def kmnist_folder() -> Path:
    try:
        return fixtures.fixture_folder()
    except FileNotFoundError as error:
        pytest.fail(f"the KMNIST-1 fixtures (shared/data/fse20-kmnist1) are required by these tests: {error}")


@pytest.fixture(scope="module")
def kmnist_test(kmnist_folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return fixtures.test_split()


def correct_count(scores: torch.Tensor, labels: torch.Tensor) -> int:
    return int((scores.argmax(dim=1) == labels).sum())


def paper_vote(concern_scores: torch.Tensor) -> torch.Tensor:
    """The ESEC/FSE 2020 rule (LANGUAGE.md section 6) over (N, 10 modules, 2) scores `(p_k, best other)`.

    Module k claims k when its argmax is p_k. A single claiming module wins; among
    several, the highest p_k; when none claims, the highest p_k of any module.
    """
    own = concern_scores[..., 0]
    claims = concern_scores.argmax(dim=-1) == 0
    best_claim = own.masked_fill(~claims, -torch.inf).argmax(dim=1)
    return torch.where(claims.any(dim=1), best_claim, own.argmax(dim=1))


def test_the_imported_model_has_the_papers_accuracy(kmnist_test):
    inputs, labels = kmnist_test
    with torch.no_grad():
        correct = correct_count(fixtures.load_model()(inputs), labels)
    print(f"KMNIST-1 model on img / 255 / 255: {correct} / {len(labels)} correct")
    assert abs(correct - PAPER_MODEL_CORRECT) <= SUMMATION_ORDER_SLACK


def test_inputs_divided_once_lose_about_twelve_points(kmnist_folder, kmnist_test):
    _, labels = kmnist_test
    with np.load(kmnist_folder / "kmnist-test-imgs.npz") as archive:
        images = torch.from_numpy(archive["arr_0"]).to(torch.float32)
    with torch.no_grad():
        accuracy = correct_count(fixtures.load_model()(images / 255), labels) / len(labels)
    print(f"KMNIST-1 model on img / 255: accuracy {accuracy:.2%}")
    assert 0.60 <= accuracy <= 0.68


def test_the_voted_modules_have_the_papers_accuracy(kmnist_test):
    inputs, labels = kmnist_test
    modules = [fixtures.load_module(label) for label in range(10)]
    with torch.no_grad():
        concern_scores = torch.stack([module(inputs) for module in modules], dim=1)
    correct = int((paper_vote(concern_scores) == labels).sum())
    print(f"KMNIST-1 modules, voted: {correct} / {len(labels)} correct")
    assert abs(correct - PAPER_VOTE_CORRECT) <= SUMMATION_ORDER_SLACK


def test_the_binding_factories_load_each_module_for_its_label(kmnist_folder):
    factories = [getattr(fixtures, f"load_module_{label}") for label in range(10)]
    assert [factory().label for factory in factories] == list(range(10))


def test_test_split_is_scaled_for_the_models(kmnist_test):
    inputs, labels = kmnist_test
    assert inputs.shape == (10000, 28, 28) and inputs.dtype == torch.float32
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert float(inputs.min()) == 0.0 and float(inputs.max()) == pytest.approx(1 / 255)
    assert torch.bincount(labels).tolist() == [1000] * 10


def test_a_missing_fixture_folder_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(fixtures.FOLDER_VARIABLE, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=f"absent.*{fixtures.FOLDER_VARIABLE}"):
        fixtures.load_model()


# Small hand-made Keras files.

KERNEL_1 = np.array([[1.0, -1.0], [0.5, 2.0], [-2.0, 0.25], [0.0, 1.0], [3.0, -0.5], [-1.0, 0.0]], dtype=np.float32)
BIAS_1 = np.array([0.5, -1.0], dtype=np.float32)
KERNEL_2 = np.array([[2.0, -1.0, 0.5], [1.0, 0.25, -3.0]], dtype=np.float32)


def dense(name: str, units: int, activation: str, use_bias: bool = True) -> dict:
    config = {"name": name, "units": units, "activation": activation, "use_bias": use_bias}
    return {"class_name": "Dense", "config": config}


def flatten(name: str = "flatten", data_format: str = "channels_last") -> dict:
    return {
        "class_name": "Flatten",
        "config": {"name": name, "batch_input_shape": [None, 2, 3, 1], "data_format": data_format},
    }


def write_keras_file(
    path: Path, layers: list[dict], weights: dict[str, dict[str, np.ndarray]], *, layers_in_dict: bool = True
) -> Path:
    """A file laid out as Keras 2 saves a Sequential: weights under model_weights/<layer>/<layer>_7/."""
    config = {"name": "sequential_7", "layers": layers} if layers_in_dict else layers
    with h5py.File(path, "w") as file:
        file.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": config}).encode()
        model_weights = file.create_group("model_weights")
        for layer in layers:
            group = model_weights.create_group(layer["config"]["name"])
            for role, value in weights.get(layer["config"]["name"], {}).items():
                group.create_dataset(f"{layer['config']['name']}_7/{role}:0", data=value)
    return path


def small_model_file(path: Path, *, layers_in_dict: bool = True) -> Path:
    layers = [
        {"class_name": "InputLayer", "config": {"name": "input_1"}},
        flatten(),
        dense("hidden", 2, "relu"),
        {"class_name": "Dropout", "config": {"name": "dropout", "rate": 0.5}},
        dense("scores", 3, "linear", use_bias=False),
    ]
    weights = {"hidden": {"kernel": KERNEL_1, "bias": BIAS_1}, "scores": {"kernel": KERNEL_2}}
    return write_keras_file(path, layers, weights, layers_in_dict=layers_in_dict)


@pytest.mark.parametrize("layers_in_dict", [True, False], ids=["keras-2.2-dict", "keras-2.0-list"])
def test_a_small_model_computes_what_keras_computes(tmp_path, layers_in_dict):
    model = load_keras_sequential(small_model_file(tmp_path / "small.h5", layers_in_dict=layers_in_dict))
    images = np.arange(24, dtype=np.float32).reshape(4, 2, 3, 1) / 4 - 2
    expected = np.maximum(images.reshape(4, 6) @ KERNEL_1 + BIAS_1, 0) @ KERNEL_2
    with torch.no_grad():
        channels_last = model(torch.from_numpy(images)).numpy()
        without_channels = model(torch.from_numpy(images[..., 0])).numpy()
    np.testing.assert_array_equal(channels_last, expected)
    np.testing.assert_array_equal(without_channels, expected)
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert model[3].bias is None


@pytest.mark.parametrize(
    ("activation", "reference"),
    [("softmax", lambda z: torch.softmax(z, dim=-1)), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh)],
)
def test_dense_activations(tmp_path, activation, reference):
    path = write_keras_file(
        tmp_path / "one.h5", [flatten(), dense("out", 2, activation)], {"out": {"kernel": KERNEL_1, "bias": BIAS_1}}
    )
    inputs = torch.linspace(-1, 1, 12).reshape(2, 2, 3)
    expected = reference(inputs.reshape(2, 6) @ torch.from_numpy(KERNEL_1) + torch.from_numpy(BIAS_1))
    with torch.no_grad():
        torch.testing.assert_close(load_keras_sequential(path)(inputs), expected)


def assert_import_error(path: Path, *fragments: str) -> None:
    with pytest.raises(KerasImportError) as caught:
        load_keras_sequential(path)
    message = str(caught.value)
    for fragment in (str(path), *fragments):
        assert fragment in message, message


def test_an_unsupported_layer_is_named_with_what_is_supported(tmp_path):
    conv = {"class_name": "Conv2D", "config": {"name": "conv_1", "filters": 4}}
    path = write_keras_file(tmp_path / "conv.h5", [conv, flatten(), dense("out", 2, "relu")], {})
    assert_import_error(path, "`conv_1`", "Conv2D", "supported: Keras 2 Sequential")


def test_an_unsupported_activation_is_named(tmp_path):
    path = write_keras_file(tmp_path / "elu.h5", [flatten(), dense("out", 2, "elu")], {"out": {"kernel": KERNEL_1}})
    assert_import_error(path, "`out`", "'elu'", "relu, softmax, sigmoid, tanh or linear")


def test_channels_first_flatten_is_refused(tmp_path):
    path = write_keras_file(tmp_path / "first.h5", [flatten(data_format="channels_first")], {})
    assert_import_error(path, "`flatten`", "channels_first")


def test_a_functional_model_is_refused(tmp_path):
    path = tmp_path / "functional.h5"
    with h5py.File(path, "w") as file:
        file.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": []}})
    assert_import_error(path, "`Model`", "functional models are not supported")


def test_missing_weights_are_named(tmp_path):
    path = write_keras_file(tmp_path / "nobias.h5", [flatten(), dense("out", 2, "relu")], {"out": {"kernel": KERNEL_1}})
    assert_import_error(path, "`out`", "needs one `bias:0` weight under model_weights/out, found 0")


def test_a_missing_layer_group_is_named(tmp_path):
    path = write_keras_file(tmp_path / "nogroup.h5", [flatten()], {})
    with h5py.File(path, "a") as file:
        file.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": [dense("ghost", 2, "relu")]})
    assert_import_error(path, "`ghost`", "needs one `kernel:0` weight")


def test_a_kernel_that_disagrees_with_units_is_named(tmp_path):
    path = write_keras_file(tmp_path / "units.h5", [flatten(), dense("out", 5, "relu")], {"out": {"kernel": KERNEL_1}})
    assert_import_error(path, "`out`", "kernel of shape (6, 2), expected (6, 5)")


def test_a_weights_only_file_is_refused(tmp_path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("kernel:0", data=KERNEL_1)
    assert_import_error(path, "no `model_config` attribute")


def test_a_file_that_is_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "model.h5"
    path.write_text("not a Keras model\n")
    assert_import_error(path, "not an HDF5 file")


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.h5"):
        load_keras_sequential(tmp_path / "absent.h5")


def test_without_h5py_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(KerasImportError, match=r"pip install mdl-lang\[keras\]"):
        load_keras_sequential(tmp_path / "any.h5")


def test_dense_layers_that_do_not_chain_are_refused(tmp_path):
    # `hidden` gives 2 features; a `scores` kernel of 3 rows would fail inside torch on the first input.
    layers = [flatten(), dense("hidden", 2, "relu"), dense("scores", 3, "linear", use_bias=False)]
    weights = {"hidden": {"kernel": KERNEL_1, "bias": BIAS_1}, "scores": {"kernel": np.ones((3, 3), np.float32)}}
    assert_import_error(write_keras_file(tmp_path / "chain.h5", layers, weights), "`scores`", "takes 3 inputs",
                        "the layers before it give 2")


def test_a_first_kernel_that_does_not_take_the_declared_input_is_refused(tmp_path):
    # The InputLayer declares (2, 2, 1) samples, 4 features once flattened; KERNEL_1 takes 6.
    layers = [
        {"class_name": "InputLayer", "config": {"name": "input_1", "batch_input_shape": [None, 2, 2, 1]}},
        {"class_name": "Flatten", "config": {"name": "flatten"}},
        dense("hidden", 2, "relu"),
    ]
    path = write_keras_file(tmp_path / "input.h5", layers, {"hidden": {"kernel": KERNEL_1, "bias": BIAS_1}})
    assert_import_error(path, "`hidden`", "takes 6 inputs", "the layers before it give 4")


def test_a_damaged_file_that_still_opens_is_an_import_error(tmp_path):
    # h5py, as Keras, keeps the `model_config` string in the file's one global heap; break its signature.
    path = small_model_file(tmp_path / "damaged.h5")
    data = path.read_bytes()
    assert data.count(b"GCOL") == 1
    path.write_bytes(data.replace(b"GCOL", b"XXXX"))
    assert_import_error(path, "the file is damaged")


def test_a_kernel_of_strings_is_named(tmp_path):
    path = write_keras_file(
        tmp_path / "text.h5", [flatten(), dense("out", 2, "relu")], {"out": {"kernel": np.array([b"ab", b"cd"])}}
    )
    assert_import_error(path, "`out`", "kernel of dtype |S2, not numbers")


def test_an_empty_layer_list_is_refused(tmp_path):
    assert_import_error(write_keras_file(tmp_path / "empty.h5", [], {}), "no layer computes anything")


def test_a_keras_3_legacy_file_computes_what_keras_computes(tmp_path):
    """Keras 3 writes `batch_shape` on the InputLayer and its weights as `<model>/<layer>/kernel`, no `:0`."""
    path = tmp_path / "keras3.h5"
    layers = [
        {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
         "config": {"name": "input_layer", "batch_shape": [None, 2, 3], "dtype": "float32"}},
        {"module": "keras.layers", "class_name": "Flatten", "registered_name": None,
         "config": {"name": "flatten", "data_format": "channels_last",
                    "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}}},
        {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
         "config": {"name": "dense", "units": 2, "activation": "relu", "use_bias": True}},
    ]
    with h5py.File(path, "w") as file:
        file.attrs["keras_version"] = "3.3.3"
        file.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": layers}})
        group = file.create_group("model_weights/dense/sequential/dense")
        group.create_dataset("kernel", data=KERNEL_1)
        group.create_dataset("bias", data=BIAS_1)
    images = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    with torch.no_grad():
        scores = load_keras_sequential(path)(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(scores, np.maximum(images.reshape(2, 6) @ KERNEL_1 + BIAS_1, 0), rtol=1e-6)
