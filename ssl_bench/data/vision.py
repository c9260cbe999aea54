"""`mnist`, `svhn`, `cifar10`: torchvision's downloads, read once into a compact uint8 cache.

Files live under `<data_dir>` in torchvision's own layout, so an existing torchvision root works as
`--data-dir`:

    mnist    MNIST/raw/{train,t10k}-images-idx3-ubyte, …-labels-idx1-ubyte   (plain or .gz)
    svhn     train_32x32.mat, test_32x32.mat, extra_32x32.mat (only with -d extra=true)
    cifar10  cifar-10-batches-py/data_batch_1 … data_batch_5, test_batch

Missing files are fetched with torchvision's download functions (its URLs, mirrors and checksums) unless
`--no-download`. The raw files are parsed here (not by torchvision's dataset classes, whose checksum test
refuses anything but the official files) and each part is cached as `<data_dir>/ssl-bench-cache/
<dataset>-<part>.pt` = uint8 images (N, C, H, W) and int64 labels (N,). The cache stores a fingerprint
of its raw files (name, size, mtime, and a hash of their first and last MiB) and is rebuilt whenever
that changes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ssl_bench.config import build_config
from ssl_bench.data.registry import DataArrays, DatasetInfo
from ssl_bench.errors import UserError

CACHE_DIR = "ssl-bench-cache"
CACHE_FORMAT = 1  # bump when a reader changes what it produces
FINGERPRINT_BYTES = 1 << 20  # bytes hashed at each end of a raw file


class CorruptFile(UserError):
    """A raw file exists but is not what its format says (truncated, wrong magic, wrong shapes)."""


# --------------------------------------------------------------------------------------------------
# Readers of the real on-disk formats


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format), plain or gzip-compressed, as an array of `ndim` dims.

    Layout: 2 zero bytes, type code 0x08 (ubyte), number of dims, dims as big-endian int32, then the data.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (
        OSError,
        EOFError,
        zlib.error,
    ) as exc:  # BadGzipFile is an OSError; a cut .gz ends in EOFError, a damaged one in zlib.error
        raise CorruptFile(
            f"{path} is not a readable {'gzip ' if path.suffix == '.gz' else ''}file ({exc}); "
            "delete it and download again"
        ) from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise CorruptFile(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes (bad header); delete it and download again"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise CorruptFile(
            f"{path} has {len(raw)} bytes, its header {dims} says {expected} (truncated?); delete it and download again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN `*_32x32.mat` (MATLAB v5): X (32, 32, 3, N) uint8, y (N, 1) in 1..10, where 10 means digit 0."""
    from scipy.io import loadmat  # local: 0.4 s to import, for SVHN's files only

    try:
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except Exception as exc:  # scipy raises ValueError, OSError, KeyError, zlib errors… for damaged files
        raise CorruptFile(
            f"{path} is not a readable SVHN .mat file ({type(exc).__name__}: {exc}); delete it and download again"
        ) from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise CorruptFile(
            f"{path}: expected X of shape (32, 32, 3, N) uint8 and N labels, "
            f"got X {x.shape} {x.dtype} and {y.size} labels"
        )
    y = y.reshape(-1).astype(np.int64)
    if y.min() < 1 or y.max() > 10:
        raise CorruptFile(f"{path}: SVHN labels must be 1..10, found {y.min()}..{y.max()}")
    return x.transpose(3, 2, 0, 1), np.where(y == 10, 0, y)  # (N, 3, 32, 32): X[h, w, c, n] -> [n, c, h, w]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of numpy arrays, lists and bytes) and refuses any other class,
    so a malicious file in the data folder cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python batch: a pickled dict with `data` (N, 3072) uint8 (R, G, B planes) and `labels`."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
        data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
    except Exception as exc:  # truncation gives EOFError / UnpicklingError; other damage anything
        raise CorruptFile(
            f"{path} is not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
            "delete it and download again"
        ) from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise CorruptFile(
            f"{path}: expected data (N, 3072) uint8 and N labels, "
            f"got {data.shape} {data.dtype} and {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise CorruptFile(f"{path}: CIFAR-10 labels must be 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------------------------------
# What each dataset's files are, how to read a part and how to download it


@dataclass(frozen=True)
class Source:
    name: str
    subdir: str  # where the raw files are, relative to data_dir ("" = data_dir itself)
    parts: dict[str, tuple[str, ...]]  # part -> its raw files, relative to subdir
    read: Callable[[list[Path]], tuple[np.ndarray, np.ndarray]]  # files of one part -> (x uint8 (N,C,H,W), y)
    download: Callable[[Path, tuple[str, ...]], None]  # (data_dir, parts) -> fetches them with torchvision
    by_hand: str  # how to get the files without ssl-bench; "{data_dir}" is filled in
    gz_ok: bool = False  # a raw file may also be present gzip-compressed, as `<name>.gz`

    def find(self, data_dir: Path, filename: str) -> Path | None:
        """The raw file as it is on disk: plain, or (where the format allows) gzip-compressed."""
        path = data_dir / self.subdir / filename
        candidates = (path, path.with_name(path.name + ".gz")) if self.gz_ok else (path,)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        return None

    def missing(self, data_dir: Path, parts: tuple[str, ...]) -> list[str]:
        return [f for part in parts for f in self.parts[part] if self.find(data_dir, f) is None]

    def missing_message(self, data_dir: Path, parts: tuple[str, ...], why: str, offline: bool = False) -> str:
        where = data_dir / self.subdir
        remedy = (
            "run without --no-download to fetch them with torchvision, or " if offline else ""
        ) + self.by_hand.format(data_dir=data_dir)
        return f"{self.name}: {why}: expected {', '.join(self.missing(data_dir, parts))} in {where}; {remedy}"


def _read_mnist(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(files[0], 3), read_idx(files[1], 1)
    if len(images) != len(labels) or images.shape[1:] != (28, 28):
        raise CorruptFile(
            f"{files[0]} holds {images.shape} images, {files[1]} {len(labels)} labels; expected (N, 28, 28) and N"
        )
    if labels.max(initial=0) > 9:
        raise CorruptFile(f"{files[1]}: MNIST labels must be 0..9, found {labels.max()}")
    return images[:, None], labels.astype(np.int64)  # (N, 1, 28, 28)


def _read_svhn(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    return read_svhn_mat(files[0])


def _read_cifar(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    batches = [read_cifar_batch(f) for f in files]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _download_mnist(data_dir: Path, parts: tuple[str, ...]) -> None:
    from torchvision.datasets import MNIST  # local: about 1 s to import, for downloads only
    from torchvision.datasets import utils as tvu

    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for filename, md5 in MNIST.resources:  # torchvision's MNIST.download, minus its all-or-nothing check
        if (raw / filename).is_file() or (raw / filename.removesuffix(".gz")).is_file():
            continue  # already there, compressed or not
        errors = []
        for mirror in MNIST.mirrors:
            try:
                tvu.download_and_extract_archive(
                    f"{mirror}{filename}", download_root=str(raw), filename=filename, md5=md5
                )
                break
            except OSError as exc:  # URLError is an OSError
                errors.append(f"{mirror}: {exc}")
        else:
            raise OSError("; ".join(errors))


def _download_svhn(data_dir: Path, parts: tuple[str, ...]) -> None:
    from torchvision.datasets import SVHN  # local: about 1 s to import, for downloads only
    from torchvision.datasets import utils as tvu

    for part in parts:
        url, filename, md5 = SVHN.split_list[part]
        if not (data_dir / filename).is_file():
            tvu.download_url(url, str(data_dir), filename, md5)


def _download_cifar(data_dir: Path, parts: tuple[str, ...]) -> None:
    from torchvision.datasets import CIFAR10  # local: about 1 s to import, for downloads only
    from torchvision.datasets import utils as tvu

    tvu.download_and_extract_archive(CIFAR10.url, str(data_dir), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)


MNIST_SOURCE = Source(
    name="mnist",
    subdir="MNIST/raw",
    parts={
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    },
    read=_read_mnist,
    download=_download_mnist,
    by_hand="copy the four MNIST idx files (plain or .gz; "
    "torchvision's mirror: https://ossci-datasets.s3.amazonaws.com/mnist/) there",
    gz_ok=True,
)
SVHN_SOURCE = Source(
    name="svhn",
    subdir="",
    parts={"train": ("train_32x32.mat",), "test": ("test_32x32.mat",), "extra": ("extra_32x32.mat",)},
    read=_read_svhn,
    download=_download_svhn,
    by_hand="download them from http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits) into that folder",
)
CIFAR10_SOURCE = Source(
    name="cifar10",
    subdir="cifar-10-batches-py",
    parts={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    read=_read_cifar,
    download=_download_cifar,
    by_hand="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it in {data_dir}",
)


# --------------------------------------------------------------------------------------------------
# The cache


def raw_fingerprint(files: list[Path]) -> str:
    """Cheap content fingerprint: name, size, mtime and a hash of the first and last MiB of each file."""
    h = hashlib.sha256(f"format {CACHE_FORMAT}".encode())
    for path in files:
        stat = path.stat()
        h.update(f"|{path.name}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
        with open(path, "rb") as f:
            h.update(f.read(FINGERPRINT_BYTES))
            if stat.st_size > FINGERPRINT_BYTES:
                f.seek(max(FINGERPRINT_BYTES, stat.st_size - FINGERPRINT_BYTES))
                h.update(f.read())
    return h.hexdigest()


def load_part(source: Source, data_dir: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One part (train / test / extra) as (x uint8 (N, C, H, W), y int64 (N,)), from the cache when it is
    current, else parsed from the raw files and cached."""
    files = [source.find(data_dir, f) for f in source.parts[part]]
    assert all(files), "callers check for missing files first"
    fingerprint = raw_fingerprint(files)
    cache = data_dir / CACHE_DIR / f"{source.name}-{part}.pt"
    if cache.is_file():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol")  # not torch's: rebuilt below
                stored = torch.load(cache, weights_only=True)
            if stored["fingerprint"] == fingerprint:
                return stored["x"], stored["y"]
        except Exception:  # an unreadable cache (e.g. a killed write) is rebuilt below
            pass
    x, y = source.read(files)
    x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        torch.save({"fingerprint": fingerprint, "x": x, "y": y}, tmp)
        os.replace(tmp, cache)  # atomic: parallel runs never see half a cache
    except OSError as exc:  # a read-only data folder still works, only slower
        warnings.warn(f"could not write the cache {cache} ({exc}); the raw files will be parsed on every run")
    return x, y


def load_vision(
    source: Source, data_dir: Path, download: bool, parts: tuple[str, ...]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if source.missing(data_dir, parts):
        if not download:
            raise UserError(
                source.missing_message(data_dir, parts, "files not found and --no-download given", offline=True)
            )
        try:
            source.download(data_dir, parts)
        except (OSError, RuntimeError) as exc:  # no network, checksum mismatch, …
            raise UserError(
                source.missing_message(data_dir, parts, f"download failed ({' '.join(str(exc).split())})")
            ) from None
        if source.missing(data_dir, parts):
            raise UserError(source.missing_message(data_dir, parts, "the download did not produce the files"))
    return {part: load_part(source, data_dir, part) for part in parts}


# --------------------------------------------------------------------------------------------------
# The registered datasets


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class SVHNOptions:
    extra: bool = False  # add the 531,131 `extra` images (extra_32x32.mat, 1.3 GB) to the unlabeled set

    def __post_init__(self) -> None:
        if not isinstance(self.extra, bool):
            raise ValueError(f"extra must be true or false, got {self.extra!r}")


def _arrays(parts: dict, class_names: tuple[str, ...]) -> DataArrays:
    (x_tr, y_tr), (x_te, y_te) = parts["train"], parts["test"]
    x_extra = parts["extra"][0] if "extra" in parts else None
    return DataArrays(x_tr, y_tr, x_te, y_te, x_extra=x_extra, class_names=class_names)


DIGIT_NAMES = tuple(map(str, range(10)))
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_mnist(data_dir: Path, download: bool = True, **options) -> DataArrays:
    build_config(NoOptions, options, "dataset 'mnist'")
    return _arrays(load_vision(MNIST_SOURCE, Path(data_dir), download, ("train", "test")), DIGIT_NAMES)


def load_svhn(data_dir: Path, download: bool = True, **options) -> DataArrays:
    opts = build_config(SVHNOptions, options, "dataset 'svhn'")
    parts = ("train", "test", "extra") if opts.extra else ("train", "test")
    return _arrays(load_vision(SVHN_SOURCE, Path(data_dir), download, parts), DIGIT_NAMES)


def load_cifar10(data_dir: Path, download: bool = True, **options) -> DataArrays:
    build_config(NoOptions, options, "dataset 'cifar10'")
    return _arrays(load_vision(CIFAR10_SOURCE, Path(data_dir), download, ("train", "test")), CIFAR10_NAMES)


def _available(source: Source) -> Callable[[Path], bool]:
    return lambda data_dir: not source.missing(Path(data_dir), ("train", "test"))


MNIST = DatasetInfo(
    name="mnist",
    modality="image",
    shape=(1, 28, 28),
    num_classes=10,
    val_size=5000,
    default_model="smallcnn",
    default_steps=5000,
    description="MNIST handwritten digits (60,000 train / 10,000 test), via torchvision",
    load=load_mnist,
    available=_available(MNIST_SOURCE),
    offline=False,
)
SVHN = DatasetInfo(
    name="svhn",
    modality="image",
    shape=(3, 32, 32),
    num_classes=10,
    val_size=7326,
    default_model="largecnn",
    default_steps=10000,
    description=(
        "SVHN house numbers (73,257 train / 26,032 test; -d extra=true adds 531,131 unlabeled), via torchvision"
    ),
    load=load_svhn,
    available=_available(SVHN_SOURCE),
    offline=False,
)
CIFAR10 = DatasetInfo(
    name="cifar10",
    modality="image",
    shape=(3, 32, 32),
    num_classes=10,
    val_size=5000,
    default_model="largecnn",
    default_steps=20000,
    description="CIFAR-10 natural images (50,000 train / 10,000 test), via torchvision",
    load=load_cifar10,
    available=_available(CIFAR10_SOURCE),
    offline=False,
)
