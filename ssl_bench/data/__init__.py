"""Datasets: a registry of in-memory datasets, their splits and normalization."""

from ssl_bench.data.registry import (
    DataArrays,
    DatasetInfo,
    dataset_names,
    default_data_dir,
    get_dataset,
    register_dataset,
)
from ssl_bench.data.splits import Split, make_split

__all__ = [
    "DataArrays",
    "DatasetInfo",
    "Split",
    "dataset_names",
    "default_data_dir",
    "get_dataset",
    "make_split",
    "register_dataset",
]
