"""Kill and resume: a run killed at any point and run again ends exactly as the run that was never killed.

Real subprocesses die by SIGKILL at exact points (tests/kill_at.py: halfway through writing the state or
the best checkpoint, between a metrics row and its state, between result.json and the state's removal)
and at a moment chosen from outside; SIGTERM stops a run with its state saved. The Π-model with dropout
is used so that every stream is exercised: batch order, the method's augmentation generator and the
global RNG (dropout).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.run import runstate
from tests.conftest import ROOT

ARGS = [
    "run", "--method", "pimodel", "--dataset", "digits", "--labels", "50", "-m", "dropout=0.3",
    "--steps", "60", "--eval-every", "15", "--state-every", "5", "--warmup-steps", "10", "--quiet",
]  # fmt: skip
TIMING = {"wall_time_s", "git_commit"}  # what may differ between the two (the commit: tests run on a dirty tree too)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The run folder of the uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    result = CliRunner().invoke(cli, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def ssl_bench(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def killed_at(point: str, step: int, out: Path, args: list[str] | None = None) -> Path:
    proc = ssl_bench(str(ROOT / "tests" / "kill_at.py"), point, str(step), *(args or [*ARGS, "--out", str(out)]))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def resume(out: Path):
    return CliRunner().invoke(cli, [*ARGS, "--out", str(out)])


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same result (but the wall time), same checkpoints bit for bit, same metrics rows, each step once."""
    result, expected = (records.read_json(d / records.RESULT) for d in (run_dir, reference))
    assert {k: v for k, v in result.items() if k not in TIMING} == {
        k: v for k, v in expected.items() if k not in TIMING
    }
    for name in (records.LAST_CKPT, records.BEST_CKPT):
        got, want = (torch.load(d / name, weights_only=True) for d in (run_dir, reference))
        assert got["step"] == want["step"] and got["val_acc"] == want["val_acc"]
        assert got["model"].keys() == want["model"].keys()
        assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"]), name
    rows, want_rows = (records.read_jsonl(d / records.METRICS) for d in (run_dir, reference))
    assert [r["step"] for r in rows] == [15, 30, 45, 60]
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in rows] == [
        {k: v for k, v in r.items() if k != "time_s"} for r in want_rows
    ]
    assert not runstate.exists(run_dir) and not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize(
    "point, step, resumed_from",
    [
        ("state-write", 20, 15),  # halfway through state.pt of step 20: the state of step 15 is whole
        ("after-metrics", 30, 25),  # row 30 written, its state not: the row is cut and written again
        ("best-write", 15, 10),  # halfway through the first best.pt
    ],
)
def test_killed_at_a_point_then_resumed_is_the_uninterrupted_run(tmp_path, reference, point, step, resumed_from):
    run_dir = killed_at(point, step, tmp_path)
    assert not records.is_complete(run_dir) and runstate.exists(run_dir)
    if point.endswith("-write"):
        assert list(run_dir.glob(".*.tmp")), "the kill should leave the half-written temporary file"
    again = resume(tmp_path)
    assert again.exit_code == 0, again.output
    assert f"resumed from step {resumed_from}" in again.stderr
    assert_same_run(run_dir, reference)


def test_killed_after_the_result_is_complete(tmp_path, reference):
    run_dir = killed_at("before-cleanup", 0, tmp_path)
    assert records.is_complete(run_dir) and runstate.exists(run_dir)
    again = resume(tmp_path)
    assert again.exit_code == 2 and "already holds a complete run" in again.stderr
    assert_same_run(run_dir, reference)  # the leftover state.pt is gone too


def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_signal_from_outside_then_resumed(tmp_path, reference, sig):
    """A kill at whatever moment the first state appears; SIGTERM: state saved, exit 143, one line."""
    proc = ssl_bench("-m", "ssl_bench.cli", *ARGS, "--out", str(tmp_path))
    wait_for(lambda: any(p.is_dir() and runstate.exists(p) for p in tmp_path.iterdir()))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        lines = [line for line in err.splitlines() if not line.startswith("config:")]
        assert len(lines) == 1 and lines[0].startswith("Interrupted: ") and "state saved" in lines[0], err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not records.is_complete(run_dir)
    again = resume(tmp_path)
    assert again.exit_code == 0, again.output
    assert "resumed from step" in again.stderr
    assert_same_run(run_dir, reference)


def test_restart_starts_over_and_a_damaged_state_is_refused(tmp_path, reference):
    run_dir = killed_at("after-metrics", 30, tmp_path)
    state = run_dir / runstate.STATE
    state.write_bytes(state.read_bytes()[:100])  # damaged by something else than a kill (atomic writes prevent that)
    refused = resume(tmp_path)
    assert refused.exit_code == 2 and "cannot resume from" in refused.stderr and "--restart" in refused.stderr
    assert (
        len(refused.stderr.strip().splitlines()) == 1
    )  # the one-line error: refused before the run starts (no config line, nothing written)
    restarted = CliRunner().invoke(cli, [*ARGS, "--out", str(tmp_path), "--restart"])
    assert restarted.exit_code == 0, restarted.output
    assert "resumed" not in restarted.stderr
    assert_same_run(run_dir, reference)


def test_records_get_the_umask_mode(tmp_path, reference):
    umask = os.umask(0)
    os.umask(umask)
    for name in (records.CONFIG, records.SPLIT, records.RESULT, records.BEST_CKPT, records.LAST_CKPT, records.METRICS):
        assert (reference / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert json.loads((reference / records.RESULT).read_text())["steps_done"] == 60


def test_a_killed_sweep_resumes_its_run_in_a_worker_process(tmp_path, reference):
    """`sweep` resumes as `run` does, also in a worker process (`--workers 2`)."""
    sweep = ["sweep", "--methods", "pimodel", "--seeds", "0", *ARGS[3:], "--out", str(tmp_path)]
    run_dir = killed_at("after-metrics", 30, tmp_path, args=sweep)
    again = ssl_bench("-m", "ssl_bench.cli", *sweep, "--workers", "2")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resumed from step 25" in err and "sweep: 1 runs done here" in err
    assert_same_run(run_dir, reference)


def test_method_state_and_the_protocol_augmentation_resume_exactly(tmp_path):
    """Mean Teacher's EMA teacher (method state), its views (the method's generator) and `--augment weak`
    (the protocol's augmentation stream) all come back: killed and resumed = uninterrupted."""
    args = [
        *ARGS[:2],
        "meanteacher",
        *ARGS[3:7],
        "--augment",
        "weak",
        *ARGS[9:],
    ]  # no dropout option: the method's own views
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    result = CliRunner().invoke(cli, [*args, "--out", str(ref_out)])
    assert result.exit_code == 0, result.output
    (reference,) = [p for p in ref_out.iterdir() if p.is_dir()]
    run_dir = killed_at("after-metrics", 30, out, [*args, "--out", str(out)])
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0 and "resumed from step 25" in result.output, result.output
    assert_same_run(run_dir, reference)
