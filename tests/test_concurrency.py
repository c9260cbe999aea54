"""One writer per run folder, and sweeps that stop cleanly: locks, concurrent sweeps, Ctrl-C, SIGTERM and
a killed parent, each with real processes (a sweep runs in its own session so that nothing it starts can
hide: every process of the session is accounted for)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run import runstate
from ssl_bench.runlock import run_lock
from tests.conftest import ROOT

RUN = [
    "run",
    "--method",
    "supervised",
    "--dataset",
    "digits",
    "--labels",
    "50",
    "--steps",
    "20",
    "--eval-every",
    "10",
    "--quiet",
]
SPEC = RunSpec(method="supervised", dataset="digits", labels=50, steps=20, protocol={"eval_every": 10})


def start(*args: str) -> subprocess.Popen:
    """`ssl-bench ARGS` in a new session (its pid is the session id)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ssl_bench.cli", *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, _ppid, _pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            except (OSError, ValueError):
                continue
            if int(session) == sid and state != "Z":
                found.append(int(entry.name))
    return found


def wait_for(predicate, timeout: float = 120.0) -> float:
    """Seconds until `predicate()` held."""
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - t0


def runs_with_state(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.is_dir() and runstate.exists(p)] if out.exists() else []


def test_a_run_held_by_another_process_is_refused_naming_it(tmp_path):
    run_dir = tmp_path / resolve(SPEC).run_id()
    with run_lock(run_dir):
        result = CliRunner().invoke(cli, [*RUN, "--out", str(tmp_path)])
    assert result.exit_code == 2
    (line,) = [x for x in result.stderr.splitlines() if not x.startswith("config:")]
    assert line.startswith("Error: ") and f"is being written by pid {os.getpid()}" in line
    assert [p.name for p in run_dir.iterdir()] == [".lock"]  # nothing written


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    run_dir = tmp_path / resolve(SPEC).run_id()
    code = (
        f"import sys, time\nfrom ssl_bench.runlock import run_lock\nwith run_lock({str(run_dir)!r}):\n"
        "    print('held', flush=True)\n    time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    result = CliRunner().invoke(cli, [*RUN, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert records.is_complete(run_dir)


SWEEP = [
    "sweep",
    "--methods",
    "supervised,entmin",
    "--dataset",
    "digits",
    "--labels",
    "50",
    "--seeds",
    "0,1",
    "--steps",
    "100",
    "--eval-every",
    "50",
    "--state-every",
    "10",
    "--quiet",
]


def done_here(stderr: str) -> int:
    return int(re.search(r"sweep: (\d+) runs done here", stderr).group(1))


def assert_each_run_once(out: Path, n: int) -> None:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == n and all(records.is_complete(p) for p in runs)
    for p in runs:
        assert [r["step"] for r in records.read_jsonl(p / records.METRICS)] == [50, 100], p.name


def test_two_identical_sweeps_at_once_do_every_run_once(tmp_path):
    first, second = start(*SWEEP, "--out", str(tmp_path)), start(*SWEEP, "--out", str(tmp_path))
    outs = [p.communicate(timeout=600) for p in (first, second)]
    for proc, (out, err) in zip((first, second), outs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err and out.count(" ± ") == 4  # both print the whole table
    assert done_here(outs[0][1]) + done_here(outs[1][1]) == 4
    assert_each_run_once(tmp_path, 4)


def test_a_second_sweep_started_mid_run_waits_instead_of_clobbering(tmp_path):
    first = start(*SWEEP, "--out", str(tmp_path))
    wait_for(lambda: runs_with_state(tmp_path))
    second = start(*SWEEP, "--out", str(tmp_path))
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert done_here(outs[0][1]) + done_here(outs[1][1]) == 4
    assert_each_run_once(tmp_path, 4)


LONG = [
    "sweep",
    "--methods",
    "supervised,entmin,pimodel",
    "--dataset",
    "digits",
    "--labels",
    "50",
    "--seeds",
    "0,1",
    "--steps",
    "5000",
    "--state-every",
    "10",
    "--workers",
    "2",
    "--quiet",
]


def started_sweep(out: Path) -> subprocess.Popen:
    """A 6-run sweep on 2 workers whose two first runs are training (each has saved a state)."""
    proc = start(*LONG, "--out", str(out))
    wait_for(lambda: len(runs_with_state(out)) == 2)
    return proc


def test_ctrl_c_stops_a_sweep_and_its_workers_within_seconds(tmp_path):
    proc = started_sweep(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group gets SIGINT
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Interrupted: "), (
        err
    )  # the whole stderr on failure: which process printed what
    wait_for(
        lambda: session_processes(proc.pid) == [], timeout=10
    )  # multiprocessing's resource tracker exits a moment after its parent
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 2 and all(
        runstate.exists(p) and not records.is_complete(p) for p in runs
    )  # no queued run started


def test_sigterm_to_the_sweep_stops_its_workers(tmp_path):
    proc = started_sweep(tmp_path)
    proc.terminate()  # the parent only: it passes the stop on to its workers
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Interrupted: "), err
    wait_for(
        lambda: session_processes(proc.pid) == [], timeout=10
    )  # multiprocessing's resource tracker exits a moment after its parent
    assert len(runs_with_state(tmp_path)) == 2


def test_a_killed_sweep_leaves_no_worker_training(tmp_path):
    proc = started_sweep(tmp_path)
    steps_before = {p: runstate_step(p) for p in runs_with_state(tmp_path)}
    proc.kill()
    proc.wait()
    seconds = wait_for(lambda: session_processes(proc.pid) == [], timeout=60)
    assert seconds < 30
    for p, step in steps_before.items():  # each worker saved its state on the way out
        assert runstate_step(p) >= step and not records.is_complete(p)


def runstate_step(run_dir: Path) -> int:
    import torch

    return torch.load(run_dir / runstate.STATE, weights_only=True)["loop"]["step"]
