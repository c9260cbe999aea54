"""A sweep's worker processes: one fresh process per run, at most `workers` at a time, stopped cleanly.

Each run gets its own spawned process (nothing is inherited but the arguments) and reports back one
`(status, message)` through a pipe: `ok`, `complete` (another process completed it), `busy` (another
process holds the run: ssl_bench.runlock),
`nonfinite` (a diverged run, recorded in failed.json), `interrupted` or `error`. When the parent is
interrupted (Ctrl-C, SIGTERM) or a run ends in an error, no new run starts and every running one gets
SIGTERM, saves its state and exits; one still alive after `STOP_TIMEOUT_S` is killed. A worker whose
parent dies stops by itself (ssl_bench.interrupts.exit_with_parent), so none trains on as an orphan.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import traceback
from collections import deque
from multiprocessing.connection import wait as wait_any
from typing import Callable

from ssl_bench.errors import UserError
from ssl_bench.interrupts import Interrupted, exit_with_parent

STOP_TIMEOUT_S = 60.0  # seconds a stopping worker gets to save its state


def pin_device(device: str) -> None:
    """Make `device` this process's current CUDA device, so that nothing of the run lands on another GPU
    (its CUDA context, allocations on a bare "cuda"); nothing to do on CPU."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)


def _worker(target: Callable, args: tuple, conn, device: str = "cpu") -> None:
    """The body of a worker process: pinned to `device`, run `target(*args)` and send back how it ended."""
    from ssl_bench.runlock import RunBusy
    from ssl_bench.training import AlreadyComplete, NonFiniteLoss

    exit_with_parent()
    pin_device(device)
    try:
        target(*args)
        outcome = ("ok", "")
    except AlreadyComplete as exc:
        outcome = ("complete", str(exc))
    except RunBusy as exc:
        outcome = ("busy", str(exc))
    except NonFiniteLoss as exc:
        outcome = ("nonfinite", str(exc))
    except Interrupted as exc:
        outcome = ("interrupted", exc.message)
    except KeyboardInterrupt:
        outcome = ("interrupted", "interrupted by SIGINT")
    except UserError as exc:
        outcome = ("error", str(exc))
    except BaseException as exc:  # a bug: the traceback goes to the terminal, the sweep stops with one line
        traceback.print_exc(file=sys.stderr)
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(outcome)
    finally:
        conn.close()


def run_in_processes(target: Callable, jobs: list[tuple[int, tuple]], workers: int, devices: list[str], on_done: Callable[[int, str, str], None]) -> None:
    """Run `target(*args, device)` for each `(index, args)` of `jobs` in its own process.

    Each process gets the device with the fewest running processes (so `workers` = K × GPUs puts K runs
    on each GPU) and is pinned to it (`pin_device`). `on_done(index, status, message)`
    is called in the parent as each finishes; an exception it raises stops the sweep like Ctrl-C does.
    """
    ctx = mp.get_context("spawn")
    pending = deque(jobs)
    running: dict[int, tuple[int, mp.Process, object, str]] = {}  # sentinel -> (index, process, pipe, device)
    try:
        while pending or running:
            while pending and len(running) < workers:
                index, args = pending.popleft()
                load = {d: 0 for d in devices}
                for *_, d in running.values():
                    load[d] += 1
                device = min(devices, key=load.__getitem__)
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_worker, args=(target, (*args, device), send, device), name=f"ssl-bench-run-{index}")
                process.start()
                send.close()
                running[process.sentinel] = (index, process, receive, device)
            for sentinel in wait_any(list(running)):
                index, process, receive, _ = running.pop(sentinel)
                status, message = receive.recv() if receive.poll() else ("error", f"its worker process died (exit code {process.exitcode})")
                process.join()
                receive.close()
                on_done(index, status, message)
    finally:
        stop(process for _, process, _, _ in running.values())


def stop(processes) -> None:
    """SIGTERM each live process (it saves its state), wait up to STOP_TIMEOUT_S for all, then kill."""
    processes = [p for p in processes if p.is_alive()]
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
