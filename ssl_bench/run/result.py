"""A complete run's record, result.json (README.md, "What a run records"): what the run was, what it measured on
the test set at its best-validation and at its last checkpoint, its speed, where it ran, and its
fingerprints (ssl_bench.run.identity).
"""

from __future__ import annotations

from typing import Any

import torch

from ssl_bench import records
from ssl_bench.config import to_jsonable
from ssl_bench.run import compiled, runstate
from ssl_bench.run.device_data import accuracy, group_accuracy
from ssl_bench.run.run_context import RunContext, Session


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated by tensors since `reset_peak_memory` (this session of a resumed run); None on CPU."""
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def speed_record(ctx: RunContext, s: Session) -> dict[str, Any]:
    """peak_memory_mb (CUDA; None on CPU), and compiled_step with --compile (ssl_bench.run.compiled)."""
    peak = {"peak_memory_mb": peak_memory_mb(ctx.resolved.device)}
    return (
        {**peak, "compiled_step": compiled.record(s.gradients, s.optimizer_step)}
        if ctx.resolved.protocol.compile
        else peak
    )


def result_record(
    ctx: RunContext, s: Session, logits: tuple[torch.Tensor, torch.Tensor], speed: dict, wall_s: float
) -> dict[str, Any]:
    """result.json's record; `logits` are the test set's at the best-validation and at the last checkpoint,
    `speed` is `speed_record`'s and `wall_s` the run's wall time, summed over its sessions."""
    resolved, loop, dd = ctx.resolved, s.loop, ctx.dd
    p, info = resolved.protocol, resolved.info
    logits_best, logits_last = logits
    val_acc_last, steps_done = loop.last_row["val_acc"], loop.last_row["step"]
    result = {
        "method": resolved.spec.method,
        "params": to_jsonable(resolved.method_config),
        "dataset": info.name,
        "dataset_options": resolved.spec.dataset_options,
        "labels": resolved.spec.labels,
        "model": resolved.model,
        "model_options": resolved.spec.model_options,
        "seed": p.seed,
        "steps": p.steps,
        "steps_done": steps_done,  # < steps when the health check stopped the run
        "health": s.health.record(),  # {"status": "ok"} or collapsed / diverged (ssl_bench.run.health)
        "test_acc": accuracy(logits_best, dd.y_test),
        "test_acc_last": accuracy(logits_last, dd.y_test),
        "val_acc_best": loop.best_val,
        "val_acc_last": val_acc_last,
        "best_step": loop.best_step,
        "n_labeled": len(ctx.split.labeled),
        "n_unlabeled": len(dd.x_ulb),
        "n_val": len(ctx.split.val),
        "n_test": len(dd.y_test),
        "wall_time_s": round(wall_s, 3),  # training and evaluation, summed over resumed sessions
        **speed,  # peak_memory_mb (CUDA; None on CPU), compiled_step (with --compile)
        "device": records.device_name(resolved.device),
        "cpu_threads": torch.get_num_threads(),  # = protocol.cpu_threads: CPU float results depend on it
        "world_size": ctx.world.size,  # processes of this data-parallel run (ssl_bench.run.distributed)
        "versions": records.versions(),
        "git_commit": records.git_commit(),
        **{k: ctx.identity[k] for k in runstate.FINGERPRINTS},
        "run_id": ctx.writer.run_dir.name,
    }
    if dd.groups_test is not None:
        result["test_acc_recording"] = group_accuracy(logits_best, dd.y_test, dd.groups_test)
        result["test_acc_recording_last"] = group_accuracy(logits_last, dd.y_test, dd.groups_test)
    return result
