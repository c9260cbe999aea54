"""One writer per run folder: an exclusive lock per run, taken before the folder is touched.

The lock is `fcntl.flock` on `<run folder>/.lock`: the kernel releases it when its process ends, however
it ends (`kill -9` included), so a lock left by a dead process is simply taken by the next one. The file
holds the owner's pid, host and start time, for the message of whoever finds it taken. It is never
deleted, also not when a run starts over (deleting it while another process waits on it would split the
lock).
POSIX only; on a network filesystem it is as good as that filesystem's `flock`.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ssl_bench.errors import UserError

LOCK = ".lock"


class RunBusy(UserError):
    """Another live process holds the run's lock."""


def owner(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def run_lock(run_dir: Path, *, wait: bool = False, on_wait=None):
    """Hold the lock of `run_dir` (created if missing) for the block.

    Taken: raise `RunBusy` naming the owner, or with `wait` block until it is free (calling
    `on_wait(owner)` first)."""
    path = Path(run_dir) / LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot create the run lock {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise RunBusy(
                    f"{run_dir} is being written by {owner(path)}; wait for it, or use another --out"
                ) from None
            if on_wait is not None:
                on_wait(owner(path))
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds the lock of `run_dir` (a run being written). Tested with a
    non-blocking attempt that is released at once; a folder without a lock file is not locked."""
    try:
        fh = open(Path(run_dir) / LOCK, "rb")
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
