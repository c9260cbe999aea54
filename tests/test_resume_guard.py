"""A run resumes only its own state: another run's `state.pt`, or one that cannot be read, is refused.

How another run's state gets into a run folder: the folder is a copy (`cp -r`, rsync) made under
another run's name, or the same command runs after something outside the command changed (the
dataset's files, a new ssl-bench that initializes the model differently, an older ssl-bench's state
format). Each case copies one stopped run's folder (module fixture: Π-model stopped at step 10 of 20,
state saved, as on SIGTERM), runs the command, and checks exit code 2, one `Error:` line naming what
differs and `--restart`, and the folder untouched; then `--restart` runs the run from step 0.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.run import runstate, training

BASE = [
    "run", "--method", "pimodel", "--dataset", "digits", "--labels", "50", "-m", "dropout=0.3",
    "--steps", "20", "--eval-every", "10", "--state-every", "5", "--warmup-steps", "5", "--quiet",
]  # fmt: skip
STOP_AT = 10


class Captured(Exception):
    pass


def run_dir_of(args: list[str], out: Path) -> Path:
    """The folder `ssl-bench ARGS --out OUT` trains into, as the CLI resolves it (nothing is trained)."""

    def capture(resolved, out_root, **kw):
        raise Captured(Path(out_root) / resolved.run_id())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "train", capture)
        result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert isinstance(result.exception, Captured), result.output
    return result.exception.args[0]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """BASE's run folder, stopped after step STOP_AT with its state saved (the SIGTERM / Ctrl-C path)."""
    out = tmp_path_factory.mktemp("stopped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "stop_requested", lambda stop, world, done, is_eval, device: done == STOP_AT)
        result = CliRunner().invoke(cli, [*BASE, "--out", str(out)])
    assert result.exit_code == 143 and "state saved" in result.stderr, result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert runstate.exists(run_dir) and not records.is_complete(run_dir)
    return run_dir


def snapshot(run_dir: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry of the folder (but its lock): a file's bytes (None for a folder) and its mtime (not rewritten)."""
    return {
        str(p.relative_to(run_dir)): (None if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.rglob("*"))
        if p.name != ".lock"
    }


def refused(args: list[str], out: Path, run_dir: Path, expected: str) -> str:
    """Run ARGS into OUT: refused in one line naming `expected` and --restart, `run_dir` untouched."""
    before = snapshot(run_dir)
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # refused before the run starts: no config line either
    (line,) = lines
    assert line.startswith(f"Error: cannot resume from {run_dir / runstate.STATE}: "), line
    assert expected in line, line
    assert line.endswith("; use --restart to start the run over"), line
    assert "Traceback" not in result.output
    assert snapshot(run_dir) == before
    assert not records.is_complete(run_dir)
    return line


def restarts(args: list[str], out: Path, run_dir: Path) -> None:
    """`--restart` runs the run over from step 0, to its end."""
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--restart"])
    assert result.exit_code == 0, result.output
    assert "resumed" not in result.stderr
    assert records.read_json(run_dir / records.RESULT)["steps_done"] == 20
    assert not runstate.exists(run_dir)


# (case, the command now run, what the error line names): the stopped folder copied under that command's run folder
OTHER_RUNS = [
    ("other lr", [*BASE, "--lr", "0.01"], "it was saved with lr=0.003, this run has lr=0.01 (protocol fingerprint "),
    (
        "other method",
        [*BASE[:2], "meanteacher", *BASE[3:]],
        "it was saved with method=pimodel, this run has method=meanteacher; ",
    ),
    (
        "other method config",
        [*BASE, "-p", "w_max=30"],
        "it was saved with pimodel.w_max=10.0, this run has pimodel.w_max=30.0; ",
    ),
    ("other seed", [*BASE, "--seed", "1"], "it was saved with seed=0, this run has seed=1 (split fingerprint "),
]


@pytest.mark.parametrize("case, args, expected", OTHER_RUNS, ids=[c[0] for c in OTHER_RUNS])
def test_a_copy_of_another_runs_folder_is_refused(tmp_path, stopped, case, args, expected):
    run_dir = run_dir_of(args, tmp_path)
    assert run_dir.name != stopped.name
    shutil.copytree(stopped, run_dir)
    line = refused(args, tmp_path, run_dir, expected)
    if case == "other seed":
        assert "init fingerprint" in line and "protocol fingerprint" in line
    restarts(args, tmp_path, run_dir)


def fewer_digits(real):
    """scikit-learn's digits without their first sample: another release of the same data."""

    def load(*a, **kw):
        bunch = real(*a, **kw)
        for name in ("images", "data", "target"):
            setattr(bunch, name, getattr(bunch, name)[1:])
        return bunch

    return load


def other_init(real):
    """The model initialized differently, as a new ssl-bench version might."""

    def init_model(*a, **kw):
        model = real(*a, **kw)
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
        return model

    return init_model


@pytest.mark.parametrize(
    "case, expected",
    [
        ("data", "it was saved with a different split of the data (split fingerprint "),
        ("init", "it was saved with different initial weights (init fingerprint "),
    ],
)
def test_the_same_command_after_the_data_or_the_init_changed_is_refused(tmp_path, stopped, monkeypatch, case, expected):
    import sklearn.datasets

    run_dir = tmp_path / stopped.name
    shutil.copytree(stopped, run_dir)
    if case == "data":
        monkeypatch.setattr(sklearn.datasets, "load_digits", fewer_digits(sklearn.datasets.load_digits))
    else:
        monkeypatch.setattr(training, "init_model", other_init(training.init_model))
    line = refused(BASE, tmp_path, run_dir, expected)
    assert "protocol fingerprint" in line and ("init fingerprint" in line) == (case == "init")
    restarts(BASE, tmp_path, run_dir)


class Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def as_older_format(state: Path) -> None:
    """Rewrite the state as format 2 wrote it (no identity): killed before an upgrade of ssl-bench."""
    saved = torch.load(state, weights_only=True)
    del saved["identity"]
    torch.save({**saved, "format": 2}, state)


def damage(case: str, state: Path, marker: Path) -> None:
    if case == "directory":
        state.unlink()
        state.mkdir()
        (state / "data.pkl").write_bytes(b"")
    elif case == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif case == "payload":
        torch.save({"format": runstate.FORMAT, "identity": Payload(marker)}, state)
    elif case == "older format":
        as_older_format(state)
    elif case == "checkpoint":
        shutil.copyfile(state.parent / records.BEST_CKPT, state)  # best.pt copied over the state


DAMAGED = [
    ("directory", "it is a directory, not a saved state"),
    ("truncated", "it is damaged or not a saved state (PytorchStreamReader failed reading zip archive"),
    ("payload", "it holds objects other than tensors and plain values (posix.system), which are never loaded"),
    ("older format", "it was saved in state format 2 by an older ssl-bench, and this version resumes format 3 only"),
    ("checkpoint", "it is not a run state (it holds a dict with keys step, val_acc, model)"),
]


@pytest.mark.parametrize("case, expected", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_a_state_that_cannot_be_read_is_refused(tmp_path, stopped, case, expected):
    run_dir, marker = tmp_path / stopped.name, tmp_path / "payload-ran"
    shutil.copytree(stopped, run_dir)
    damage(case, run_dir / runstate.STATE, marker)
    if case == "payload":  # the file really is one: a plain torch.load runs it
        torch.load(run_dir / runstate.STATE, weights_only=False)
        assert marker.exists()
        marker.unlink()
    refused(BASE, tmp_path, run_dir, expected)
    assert not marker.exists(), "the payload ran"
    restarts(BASE, tmp_path, run_dir)


def test_its_own_state_resumes(tmp_path, stopped):
    """The copied folder under its own name (the same command) resumes from the saved step."""
    run_dir = tmp_path / stopped.name
    shutil.copytree(stopped, run_dir)
    state = torch.load(run_dir / runstate.STATE, weights_only=True)
    assert state["format"] == runstate.FORMAT == 3
    assert state["identity"]["method"] == "pimodel" and state["identity"]["protocol"]["protocol"]["lr"] == 0.003
    result = CliRunner().invoke(cli, [*BASE, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"resumed from step {STOP_AT}" in result.stderr
    recorded = records.read_json(run_dir / records.RESULT)
    assert {k: recorded[k] for k in runstate.FINGERPRINTS} == {k: state["identity"][k] for k in runstate.FINGERPRINTS}


def test_a_state_saved_on_a_gpu_is_refused_on_the_cpu(tmp_path, stopped):
    """The run id does not depend on the device, so a folder synced from a GPU machine has this run's name;
    its state carries what a CUDA run's does (device_type cuda, no cpu_threads: ssl_bench.protocol)."""
    run_dir = tmp_path / stopped.name
    shutil.copytree(stopped, run_dir)
    state = torch.load(run_dir / runstate.STATE, weights_only=True)
    protocol = state["identity"]["protocol"]
    protocol["device_type"] = "cuda"
    del protocol["protocol"]["cpu_threads"]
    state["identity"]["protocol_fingerprint"] = records.fingerprint(protocol)
    torch.save(state, run_dir / runstate.STATE)
    expected = (
        "it was saved with device_type=cuda, cpu_threads=(not set), "
        "this run has device_type=cpu, cpu_threads=1 (protocol fingerprint "
    )
    refused(BASE, tmp_path, run_dir, expected)
    restarts(BASE, tmp_path, run_dir)
