"""A sweep's worker pool (ssl_bench.sweeps.workers): long-lived processes pinned to their devices.

Stopping (Ctrl-C, SIGTERM, a killed parent) is tested end to end in tests/test_concurrency.py; that a
run's records do not depend on the worker that trained it, in tests/test_sweep.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ssl_bench.sweeps import workers


def record_device(path: str, device: str) -> None:
    """A worker's run: write down the device it was given and the process that ran it."""
    Path(path).write_text(f"{device} {os.getpid()}")


def die_on_second(path: str, device: str) -> None:
    """A run whose process dies without reporting (as a segfault or the OOM killer would end it)."""
    if path.endswith("1"):
        os._exit(3)
    Path(path).write_text(device)


def test_workers_are_pinned_and_train_runs_one_after_another(tmp_path, monkeypatch):
    """Two workers on two GPUs take five runs: two processes in all (each starts once), worker k always
    on GPU k mod GPUs, every run reported once; a worker process is pinned to its GPU with
    torch.cuda.set_device (nothing to do on CPU)."""
    done = []
    jobs = [(i, (str(tmp_path / f"run{i}"),)) for i in range(5)]
    workers.run_in_processes(
        record_device, jobs, 2, ["gpu-a", "gpu-b"], lambda i, status, message: done.append((i, status))
    )
    assert sorted(done) == [(i, "ok") for i in range(5)]
    device_of = {}
    for i in range(5):
        device, pid = (tmp_path / f"run{i}").read_text().split()
        assert device_of.setdefault(pid, device) == device  # a worker keeps its GPU
    assert (
        len(device_of) == 2 and sorted(device_of.values()) == ["gpu-a", "gpu-b"] and str(os.getpid()) not in device_of
    )
    pinned = []
    monkeypatch.setattr(torch.cuda, "set_device", pinned.append)
    workers.pin_device("cpu")
    workers.pin_device("cuda:1")
    assert pinned == ["cuda:1"]


def test_a_worker_that_dies_is_reported_and_stops_nothing_else(tmp_path):
    """A process that dies mid-run is reported as an error for that run (with its exit code); the other
    worker's runs still finish and report (the sweep's on_done then decides to stop)."""
    done = {}
    jobs = [(i, (str(tmp_path / f"run{i}"),)) for i in range(2)]
    workers.run_in_processes(
        die_on_second, jobs, 2, ["cpu"], lambda i, status, message: done.update({i: (status, message)})
    )
    assert done[0] == ("ok", "")
    assert done[1] == ("error", "its worker process died (exit code 3)")
