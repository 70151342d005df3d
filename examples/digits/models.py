"""Zero-argument model factories for specs/digits.mdl and specs/pipeline.mdl.

Trained models are trained on first use, deterministically (fixed seeds,
full-batch or seeded minibatch Adam on the CPU, a few seconds at most), and
their weights cached under `$MDL_CACHE_DIR` (default: a folder in the system's
temporary directory), keyed by the model's recipe and the torch version. Each
call returns a fresh module, so a caller may change its weights freely.
Weights are read back with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mdl_lang.modular import digits

CACHE_VARIABLE = "MDL_CACHE_DIR"
EVEN = (0, 2, 4, 6, 8)
ODD = (1, 3, 5, 7, 9)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a trained model's weights: the cache key."""

    name: str
    epochs: int
    learning_rate: float
    batch_size: int | None
    seed: int
    flat: bool = False  # trained on (N, 64) feature vectors instead of (N, 1, 8, 8) images
    more_of: int | None = None  # a digit whose training images are repeated `times` times
    times: int = 1


# ---------------------------------------------------------------- trained classifiers


def load_cnn() -> nn.Sequential:
    """Two 3x3 convolutions (8 and 16 channels), a 2x2 max-pool and a softmax layer: 3,818 parameters."""
    return _trained(Recipe("cnn", epochs=40, learning_rate=0.005, batch_size=64, seed=1), _cnn)


def load_linear() -> nn.Sequential:
    """Multinomial logistic regression on the flattened image: 64 * 10 + 10 parameters."""
    return _trained(Recipe("linear", epochs=300, learning_rate=0.05, batch_size=None, seed=0), _linear)


def load_mlp() -> nn.Sequential:
    """An MLP with one hidden layer of 64 units: the model examples/digits/modules.py decomposes."""
    return _trained(Recipe("mlp64", epochs=200, learning_rate=0.01, batch_size=None, seed=0), _mlp64)


def load_mlp_more_fives() -> nn.Sequential:
    """The same MLP retrained with every training image of a 5 shown four times: the source of `m5_v2`."""
    recipe = Recipe("mlp64-fives", epochs=200, learning_rate=0.01, batch_size=None, seed=0, more_of=5, times=4)
    return _trained(recipe, _mlp64)


def load_even_net() -> nn.Module:
    """The CNN seen through `Even | other`: its scores for 0, 2, 4, 6, 8, then its best odd score."""
    return LabelSubsetView(load_cnn(), EVEN)


def load_odd_net() -> nn.Module:
    """The CNN seen through `Odd | other`: its scores for 1, 3, 5, 7, 9, then its best even score."""
    return LabelSubsetView(load_cnn(), ODD)


def load_parity_net() -> nn.Module:
    """The CNN's probabilities summed over the even and over the odd digits: (p_even, p_odd)."""
    return ParityView(load_cnn())


def load_mlp_logits() -> nn.Sequential:
    """Feature vectors (N, 64) to ten logits: Linear(64, 32) -> ReLU -> Linear(32, 10), 2,410 parameters."""
    recipe = Recipe("flat-mlp32", epochs=300, learning_rate=0.01, batch_size=None, seed=0, flat=True)
    trained = _trained(recipe, _flat_mlp32)
    return trained[:-1]


def load_tiny() -> nn.Sequential:
    """Feature vectors (N, 64) to probabilities: Linear(64, 10) -> Softmax, 650 parameters."""
    recipe = Recipe("flat-linear", epochs=300, learning_rate=0.05, batch_size=None, seed=0, flat=True)
    return _trained(recipe, _flat_linear)


class LabelSubsetView(nn.Module):
    """Scores of some labels of a classifier, then `other`: the best score of every label left out.

    The argmax is `other` exactly when the classifier's own argmax lies outside
    `labels`, so the view abstains in a vote where the classifier's choice is
    not one of its labels; the scores still come from one probability vector.
    """

    def __init__(self, module: nn.Module, labels: tuple[int, ...]) -> None:
        super().__init__()
        self.module = module
        self.labels = labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.module(x)
        inside = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
        inside[list(self.labels)] = True
        return torch.cat((scores[:, inside], scores[:, ~inside].amax(dim=1, keepdim=True)), dim=1)

    def extra_repr(self) -> str:
        return f"labels={self.labels}"


class ParityView(nn.Module):
    """A digit classifier's probabilities as those of `{"even", "odd"}`: each the sum over its five digits."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.module(x)
        halves = torch.stack((scores[:, list(EVEN)].sum(dim=1), scores[:, list(ODD)].sum(dim=1)), dim=1)
        # A float32 sum of five probabilities can round to just above 1; the type promises [0, 1].
        return halves.clamp(0, 1)


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10), nn.Softmax(dim=1),
    )


def _linear() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))


def _mlp64() -> nn.Sequential:
    return digits.mlp((64,))


def _flat_mlp32() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(dim=1))


def _flat_linear() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 10), nn.Softmax(dim=1))


def _trained(recipe: Recipe, architecture: Callable[[], nn.Sequential]) -> nn.Sequential:
    """A fresh `architecture()` with the recipe's weights: from the cache, or trained now and cached."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = architecture()
    path = _cache_folder() / f"{recipe.name}-{_key(recipe)}.pt"
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError):
            pass  # a damaged or stale cache file: train again and overwrite it
    inputs, labels = digits.train_split()
    if recipe.more_of is not None:
        extra = (labels == recipe.more_of).nonzero().flatten().repeat(recipe.times - 1)
        inputs, labels = torch.cat((inputs, inputs[extra])), torch.cat((labels, labels[extra]))
    if recipe.flat:
        inputs = inputs.flatten(start_dim=1)
    digits.train(
        model, inputs, labels, epochs=recipe.epochs, learning_rate=recipe.learning_rate,
        batch_size=recipe.batch_size, seed=recipe.seed,
    )
    _save_atomically(model.state_dict(), path)
    return model.eval()


def _key(recipe: Recipe) -> str:
    text = repr(sorted(asdict(recipe).items())) + torch.__version__
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _cache_folder() -> Path:
    folder = Path(os.environ.get(CACHE_VARIABLE) or Path(tempfile.gettempdir()) / "mdl-digits-examples")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _save_atomically(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write beside the target, then rename: parallel test workers never read half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    torch.save(state, temporary)
    os.replace(temporary, path)


# ---------------------------------------------------------------- fixed functions


class Mirror(nn.Module):
    """Left-right mirror of an image: the last axis reversed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=(-1,))


class Normalize(nn.Module):
    """load_digits() pixels (float64 in [0, 16]) to float32 in [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 16).to(torch.float32)


class Clip(nn.Module):
    """Clamps every value into [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 1)


class Split(nn.Module):
    """A feature vector of 64 as its first and last 32 values."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = x.shape[1] // 2
        return x[:, :half], x[:, half:]


class Join(nn.Module):
    """The inverse of Split: two halves back into one vector."""

    def forward(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        return torch.cat((top, bottom), dim=1)


class Summary(nn.Module):
    """Per image: the number of inked pixels (> 0.5), the brightest pixel's index, and whether it is blank."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ink = (x > 0.5).sum(dim=1).to(torch.int32)
        return ink, x.argmax(dim=1), ink == 0


class Compress(nn.Module):
    """The vector in half precision and in bfloat16."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(torch.float16), x.to(torch.bfloat16)


class Pool(nn.Module):
    """Mean brightness of every sample, in float32, over all its axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32).flatten(start_dim=1).mean(dim=1, keepdim=True)


def mirror() -> Mirror:
    return Mirror()


def normalize() -> Normalize:
    return Normalize()


def clip() -> Clip:
    return Clip()


def softmax_head() -> nn.Softmax:
    """Logits to probabilities over the last axis, for any number of labels."""
    return nn.Softmax(dim=-1)


def split() -> Split:
    return Split()


def join() -> Join:
    return Join()


def summary() -> Summary:
    return Summary()


def compress() -> Compress:
    return Compress()


def pool() -> Pool:
    return Pool()
