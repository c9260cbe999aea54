"""`mnist1d`: the MNIST-1D benchmark (Greydanus 2020, arXiv 2011.14439), generated locally as 1-D signals.

A reimplementation of the published generation procedure (the `mnist1d` package, `make_dataset` with
its default arguments), not an import of it: each of the 10 digit templates (12 points, whitened, starting
at 0, scaled by 1/6) is padded with 36–60 zeros, linearly interpolated to 72 points, scaled by
1 ± 0.2, circularly translated by 0–47 steps; the zero (padding) positions get correlated noise (white
noise of std 0.25 through a Gaussian filter of sigma 2), every position iid noise of std 0.02; then a
linear shear of ±0.375 and linear interpolation to 40 points. 500 samples per class, shuffled,
standardized with the global mean and std, and split 4,000 train / 1,000 test.

The random draws are made in the original's order from `numpy.random.RandomState(seed)` (the original
seeds numpy's global state with 42), so with the defaults this is meant to reproduce `make_dataset()`
value for value; docs/datasets.md says how that was checked. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_bench.config import build_config
from ssl_bench.data.registry import DataArrays, DatasetInfo

# The 10 digit templates of the original, 12 points each.
TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)
PADDING = (36, 60)  # zeros appended to a template: uniform whole number in [low, high]
SCALE_COEFF = 0.4  # amplitude scale 1 + SCALE_COEFF * U(-0.5, 0.5)
MAX_TRANSLATION = 48  # circular shift by a whole number in [0, MAX_TRANSLATION)
CORR_NOISE_SCALE = 0.25  # std of the noise, before the Gaussian filter, on padding positions
CORR_NOISE_SIGMA = 2.0  # Gaussian filter width, in samples
IID_NOISE_SCALE = 0.02  # std of the white noise added everywhere
SHEAR_SCALE = 0.75  # linear trend of slope SHEAR_SCALE * U(-0.5, 0.5) over the signal
FINAL_LENGTH = 40  # samples per signal
EPS = 1e-8  # added before padding, so "== 0" finds exactly the padding


def templates() -> np.ndarray:
    """(10, 12): whitened per template, shifted to start at 0, scaled by 1/6 (the original's `get_templates`)."""
    x = TEMPLATES - TEMPLATES.mean(1, keepdims=True)
    x = x / x.std(1, keepdims=True)
    return (x - x[:, :1]) / 6.0


def interpolate(x: np.ndarray, n: int) -> np.ndarray:
    """Linear resampling of `x` to `n` points spanning the same interval."""
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def transform(x: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """One random MNIST-1D sample from template `x`; the draws are in the original's order."""
    from scipy.ndimage import gaussian_filter1d  # local: 0.4 s to import, for generating only

    low, high = PADDING
    pad = low + int(rng.rand() * (high - low + 1))
    x = np.concatenate([x + EPS, np.zeros(pad)])
    x = interpolate(x, len(TEMPLATES[0]) + high)  # dilate to 72 points
    x = x * (1 + SCALE_COEFF * (rng.rand() - 0.5))
    k = rng.choice(MAX_TRANSLATION)
    x = np.concatenate([x[-k:], x[:-k]])  # circular shift right by k (k = 0: unchanged)
    mask = x != 0
    corr = gaussian_filter1d(CORR_NOISE_SCALE * rng.randn(len(x)), CORR_NOISE_SIGMA)
    x = mask * x + (1 - mask) * corr
    x = x + IID_NOISE_SCALE * rng.randn(len(x))
    x = x - SHEAR_SCALE * (rng.rand() - 0.5) * np.linspace(-0.5, 0.5, len(x))
    return interpolate(x, FINAL_LENGTH)


def make_mnist1d(num_samples: int = 5000, seed: int = 42, shuffle_seq: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All samples (N, 40) float64 standardized, and labels (N,), in the original's shuffled order."""
    rng = np.random.RandomState(seed)
    base = templates()
    per_class = num_samples // len(base)
    xs = [transform(base[c], rng) for c in range(len(base)) for _ in range(per_class)]
    ys = [c for c in range(len(base)) for _ in range(per_class)]
    order = rng.permutation(len(ys))
    x, y = np.stack(xs)[order], np.asarray(ys)[order]
    if shuffle_seq:  # the original's "shuffled" variant: one fixed permutation of the positions
        x = x[..., rng.permutation(FINAL_LENGTH)]
    return (x - x.mean()) / x.std(), y


@dataclass(frozen=True)
class MNIST1DOptions:
    num_samples: int = 5000  # in all, split train / test by train_split (500 per class by default)
    train_split: float = 0.8  # share of the samples in the training set (the rest is the test set)
    seed: int = 42  # generates the data set (the original's seed; independent of the run's --seed)
    shuffle_seq: bool = False  # permute the 40 positions (the original's "shuffled" variant)

    def __post_init__(self) -> None:
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 20:
            raise ValueError(f"num_samples must be a whole number >= 20, got {self.num_samples!r}")
        if not 0 < self.train_split < 1:
            raise ValueError(f"train_split must be in (0, 1), got {self.train_split!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")
        if not isinstance(self.shuffle_seq, bool):
            raise ValueError(f"shuffle_seq must be true or false, got {self.shuffle_seq!r}")


def load_mnist1d(data_dir: Path | None = None, download: bool = True, **options) -> DataArrays:
    opts = build_config(MNIST1DOptions, options, "dataset 'mnist1d'")
    x, y = make_mnist1d(opts.num_samples, opts.seed, opts.shuffle_seq)
    split = int(len(y) * opts.train_split)
    as_x = lambda a: torch.from_numpy(a).float().unsqueeze(1).contiguous()  # (N, 1, 40) float32
    as_y = lambda a: torch.from_numpy(a).long()
    return DataArrays(
        as_x(x[:split]), as_y(y[:split]), as_x(x[split:]), as_y(y[split:]), class_names=tuple(map(str, range(10)))
    )


MNIST1D = DatasetInfo(
    name="mnist1d",
    modality="signal",
    shape=(1, FINAL_LENGTH),
    num_classes=10,
    val_size=500,
    default_model="tinycnn",
    default_steps=2000,
    description="MNIST-1D (Greydanus 2020): 40-sample 1-D digits, 4,000 train / 1,000 test, generated locally",
    load=load_mnist1d,
)
