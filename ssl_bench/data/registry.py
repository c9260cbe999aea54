"""The dataset registry: what a dataset is (modality, shape, classes, split sizes) and how it loads.

Datasets are found by name the way methods are (ssl_bench.registries): the built-ins from `BUILTIN_DATASETS`,
another installed package's from the entry-point group `ssl_bench.datasets` (docs/datasets.md), each imported
only when its name is asked for; `register_dataset` adds one in the running process.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Callable

import torch

from ssl_bench import registries
from ssl_bench.errors import UserError

MODALITIES = ("image", "signal")
ENTRY_POINT_GROUP = "ssl_bench.datasets"

# The built-in datasets, name -> "module:attribute" (a `DatasetInfo`). Unlike the built-in methods they are
# not entry points of this project's pyproject.toml: entry points are read from an installation's metadata,
# so a new built-in there would need a reinstall, and a checkout run with another checkout's environment
# would not see it. A third-party package uses the entry-point group (docs/datasets.md).
BUILTIN_DATASETS = {
    "bird10": "ssl_bench.data.audio:BIRD10",
    "chirps": "ssl_bench.data.synthetic:CHIRPS",
    "cifar10": "ssl_bench.data.vision:CIFAR10",
    "digits": "ssl_bench.data.digits:DIGITS",
    "mnist": "ssl_bench.data.vision:MNIST",
    "mnist1d": "ssl_bench.data.mnist1d:MNIST1D",
    "svhn": "ssl_bench.data.vision:SVHN",
}


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
    val_size: int  # validation samples carved from train first (docs/datasets.md)
    default_model: str
    default_steps: int
    description: str
    load: Callable[..., DataArrays]
    available: Callable[[Path], bool] = field(default=lambda data_dir: True)  # files present locally?
    offline: bool = True  # needs no files at all

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}")


_DATASETS: dict[str, DatasetInfo] = {}  # registered in this process (`register_dataset`)
_LOADED: dict[str, DatasetInfo] = {}  # built-in and installed ones, once imported


@functools.cache
def _dataset_entry_points() -> dict[str, EntryPoint]:
    return registries.find("dataset", ENTRY_POINT_GROUP, BUILTIN_DATASETS)


def refresh_datasets() -> None:
    """Forget the cached entry points and loaded datasets (after installing a package in this process)."""
    _dataset_entry_points.cache_clear()
    _LOADED.clear()


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add `info` in this process (a built-in or installed dataset's name is refused)."""
    if info.name in _DATASETS or info.name in _dataset_entry_points():
        raise ValueError(f"dataset {info.name!r} is registered twice")
    _DATASETS[info.name] = info
    return info


def get_dataset(name: str) -> DatasetInfo:
    if name in _DATASETS:
        return _DATASETS[name]
    if name not in _LOADED:
        eps = _dataset_entry_points()
        if name not in eps:
            raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
        _LOADED[name] = _check(name, eps[name], registries.load("dataset", eps[name]))
    return _LOADED[name]


def _check(name: str, ep: EntryPoint, info: object) -> DatasetInfo:
    where = f"dataset {name!r} from {registries.origin(ep)} ({ep.value})"
    if not isinstance(info, DatasetInfo):
        raise UserError(f"{where} is not a ssl_bench.data.DatasetInfo: {type(info).__name__}")
    if info.name != name:
        raise UserError(f"{where} is named {info.name!r}; its entry point must have that name")
    return info


def dataset_names() -> list[str]:
    return sorted(set(_DATASETS) | set(_dataset_entry_points()))


def default_data_dir() -> Path:
    """`$SSL_BENCH_DATA`, else the per-user cache `~/.cache/ssl-bench/data` (XDG_CACHE_HOME honoured)."""
    env = os.environ.get("SSL_BENCH_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "ssl-bench" / "data"
