"""Sweeps: many runs under one protocol (methods × params × datasets × labels × models × seeds).

What runs comes from a grid (`ssl_bench.grid`). Every run of a sweep is checked before the first one starts. Runs already complete in the output folder
are skipped, so an interrupted sweep resumes where it stopped. With `workers > 1` runs go to separate
processes (one per visible GPU on CUDA, else CPU processes sharing the cores).
"""

from __future__ import annotations

import dataclasses
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ssl_bench import records
from ssl_bench.errors import UserError
from ssl_bench.health import flag_of
from ssl_bench.protocol import Resolved, RunSpec, resolve


def _run_one(spec: RunSpec, out: str, show_progress: bool, device: str | None = None) -> dict:
    """One run (in this process or a worker process: specs, unlike resolved runs, can be pickled).
    Its CPU thread count is the protocol's `cpu_threads`."""
    from ssl_bench.protocol import train

    if device is not None:
        spec = dataclasses.replace(spec, device=device)
    return train(resolve(spec), Path(out), show_progress=show_progress)


@dataclass(frozen=True)
class SweepOutcome:
    results: list[dict]  # result.json of every complete, healthy run of the sweep, in spec order
    failed: dict[str, str]  # run id -> error, for runs with a non-finite loss (their folders hold failed.json)
    flagged: dict[str, str] = field(default_factory=dict)  # run id -> flag, for runs that collapsed or diverged (ssl_bench.health)


def run_sweep(
    specs: list[RunSpec], out: Path, *, workers: int = 1, show_progress: bool = True, retry_failed: bool = False, echo=print
) -> SweepOutcome:
    """Run every spec not already complete in `out` (nor failed before, unless `retry_failed`).

    A run that diverges (non-finite loss) is recorded as failed and the sweep goes on; any other error
    stops the sweep. Complete runs are never redone, so an interrupted sweep resumes where it stopped.
    """
    from tqdm.auto import tqdm

    from ssl_bench.protocol import NonFiniteLoss

    resolved = [resolve(spec) for spec in specs]  # every name and value is checked before any work
    ids = [r.run_id() for r in resolved]
    if len(set(ids)) != len(ids):
        raise UserError("the sweep lists the same run twice; check for repeated seeds or values")
    complete = [records.is_complete(out / run_id) for run_id in ids]
    failed_before = [not c and not retry_failed and records.failure(out / run_id) is not None for c, run_id in zip(complete, ids)]
    todo = [i for i in range(len(ids)) if not complete[i] and not failed_before[i]]
    echo(
        f"sweep: {len(ids)} runs, {sum(complete)} already complete in {out}, {len(todo)} to run"
        + (f", {sum(failed_before)} failed before (skipped; --retry-failed runs them again)" if any(failed_before) else "")
    )
    bar = tqdm(total=len(ids), initial=len(ids) - len(todo), desc="sweep", disable=not show_progress, dynamic_ncols=True)

    def finished(i: int, error: Exception | None) -> None:
        if isinstance(error, NonFiniteLoss):
            echo(f"run {ids[i]} failed: {error}")
        elif error is not None:
            raise error
        bar.set_postfix_str(ids[i])
        bar.update(1)

    try:
        if workers <= 1:
            for i in todo:
                try:
                    _run_one(specs[i], str(out), show_progress)
                    finished(i, None)
                except NonFiniteLoss as exc:
                    finished(i, exc)
        else:
            devices = _worker_devices(resolved, workers)
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_run_one, specs[i], str(out), False, devices[k % len(devices)]): i for k, i in enumerate(todo)}
                for future in as_completed(futures):
                    try:
                        finished(futures[future], future.exception())
                    except BaseException:
                        pool.shutdown(cancel_futures=True)  # do not start the runs still queued
                        raise
    finally:
        bar.close()
    results = [records.read_json(out / run_id / records.RESULT) for run_id in ids if records.is_complete(out / run_id)]
    failed = {run_id: records.failure(out / run_id) for run_id in ids if not records.is_complete(out / run_id)}
    flagged = {r["run_id"]: flag_of(r) for r in results if flag_of(r)}
    healthy = [r for r in results if r["run_id"] not in flagged]
    return SweepOutcome(healthy, {k: v for k, v in failed.items() if v is not None}, flagged)


def _worker_devices(resolved: list[Resolved], workers: int) -> list[str]:
    """One CUDA device per worker when the runs use CUDA (round-robin), else CPU for all."""
    import torch

    if resolved[0].device.type == "cuda":
        n = torch.cuda.device_count()
        return [f"cuda:{k % n}" for k in range(workers)]
    return ["cpu"]


# --------------------------------------------------------------------------------------------------
# The summary table (labels and statistics as in `ssl-bench report`)


def summary_rows(results: list[dict]) -> list[dict]:
    """One row per (dataset, labels, model, method + params off their defaults), in first-seen order."""
    from ssl_bench.report import canonical, method_defaults, row_label, summarize

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
