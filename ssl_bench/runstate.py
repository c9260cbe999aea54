"""A run's full training state in `state.pt`: what a killed run needs to go on exactly where it was.

Saved atomically (ssl_bench.records) every `state_every` steps, at each evaluation and when a stop is
requested (Ctrl-C, SIGTERM); deleted once `result.json` is written. It holds the model, the optimizer,
the batch index streams (generator states and pending indices), the method's generator and own state,
the global RNG state (dropout), the running loss sums, the health monitor, the best checkpoint's
weights and bookkeeping, and the length of `metrics.jsonl` at that point (rows past it are from steps
the resumed run will redo, and are cut off). Resuming on CPU gives bit-for-bit the run that was never
interrupted (tests/test_resume.py); on CUDA, kernels are not deterministic, so only to float tolerance.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssl_bench import records
from ssl_bench.errors import UserError

STATE = "state.pt"
FORMAT = 2  # bump when the layout changes: an older state is then refused with --restart as the way out


@dataclass
class LoopState:
    """The loop's bookkeeping (the tensors' owners — model, optimizer, streams, method — hold the rest)."""

    step: int = 0  # steps done
    best_val: float = -1.0  # best validation accuracy so far
    best_step: int = 0
    best_model: dict[str, torch.Tensor] | None = None  # its weights (best.pt holds the same)
    last_row: dict[str, Any] | None = None  # the last metrics.jsonl row
    metrics_bytes: int = 0  # length of metrics.jsonl after `last_row`
    elapsed_s: float = 0.0  # training wall time before this process
    stopped: bool = False  # the health check stopped the run
    tracker: dict[str, torch.Tensor] = field(default_factory=dict)  # running loss sums (training.LossTracker)
    health: dict[str, Any] = field(default_factory=dict)  # the HealthMonitor's fields


def exists(run_dir: Path) -> bool:
    return (Path(run_dir) / STATE).is_file()


def rank_state(model, method) -> dict[str, Any]:
    """What differs between the ranks of a data-parallel run: their own random streams."""
    device = next(model.parameters()).device
    return {
        "method": method.state_dict(),
        "method_generator": method.context.generator.get_state(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def save(run_dir: Path, loop: LoopState, *, model, optimizer, streams: dict, method, world) -> None:
    """Write `state.pt` (atomically: a kill during the write leaves the previous state whole). Every
    rank calls it (their random streams are gathered); rank 0 writes."""
    ranks = world.gather(rank_state(model, method))
    if not world.main:
        return
    state = {
        "format": FORMAT,
        "loop": vars(loop),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "streams": {name: s.state_dict() for name, s in streams.items()},
        "ranks": ranks,  # one entry per process
    }
    records.save_checkpoint(Path(run_dir) / STATE, state)


def restore(run_dir: Path, *, model, optimizer, streams: dict, method, world) -> LoopState:
    """Load `state.pt` into the run's objects and return the loop's bookkeeping; cut `metrics.jsonl`
    back to the rows the state has seen. A damaged or foreign state is refused in one line."""
    path = Path(run_dir) / STATE
    device = next(model.parameters()).device
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
        if state.get("format") != FORMAT:
            raise ValueError(f"format {state.get('format')!r}, expected {FORMAT}")
        if len(state["ranks"]) != world.size:
            raise ValueError(f"it was saved by {len(state['ranks'])} processes and this run has {world.size}")
        loop = LoopState(**state["loop"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for name, s in streams.items():
            s.load_state_dict(state["streams"][name])
        mine = state["ranks"][world.rank]
        method.load_state_dict(mine["method"])
        method.context.generator.set_state(mine["method_generator"])
        torch.set_rng_state(mine["rng_cpu"])
        if device.type == "cuda" and mine["rng_cuda"] is not None:
            torch.cuda.set_rng_state(mine["rng_cuda"], device)
    except Exception as exc:  # any damage: a truncated file, a foreign pickle, missing or mismatched keys
        raise UserError(f"cannot resume from {path}: {type(exc).__name__}: {exc}; use --restart to start the run over") from None
    if loop.best_model is not None:
        loop.best_model = {k: v.to(device) for k, v in loop.best_model.items()}
    if world.main:
        cut_metrics(Path(run_dir) / records.METRICS, loop.metrics_bytes)
    return loop


def cut_metrics(path: Path, length: int) -> None:
    """Drop rows written after the state was saved (the resumed run writes them again)."""
    if path.exists() and path.stat().st_size > length:
        os.truncate(path, length)


def remove(run_dir: Path) -> None:
    (Path(run_dir) / STATE).unlink(missing_ok=True)


def remove_temporaries(run_dir: Path) -> None:
    """Temporary files of atomic writes cut short by a kill (`.<name>.<random>.tmp`)."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def as_dict(obj) -> dict[str, Any]:
    """A dataclass's fields (shallow: tensors are not copied)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
