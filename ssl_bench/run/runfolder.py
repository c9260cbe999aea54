"""A run's folder, from its lock to its last record (docs/runs.md): refused when complete, locked, emptied
or resumed, then written by rank 0 only — config.json and split.json at the start, metrics.jsonl rows and
checkpoints along the way, result.json (or failed.json) at the end, when its state.pt goes.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from ssl_bench import records
from ssl_bench.data import Split
from ssl_bench.errors import UserError
from ssl_bench.protocol import Resolved
from ssl_bench.run import runstate
from ssl_bench.run.distributed import World
from ssl_bench.runlock import LOCK, run_lock


class AlreadyComplete(UserError):
    """The run folder already holds a complete run (`result`); `force` runs it again."""

    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


def refuse_complete(run_dir: Path) -> None:
    """Raise `AlreadyComplete` if `run_dir` holds a complete run."""
    if records.is_complete(run_dir):
        runstate.remove(run_dir)  # left by a kill between result.json and its removal
        raise AlreadyComplete(
            f"{run_dir} already holds a complete run; use --force to run it again", records.read_result(run_dir)
        )


def locked(run_dir: Path, world: World, *, wait: bool, echo: Callable[[str], None]):
    """The run folder's lock (ssl_bench.runlock), held by rank 0 from before its first write to the end:
    another process gets `RunBusy`, or waits with `wait` (and `echo` says so)."""
    if not world.main:
        return nullcontext()
    return run_lock(run_dir, wait=wait, on_wait=lambda owner: echo(f"{run_dir.name}: waiting for {owner} to finish it"))


def open_folder(run_dir: Path, identity: dict[str, Any], *, force: bool, restart: bool) -> bool:
    """With the lock held: whether the run resumes. Resuming, refuse another run's state (or a damaged
    one) before anything is loaded or written, then drop temporaries of writes cut short; starting
    (over), empty the folder but its lock. A run completed while we waited is refused."""
    if not force:
        refuse_complete(run_dir)  # finished by the process we waited for
    if runstate.exists(run_dir) and not (restart or force):
        runstate.check(run_dir, identity)  # one line naming what differs, e.g. lr; --restart starts over
        runstate.remove_temporaries(run_dir)
        return True
    for entry in run_dir.iterdir():
        if entry.name != LOCK:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return False


class Writer:
    """The run's record files, written by rank 0 only (every rank computes the same)."""

    def __init__(self, run_dir: Path, world: World):
        self.run_dir, self.active = run_dir, world.main

    def json(self, name: str, obj: Any) -> None:
        if self.active:
            records.write_json(self.run_dir / name, obj)

    def checkpoint(self, name: str, obj: Any) -> None:
        if self.active:
            records.save_checkpoint(self.run_dir / name, obj)

    def metrics_row(self, row: dict) -> int:
        """Append `row` to metrics.jsonl; the file's length after it."""
        if not self.active:
            return 0
        records.append_jsonl(self.run_dir / records.METRICS, row)
        return (self.run_dir / records.METRICS).stat().st_size

    def config(self, resolved: Resolved) -> dict[str, Any]:
        """Write config.json, the resolved run on its device, and return it."""
        config = {**resolved.as_json(), "device": records.device_name(resolved.device), "run_id": self.run_dir.name}
        self.json(records.CONFIG, config)
        return config

    def split(self, split: Split, fingerprint: str) -> None:
        self.json(records.SPLIT, {"fingerprint": fingerprint, **split.as_json()})

    def last(self, name: str, record: dict[str, Any]) -> None:
        """Write the run's last record (result.json, or failed.json) and remove its state: nothing is
        left to resume (a failed run's weights are not finite)."""
        self.json(name, record)
        if self.active:
            runstate.remove(self.run_dir)
