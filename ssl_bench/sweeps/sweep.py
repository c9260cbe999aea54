"""Sweeps: many runs under one protocol (methods × params × datasets × labels × models × seeds).

What runs comes from a grid (ssl_bench.sweeps.grid). Every run of a sweep is checked before the first one
starts. Runs already complete in the output folder are skipped and interrupted ones resume, so an
interrupted sweep goes on where it stopped. With `workers > 1` runs go to a pool of worker processes
(ssl_bench.sweeps.workers: spread over the visible GPUs on CUDA, else CPU processes sharing the cores), each of
which trains runs one after another.
"""

from __future__ import annotations

import dataclasses
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ssl_bench import records
from ssl_bench.errors import UserError
from ssl_bench.interrupts import Interrupted
from ssl_bench.protocol import Resolved, RunSpec, resolve
from ssl_bench.reporting.groups import canonical, method_defaults, row_label
from ssl_bench.reporting.stats import summarize
from ssl_bench.run import runstate
from ssl_bench.run.distributed import world_from_env
from ssl_bench.run.health import flag_of
from ssl_bench.run.training import STATE_EVERY
from ssl_bench.runlock import is_locked
from ssl_bench.sweeps import slurm
from ssl_bench.sweeps.slurm import SlurmOptions
from ssl_bench.sweeps.sweep_run import run_one
from ssl_bench.sweeps.workers import run_in_processes, run_job


@dataclass(frozen=True)
class SweepOutcome:
    results: list[dict]  # result.json of every complete, healthy run of the sweep, in spec order
    failed: dict[str, str]  # run id -> error, for runs with a non-finite loss (their folders hold failed.json)
    flagged: dict[str, str] = field(
        default_factory=dict
    )  # run id -> flag, for runs that collapsed or diverged (ssl_bench.run.health)


def run_sweep(
    specs: list[RunSpec],
    out: Path,
    *,
    workers: int = 1,
    show_progress: bool = True,
    retry_failed: bool = False,
    state_every: int = STATE_EVERY,
    log: tuple[str, ...] = (),
    cluster: SlurmOptions | None = None,
    wait: bool = True,
    echo=print,
) -> SweepOutcome:
    """Run every spec not already complete in `out` (nor failed before, unless `retry_failed`).

    A run that diverges (non-finite loss) is recorded as failed and the sweep goes on; any other error
    stops the sweep. Complete runs are never redone and interrupted ones resume, so an interrupted sweep
    goes on where it stopped. Runs that another process is writing (a second sweep into the same `out`)
    are left to it at first and waited for at the end, so each run is done once.

    With `cluster` (ssl_bench.sweeps.slurm) the runs to do go to one job array instead of local processes, and
    the sweep follows them through their folders (without `wait`: it returns once they are submitted).
    Runs another process holds are not submitted but waited for.
    """
    if world_from_env().size > 1:
        raise UserError(
            "sweep runs each run in its own process; "
            "for one run on several processes use torchrun with `run` (README, Multi-GPU)"
        )
    # every name and value is checked before any work (on a cluster, on the login node: the run id does not depend
    # on the device)
    resolved = [resolve(spec if cluster is None else dataclasses.replace(spec, device="cpu")) for spec in specs]
    ids = [r.run_id() for r in resolved]
    if len(set(ids)) != len(ids):
        raise UserError("the sweep lists the same run twice; check for repeated seeds or values")
    complete = [records.is_complete(out / run_id) for run_id in ids]
    for c, run_id in zip(complete, ids):
        if c:
            records.read_result(out / run_id)  # a damaged result.json is refused now, before any work
    failed_before = [
        not c and not retry_failed and records.failure(out / run_id) is not None for c, run_id in zip(complete, ids)
    ]
    todo = [i for i in range(len(ids)) if not complete[i] and not failed_before[i]]
    echo(
        f"sweep: {len(ids)} runs, {sum(complete)} already complete in {out}, {len(todo)} to run"
        + (
            f", {sum(failed_before)} failed before (skipped; --retry-failed runs them again)"
            if any(failed_before)
            else ""
        )
    )
    interactive = show_progress and sys.stderr.isatty()
    bar = tqdm(
        total=len(ids), initial=len(ids) - len(todo), desc="sweep", disable=not interactive, dynamic_ncols=True
    )  # runs done / total, ETA
    progress = SweepProgress(
        len(ids), len(ids) - len(todo), echo if show_progress and not interactive else None
    )  # the same as lines, for logs
    busy: list[int] = []
    done_elsewhere: list[int] = []

    def finished(i: int, status: str, message: str) -> None:
        if status == "busy":
            busy.append(i)
            return
        if status == "complete":
            done_elsewhere.append(i)
        if status == "nonfinite":
            echo(f"run {ids[i]} failed: {message}")
        elif status == "interrupted":
            raise Interrupted(signal.SIGINT, message)  # a worker stopped by a signal of its own
        elif status == "error":
            raise UserError(f"run {ids[i]}: {message}")
        bar.set_postfix_str(ids[i])
        bar.update(1)
        progress.update(ids[i])

    def run_all(indices: list[int], wait: bool) -> None:
        options = (retry_failed, state_every, log)
        if cluster is not None:
            run_on_cluster(indices)
        elif workers <= 1:
            for i in indices:
                finished(
                    i, *run_job(run_one, (specs[i], str(out), interactive, wait, *options))
                )  # interrupts and errors propagate
        else:
            jobs = [(i, (specs[i], str(out), False, wait, *options)) for i in indices]
            run_in_processes(run_one, jobs, workers, _worker_devices(resolved, workers), finished)

    follow_hint = f"follow them with `ssl-bench status {out}`"

    def run_on_cluster(indices: list[int]) -> None:
        held = [i for i in indices if is_locked(out / ids[i])]  # running elsewhere: waited for, not submitted
        submit = [i for i in indices if i not in held]
        jobs = (
            slurm.submit(
                [specs[i] for i in submit], out, cluster, retry_failed=retry_failed, state_every=state_every, log=log
            )
            if submit
            else []
        )
        if jobs:
            echo(
                f"sweep: submitted {len(jobs)} runs as job array {slurm.array_id(jobs)} ({cluster.cluster}); "
                f"job logs in {cluster.folder or out / '.submitit'}"
            )
        if held:
            echo(f"sweep: {len(held)} runs are being written by another process; not submitted, waited for")
        if not wait:
            echo(f"sweep: not waiting; {follow_hint}" if jobs or held else "sweep: nothing to submit")
            return
        slurm.follow(
            dict(zip(submit, jobs)),
            held,
            [out / run_id for run_id in ids],
            finished,
            poll_s=slurm.POLL_S.get(cluster.cluster, 15.0),
            follow_hint=follow_hint,
        )

    try:
        run_all(todo, wait=False)
        if busy:
            echo(f"sweep: {len(busy)} runs are being written by another process; waiting for them")
            waiting, busy[:] = list(busy), []
            run_all(waiting, wait=True)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM (Interrupted), or a worker stopped by a signal
        if cluster is not None:
            raise  # stopped waiting; the jobs go on (slurm.follow says so)
        saved = sum(runstate.exists(out / run_id) for run_id in ids)
        n_complete = sum(records.is_complete(out / run_id) for run_id in ids)
        message = (
            f"sweep stopped with {n_complete} of {len(ids)} runs complete and {saved} saved to resume; "
            "rerun the same command to go on"
        )
        raise Interrupted(getattr(exc, "signum", signal.SIGINT), message) from None
    finally:
        bar.close()
    if cluster is not None and not wait:
        return SweepOutcome([], {})  # submitted; the runs are followed with `ssl-bench status`
    echo(
        f"sweep: {len(todo) - len(done_elsewhere)} runs done here"
        + (f", {len(done_elsewhere)} by another process" if done_elsewhere else "")
    )
    results = [records.read_result(out / run_id) for run_id in ids if records.is_complete(out / run_id)]
    failed = {run_id: records.failure(out / run_id) for run_id in ids if not records.is_complete(out / run_id)}
    flagged = {r["run_id"]: flag_of(r) for r in results if flag_of(r)}
    healthy = [r for r in results if r["run_id"] not in flagged]
    return SweepOutcome(healthy, {k: v for k, v in failed.items() if v is not None}, flagged)


class SweepProgress:
    """Runs done / total and the time left, one line per finished run (for logs, where a bar is noise).
    The estimate is the mean time per run finished by this sweep so far times the runs left."""

    def __init__(self, total: int, done: int, echo=None):
        self.total, self.done, self.echo = total, done, echo
        self.start, self.finished_here = time.monotonic(), 0

    def update(self, run_id: str) -> None:
        self.done += 1
        self.finished_here += 1
        if self.echo is None:
            return
        left = (time.monotonic() - self.start) / self.finished_here * (self.total - self.done)
        self.echo(f"sweep: {self.done}/{self.total} runs done ({run_id}), about {format_duration(left)} left")


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _worker_devices(resolved: list[Resolved], workers: int) -> list[str]:
    """The visible CUDA devices when the runs use CUDA (each run goes to the least loaded, pinned to it:
    ssl_bench.sweeps.workers; `--runs-per-gpu K` gives K × GPUs workers), else CPU."""
    if resolved[0].device.type == "cuda":
        return [f"cuda:{k}" for k in range(min(workers, torch.cuda.device_count()))]
    return ["cpu"]


# --------------------------------------------------------------------------------------------------
# The summary table (labels and statistics as in `ssl-bench report`)


def summary_rows(results: list[dict]) -> list[dict]:
    """One row per (dataset, labels, model, method + params off their defaults), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        defaults = method_defaults(r["method"])
        changed = {k for k, v in r["params"].items() if defaults is None or canonical(defaults.get(k)) != canonical(v)}
        key = (r["dataset"], r["labels"], r["model"], row_label(r["method"], r["params"], changed))
        groups.setdefault(key, []).append(r)
    return [
        {
            "dataset": f"{dataset}-{labels if labels is not None else 'all'}",
            "model": model,
            "method": label,
            "n": len(rs),
            "test acc % (best val)": str(summarize(100 * r["test_acc"] for r in rs)),
            "test acc % (last)": str(summarize(100 * r["test_acc_last"] for r in rs)),
            "wall s": f"{statistics.fmean(r['wall_time_s'] for r in rs):.1f}",
        }
        for (dataset, labels, model, label), rs in groups.items()
    ]
