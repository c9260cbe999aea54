"""The embedded default dataset: fixed test split, options, and larger sizes for models that need them."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from ssl_bench.cli import cli
from ssl_bench.data import get_dataset


def test_fixed_test_split_and_shapes():
    data = get_dataset("digits").load()
    assert data.x_train.shape == (1300, 1, 8, 8) and data.x_test.shape == (497, 1, 8, 8)
    assert data.x_train.dtype == torch.uint8 and int(data.x_train.max()) == 255
    assert torch.equal(data.y_test, get_dataset("digits").load().y_test)  # seed-independent
    assert torch.bincount(data.y_test).min() >= 48 and torch.bincount(data.y_test).max() <= 51  # stratified: ~49.7 each


def test_size_option_enlarges_by_nearest_neighbour():
    small = get_dataset("digits").load()
    big = get_dataset("digits").load(size=16)
    assert big.x_train.shape == (1300, 1, 16, 16)
    expected = small.x_train.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # each pixel → 2×2 block
    assert torch.equal(big.x_train, expected) and torch.equal(big.y_train, small.y_train)


def test_channels_option_makes_an_svhn_shaped_stand_in():
    gray = get_dataset("digits").load(size=32)
    rgb = get_dataset("digits").load(size=32, channels=3)
    assert rgb.x_train.shape == (1300, 3, 32, 32) and rgb.x_test.shape == (497, 3, 32, 32)
    assert all(torch.equal(rgb.x_train[:, c], gray.x_train[:, 0]) for c in range(3))


def test_bad_options_are_refused_naming_the_valid_ones(tmp_path):
    run = ["run", "--method", "supervised", "--dataset", "digits", "--labels", "50", "--out", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(cli, [*run, "-d", "sise=16"])
    assert result.exit_code == 2 and "unknown key 'sise'; valid keys: size, channels" in result.stderr
    result = CliRunner().invoke(cli, [*run, "-d", "size=4"])
    assert result.exit_code == 2 and "size must be in [8, 256]" in result.stderr
    result = CliRunner().invoke(cli, [*run, "-d", "channels=2"])
    assert result.exit_code == 2 and "channels must be 1 or 3" in result.stderr


def test_largecnn_runs_on_enlarged_digits(tmp_path):
    args = [
        "run",
        "--method",
        "dninv",
        "--dataset",
        "digits",
        "--labels",
        "50",
        "--model",
        "largecnn",
        "-d",
        "size=16",
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--batch-lb",
        "4",
        "--batch-ulb",
        "4",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "dninv on digits (50 labels, largecnn" in result.output
