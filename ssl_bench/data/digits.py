"""`digits`: scikit-learn's 1,797 8×8 handwritten digits, shipped with scikit-learn (no download).

There is no official test split: a fixed, seed-independent stratified 497-sample test split is held out
(`random_state=0`), leaving 1,300 training samples, of which 300 are carved for validation by default.
`-d size=N` enlarges the images to N×N (nearest neighbour), for models that need larger inputs
(e.g. `largecnn`, which needs at least 14×14); `-d channels=3` repeats the gray channel. Offline
stand-ins of the paper's shapes: `-d size=28` for MNIST (1×28×28), `-d size=32 -d channels=3` for
SVHN and CIFAR-10 (3×32×32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench.config import build_config
from ssl_bench.data.registry import DataArrays, DatasetInfo

TEST_SIZE = 497


@dataclass(frozen=True)
class DigitsOptions:
    size: int = 8  # image side in pixels; > 8 enlarges by nearest-neighbour interpolation
    channels: int = 1  # 1 (gray) or 3 (the gray channel repeated: an SVHN/CIFAR-shaped stand-in)

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 256:
            raise ValueError(f"size must be in [8, 256], got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")


def load_digits(data_dir=None, download: bool = True, **options) -> DataArrays:
    from sklearn.datasets import load_digits as sk_load_digits  # local: about 1 s to import, for loading only
    from sklearn.model_selection import train_test_split

    opts = build_config(DigitsOptions, options, "dataset 'digits'")
    bunch = sk_load_digits()
    x = (bunch.images * (255.0 / 16.0)).round().astype("uint8")  # (1797, 8, 8), 0..16 -> 0..255
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=TEST_SIZE, random_state=0, stratify=bunch.target
    )

    def as_x(a):  # (N, channels, size, size) uint8
        x = torch.from_numpy(a).unsqueeze(1)
        x = F.interpolate(x, size=(opts.size, opts.size), mode="nearest") if opts.size != 8 else x
        return x.repeat(1, opts.channels, 1, 1).contiguous()

    as_y = lambda a: torch.from_numpy(a).long()
    return DataArrays(as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te), class_names=tuple(map(str, range(10))))


DIGITS = DatasetInfo(
    name="digits",
    modality="image",
    shape=(1, 8, 8),
    num_classes=10,
    val_size=300,
    default_model="tinycnn",
    default_steps=600,
    description="scikit-learn 8x8 handwritten digits (1,300 train / 497 test), offline",
    load=load_digits,
)
