"""Datasets on files these tests write in the real on-disk formats (MNIST idx, SVHN .mat, CIFAR-10 pickles,
WAV folders, CSV manifests), and the generated ones (mnist1d, chirps), checked against independent
computations: explicit index arithmetic, analytic sines, spectra, published baselines."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from ssl_bench.cli import cli
from ssl_bench.data import audio, dataset_names, get_dataset, make_split, vision
from ssl_bench.errors import UserError

RNG = np.random.default_rng(1234)


# --------------------------------------------------------------------------------------------------
# Writers of the real formats (written from the format specifications, not with the code under test)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """IDX: 0x0000, type 0x08 (ubyte), ndim, big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = False) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        write_idx(raw / name, array, gz=gz)
    return arrays


def write_svhn(root: Path, parts=("train", "test"), n: int = 30) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for part in parts:
        X = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN stores (H, W, C, N)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 is digit 0
        savemat(root / f"{part}_32x32.mat", {"X": X, "y": y})
        out[part] = (X, y)
    return out


def write_cifar(root: Path, n_per_batch: int = 10) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = RNG.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [(b * n_per_batch + i) % 10 for i in range(n_per_batch)]  # every class in the training batches
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "batch_label": name,
                    "labels": labels,
                    "data": data,
                    "filenames": [f"{i}.png" for i in range(n_per_batch)],
                },
                f,
                protocol=2,
            )
        out[name] = (data, labels)
    return out


def write_wav(path: Path, signal: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal, rate, subtype="FLOAT")  # float WAV: no quantization, exact round trip
    return path


def write_bird_folder(
    root: Path, per_class: int = 4, rate: int = 8000, seconds: float = 0.5, classes: int = 10
) -> Path:
    for c in range(classes):
        for r in range(per_class):
            t = np.arange(int(rate * seconds)) / rate
            write_wav(
                root / f"species{c}" / f"rec{r}.wav",
                0.5 * np.sin(2 * np.pi * (300 + 150 * c) * t) + 0.05 * RNG.standard_normal(len(t)),
                rate,
            )
    return root


def load(name: str, data_dir: Path | None = None, download: bool = False, **options):
    return get_dataset(name).load(data_dir=data_dir, download=download, **options)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --------------------------------------------------------------------------------------------------
# MNIST (idx, plain and gzip), the cache, missing files and downloads


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_load_as_written(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    data = load("mnist", tmp_path)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (60, 1, 28, 28)
    assert np.array_equal(data.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(data.x_test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.y_test.dtype == torch.int64 and data.groups_train is None


def test_cache_is_used_and_rebuilt_when_raw_files_change(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path)
    first = load("mnist", tmp_path)
    assert sorted(p.name for p in (tmp_path / "ssl-bench-cache").iterdir()) == ["mnist-test.pt", "mnist-train.pt"]

    parsed = []
    real_read_idx = vision.read_idx
    monkeypatch.setattr(vision, "read_idx", lambda *a: parsed.append(a) or real_read_idx(*a))
    again = load("mnist", tmp_path)
    assert parsed == [], "an unchanged raw file must come from the cache"
    assert torch.equal(again.x_train, first.x_train)

    # same size, new content: the fingerprint changes, the cache is rebuilt from the new file
    new_images = 255 - arrays["train-images-idx3-ubyte"]
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", new_images)
    rebuilt = load("mnist", tmp_path)
    assert len(parsed) == 2  # the train part (images + labels) was parsed again, the test part was not
    assert np.array_equal(rebuilt.x_train[:, 0].numpy(), new_images)
    assert torch.equal(rebuilt.x_test, first.x_test)


def test_a_damaged_cache_is_rebuilt(tmp_path):
    arrays = write_mnist(tmp_path)
    load("mnist", tmp_path)
    (tmp_path / "ssl-bench-cache" / "mnist-train.pt").write_bytes(b"not a torch file")
    data = load("mnist", tmp_path)
    assert np.array_equal(data.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
        (lambda p: p.write_bytes(b"\x00\x00\x0d\x03" + p.read_bytes()[4:]), "bad header"),
        (lambda p: p.write_bytes(b"\x00\x00"), "bad header"),
    ],
)
def test_corrupt_idx_files_are_refused_clearly(tmp_path, damage, message):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    damage(path)
    with pytest.raises(UserError, match=message) as err:
        load("mnist", tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_gzip_is_refused_clearly(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UserError, match="not a readable gzip file"):
        load("mnist", tmp_path)


def test_missing_files_offline_name_the_files_the_folder_and_the_remedy(tmp_path):
    with pytest.raises(UserError) as err:
        load("mnist", tmp_path, download=False)
    message = str(err.value)
    for part in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(tmp_path / "MNIST" / "raw"), "--no-download"):
        assert part in message
    assert "\n" not in message


def test_download_uses_torchvision_and_then_loads(tmp_path, monkeypatch):
    """With files missing and download on, torchvision's downloader fetches MNIST's official files (here a
    stand-in for the network writes test files under the requested names); torchvision extracts them."""
    import torchvision.datasets.utils as tvu

    source = tmp_path / "served"
    arrays = write_mnist(source, gz=True)
    requested = []

    def fake_download_url(url, root, filename=None, md5=None, **kw):
        requested.append(url)
        Path(root).mkdir(parents=True, exist_ok=True)
        payload = (source / "MNIST" / "raw" / filename).read_bytes()
        Path(root, filename).write_bytes(payload)

    monkeypatch.setattr(tvu, "download_url", fake_download_url)
    data_dir = tmp_path / "data"
    data = load("mnist", data_dir, download=True)
    assert [u.rsplit("/", 1)[1] for u in requested] == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in requested)
    assert np.array_equal(data.x_test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert (data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # extracted by torchvision


def test_download_fetches_only_the_missing_files(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    source = tmp_path / "served"
    write_mnist(source, gz=True)
    data_dir = tmp_path / "data"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):  # the train part is already there
        (data_dir / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        (data_dir / "MNIST" / "raw" / name).write_bytes((source / "MNIST" / "raw" / name).read_bytes())
    requested = []

    def fake_download_url(url, root, filename=None, md5=None, **kw):
        requested.append(filename)
        Path(root, filename).write_bytes((source / "MNIST" / "raw" / filename).read_bytes())

    monkeypatch.setattr(tvu, "download_url", fake_download_url)
    load("mnist", data_dir, download=True)
    assert requested == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(url, *a, **kw):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(UserError, match=r"cifar10: download failed \(.*no network.*\): expected data_batch_1") as err:
        load("cifar10", tmp_path, download=True)
    assert "cifar-10-python.tar.gz" in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------
# SVHN (.mat) and CIFAR-10 (python pickles)


def test_svhn_mat_layout_and_label_10_means_zero(tmp_path):
    written = write_svhn(tmp_path)
    data = load("svhn", tmp_path)
    X, y = written["train"]
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_train.dtype == torch.uint8
    n, c, h, w = 7, 2, 5, 30
    assert data.x_train[n, c, h, w] == X[h, w, c, n]
    assert np.array_equal(data.x_train.numpy(), X.transpose(3, 2, 0, 1))
    assert data.y_train.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert data.x_extra is None


def test_svhn_extra_becomes_unlabeled_data(tmp_path):
    written = write_svhn(tmp_path, parts=("train", "test", "extra"))
    data = load("svhn", tmp_path, extra=True)
    assert np.array_equal(data.x_extra.numpy(), written["extra"][0].transpose(3, 2, 0, 1))
    with pytest.raises(UserError, match="unknown key 'extr'; valid keys: extra"):
        load("svhn", tmp_path, extr=True)


def test_svhn_extra_missing_is_named(tmp_path):
    write_svhn(tmp_path)
    with pytest.raises(UserError, match="expected extra_32x32.mat in"):
        load("svhn", tmp_path, extra=True)


def test_corrupt_svhn_mat_is_refused(tmp_path):
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="not a readable SVHN .mat file"):
        load("svhn", tmp_path)


def test_cifar_batches_load_in_order_with_rgb_planes(tmp_path):
    written = write_cifar(tmp_path)
    data = load("cifar10", tmp_path)
    assert data.x_train.shape == (50, 3, 32, 32) and data.x_test.shape == (10, 3, 32, 32)
    raw2, labels2 = written["data_batch_2"]
    n, c, h, w = 3, 1, 17, 4
    assert data.x_train[10 + n, c, h, w] == raw2[n, c * 1024 + h * 32 + w]  # batch 2 follows batch 1
    assert data.y_train[10:20].tolist() == labels2
    assert data.y_test.tolist() == written["test_batch"][1]
    assert data.class_names[0] == "airplane"


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(UserError, match="refusing to load"):
        load("cifar10", tmp_path)


def test_truncated_cifar_batch_is_refused(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR-10 python batch"):
        load("cifar10", tmp_path)


def test_options_of_datasets_without_options_are_refused(tmp_path):
    with pytest.raises(UserError, match="dataset 'mnist': unknown key 'size'; valid keys: \\(none"):
        load("mnist", tmp_path, size=3)


# --------------------------------------------------------------------------------------------------
# Audio folders and manifests (bird10)

FAST = dict(sample_rate=8000, window_ms=100, overlap=0.5)  # 800-sample windows, 400-sample hop


def test_framing_matches_explicit_slices():
    signal = torch.arange(1000.0)
    windows = audio.frame(signal, 300, 70)
    n = 1 + (1000 - 300) // 70
    assert windows.shape == (n, 300)
    for k in range(n):
        assert torch.equal(windows[k], signal[k * 70 : k * 70 + 300])
    assert audio.frame(signal[:100], 300, 70).tolist() == [list(range(100)) + [0.0] * 200]  # padded
    assert audio.frame(signal[:100], 300, 70, short="skip").shape == (0, 300)


def test_bird10_defaults_are_the_papers():
    opts = audio.AudioOptions()
    assert (opts.window, opts.hop) == (22050, 2205)  # 500 ms at 44.1 kHz, 50 ms hop
    assert get_dataset("bird10").shape == (1, 22050)


def test_class_folders_windows_groups_and_resampling(tmp_path):
    t16 = np.arange(16000) / 16000  # 1 s at 16 kHz: resampled to 8 kHz
    write_wav(tmp_path / "a" / "x.wav", np.sin(2 * np.pi * 440 * t16), 16000)
    t8 = np.arange(4000) / 8000  # 0.5 s at 8 kHz, stereo: mixed down
    stereo = np.stack([np.sin(2 * np.pi * 300 * t8), 0.5 * np.ones_like(t8)], 1)
    write_wav(tmp_path / "b" / "nested" / "y.wav", stereo, 8000)
    (tmp_path / "b" / "notes.txt").write_text("not audio")
    info = audio.audio_folder_dataset("two", 2, "test", val_size=1, default_steps=1)
    recordings = audio.find_recordings(tmp_path, "")
    assert [(r.path.name, r.label) for r in recordings] == [("x.wav", "a"), ("y.wav", "b")]

    # one recording per class stays in training (nothing to hold out); use a manifest to get a test split
    (tmp_path / "manifest.csv").write_text("file,label,split\na/x.wav,a,train\nb/nested/y.wav,b,test\n")
    data = info.load(data_dir=tmp_path, download=False, **FAST)
    assert data.class_names == ("a", "b")
    assert data.x_train.shape == (1 + (8000 - 800) // 400, 1, 800)  # 19 windows of the resampled second
    expected = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    inner = slice(2 * 400, 2 * 400 + 800)  # window 2, away from the resampler's edge effects
    assert np.abs(data.x_train[2, 0].numpy() - expected[inner]).max() < 1e-2
    assert data.x_test.shape == (1 + (4000 - 800) // 400, 1, 800)
    mono = (stereo[:, 0] + stereo[:, 1]) / 2
    assert np.allclose(data.x_test[1, 0].numpy(), mono[400:1200], atol=1e-6)
    assert set(data.groups_train.tolist()) == {0} and set(data.groups_test.tolist()) == {1}


def test_short_recordings_are_padded_or_skipped_never_fatal(tmp_path):
    rate = 8000
    write_wav(tmp_path / "a" / "long.wav", np.ones(2000), rate)
    write_wav(tmp_path / "a" / "short.wav", np.full(300, 0.5), rate)  # shorter than one 800-sample window
    write_wav(tmp_path / "b" / "long.wav", -np.ones(2000), rate)
    write_wav(tmp_path / "b" / "t.wav", -np.ones(900), rate)
    (tmp_path / "manifest.csv").write_text(
        "file,label,split\na/long.wav,a,train\na/short.wav,a,train\nb/long.wav,b,train\nb/t.wav,b,test\n"
    )
    info = audio.audio_folder_dataset("two", 2, "test", val_size=1, default_steps=1)
    padded = info.load(data_dir=tmp_path, download=False, **FAST)
    short_windows = padded.x_train[padded.groups_train == 1]
    assert short_windows.shape == (1, 1, 800)
    assert torch.allclose(short_windows[0, 0, :300], torch.tensor(0.5)) and not short_windows[0, 0, 300:].any()
    skipped = info.load(data_dir=tmp_path, download=False, short="skip", **FAST)
    assert 1 not in skipped.groups_train.tolist() and len(skipped.y_train) == len(padded.y_train) - 1


def test_manifest_errors_are_clear(tmp_path):
    write_bird_folder(tmp_path, per_class=1, classes=2)
    cases = [
        ("path,species\n", "expected a header row with columns file,label"),
        ("file,label,split\nspecies0/rec0.wav,species0,validation\n", "split must be train or test"),
        ("file,label\nspecies0/rec0.wav,species0\nspecies0/rec0.wav,species1\n", "listed twice"),
        ("file,label\nspecies0/missing.wav,species0\n", "missing file"),
        ("file,label\n,species0\n", "must not be empty"),
    ]
    for text, message in cases:
        (tmp_path / "manifest.csv").write_text(text)
        with pytest.raises(UserError, match=message):
            audio.find_recordings(tmp_path, "")
    # extra columns and surplus fields are ignored; a blank split cell is not allowed when the column exists
    (tmp_path / "manifest.csv").write_text(
        "file,label,notes\nspecies0/rec0.wav,species0,a,b\nspecies1/rec0.wav, species1 ,\n"
    )
    assert [r.label for r in audio.find_recordings(tmp_path, "")] == ["species0", "species1"]
    (tmp_path / "manifest.csv").write_text("file,label,split\nspecies0/rec0.wav,species0,\n")
    with pytest.raises(UserError, match="split must be train or test"):
        audio.find_recordings(tmp_path, "")


@pytest.mark.parametrize(
    "damage", [lambda p: p.write_bytes(p.read_bytes()[:30]), lambda p: p.write_bytes(b"RIFF....garbage")]
)
def test_truncated_or_corrupt_recording_names_the_file(tmp_path, damage):
    write_bird_folder(tmp_path, per_class=2)
    bad = tmp_path / "species3" / "rec1.wav"
    damage(bad)
    with pytest.raises(UserError, match=f"cannot read recording {bad}"):
        load("bird10", tmp_path, **FAST)


def test_bird10_class_count_and_missing_folder_are_user_errors(tmp_path):
    with pytest.raises(
        UserError, match="no recordings found in .*manifest.csv with columns file,label\\[,split\\].*authors"
    ):
        load("bird10", tmp_path / "nowhere")
    write_bird_folder(tmp_path, per_class=1, classes=3)
    with pytest.raises(UserError, match="bird10 has 10 classes, but .* has 3: species0, species1, species2"):
        load("bird10", tmp_path)


def test_held_out_recordings_per_class_fixed_and_never_in_two_splits(tmp_path):
    write_bird_folder(tmp_path, per_class=5, seconds=0.3)
    a = load("bird10", tmp_path, **FAST)
    b = load("bird10", tmp_path, **FAST)
    assert torch.equal(a.groups_test, b.groups_test)  # fixed, not drawn per run
    train_recs, test_recs = set(a.groups_train.tolist()), set(a.groups_test.tolist())
    assert not train_recs & test_recs
    assert len(test_recs) == 10 and len(train_recs) == 40  # 20 % of 5 per class = 1 per class
    test_labels = {int(a.y_test[a.groups_test == g][0]) for g in test_recs}
    assert test_labels == set(range(10))
    # the harness's split of the training windows is by recording too
    split = make_split(a.y_train, labels=20, val_size=5, num_classes=10, seed=3, groups=a.groups_train)
    g = a.groups_train.numpy()
    for part_a, part_b in ((split.val, split.labeled), (split.val, split.unlabeled)):
        assert not set(g[part_a]) & set(g[part_b])
    assert len(set(g[split.labeled])) == 20  # labels count recordings
    for rec in set(g[split.labeled]):
        assert set(np.flatnonzero(g == rec)) <= set(split.labeled)  # a labeled recording brings all its windows


def test_unknown_or_bad_audio_options_are_refused(tmp_path):
    write_bird_folder(tmp_path, per_class=1)
    with pytest.raises(
        UserError,
        match="unknown key 'window'; valid keys: sample_rate, window_ms, overlap, short, manifest, test_fraction",
    ):
        load("bird10", tmp_path, window=3)
    with pytest.raises(UserError, match="overlap must be in"):
        load("bird10", tmp_path, overlap=1.0)
    with pytest.raises(UserError, match="short must be pad or skip"):
        load("bird10", tmp_path, short="drop")


# --------------------------------------------------------------------------------------------------
# mnist1d and chirps (generated)


def test_mnist1d_shape_balance_and_standardization():
    data = load("mnist1d")
    assert data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    y = torch.cat([data.y_train, data.y_test])
    assert y.bincount().tolist() == [500] * 10
    x = torch.cat([data.x_train, data.x_test]).double()
    assert abs(x.mean().item()) < 1e-6 and abs(x.std(unbiased=False).item() - 1) < 1e-6


def test_mnist1d_matches_the_published_linear_baseline():
    """The MNIST-1D README reports 32 % test accuracy for logistic regression (MLP 68 %, CNN 94 %)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    data = load("mnist1d")
    with threadpool_limits(1):  # many BLAS threads on a shared CPU make this 100x slower
        clf = LogisticRegression(max_iter=1000).fit(data.x_train[:, 0].double().numpy(), data.y_train.numpy())
    assert 0.27 <= clf.score(data.x_test[:, 0].double().numpy(), data.y_test.numpy()) <= 0.38


def test_mnist1d_seed_and_shuffled_variant():
    base = load("mnist1d", num_samples=200)
    assert torch.equal(base.x_train, load("mnist1d", num_samples=200).x_train)
    assert not torch.equal(base.x_train, load("mnist1d", num_samples=200, seed=1).x_train)
    shuffled = load("mnist1d", num_samples=200, shuffle_seq=True)
    assert torch.equal(shuffled.y_train, base.y_train)
    # the same samples with one fixed permutation of the 40 positions
    cols = base.x_train[:, 0].T  # (40, N)
    perm = [int(torch.nonzero((cols == col).all(1))[0]) for col in shuffled.x_train[:, 0].T]
    assert sorted(perm) == list(range(40)) and perm != list(range(40))


def test_chirps_windows_groups_and_class_spectra():
    data = load("chirps", train_recordings=6, test_recordings=2, snr_db=10.0)
    per_rec = 1 + (4000 - 2000) // 200  # 1 s at 4 kHz, bird10's windows: 500 ms, 90 % overlap (50 ms hop)
    assert data.x_train.shape == (60 * per_rec, 1, 2000) and data.x_test.shape == (20 * per_rec, 1, 2000)
    assert get_dataset("chirps").shape == (1, 2000)
    assert torch.bincount(data.groups_train).max() == per_rec and not set(data.groups_train.tolist()) & set(
        data.groups_test.tolist()
    )
    # where each class has its energy: the spectral peak of its windows lies in its band (plus jitter)
    freqs = np.fft.rfftfreq(2000, 1 / 4000)
    for c in range(10):
        x = data.x_train[data.y_train == c, 0].numpy()
        power = (np.abs(np.fft.rfft(x * np.hanning(2000), axis=1)) ** 2).mean(0)
        peak = freqs[np.argmax(power)]
        low, high = 2000 * (0.05 + 0.08 * c), 2000 * (0.25 + 0.08 * c)
        assert 0.9 * low <= peak <= 1.1 * high, (c, peak, low, high)


def test_chirps_call_shares_mark_the_windows_that_hold_a_call():
    from ssl_bench.data.synthetic import ChirpOptions, call_shares

    opts = ChirpOptions(train_recordings=3, test_recordings=2, snr_db=20.0, window_ms=250.0, overlap=0.5)
    data = load("chirps", train_recordings=3, test_recordings=2, snr_db=20.0, window_ms=250.0, overlap=0.5)
    shares = call_shares(opts)
    assert shares.shape == (len(data.y_test),) and ((shares >= 0) & (shares <= 1)).all()
    power = data.x_test[:, 0].pow(2).mean(1).numpy()  # noise alone: about 1; a call at 20 dB adds up to 100× that
    assert (shares == 0).any() and (shares >= 0.5).any()
    assert power[shares == 0].max() < 1.5 < power[shares >= 0.5].min()


def test_chirps_rising_and_falling_classes_differ_in_time_course():
    from ssl_bench.data.synthetic import chirp

    up, down = chirp(200, 800, 400, 4000), chirp(800, 200, 400, 4000)
    zero_crossings = lambda s: np.count_nonzero(np.diff(np.sign(s)) != 0)
    assert zero_crossings(up[:200]) < zero_crossings(up[200:]) and zero_crossings(down[:200]) > zero_crossings(
        down[200:]
    )


# --------------------------------------------------------------------------------------------------
# Declarations, the list command and end-to-end runs


def test_every_dataset_declares_modality_shape_and_classes(tmp_path):
    write_mnist(tmp_path / "mnist")
    write_svhn(tmp_path / "svhn", n=10)
    write_cifar(tmp_path / "cifar10", n_per_batch=2)
    write_bird_folder(tmp_path / "bird10", per_class=2, rate=44100, seconds=0.6)
    for name in dataset_names():
        info = get_dataset(name)
        data = info.load(data_dir=tmp_path / name, download=False)
        assert tuple(data.x_train.shape[1:]) == info.shape, name
        assert int(data.y_train.max()) < info.num_classes and len(data.y_train.unique()) == info.num_classes, name
        assert info.modality == ("image" if data.x_train.dim() == 4 else "signal"), name


def test_list_datasets_shows_local_availability(tmp_path):
    write_mnist(tmp_path / "mnist")  # --data-dir of `list` is the root with one folder per dataset
    result = invoke("list", "datasets", "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert set(rows) == set(dataset_names())
    assert rows["mnist"].split()[1:5] == ["image", "1x28x28", "10", "5000"] and " yes " in rows["mnist"]
    assert f"no ({tmp_path / 'cifar10'})" in rows["cifar10"] and f"no ({tmp_path / 'bird10'})" in rows["bird10"]
    assert " offline " in rows["mnist1d"] and " offline " in rows["chirps"]


TINY_RUN = [
    "run",
    "--method",
    "supervised",
    "--steps",
    "4",
    "--eval-every",
    "2",
    "--batch-lb",
    "8",
    "--batch-ulb",
    "8",
    "--quiet",
    "--no-download",
]


@pytest.mark.parametrize("name", ["mnist", "svhn", "cifar10", "bird10"])
def test_cli_runs_end_to_end_on_written_files(tmp_path, name):
    data_dir = tmp_path / "data"
    writers = {
        "mnist": write_mnist,
        "svhn": write_svhn,
        "cifar10": write_cifar,
        "bird10": lambda d: write_bird_folder(d, per_class=4),
    }
    writers[name](data_dir)
    # small windows for speed: bird10net (the default) is scaled to them (kernel 1024 → 32 samples)
    options = (
        ["-d", "sample_rate=8000", "-d", "window_ms=100", "-d", "overlap=0.5", "-m", "kernel=32", "-m", "stride=16"]
        if name == "bird10"
        else []
    )
    out = tmp_path / "runs"
    result = invoke(
        *TINY_RUN, "--dataset", name, "--labels", 10, "--val-size", 5, "--data-dir", data_dir, "--out", out, *options
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    res = json.loads((run_dir / "result.json").read_text())
    assert res["dataset"] == name and res["n_labeled"] >= 10 and 0 <= res["test_acc"] <= 1
    if name == "bird10":
        assert 0 <= res["test_acc_recording"] <= 1 and "per recording" in result.output
        split = json.loads((run_dir / "split.json").read_text())
        assert len(split["labeled"]) == 10 * (1 + (4000 - 800) // 400)  # 10 whole recordings of 9 windows


def test_cli_svhn_extra_joins_the_unlabeled_set(tmp_path):
    write_svhn(tmp_path / "data", parts=("train", "test", "extra"), n=30)
    out = tmp_path / "runs"
    result = invoke(
        *TINY_RUN,
        "--dataset",
        "svhn",
        "--labels",
        10,
        "--val-size",
        5,
        "--data-dir",
        tmp_path / "data",
        "--out",
        out,
        "-d",
        "extra=true",
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    res = json.loads((run_dir / "result.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    assert res["n_unlabeled"] == len(split["unlabeled"]) + 30 and res["dataset_options"] == {"extra": True}


def test_cli_refuses_more_labels_than_recordings_before_training(tmp_path):
    write_bird_folder(tmp_path / "data", per_class=4)
    result = invoke(
        *TINY_RUN,
        "--dataset",
        "bird10",
        "--labels",
        40,
        "--val-size",
        5,
        "--data-dir",
        tmp_path / "data",
        "--out",
        tmp_path / "runs",
        "-d",
        "sample_rate=8000",
        "-d",
        "window_ms=100",
    )
    assert (
        result.exit_code == 2
        and "asks for 4 labeled recordings per class" in result.stderr
        and "use at most" in result.stderr
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_offline_with_missing_files_is_one_line(tmp_path):
    result = invoke(*TINY_RUN, "--dataset", "svhn", "--labels", 10, "--data-dir", tmp_path, "--out", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "train_32x32.mat, test_32x32.mat" in result.stderr and str(tmp_path) in result.stderr


@pytest.mark.parametrize(
    "name, options", [("mnist1d", []), ("chirps", ["-d", "train_recordings=8", "-d", "test_recordings=2"])]
)
def test_cli_runs_generated_datasets(tmp_path, name, options):
    result = invoke(*TINY_RUN, "--dataset", name, "--labels", 20, "--val-size", 20, "--out", tmp_path, *options)
    assert result.exit_code == 0, result.output
    assert f"supervised on {name}" in result.output
