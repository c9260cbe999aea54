"""Sweeps on a SLURM cluster through submitit: one job array over the sweep's unfinished runs.

Each array task trains one run (`sweep_run.run_one`) into its folder under `--out`, which the submitting
machine and the compute nodes share. The run folders stay the only record: which runs to submit, how far
each is and whether it is done are read from them (records, runstate, runlock), never from the jobs, so a
rerun of the same sweep submits only the runs that are neither complete, failed nor running.

Preemption and time limits (docs/clusters.md). Before the time limit (`--signal=USR2@90`) and on a
preemption (after SIGTERM) SLURM sends the job submitit's preemption signal, SIGUSR2 unless
SUBMITIT_PREEMPT_SIGNAL names another. In a job that signal is a stop request like SIGTERM: the run saves
its state at the end of the current step (ssl_bench.interrupts), then submitit's own handler pickles the
job again (`SweepJob.checkpoint`) and requeues it, and the requeued job resumes the run from `state.pt`.
SIGTERM alone (a `scancel`) also saves the state; the job then waits `PREEMPT_WAIT_S` for the preemption
signal that follows SIGTERM on a preemption, and ends without requeueing if none comes.

`cluster="local"` runs the same jobs as processes on this machine through submitit's LocalExecutor
(`--executor submitit-local`): how the tests run this path without SLURM.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ssl_bench import records
from ssl_bench.errors import UserError
from ssl_bench.interrupts import Interrupted, sigterm_raises
from ssl_bench.run.runfolder import AlreadyComplete
from ssl_bench.run.training import NonFiniteLoss
from ssl_bench.runlock import RunBusy, is_locked
from ssl_bench.sweeps.sweep_run import run_one

EXECUTORS = ("local", "slurm", "submitit-local")  # local = ssl_bench.sweeps.workers' process pool
INSTALL_HINT = "pip install 'ssl-bench[slurm]'"
PREEMPT_WAIT_S = 10.0  # after a SIGTERM: seconds to wait for the preemption signal that follows it
POLL_S = {"slurm": 15.0, "local": 0.5}  # seconds between looks at the run folders while waiting
MANAGED = {"array", "signal", "output", "error", "open-mode", "job-name", "wckey"}  # set by submitit
OWN_OPTIONS = {
    "partition": "--partition",
    "time": "--time-min",
    "gpus-per-node": "--gpus-per-job",
    "cpus-per-task": "--cpus-per-job",
}


@dataclass(frozen=True)
class SlurmOptions:
    """How a sweep's runs are submitted (one array task per run)."""

    partition: str | None = None  # SLURM partition; None = the cluster's default
    time_min: int = 60  # wall-clock limit of each array task, minutes; a run longer than that is requeued
    gpus_per_job: int = 1  # GPUs per array task (one run); 0 = CPU-only runs
    cpus_per_job: int | None = None  # CPU cores per array task; None = the cluster's default
    array_parallelism: int = 256  # array tasks running at once (submitit's default)
    max_timeouts: int = 3  # requeues after hitting the time limit, per run (preemptions requeue without limit)
    sbatch: tuple[tuple[str, str | bool], ...] = ()  # extra `#SBATCH --key=value` lines (True: `--key`)
    folder: str | None = None  # submitit's pickles and logs; None = <out>/.submitit
    cluster: str = "slurm"  # submitit's executor: slurm, or local (processes on this machine, for tests)


def require_submitit():
    """The submitit module, or a one-line error saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserError(f"--executor slurm needs submitit, which is not installed here: {INSTALL_HINT}") from None
    return submitit


def check_cluster(options: SlurmOptions) -> None:
    """Refuse `--executor slurm` where SLURM cannot be reached (submitit needs `srun`), before any work."""
    require_submitit()
    if options.cluster == "slurm" and shutil.which("srun") is None:
        raise UserError(
            "--executor slurm: no SLURM here (srun is not on PATH); submit from the cluster's login node, "
            "or try the same jobs here with --executor submitit-local"
        )


def parse_sbatch(items: tuple[str, ...]) -> tuple[tuple[str, str | bool], ...]:
    """`--sbatch KEY=VALUE` (or a bare `KEY` for a flag such as `exclusive`) -> `((key, value), …)`."""
    parsed = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key or (sep and not value.strip()) or any(c.isspace() for c in key):
            raise UserError(
                "--sbatch expects KEY=VALUE (an sbatch option without its dashes, e.g. --sbatch account=myproj), "
                f"got {item!r}"
            )
        norm = key.replace("_", "-")
        if norm in MANAGED:
            raise UserError(
                f"--sbatch {key} is set by ssl-bench and submitit "
                "(one array task per run, logs under --out, the preemption signal); leave it out"
            )
        if norm in OWN_OPTIONS:
            raise UserError(f"--sbatch {key}: use {OWN_OPTIONS[norm]} instead")
        parsed.append((key, value.strip() if sep else True))
    return tuple(parsed)


def parameters(options: SlurmOptions) -> dict:
    """submitit AutoExecutor parameters for `options`."""
    params = dict(
        name="ssl-bench", timeout_min=options.time_min, gpus_per_node=options.gpus_per_job, nodes=1, tasks_per_node=1
    )
    if options.cpus_per_job is not None:
        params["cpus_per_task"] = options.cpus_per_job
    params["slurm_array_parallelism"] = options.array_parallelism
    if options.partition is not None:
        params["slurm_partition"] = options.partition
    if options.sbatch:
        params["slurm_additional_parameters"] = dict(options.sbatch)
    return params


def make_executor(options: SlurmOptions, out: Path):
    submitit = require_submitit()
    folder = Path(options.folder) if options.folder else Path(out) / ".submitit"
    kwargs = {f"{options.cluster}_max_num_timeout": options.max_timeouts}
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster, **kwargs)
    executor.update_parameters(**parameters(options))
    return executor


class SweepJob:
    """One array task: train one run of a sweep (in its folder under `out`, resuming it if it has a state).

    Returns how the run ended: `ok`, `complete` (done by another process), `busy` (another process holds
    it) or `nonfinite: …` (diverged; its folder holds failed.json). Checkpointable in submitit's sense: a
    preempted or timed-out job is requeued as this same object, and the run resumes from its state."""

    def __init__(self, spec, out: str, retry_failed: bool, state_every: int, log: tuple[str, ...]):
        self.spec, self.out, self.retry_failed, self.state_every, self.log = spec, out, retry_failed, state_every, log

    def __call__(self) -> str:
        with Preemption() as preemption:
            try:
                run_one(self.spec, self.out, False, False, self.retry_failed, self.state_every, self.log)
            except AlreadyComplete:
                return "complete"
            except RunBusy:
                return "busy"
            except NonFiniteLoss as exc:
                return f"nonfinite: {exc}"
            except Interrupted as exc:
                preemption.requeue_or_raise(exc)
        return "ok"

    def checkpoint(self, *args, **kwargs):
        """What submitit requeues: this same job (the run's progress is in its folder)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class JobStopped(RuntimeError):
    """A run stopped by a signal that was not a preemption (e.g. scancel); its state is saved."""


class Preemption:
    """In a job: submitit's preemption signal stops the run like SIGTERM does, then requeues the job.

    Within the block SIGTERM raises `Interrupted` (outside the training loop, which saves the state at
    the end of its step), as in `ssl-bench run`; submitit's signal calls the current SIGTERM handler and
    remembers that it came. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.received = False
        self.stopping = False
        self.signum: int | None = None
        self.requeue = None
        self.previous: dict = {}

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is not threading.main_thread():
            return self
        from submitit.core.job_environment import JobEnvironment

        self.signum = JobEnvironment._usr_sig()
        self.requeue = signal.getsignal(self.signum)  # submitit's: checkpoint, requeue, exit
        self.previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, self.signum)}
        sigterm_raises()
        signal.signal(self.signum, self._on_preempt)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _on_preempt(self, signum, frame) -> None:
        self.received = True
        stop = signal.getsignal(signal.SIGTERM)
        if not self.stopping and callable(stop):
            stop(signal.SIGTERM, frame)  # in the loop: stop at the end of the step; elsewhere: Interrupted now

    def requeue_or_raise(self, exc: Interrupted) -> None:
        """After the run stopped (state saved): requeue through submitit if preempted, else end the job."""
        self.stopping = True
        if self.signum is None:
            raise exc
        signal.signal(signal.SIGTERM, self.previous[signal.SIGTERM])  # submitit's: logs it and goes on
        if exc.signum == signal.SIGTERM and not self.received:
            deadline = time.monotonic() + PREEMPT_WAIT_S
            while not self.received and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.received and callable(self.requeue):
            self.requeue(self.signum, None)  # pickles `checkpoint()`, requeues and exits (SystemExit)
        raise JobStopped(f"{exc.message} (the job was not requeued; rerun the sweep to resume it)")


# --------------------------------------------------------------------------------------------------
# Submitting and following a sweep's jobs


def submit(
    specs: list, out: Path, options: SlurmOptions, *, retry_failed: bool, state_every: int, log: tuple[str, ...]
) -> list:
    """Submit one job array with one task per spec; returns submitit's jobs in spec order."""
    executor = make_executor(options, out)
    jobs = [SweepJob(spec, str(out), retry_failed, state_every, log) for spec in specs]
    try:
        return executor.submit_array(jobs)
    except Exception as exc:  # sbatch missing or refusing (a bad partition, time, option): its first line
        text = " ".join(str(exc).split())
        raise UserError(f"submitting the sweep's jobs failed: {type(exc).__name__}: {text[:600]}") from None


def array_id(jobs: list) -> str:
    """`12345` for SLURM array tasks `12345_0`, `12345_1`…; the first and last process ids for local jobs."""
    ids = [str(job.job_id) for job in jobs]
    if all("_" in i for i in ids):
        return ids[0].split("_")[0]
    return ids[0] if len(ids) == 1 else f"{ids[0]}…{ids[-1]}"


def job_error(job) -> str:
    """The last line of what a finished job left (its exception or its log), for a one-line report."""
    try:
        exc = job.exception()
    except Exception as error:  # no result at all (killed)
        exc = error
    lines = [line.strip() for line in str(exc or "").splitlines() if line.strip()]
    return lines[-1] if lines else f"ended in state {job.state}"


def follow(
    jobs: dict[int, object],
    watched: list[int],
    run_dirs: list[Path],
    finished: Callable[[int, str, str], None],
    *,
    poll_s: float,
    follow_hint: str,
) -> None:
    """Wait until every run of `jobs` (index -> job) and `watched` (runs other processes hold) has ended.

    Each ending goes to `finished(index, status, message)` (`ok`, `complete` for a run done elsewhere,
    `nonfinite`). A job that ended with its run neither complete nor failed, or a watched run left
    unfinished by its owner, is reported at the end in one error. Ctrl-C / SIGTERM stop the waiting only:
    the jobs go on."""
    mine, others = dict(jobs), set(watched)
    problems: list[str] = []
    try:
        while mine or others:
            for i, job in list(mine.items()):
                if records.is_complete(run_dirs[i]):
                    del mine[i]
                    finished(i, "ok", "")
                elif job.done():  # ended: failed.json is fresh now (a retried run's old one is removed at its start)
                    del mine[i]
                    error = records.failure(run_dirs[i])
                    if error is not None:
                        finished(i, "nonfinite", error)
                    elif is_locked(run_dirs[i]):  # the job found it held by another process (`busy`)
                        others.add(i)
                    else:
                        problems.append(f"job {job.job_id} ({run_dirs[i].name}): {job_error(job)}")
            for i in list(others):
                if records.is_complete(run_dirs[i]):
                    others.discard(i)
                    finished(i, "complete", "")
                elif not is_locked(run_dirs[i]):
                    others.discard(i)
                    error = records.failure(run_dirs[i])
                    if error is not None:
                        finished(i, "nonfinite", error)
                    else:
                        problems.append(f"{run_dirs[i].name} was left unfinished by the process that held it")
            if mine or others:
                time.sleep(poll_s)
    except KeyboardInterrupt as exc:
        message = f"stopped waiting; the sweep's {len(mine)} unfinished jobs go on; {follow_hint}"
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), message) from None
    if problems:
        raise UserError(
            f"{len(problems)} runs did not end complete or failed; the first: {problems[0]}; "
            f"{follow_hint}, then rerun the sweep to submit them again"
        )
