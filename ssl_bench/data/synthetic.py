"""`chirps`: synthetic audio, 10 classes of chirp calls in noise, cut into windows exactly like `bird10`
(its 500 ms windows with 90 % overlap, a 50 ms hop, by default).

Class `c` is a call shape: a linear frequency sweep across its own band, from 0.05 + 0.08·c to
0.25 + 0.08·c of the Nyquist frequency (so any sample rate works; neighbouring bands overlap), rising for
even `c` and falling for odd `c`. A recording is `duration_s` of white Gaussian noise (std 1) with 2 to 4
calls of its class at random times; each call lasts 40–120 ms under a Hann envelope, with start and end
frequencies jittered by ±10 % and an amplitude that gives `snr_db` (call power over noise power, during
the call). Many windows of a recording hold no call, so per-window accuracy stays well below
per-recording accuracy, as with real bird songs.

The data are fixed by `seed` (not by the run's `--seed`): `train_recordings` and `test_recordings` per
class, recording ids as groups, so splits are made by recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_bench.config import build_config
from ssl_bench.data.audio import AudioOptions, hop_samples, window_samples, windowed_arrays
from ssl_bench.data.registry import DataArrays, DatasetInfo

NUM_CLASSES = 10
BANDS = tuple((0.05 + 0.08 * c, 0.25 + 0.08 * c) for c in range(10))  # (low, high) per class, fractions of Nyquist
CALLS_PER_RECORDING = (2, 4)  # inclusive range
CALL_MS = (40.0, 120.0)  # call duration range
JITTER = 0.10  # relative jitter of the start and end frequencies


@dataclass(frozen=True)
class ChirpOptions:
    sample_rate: int = 4000  # Hz
    duration_s: float = 1.0  # length of each recording
    window_ms: float = AudioOptions.window_ms  # window length: bird10's 500 ms
    overlap: float = (
        AudioOptions.overlap
    )  # share of a window that the next one overlaps, in [0, 1): bird10's 0.9 (50 ms hop)
    train_recordings: int = 40  # per class
    test_recordings: int = 10  # per class
    snr_db: float = 0.0  # call power over noise power during a call, in dB
    seed: int = 0  # generates the data set (independent of the run's --seed)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "train_recordings", "test_recordings", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and name != "seed"):
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if self.window < 1 or self.window > self.length:
            raise ValueError(
                f"window_ms must be positive and at most the recording ({1000 * self.duration_s:g} ms), "
                f"got {self.window_ms!r}"
            )
        if round(self.sample_rate * CALL_MS[0] / 1000) < 8:
            raise ValueError(f"sample_rate {self.sample_rate} is too low for {CALL_MS[0]:g} ms calls")

    @property
    def length(self) -> int:
        return round(self.sample_rate * self.duration_s)

    @property
    def window(self) -> int:
        return window_samples(self.sample_rate, self.window_ms)

    @property
    def hop(self) -> int:
        return hop_samples(self.window, self.overlap)


def chirp(f0: float, f1: float, n: int, sample_rate: int) -> np.ndarray:
    """A unit-amplitude linear sweep from f0 to f1 Hz over n samples, under a Hann envelope."""
    t = np.arange(n) / sample_rate
    duration = n / sample_rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
    return np.sin(phase) * np.hanning(n)


def recording(label: int, opts: ChirpOptions, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One recording (L,) of class `label`, noise plus 2–4 calls, and where its calls are: (start, end) samples."""
    nyquist = opts.sample_rate / 2
    low, high = BANDS[label]
    f_start, f_end = (low, high) if label % 2 == 0 else (high, low)
    signal = rng.standard_normal(opts.length)
    calls = []
    for _ in range(rng.integers(CALLS_PER_RECORDING[0], CALLS_PER_RECORDING[1] + 1)):
        n = min(opts.length, round(opts.sample_rate * rng.uniform(*CALL_MS) / 1000))
        f0, f1 = (f * nyquist * (1 + rng.uniform(-JITTER, JITTER)) for f in (f_start, f_end))
        call = chirp(f0, f1, n, opts.sample_rate)
        call *= 10 ** (opts.snr_db / 20) / np.sqrt(np.mean(call**2))  # noise power is 1
        start = rng.integers(0, opts.length - n + 1)
        signal[start : start + n] += call
        calls.append((int(start), int(start + n)))
    return signal.astype(np.float32), calls


def generate(opts: ChirpOptions) -> tuple[list[int], list[bool], list[np.ndarray], list[list[tuple[int, int]]]]:
    """The data set of `opts`: labels, test flags, signals and call positions of every recording."""
    rng = np.random.default_rng(opts.seed)
    counts = (opts.train_recordings, opts.test_recordings)
    labels = [c for n in counts for c in range(NUM_CLASSES) for _ in range(n)]
    is_test = [test for test, n in zip((False, True), counts) for _ in range(NUM_CLASSES * n)]
    signals, calls = zip(*(recording(c, opts, rng) for c in labels))
    return labels, is_test, list(signals), list(calls)


def call_shares(opts: ChirpOptions, test: bool = True) -> np.ndarray:
    """For each window of the test (or training) split, in `windowed_arrays`' order, the largest share of
    one call it holds (0 = no call: such a window carries its recording's label but no evidence of it)."""
    labels, is_test, _, calls = generate(opts)
    starts = [s for s in range(0, opts.length - opts.window + 1, opts.hop)] or [
        0
    ]  # `frame`: one padded window if short
    return np.array(
        [
            max(max(0, min(e, s + opts.window) - max(b, s)) / (e - b) for b, e in calls[i])
            for i in range(len(labels))
            if is_test[i] == test
            for s in starts
        ]
    )


def load_chirps(data_dir: Path | None = None, download: bool = True, **options) -> DataArrays:
    opts = build_config(ChirpOptions, options, "dataset 'chirps'")
    labels, is_test, signals, _ = generate(opts)
    signals = [torch.from_numpy(s) for s in signals]
    names = tuple(f"{'up' if c % 2 == 0 else 'down'}{c // 2}" for c in range(NUM_CLASSES))
    return windowed_arrays(signals, labels, is_test, opts.window, opts.hop, "pad", names, "chirps")


CHIRPS = DatasetInfo(
    name="chirps",
    modality="signal",
    shape=(1, ChirpOptions().window),
    num_classes=NUM_CLASSES,
    val_size=880,  # windows: 80 recordings of 11
    default_model="tinycnn",
    default_steps=600,
    description=(
        "synthetic audio: 10 classes of chirps in noise, 4 kHz, 1 s recordings in 500 ms windows (50 ms hop), offline"
    ),
    load=load_chirps,
)
