"""The CLI through click's CliRunner: help, list, run, and every user-error path (one line, exit 2)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import ssl_bench
from ssl_bench.cli import cli

RUN = ["run", "--dataset", "digits", "--labels", "50", "--steps", "20", "--eval-every", "10", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_help_and_version():
    result = invoke("--help")
    assert result.exit_code == 0 and "Example:" in result.output
    for command in ("run", "list", "sweep"):
        sub = invoke(command, "--help")
        assert sub.exit_code == 0 and "Example:" in sub.output
    assert ssl_bench.__version__ in invoke("--version").output


def test_list_shows_methods_datasets_models():
    result = invoke("list")
    assert result.exit_code == 0
    for word in ("supervised", "entmin", "pimodel", "digits", "tinycnn", "# methods", "# datasets", "# models"):
        assert word in result.output
    models = invoke("list", "models", "--dataset", "digits")
    assert "params (digits)" in models.output and "batchnorm" in models.output


def test_run_writes_a_complete_record(tmp_path):
    result = invoke(*RUN, "--method", "supervised", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "test acc" in result.output and "at last step" in result.output
    (run_dir,) = tmp_path.iterdir()
    assert str(run_dir) in result.output
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "split.json", "metrics.jsonl", "best.pt", "last.pt", "result.json"} <= names
    res = json.loads((run_dir / "result.json").read_text())
    for key in (
        "method",
        "params",
        "dataset",
        "labels",
        "model",
        "seed",
        "steps",
        "test_acc",
        "test_acc_last",
        "val_acc_best",
        "wall_time_s",
        "device",
        "versions",
        "git_commit",
        "split_fingerprint",
        "protocol_fingerprint",
    ):
        assert key in res
    assert res["versions"]["ssl_bench"] == ssl_bench.__version__
    # a complete run is not silently redone
    again = invoke(*RUN, "--method", "supervised", "--out", str(tmp_path))
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "nope"], "unknown method 'nope'; known methods:"),
        (["--method", "supervised", "--dataset", "nope"], "unknown dataset 'nope'; known datasets: "),
        (["--method", "supervised", "--model", "nope"], "unknown model 'nope'; known models:"),
        (["--method", "supervised", "-m", "depth=3"], "unknown option depth; valid options: width, dropout"),
        (["--method", "supervised", "--model", "bird10net"], "model 'bird10net' takes signal inputs, not image inputs"),
        (["--method", "entmin", "-p", "lamda=1"], "unknown key 'lamda'; valid keys: lambda_"),
        (["--method", "entmin", "-p", "lambda_=abc"], "lambda_ expects float (a number), got 'abc'"),
        (["--method", "entmin", "-p", "lambda_=-1"], "lambda_ must be >= 0"),
        (["--method", "entmin", "-p", "lambda_"], "expected key=value"),
        (["--method", "supervised", "-p", "x=1"], "valid keys: (none"),
        (["--method", "supervised", "--labels", "55"], "not a positive multiple of the 10 classes"),
        (["--method", "supervised", "--labels", "1000"], "use at most"),
        (["--method", "supervised", "--labels", "abc"], "whole number or 'all'"),
        (["--method", "supervised", "--val-size", "1290"], "too little training data"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    base = [a for a in RUN if a not in ("--labels", "50")] if "--labels" in args else RUN
    if "--dataset" in args:
        base = [a for a in base if a not in ("--dataset", "digits")]
    result = invoke(*base, *args, "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "a refused run must not write anything"


def test_cuda_refused_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = invoke(*RUN, "--method", "supervised", "--device", "cuda", "--out", str(tmp_path))
    assert result.exit_code == 2 and "no CUDA GPU" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["--debug", *RUN, "--method", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0 and result.exception is not None
    assert "unknown method" in str(result.exception)
