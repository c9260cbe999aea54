"""One run of a sweep, in whichever process trains it: the sweep's own, a worker process (ssl_bench.sweeps.workers)
or a SLURM array task (ssl_bench.sweeps.slurm). Both ssl_bench.sweeps.sweep and ssl_bench.sweeps.slurm import it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ssl_bench import records
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run.training import NonFiniteLoss, train


def run_one(
    spec: RunSpec,
    out: str,
    show_progress: bool,
    wait: bool,
    retry_failed: bool,
    state_every: int,
    log: tuple[str, ...],
    device: str | None = None,
) -> None:
    """One run of a sweep (in this process or a worker process: specs, unlike resolved runs, pickle).

    Interrupted runs resume. Raises `AlreadyComplete` for a run another process completed, `RunBusy` for
    one another process holds (with `wait`: waits for it), `NonFiniteLoss` for one that failed. Its CPU
    thread count is the protocol's `cpu_threads`.
    """
    if device is not None:
        spec = dataclasses.replace(spec, device=device)
    resolved = resolve(spec)
    error = None if retry_failed else records.failure(Path(out) / resolved.run_id())
    if error is not None:  # failed in another process of a concurrent sweep while this one waited
        raise NonFiniteLoss(error)
    train(resolved, Path(out), show_progress=show_progress, wait_for_lock=wait, state_every=state_every, log=log)
