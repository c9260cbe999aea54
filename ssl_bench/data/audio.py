"""`bird10`: a local folder of labeled recordings, cut into overlapping windows, split by recording.

The folder (`<data_dir>`) holds either

- class sub-folders, `<data_dir>/<class>/<recording>.wav` (any depth below the class folder; files with a
  suffix in `AUDIO_SUFFIXES`, other files are ignored), or
- a CSV manifest (`<data_dir>/manifest.csv`, or `-d manifest=<path>`) with a header row and the columns
  `file,label[,split]`; `file` is relative to the manifest's folder (or absolute) and may be in any
  format soundfile reads; `split`, when present, is `train` or `test` for every row.

Each recording is read with soundfile, mixed down to mono, resampled with torchaudio to `sample_rate`
and cut into windows of `window_ms` with `overlap` (hop = window × (1 − overlap)); the tail that does not
fill a last window is dropped. A recording shorter than one window is zero-padded to one window
(`short=pad`, the default) or left out (`short=skip`); neither ever fails.

Test recordings are those marked `test` in the manifest; without a split column, a fixed share
(`test_fraction`) of each class's recordings is held out, drawn from a generator seeded by the class name
(the same for every run seed). All windows of a recording carry its id as their group, so the harness
draws validation and labeled sets by recording, never by window, and reports per-recording accuracy.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from ssl_bench.config import build_config
from ssl_bench.data.registry import DataArrays, DatasetInfo
from ssl_bench.errors import UserError

AUDIO_SUFFIXES = frozenset(".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64".split())
MANIFEST = "manifest.csv"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class AudioOptions:
    sample_rate: int = 44100  # Hz; every recording is resampled to it
    window_ms: float = 500.0  # window length in milliseconds
    overlap: float = 0.9  # share of a window that the next one overlaps, in [0, 1) (0.9 -> 50 ms hop)
    short: str = "pad"  # recordings shorter than one window: pad (with zeros, to one window) | skip
    manifest: str = (
        ""  # CSV with columns file,label[,split]; "" = <data_dir>/manifest.csv if present, else class folders
    )
    test_fraction: float = 0.2  # share of each class's recordings held out as test when nothing marks a split

    def __post_init__(self) -> None:
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) or self.sample_rate < 1:
            raise ValueError(f"sample_rate must be a positive whole number of Hz, got {self.sample_rate!r}")
        if not self.window_ms > 0:
            raise ValueError(f"window_ms must be positive, got {self.window_ms!r}")
        if self.window < 1:
            raise ValueError(f"window_ms={self.window_ms} at sample_rate={self.sample_rate} is shorter than one sample")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if self.short not in ("pad", "skip"):
            raise ValueError(f"short must be pad or skip, got {self.short!r}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")

    @property
    def window(self) -> int:
        return window_samples(self.sample_rate, self.window_ms)

    @property
    def hop(self) -> int:
        return hop_samples(self.window, self.overlap)


def window_samples(sample_rate: int, window_ms: float) -> int:
    """Window length in samples."""
    return round(sample_rate * window_ms / 1000)


def hop_samples(window: int, overlap: float) -> int:
    """Samples between the starts of consecutive windows."""
    return max(1, round(window * (1 - overlap)))


# --------------------------------------------------------------------------------------------------
# Windows


def frame(signal: torch.Tensor, window: int, hop: int, short: str = "pad") -> torch.Tensor:
    """Windows (W, window) of a 1-D signal: starts 0, hop, 2·hop, … while a whole window fits.

    A signal shorter than one window gives one zero-padded window (`pad`) or none (`skip`).
    """
    if len(signal) < window:
        if short == "skip":
            return signal.new_zeros(0, window)
        return torch.nn.functional.pad(signal, (0, window - len(signal)))[None]  # (1, window)
    return signal.unfold(0, window, hop)  # (1 + (L - window) // hop, window)


def windowed_arrays(
    signals: list[torch.Tensor],
    labels: list[int],
    is_test: list[bool],
    window: int,
    hop: int,
    short: str,
    class_names: tuple[str, ...],
    what: str,
) -> DataArrays:
    """Cut recordings into windows: x (N, 1, window) float32, y (N,), and as group of each window the id of
    its recording (its position in `signals`, so train and test ids never coincide)."""

    def stack(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frames = [frame(signals[i], window, hop, short) for i in ids]  # each (W_i, window)
        x = torch.cat([torch.zeros(0, window), *frames]).unsqueeze(1)  # (N, 1, window)
        y = torch.cat(
            [torch.zeros(0, dtype=torch.long)] + [torch.full((len(f),), labels[i]) for i, f in zip(ids, frames)]
        )
        g = torch.cat([torch.zeros(0, dtype=torch.long)] + [torch.full((len(f),), i) for i, f in zip(ids, frames)])
        return x.float().contiguous(), y, g

    x_tr, y_tr, g_tr = stack([i for i, test in enumerate(is_test) if not test])
    x_te, y_te, g_te = stack([i for i, test in enumerate(is_test) if test])
    for side, y in (("training", y_tr), ("test", y_te)):
        if len(y) == 0:
            raise UserError(
                f"{what}: no {side} windows (no {side} recording, or all are shorter than one window and short=skip)"
            )
    return DataArrays(x_tr, y_tr, x_te, y_te, groups_train=g_tr, groups_test=g_te, class_names=class_names)


# --------------------------------------------------------------------------------------------------
# Recordings on disk


@dataclass(frozen=True)
class Recording:
    path: Path
    label: str
    split: str | None  # "train" | "test" | None (held out by test_fraction)


def read_recording(path: Path, sample_rate: int) -> torch.Tensor:
    """The recording as mono float32 (L,) at `sample_rate` (soundfile decodes, torchaudio resamples)."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (L, channels)
    except Exception as exc:  # soundfile raises LibsndfileError (a RuntimeError), TypeError, …
        raise UserError(
            f"cannot read recording {path}: {' '.join(str(exc).split())} (truncated or not an audio file?)"
        ) from None
    if len(data) == 0:
        raise UserError(f"recording {path} has no samples (empty or truncated file)")
    signal = torch.from_numpy(data).mean(1)  # (L,) mono
    if rate != sample_rate:
        signal = AF.resample(signal, orig_freq=int(rate), new_freq=sample_rate)
    return signal


def recordings_from_folders(data_dir: Path) -> list[Recording]:
    recordings = []
    for class_dir in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        recordings += [Recording(f, class_dir.name, None) for f in files]
    return recordings


def recordings_from_manifest(manifest: Path) -> list[Recording]:
    where = f"manifest {manifest}"
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [h.strip() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {where}: {exc}") from None
    if not rows or not {"file", "label"} <= set(header):
        raise UserError(
            f"{where}: expected a header row with columns file,label[,split] and at least one row; "
            f"got columns {','.join(header) or '(none)'}"
        )
    has_split = "split" in header
    recordings, seen = [], {}
    for line, row in enumerate(rows, start=2):
        row = {
            k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)
        }  # fields past the header: key None
        if not row["file"] or not row["label"]:
            raise UserError(f"{where}, line {line}: file and label must not be empty")
        split = row.get("split", "").lower() if has_split else None
        if has_split and split not in SPLITS:
            raise UserError(f"{where}, line {line}: split must be train or test, got {row.get('split')!r}")
        path = Path(row["file"]).expanduser()
        path = (path if path.is_absolute() else manifest.parent / path).resolve()
        if path in seen:
            raise UserError(
                f"{where}: {row['file']} is listed twice (lines {seen[path]} and {line}); "
                "a recording must be in one split only"
            )
        seen[path] = line
        recordings.append(Recording(path, row["label"], split))
    missing = [r.path for r in recordings if not r.path.is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"{where} lists {len(missing)} missing file(s): {shown}")
    return recordings


def find_recordings(data_dir: Path, manifest: str) -> list[Recording]:
    if manifest:
        path = Path(manifest).expanduser()
        path = path if path.is_absolute() else data_dir / path
        if not path.is_file():
            raise UserError(f"manifest {path} not found")
        return recordings_from_manifest(path)
    if (data_dir / MANIFEST).is_file():
        return recordings_from_manifest(data_dir / MANIFEST)
    return recordings_from_folders(data_dir) if data_dir.is_dir() else []


def held_out(recordings: list[Recording], class_names: tuple[str, ...], test_fraction: float) -> list[bool]:
    """Which recordings are test: the manifest's split where given, else `test_fraction` of each class
    (at least one, never all), drawn by a generator seeded with the class name."""
    if any(r.split is not None for r in recordings):
        return [r.split == "test" for r in recordings]
    is_test = [False] * len(recordings)
    for name in class_names:
        members = [i for i, r in enumerate(recordings) if r.label == name]
        if len(members) < 2:
            continue  # a single recording stays in training
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))
        for i in rng.choice(members, n_test, replace=False):
            is_test[i] = True
    return is_test


def load_audio_folder(name: str, num_classes: int, data_dir: Path, opts: AudioOptions, howto: str) -> DataArrays:
    recordings = find_recordings(data_dir, opts.manifest)
    if not recordings:
        raise UserError(
            f"{name}: no recordings found in {data_dir}; expected class sub-folders {data_dir}/<class>/*.wav "
            f"(or .flac, .ogg, …) or a CSV manifest {data_dir / MANIFEST} with columns file,label[,split]; {howto}"
        )
    class_names = tuple(sorted({r.label for r in recordings}))
    if len(class_names) != num_classes:
        raise UserError(
            f"{name} has {num_classes} classes, but {data_dir} has {len(class_names)}: {', '.join(class_names)}"
        )
    is_test = held_out(recordings, class_names, opts.test_fraction)
    signals = [read_recording(r.path, opts.sample_rate) for r in recordings]
    labels = [class_names.index(r.label) for r in recordings]
    return windowed_arrays(signals, labels, is_test, opts.window, opts.hop, opts.short, class_names, name)


def audio_folder_dataset(
    name: str,
    num_classes: int,
    description: str,
    *,
    val_size: int,
    default_steps: int,
    default_model: str = "tinycnn",
    howto: str = "pass --data-dir to point at the folder",
) -> DatasetInfo:
    """A `DatasetInfo` for a folder of labeled recordings with `num_classes` classes (pass it to
    `register_dataset`, or name it in an entry point: docs/datasets.md); `bird10` is one. `val_size` counts
    windows; validation takes whole recordings."""

    def load(data_dir: Path, download: bool = True, **options) -> DataArrays:
        opts = build_config(AudioOptions, options, f"dataset {name!r}")
        return load_audio_folder(name, num_classes, Path(data_dir), opts, howto)

    def available(data_dir: Path) -> bool:
        data_dir = Path(data_dir)
        if (data_dir / MANIFEST).is_file():
            return True
        return data_dir.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in data_dir.glob("*/**/*"))

    defaults = AudioOptions()
    return DatasetInfo(
        name=name,
        modality="signal",
        shape=(1, defaults.window),
        num_classes=num_classes,
        val_size=val_size,
        default_model=default_model,
        default_steps=default_steps,
        description=description,
        load=load,
        available=available,
        offline=False,
    )


BIRD10 = audio_folder_dataset(
    "bird10",
    10,
    "Bird10 bird songs (10 species of BirdLifeCLEF 2016), local recordings cut into 500 ms windows",
    val_size=5000,
    default_steps=2000,
    default_model="bird10net",
    howto="ssl-bench cannot download Bird10: get it from its authors (Glotin et al. 2017) and see docs/datasets.md",
)
