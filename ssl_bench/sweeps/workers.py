"""A sweep's worker processes: a pool of long-lived processes, each pinned to its device, that take the
sweep's runs one after another; stopped cleanly.

`workers` processes are spawned once (nothing is inherited but the arguments), each pinned to one
device (`pin_device`: K × GPUs workers put K on each GPU), and each trains one run at a time, as the
parent hands them out. A worker's start (spawn, `import torch`, the CUDA context; with `--compile`, the
first compilation, whose caches later runs reuse) is paid once per worker, not once per run: on a GPU
a short run trains for seconds, as long as a process takes to start. A run leaves nothing behind that
the next one reads (each run seeds its generators, sets its thread count, resets the compiler cache and
the peak-memory counter), so a run's result does not depend on the worker that ran it or on what ran
before it there (tests/test_sweep.py).

Each run reports back one `(status, message)`: `ok`, `complete` (another process completed it), `busy`
(another process holds the run: ssl_bench.runlock), `nonfinite` (a diverged run, recorded in
failed.json), `interrupted` or `error`. When the parent is interrupted (Ctrl-C, SIGTERM) or a run ends in
an error, no new run starts and every worker gets SIGTERM: a training one saves its state and exits, an
idle one exits; one still alive after `STOP_TIMEOUT_S` is killed. A worker whose parent dies stops by
itself (ssl_bench.interrupts.exit_with_parent), so none trains on as an orphan.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Callable

import torch

from ssl_bench.errors import UserError
from ssl_bench.interrupts import SIGNALS, Interrupted, exit_with_parent, sigterm_raises
from ssl_bench.run.runfolder import AlreadyComplete
from ssl_bench.run.training import NonFiniteLoss
from ssl_bench.runlock import RunBusy

STOP_TIMEOUT_S = 60.0  # seconds a stopping worker gets to save its state


def pin_device(device: str) -> None:
    """Make `device` this process's current CUDA device, so that nothing of the run lands on another GPU
    (its CUDA context, allocations on a bare "cuda"); nothing to do on CPU."""
    if device.startswith("cuda"):
        torch.cuda.set_device(device)


def run_job(target: Callable, args: tuple) -> tuple[str, str]:
    """`target(*args)`, and how it ended as `(status, message)`: `ok`, `complete`, `busy` or `nonfinite`.
    Interrupts and errors propagate (a sweep's own process lets them; a worker reports them: `_worker`)."""
    try:
        target(*args)
        return "ok", ""
    except AlreadyComplete as exc:
        return "complete", str(exc)
    except RunBusy as exc:
        return "busy", str(exc)
    except NonFiniteLoss as exc:
        return "nonfinite", str(exc)


def run_reported(target: Callable, args: tuple) -> tuple[str, str]:
    """`run_job` in a worker process: an interrupt or an error is reported, not raised."""
    try:
        return run_job(target, args)
    except Interrupted as exc:
        return "interrupted", exc.message
    except KeyboardInterrupt:
        return "interrupted", "interrupted by SIGINT"
    except UserError as exc:
        return "error", str(exc)
    except BaseException as exc:  # a bug: the traceback goes to the terminal, the sweep stops with one line
        traceback.print_exc(file=sys.stderr)
        return "error", f"{type(exc).__name__}: {exc}"


def _worker(target: Callable, conn, device: str) -> None:
    """The body of a worker process: pinned to `device`, run `target(*args, device)` for each
    `(index, args)` received and send back `(index, status, message)`, until told to stop (None), the
    pipe closes, or a run ends interrupted or in an error.

    A signal outside a run's training loop (which saves its state first) ends the worker as an exception,
    not as a kill, so that Python's finalizers run (a killed process leaves its semaphores to
    multiprocessing's resource tracker, which then warns on the terminal after the sweep's last line);
    once the worker is leaving, further signals are ignored (the parent kills it after STOP_TIMEOUT_S)."""
    exit_with_parent()
    sigterm_raises()
    try:
        pin_device(device)
        while (job := conn.recv()) is not None:
            index, args = job
            status, message = run_reported(target, (*args, device))
            conn.send((index, status, message))
            if status in ("interrupted", "error"):
                break
    except (EOFError, BrokenPipeError, KeyboardInterrupt):  # the parent is gone, or a signal came between runs
        pass
    finally:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        conn.close()


@dataclass
class Worker:
    process: mp.Process
    conn: object  # the parent's end of the worker's pipe
    device: str
    index: int | None = None  # the job it is running, None when idle


def run_in_processes(
    target: Callable,
    jobs: list[tuple[int, tuple]],
    workers: int,
    devices: list[str],
    on_done: Callable[[int, str, str], None],
) -> None:
    """Run `target(*args, device)` for each `(index, args)` of `jobs` on a pool of `workers` processes.

    Worker k is pinned to `devices[k % len(devices)]` (so `workers` = K × GPUs puts K runs on each GPU)
    and takes the next job whenever it is idle. `on_done(index, status, message)` is called in the
    parent as each job finishes; an exception it raises stops the sweep like Ctrl-C does.
    """
    ctx = mp.get_context("spawn")
    pending = deque(jobs)
    pool: list[Worker] = []
    try:
        for k in range(min(workers, len(jobs))):
            device = devices[k % len(devices)]
            parent_end, child_end = ctx.Pipe(duplex=True)
            process = ctx.Process(target=_worker, args=(target, child_end, device), name=f"ssl-bench-worker-{k}")
            process.start()
            child_end.close()
            pool.append(Worker(process, parent_end, device))
        while True:
            for w in pool:
                if w.index is None and pending and w.process.is_alive():
                    w.index, args = pending.popleft()
                    w.conn.send((w.index, args))
            busy = [w for w in pool if w.index is not None]
            if not busy:
                if pending:  # only killed from outside (a worker ends itself only after reporting)
                    raise UserError(
                        f"every worker process of the sweep died; {len(pending)} runs not started "
                        "(rerun the same command to go on)"
                    )
                break
            ready = wait_any([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.conn in ready or w.process.sentinel in ready:
                    index, status, message = receive(w)
                    w.index = None
                    on_done(index, status, message)
        for w in pool:
            if w.process.is_alive():
                w.conn.send(None)
                w.process.join()
    finally:
        stop(w.process for w in pool)
        for w in pool:
            w.conn.close()


def receive(w: Worker) -> tuple[int, str, str]:
    """The outcome a busy worker sent, or an error if its process died without sending one."""
    try:
        if w.conn.poll():
            return w.conn.recv()
    except (EOFError, OSError):
        pass
    w.process.join()
    return w.index, "error", f"its worker process died (exit code {w.process.exitcode})"


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
