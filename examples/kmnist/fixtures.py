"""Zero-argument factories for the KMNIST-1 fixtures, for `python "examples.kmnist.fixtures:..."` bindings.

The files are the public ESEC/FSE 2020 artifact (Pan & Rajan), described in
shared/data/fse20-kmnist1/README.md. They are found through `MDL_KMNIST_DIR`,
by default the folder of that name in `shared/data` beside the repository.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mdl_lang.interop.keras_h5 import load_keras_sequential
from mdl_lang.modular.concern import ConcernView

FOLDER_VARIABLE = "MDL_KMNIST_DIR"
DEFAULT_FOLDER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fse20-kmnist1"


def fixture_folder() -> Path:
    """The folder holding kmnist.h5, module0.h5 … module9.h5 and the test split, checked to exist."""
    folder = Path(os.environ.get(FOLDER_VARIABLE) or DEFAULT_FOLDER)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"KMNIST-1 fixtures not found: {folder} is not a folder; set {FOLDER_VARIABLE} to the folder "
            "holding kmnist.h5, module0.h5 ... module9.h5 and kmnist-test-*.npz"
        )
    return folder


def load_model() -> nn.Sequential:
    """The trained KMNIST-1 model: Flatten(28x28) -> Dense(49, relu) -> Dense(10, softmax); inputs img / 255 / 255."""
    return load_keras_sequential(fixture_folder() / "kmnist.h5")


def load_module(label: int) -> ConcernView:
    """The paper's module for class `label`, as its two scores (p_label, best other) of `{label} | other`."""
    return ConcernView(load_keras_sequential(fixture_folder() / f"module{label}.h5"), label)


load_module_0 = partial(load_module, 0)
load_module_1 = partial(load_module, 1)
load_module_2 = partial(load_module, 2)
load_module_3 = partial(load_module, 3)
load_module_4 = partial(load_module, 4)
load_module_5 = partial(load_module, 5)
load_module_6 = partial(load_module, 6)
load_module_7 = partial(load_module, 7)
load_module_8 = partial(load_module, 8)
load_module_9 = partial(load_module, 9)


def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 test images as float32 (10000, 28, 28) in [0, 1/255], and their int64 labels.

    The artifact feeds `skimage.transform.resize(img) / 255`, that is img / 255 / 255,
    so that is the range the models were trained on (fed img / 255, accuracy drops
    from 76% to 64%).
    """
    images, labels = raw_test_split()
    return Preprocess()(images), labels


def raw_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 test images as stored, uint8 (10000, 28, 28), and their int64 labels."""
    folder = fixture_folder()
    images = _array(folder / "kmnist-test-imgs.npz")
    labels = _array(folder / "kmnist-test-labels.npz")
    return torch.from_numpy(images), torch.from_numpy(labels).to(torch.int64)


class Preprocess(nn.Module):
    """uint8 images to the range the models were trained on: img / 255 / 255, in float32."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.to(torch.float32) / 255 / 255


def load_preprocess() -> Preprocess:
    return Preprocess()


def _array(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        return archive["arr_0"]
