"""Cluster sweeps through submitit (ssl_bench.sweeps.slurm), without SLURM: submitit's LocalExecutor runs the
same pickled jobs as processes here (`--executor submitit-local`), and a fake `sbatch` shows the job
array that `--executor slurm` submits.

Preemption is simulated as SLURM does it: the preemption signal (SIGUSR2) goes to the job's process while
its run trains. The run saves its state at the end of the step, submitit's own handler requeues the job
(LocalExecutor: the job exits with code 144 and its controller starts it again), and the requeued job
resumes the run from its state.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("submitit")

from ssl_bench import records  # noqa: E402
from ssl_bench.cli import cli  # noqa: E402
from ssl_bench.protocol import RunSpec  # noqa: E402
from ssl_bench.run import runstate  # noqa: E402
from ssl_bench.sweeps import slurm  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

GRID = [
    "--methods",
    "supervised,entmin",
    "--seeds",
    "0",
    "--dataset",
    "digits",
    "--labels",
    "50",
    "--steps",
    "60",
    "--eval-every",
    "20",
    "--state-every",
    "10",
]
LOCAL = ["--executor", "submitit-local", "--gpus-per-job", "0"]


def sweep(*args: str):
    return CliRunner().invoke(cli, ["sweep", *args])


def test_a_grid_runs_as_submitit_jobs_and_a_rerun_submits_nothing(tmp_path):
    out = tmp_path / "runs"
    result = sweep(*GRID, *LOCAL, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "submitted 2 runs" in result.stderr
    assert "sweep: 2/2 runs done" in result.stderr and "left" in result.stderr  # progress with ETA, for logs
    rows = [line.split() for line in result.stdout.splitlines()]
    assert sorted(r[2] for r in rows if r[:2] == ["digits-50", "tinycnn"]) == ["entmin", "supervised"]
    run_dirs = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    assert len(run_dirs) == 2 and all(records.is_complete(d) for d in run_dirs)
    wait_for(lambda: not any(runstate.exists(d) for d in run_dirs), 30)  # removed by the job just after result.json
    assert len(list((out / ".submitit").glob("*_submitted.pkl"))) == 2  # one job per run, logs beside the runs

    again = sweep(*GRID, *LOCAL, "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "2 already complete" in again.stderr and "0 to run" in again.stderr
    assert "submitted" not in again.stderr
    assert len(list((out / ".submitit").glob("*_submitted.pkl"))) == 2  # no new job
    assert again.stdout == result.stdout  # the same table

    status = CliRunner().invoke(cli, ["status", str(out), *GRID[:-2]])  # the options that define the runs
    assert status.exit_code == 0, status.output
    assert "2 complete of 2 runs" in status.stdout


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_preempted_job_is_requeued_and_its_run_resumes(tmp_path):
    """SIGUSR2 (SLURM's warning before preemption or the time limit) to the job's process mid-run."""
    out = tmp_path / "runs"
    args = [
        "--methods",
        "entmin",
        "--seeds",
        "0",
        "--dataset",
        "digits",
        "--labels",
        "50",
        "--steps",
        "400",
        "--eval-every",
        "100",
        "--state-every",
        "10",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssl_bench.cli", "sweep", *args, *LOCAL, "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_dir = lambda: next((p for p in out.iterdir() if not p.name.startswith(".")), None) if out.is_dir() else None
        wait_for(lambda: run_dir() is not None and runstate.exists(run_dir()))
        pid = int(
            re.match(r"pid (\d+) ", (run_dir() / ".lock").read_text()).group(1)
        )  # the job's process holds the run
        os.kill(pid, signal.SIGUSR2)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "entmin" in stdout
    job_err = "".join(p.read_text() for p in (out / ".submitit").glob("*_log.err"))
    job_out = "".join(p.read_text() for p in (out / ".submitit").glob("*_log.out"))
    assert "this job is preempted" in job_err + job_out and "Requeued job" in job_err + job_out
    resumed = re.search(r"resumed from step (\d+)", job_err)
    assert resumed and 0 < int(resumed.group(1)) < 400, job_err
    steps = [row["step"] for row in records.read_jsonl(run_dir() / records.METRICS)]
    assert steps == [100, 200, 300, 400]  # each evaluation once
    result = records.read_json(run_dir() / records.RESULT)
    assert result["steps_done"] == 400
    wait_for(lambda: not runstate.exists(run_dir()), 30)  # removed by the job just after result.json


@pytest.mark.parametrize("preempted", [True, False])
def test_in_a_job_the_run_saves_its_state_then_requeues_only_if_preempted(tmp_path, monkeypatch, preempted):
    """`SweepJob` in this process, under a stand-in for submitit's handler: SIGUSR2 -> state saved, then
    requeued; SIGTERM alone (scancel) -> state saved, not requeued, the job ends in one clear error."""
    monkeypatch.setattr(slurm, "PREEMPT_WAIT_S", 0.3)
    requeued = []

    def submitit_handler(signum, frame):  # submitit's: checkpoint, requeue, exit
        requeued.append(job.checkpoint())
        raise SystemExit(144)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    sigterm = signal.getsignal(signal.SIGTERM)
    spec = RunSpec(method="entmin", dataset="digits", labels=50, steps=400, protocol={"eval_every": 100})
    job = slurm.SweepJob(spec, str(tmp_path), False, 10, ())
    sig = signal.SIGUSR2 if preempted else signal.SIGTERM

    def send_when_saved():
        wait_for(lambda: any(runstate.exists(p) for p in tmp_path.iterdir()))
        os.kill(os.getpid(), sig)

    threading.Thread(target=send_when_saved, daemon=True).start()
    try:
        with pytest.raises(SystemExit if preempted else slurm.JobStopped) as exc:
            job()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    (run_dir,) = list(tmp_path.iterdir())
    assert runstate.exists(run_dir) and not records.is_complete(run_dir)
    assert signal.getsignal(signal.SIGTERM) == sigterm  # given back
    if preempted:
        assert exc.value.code == 144
        (delayed,) = requeued
        assert delayed.function is job  # the same job again; the run resumes from its state
    else:
        assert not requeued and "state saved" in str(exc.value)


def test_slurm_submits_one_array_with_the_options(tmp_path, monkeypatch):
    """A fake sbatch: the job array's script as submitit writes it; --no-wait returns with the job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": "exit 1", "sbatch": 'cp "$1" "$SUBMITTED"; echo "Submitted batch job 4242"'}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SUBMITTED", str(tmp_path / "job.sh"))
    out = tmp_path / "runs"
    options = [
        "--executor",
        "slurm",
        "--partition",
        "gpu",
        "--time-min",
        "120",
        "--gpus-per-job",
        "1",
        "--cpus-per-job",
        "8",
        "--array-parallelism",
        "4",
        "--sbatch",
        "account=proj",
        "--sbatch",
        "mem=16G",
        "--no-wait",
    ]
    result = sweep(*GRID, *options, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "submitted 2 runs as job array 4242 (slurm)" in result.stderr
    assert f"ssl-bench status {out}" in result.stderr
    script = (tmp_path / "job.sh").read_text()
    for line in [
        "--partition=gpu",
        "--time=120",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--array=0-1%2",
        "--signal=USR2@90",
        "--account=proj",
        "--mem=16G",
        f"--output={out / '.submitit'}/%A_%a_0_log.out",
    ]:
        assert f"#SBATCH {line}" in script, script
    assert len(list((out / ".submitit").glob("4242_*_submitted.pkl"))) == 2  # one pickled SweepJob per run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--partition", "gpu"], "--partition is an option of --executor slurm"),
        (["--no-wait"], "--no-wait is an option of --executor slurm"),
        ([*LOCAL, "--workers", "2"], "--workers is for --executor local"),
        ([*LOCAL, "--sbatch", "array=0-3"], "--sbatch array is set by ssl-bench"),
        ([*LOCAL, "--sbatch", "time=10"], "use --time-min instead"),
        ([*LOCAL, "--sbatch", "account="], "--sbatch expects KEY=VALUE"),
        (["--executor", "slurm"], "no SLURM here (srun is not on PATH)"),
    ],
)
def test_bad_cluster_options_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    result = sweep(*GRID, *args, "--out", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert result.stderr.count("Error:") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_without_submitit_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    result = sweep(*GRID, *LOCAL, "--out", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "pip install 'ssl-bench[slurm]'" in result.stderr and result.stderr.count("\n") == 1


class EndedJob:
    """A submitit job that has ended (what `follow` asks of one)."""

    job_id, state = "4242_0", "COMPLETED"

    def __init__(self, error: str | None = None):
        self.error = error

    def done(self) -> bool:
        return True

    def exception(self):
        return RuntimeError(f"Traceback …\n{self.error}") if self.error else None


def test_follow_waits_for_a_run_its_job_found_held_and_reports_a_job_that_left_its_run(tmp_path):
    import fcntl

    from ssl_bench.errors import UserError

    held, left = tmp_path / "held", tmp_path / "left"
    held.mkdir()
    left.mkdir()
    owner = open(held / ".lock", "a")
    fcntl.flock(owner, fcntl.LOCK_EX)  # another process trains it: the job returned `busy`

    def owner_finishes():
        records.write_json(held / records.RESULT, {"run_id": "held"})
        owner.close()

    threading.Timer(0.3, owner_finishes).start()
    seen = []
    slurm.follow(
        {0: EndedJob()}, [], [held], lambda i, s, m: seen.append((i, s)), poll_s=0.05, follow_hint="follow them"
    )
    assert seen == [(0, "complete")]
    with pytest.raises(
        UserError,
        match=r"1 runs did not end complete or failed; the first: job 4242_0 \(left\): MemoryError: CUDA out of memory",
    ):
        slurm.follow(
            {0: EndedJob("MemoryError: CUDA out of memory")},
            [],
            [left],
            lambda *a: None,
            poll_s=0.05,
            follow_hint="follow them",
        )
