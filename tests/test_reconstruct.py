"""`ssl-bench reconstruct`: a run rebuilt from its record inverts its own data (paper Fig. 1).

Independent references: the raw pixels of the dataset, the training statistics recomputed from
split.json, and explicit per-sample Jacobians of a freshly built network loaded from best.pt.
"""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.autograd.functional import jacobian

from ssl_bench.cli import cli
from ssl_bench.data import get_dataset
from ssl_bench.errors import UserError
from ssl_bench.models import create_model
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.reporting.reconstruct import (
    Reconstruction,
    reconstruction_figure,
    run_reconstruction,
    save_reconstruction_figure,
)
from ssl_bench.run.training import train


def short_run(root, method="dninv", dataset="digits", labels=50, **kw):
    spec = RunSpec(
        method=method, dataset=dataset, labels=labels, steps=8, protocol={"eval_every": 4}, device="cpu", **kw
    )
    result = train(resolve(spec), root, show_progress=False)
    return root / result["run_id"]


@pytest.fixture(scope="module")
def dninv_run(tmp_path_factory):
    return short_run(tmp_path_factory.mktemp("runs"))


def test_reconstruction_matches_explicit_jacobians_in_data_units(dninv_run):
    rec = run_reconstruction(dninv_run, n=5, split="test")
    raw = get_dataset("digits").load(data_dir=None, download=False)
    assert torch.allclose(rec.x, raw.x_test[:5].float(), atol=1e-4)  # un-normalized: the original pixels
    assert torch.equal(rec.y, raw.y_test[:5])

    split = json.loads((dninv_run / "split.json").read_text())
    train_idx = np.union1d(split["labeled"], split["unlabeled"])
    pixels = raw.x_train[torch.from_numpy(train_idx)].float()
    mean, std = pixels.mean(), pixels.std()
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))
    model.load_state_dict(torch.load(dninv_run / "best.pt", weights_only=True)["model"])
    x = (raw.x_test[:5].float() - mean) / std
    for i in range(5):
        xi = x[i : i + 1]
        J = jacobian(lambda v: model(v)[0], xi).reshape(10, -1)  # (K, D)
        x_hat = (J.T @ model(xi)[0].detach()).reshape(1, 8, 8)
        assert torch.allclose(rec.x_hat[i], x_hat * std + mean, atol=1e-3)
        assert rec.pred[i] == model(xi).argmax()


def test_cli_writes_a_png_of_pairs(dninv_run, tmp_path):
    out = tmp_path / "fig" / "rec.png"
    result = CliRunner().invoke(cli, ["reconstruct", str(dninv_run), "--n", "6", "--split", "val", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    img = matplotlib.image.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    result = CliRunner().invoke(cli, ["reconstruct", str(dninv_run), "--n", "2"])
    assert result.exit_code == 0 and (dninv_run / "reconstruction-test.png").is_file()


def test_image_pairs_share_one_colour_scale(dninv_run):
    rec = run_reconstruction(dninv_run, n=3, split="labeled")
    fig = reconstruction_figure(rec)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 6
    for i in range(3):
        original, recon = images[2 * i], images[2 * i + 1]
        assert np.allclose(original.get_array(), rec.x[i, 0].numpy()) and np.allclose(
            recon.get_array(), rec.x_hat[i, 0].numpy()
        )
        lo, hi = min(rec.x[i].min(), rec.x_hat[i].min()).item(), max(rec.x[i].max(), rec.x_hat[i].max()).item()
        assert original.get_clim() == recon.get_clim() == pytest.approx((lo, hi))


def test_signals_are_drawn_as_overlaid_waveforms(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(3, 1, 40, generator=g), torch.randn(3, 1, 40, generator=g)
    rec = Reconstruction(x, x_hat, torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]), "signals")
    fig = reconstruction_figure(rec)
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 3
    for i, ax in enumerate(panels):
        assert np.allclose(ax.lines[0].get_ydata(), x[i, 0].numpy()) and np.allclose(
            ax.lines[1].get_ydata(), x_hat[i, 0].numpy()
        )


def test_reconstruct_a_signal_run_end_to_end(tmp_path):
    run_dir = short_run(tmp_path, dataset="mnist1d", labels=100)
    out = save_reconstruction_figure(run_dir, tmp_path / "signal.png", n=4)
    assert matplotlib.image.imread(out).ndim == 3


def test_works_for_a_run_of_another_method(tmp_path):
    run_dir = short_run(tmp_path, method="supervised")
    rec = run_reconstruction(run_dir, n=2, split="unlabeled")
    assert rec.y is None and rec.x_hat.shape == rec.x.shape == (2, 1, 8, 8)


def test_a_different_split_is_refused(dninv_run, tmp_path):
    import shutil

    copy = tmp_path / dninv_run.name
    shutil.copytree(dninv_run, copy)
    split = json.loads((copy / "split.json").read_text())
    split["fingerprint"] = "0" * 16
    (copy / "split.json").write_text(json.dumps(split))
    with pytest.raises(UserError, match="differs from the one in its split.json"):
        run_reconstruction(copy, n=2)


def test_a_folder_without_checkpoint_is_refused_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = CliRunner().invoke(cli, ["reconstruct", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "is it a run folder" in result.stderr
