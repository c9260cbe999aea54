"""Stopping cleanly: Ctrl-C (SIGINT) and SIGTERM are one kind of request, answered at a step boundary.

During training a signal only sets a flag (`StopRequests`); the loop sees it after the current step,
saves the run's state (ssl_bench.run.runstate) and raises `Interrupted`, which the CLI prints as one line
with exit code 128 + signal (130 for Ctrl-C, 143 for SIGTERM). Outside the loop SIGTERM raises
`Interrupted` at once, as Ctrl-C raises `KeyboardInterrupt`. A sweep's worker processes also stop when
their parent dies (`exit_with_parent`), so no run trains on unattended.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run or sweep stopped by a signal; what it wrote so far is kept (a run's state is resumable)."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.message = message or f"interrupted by {signal.Signals(signum).name}"
        super().__init__(self.message)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopRequests:
    """The first SIGINT / SIGTERM received while installed (`signum`), or None."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handler(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum


@contextmanager
def stop_requests():
    """Within the block SIGINT and SIGTERM set `requests.signum` instead of raising (main thread only;
    elsewhere the block runs with the handlers as they are). The previous handlers come back after it."""
    requests = StopRequests()
    if not _in_main_thread():
        yield requests
        return
    previous = {s: signal.signal(s, requests._handler) for s in SIGNALS}
    try:
        yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


def sigterm_raises() -> None:
    """Make SIGTERM raise `Interrupted` (as SIGINT raises KeyboardInterrupt); called once per process."""
    if _in_main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupted)


def exit_with_parent(poll_s: float = 1.0) -> None:
    """In a worker process: send ourselves SIGTERM (a clean stop) once the parent process is gone."""
    parent = os.getppid()

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
