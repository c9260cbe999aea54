"""The dataset registry: what a dataset is (modality, shape, classes, split sizes) and how it loads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ssl_bench.errors import UserError

MODALITIES = ("image", "signal")


@dataclass
class DataArrays:
    """A dataset in memory. `x` may be uint8 or float; normalization happens in the harness."""

    x_train: torch.Tensor  # (N, *shape)
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, *shape)
    y_test: torch.Tensor  # (M,) int64
    groups_train: torch.Tensor | None = None  # (N,) int64 recording id: splits never cut a group
    groups_test: torch.Tensor | None = None  # (M,) int64 recording id, for per-recording accuracy
    x_extra: torch.Tensor | None = None  # additional unlabeled-only inputs (e.g. SVHN extra)
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("inputs and labels differ in length")


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset. `load(data_dir=…, download=…, **options)` returns `DataArrays`."""

    name: str
    modality: str  # "image" | "signal"
    shape: tuple[int, ...]  # per sample at default options: (C, H, W) or (C, L)
    num_classes: int
    val_size: int  # validation samples carved from train first (SPEC §4)
    default_model: str
    default_steps: int
    description: str
    load: Callable[..., DataArrays]
    available: Callable[[Path], bool] = field(default=lambda data_dir: True)  # files present locally?
    offline: bool = True  # needs no files at all

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}")


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.name in _DATASETS:
        raise ValueError(f"dataset {info.name!r} is registered twice")
    _DATASETS[info.name] = info
    return info


def get_dataset(name: str) -> DatasetInfo:
    _import_builtin_datasets()
    if name not in _DATASETS:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


def dataset_names() -> list[str]:
    _import_builtin_datasets()
    return sorted(_DATASETS)


def default_data_dir() -> Path:
    """`$SSL_BENCH_DATA`, else the per-user cache `~/.cache/ssl-bench/data` (XDG_CACHE_HOME honoured)."""
    env = os.environ.get("SSL_BENCH_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "ssl-bench" / "data"


def _import_builtin_datasets() -> None:
    # Each module registers its datasets on import.
    import ssl_bench.data.audio  # noqa: F401
    import ssl_bench.data.digits  # noqa: F401
    import ssl_bench.data.mnist1d  # noqa: F401
    import ssl_bench.data.synthetic  # noqa: F401
    import ssl_bench.data.vision  # noqa: F401
