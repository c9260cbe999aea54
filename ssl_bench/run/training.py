"""The training loop (README.md, "The protocol"): one loop, identical for every method of a comparison.

`train` takes the run folder's lock, starts the run or resumes it from its saved state, and reads top to
bottom: learning rate → `method.loss` → backward → clip → step → periodic evaluation, state saving and
stop requests. Each of those is a named function below, sharing the run (`RunContext`) and this session
of it (`Session`). What they are built from lives in its own module: the run folder (ssl_bench.run.runfolder),
the run's fingerprints (ssl_bench.run.identity), the data, model, method and step functions
(ssl_bench.run.preparation), the batches (ssl_bench.run.streams) and the resumable state (ssl_bench.run.runstate).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ssl_bench import records
from ssl_bench.errors import UserError
from ssl_bench.interrupts import Interrupted, stop_requests
from ssl_bench.method import Batch, Progress
from ssl_bench.protocol import ProtocolConfig, Resolved, lr_factor
from ssl_bench.run import distributed, runstate
from ssl_bench.run.device_data import accuracy, predict, to_device
from ssl_bench.run.distributed import World, world_from_env
from ssl_bench.run.health import HealthMonitor
from ssl_bench.run.identity import run_identity
from ssl_bench.run.loss_tracker import LossTracker
from ssl_bench.run.preparation import init_model, make_method, make_optimizer, prepare, step_functions, torch_threads
from ssl_bench.run.result import reset_peak_memory, result_record, speed_record
from ssl_bench.run.run_context import RunContext, Session, owners
from ssl_bench.run.runfolder import Writer, locked, open_folder, refuse_complete
from ssl_bench.run.runstate import LoopState
from ssl_bench.run.streams import next_batch, protocol_streams
from ssl_bench.run.tracking import check_trackers, open_trackers
from ssl_bench.seeding import derive_seed
from ssl_bench.views import make_views

CHECK_EVERY = 10  # steps between checks for a non-finite loss (each check is one host sync)
STATE_EVERY = 500  # default steps between state saves (besides every evaluation and every stop request)


class NonFiniteLoss(UserError):
    """The loss was not finite: the run ends with `failed.json`."""


def train(
    resolved: Resolved,
    out_root: Path,
    *,
    show_progress: bool = True,
    force: bool = False,
    restart: bool = False,
    wait_for_lock: bool = False,
    state_every: int = STATE_EVERY,
    log: tuple[str, ...] = (),
    on_start=None,
    echo=None,
) -> dict[str, Any]:
    """Run one experiment into `out_root/<run id>/` and return its result record.

    A complete run raises `AlreadyComplete` (holding its result) unless `force` runs it again. An
    interrupted run resumes from its `state.pt` unless `restart` or `force`. The run folder is locked
    from before its first write to the end (ssl_bench.runlock: another process gets `RunBusy`, or waits
    with `wait_for_lock`). Under torchrun every rank calls it; rank 0 writes (ssl_bench.run.distributed).
    `log` names live trackers (ssl_bench.run.tracking). `on_start(config)` is called once the data and split
    are ready; `echo(line)` gets notices (default: stderr).
    """
    world = world_from_env()
    echo = (echo or (lambda line: print(line, file=sys.stderr))) if world.main else (lambda line: None)
    check_trackers(log)
    run_dir = Path(out_root) / resolved.run_id()
    if not force:
        refuse_complete(run_dir)  # a complete run is final: no lock needed to see it
    with distributed.joined(world, resolved.device) as device, torch_threads(resolved.protocol.cpu_threads):
        resolved = dataclasses.replace(resolved, device=device)
        data, split = prepare(resolved)
        model = init_model(resolved, tuple(data.x_train.shape[1:]))
        method = make_method(resolved, world)
        method.check_model(model)  # e.g. layer names in the method's config: refused before anything is written
        identity = run_identity(
            resolved, split, model, tuple(data.x_train.shape[1:])
        )  # what a state.pt must match to be resumed
        with locked(run_dir, world, wait=wait_for_lock, echo=echo):
            resume = world.broadcast(
                open_folder(run_dir, identity, force=force, restart=restart) if world.main else None
            )  # rank 0 decides
            dd, writer = to_device(data, split, device), Writer(run_dir, world)
            ctx = RunContext(resolved, world, dd, split, model, method, identity, writer, echo, state_every)
            main = world.main  # rank 0 alone logs, reports its start and shows progress
            return _train(
                ctx,
                resume,
                log=log if main else (),
                on_start=on_start if main else None,
                show_progress=show_progress and main,
            )


def _train(ctx: RunContext, resume: bool, *, log: tuple[str, ...], on_start, show_progress: bool) -> dict[str, Any]:
    """Start the run, or resume it; the loop; its result."""
    s = start(ctx, on_start)
    if resume:
        restore(ctx, s)
    resumed_step = s.loop.step + 1 if resume else None
    s.trackers = open_trackers(log, ctx.writer.run_dir, resumed_step=resumed_step, last_row=s.loop.last_row)
    s.start = time.perf_counter() - s.loop.elapsed_s
    p = ctx.resolved.protocol
    s.bar = tqdm(
        total=p.steps,
        initial=s.loop.step,
        desc=f"{ctx.resolved.spec.method} s{p.seed}",
        disable=not show_progress,
        leave=False,
        dynamic_ncols=True,
    )
    run_loop(ctx, s)
    return finish(ctx, s)


def start(ctx: RunContext, on_start) -> Session:
    """The model on the device in training mode, the global random stream, the run's first records
    (config.json, split.json), and a session at step 0: optimizer, batch streams, step functions."""
    resolved, model, method, device = ctx.resolved, ctx.model, ctx.method, ctx.resolved.device
    p = resolved.protocol
    model.to(device).train()
    torch.manual_seed(derive_seed(p.seed, ctx.world.stream_purpose("global")))  # dropout and other in-model randomness
    config = ctx.writer.config(resolved)
    if on_start is not None:
        on_start(config)
    ctx.writer.split(ctx.split, ctx.identity["split_fingerprint"])
    optimizer = make_optimizer(model, resolved)
    streams = protocol_streams(ctx.dd, p, resolved.info.modality, device)
    method.setup(model)  # state that mirrors the model (e.g. an EMA teacher), before a resumed state is restored
    terms = method.term_names()
    gradients, optimizer_step = step_functions(resolved, model, method, optimizer, ctx.echo)
    reset_peak_memory(device)
    tracker = LossTracker(len(terms), device)
    health = HealthMonitor(p.steps, p.collapse_patience, resolved.info.num_classes, grace_steps=p.warmup_steps)
    return Session(optimizer, streams, gradients, optimizer_step, terms, tracker, health, LoopState())


def restore(ctx: RunContext, s: Session) -> None:
    """Resume: the saved state into the run's objects and this session's bookkeeping (ssl_bench.run.runstate)."""
    s.loop = runstate.restore(ctx.writer.run_dir, **owners(ctx, s))
    s.tracker.load_state_dict(s.loop.tracker)
    s.health = HealthMonitor(**s.loop.health)
    ctx.echo(f"{ctx.writer.run_dir.name}: resumed from step {s.loop.step}")


def run_loop(ctx: RunContext, s: Session) -> None:
    """The steps from where the run stands to its last, or to the health check's stop; a stop request
    (Ctrl-C, SIGTERM) saves the state and raises `Interrupted`."""
    p, loop = ctx.resolved.protocol, s.loop
    with stop_requests() as stop:
        for step in range(loop.step, p.steps if not loop.stopped else loop.step):
            one_step(ctx, s, step)
            loop.step = done = step + 1
            is_eval = done % p.eval_every == 0 or done == p.steps
            if done % CHECK_EVERY == 0 or is_eval:
                check_finite(ctx, s)  # host sync every CHECK_EVERY steps
            if is_eval:
                evaluate(ctx, s)
            stopping = stop_requested(stop, ctx.world, done, is_eval, ctx.resolved.device)
            if is_eval or done % ctx.state_every == 0 or stopping:
                save_state(ctx, s)
            if stopping:
                stopped = f"{ctx.writer.run_dir.name}: stopped at step {done} of {p.steps}, state saved"
                raise Interrupted(stop.signum or signal.SIGTERM, f"{stopped}; rerun the same command to resume")
            if loop.stopped:
                break


def one_step(ctx: RunContext, s: Session, step: int) -> None:
    """Step `step` of the loop: the learning rate, the protocol's batch with the method's views and random
    tensors, the optimizer step, then the method's own state (e.g. its EMA teacher)."""
    p = ctx.resolved.protocol
    set_lr(s.optimizer, p, step)
    progress = Progress(step, p.steps)
    batch = make_views(ctx.method, next_batch(ctx.dd, s.streams, ctx.world), ctx.resolved.info.modality)
    values = train_step(ctx, s, batch, progress)  # (1+T,) global means
    ctx.method.after_step(ctx.model, progress)  # after the optimizer step
    s.tracker.add(step, values)
    if step == 0:
        s.health.initial_loss = values[0].item()  # host sync, once
    s.bar.update(1)


def set_lr(optimizer: torch.optim.Optimizer, p: ProtocolConfig, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = p.lr * lr_factor(p, step)


def train_step(ctx: RunContext, s: Session, batch: Batch, progress: Progress) -> torch.Tensor:
    """One optimizer step on the method's loss; returns the detached (loss, *terms) (1+T,) of the global
    batch (the mean over ranks), no host sync. `s.gradients` is `method.loss` → backward, in the run's
    precision, and `s.optimizer_step` the optimizer's step, each eager or compiled (ssl_bench.run.compiled)."""
    model, world, clip = ctx.model, ctx.world, ctx.resolved.protocol.clip_grad_norm
    s.optimizer.zero_grad(set_to_none=True)
    loss, logged = s.gradients(batch, progress)  # sets each parameter's .grad
    world.average_gradients(model)  # several ranks: the global batch's gradient (no-op for one process)
    if clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    s.optimizer_step()
    return world.mean(torch.stack([loss.detach(), *(logged[k].detach().float() for k in s.terms)]))


def check_finite(ctx: RunContext, s: Session) -> None:
    """Stop the run with `failed.json` at the first non-finite loss (one host sync)."""
    bad_step = s.tracker.bad_step.item()
    if bad_step < 0:
        return
    shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(("loss", *s.terms), s.tracker.bad_values.tolist()))
    method = ctx.resolved.spec.method
    error = f"non-finite loss at step {bad_step} of {method}: {shown}; try a lower --lr or other params"
    ctx.writer.last(records.FAILED, {"error": error, "step": bad_step})  # nothing to resume: the weights are not finite
    raise NonFiniteLoss(error)  # the saved best checkpoint predates it; the weights now are not used


def evaluate(ctx: RunContext, s: Session) -> None:
    """Validation accuracy and health after `loop.step` steps: a metrics row (to metrics.jsonl and the
    live trackers), best.pt if it is the best, and the health check's stop, rank 0's judgement."""
    loop, p, dd, writer = s.loop, ctx.resolved.protocol, ctx.dd, ctx.writer
    done = loop.step
    means = s.tracker.means()  # host sync
    val_logits = predict(ctx.model, dd.x_val, p.eval_batch, dd.inputs)  # (N_val, K)
    val_acc = accuracy(val_logits, dd.y_val)
    event = s.health.check(done, val_logits, means[0])
    if event and writer.active:
        s.bar.write(f"{writer.run_dir.name}: {event}", file=sys.stderr)
    row = {
        "step": done,
        "val_acc": val_acc,
        "top_class_share": round(s.health.share, 4),
        "loss": means[0],
        **dict(zip(s.terms, means[1:])),
        "lr": s.optimizer.param_groups[0]["lr"],
        "time_s": round(time.perf_counter() - s.start, 3),
    }
    loop.last_row, loop.metrics_bytes = row, writer.metrics_row(row)
    if val_acc > loop.best_val:
        loop.best_val, loop.best_step = val_acc, done
        loop.best_model = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        writer.checkpoint(records.BEST_CKPT, {"step": done, "val_acc": val_acc, "model": loop.best_model})
    s.bar.set_postfix(loss=f"{means[0]:.3f}", val=f"{val_acc:.3f}", best=f"{loop.best_val:.3f}")
    for t in s.trackers:
        t.log(row)
    loop.stopped = ctx.world.broadcast(s.health.stop)


def stop_requested(stop, world: World, done: int, is_eval: bool, device: torch.device) -> bool:
    """Whether to stop after step `done` for Ctrl-C / SIGTERM. Several ranks agree at the non-finite
    check steps (a collective), so that they all stop at the same step."""
    if world.size == 1:
        return stop.signum is not None
    if done % CHECK_EVERY == 0 or is_eval:
        return world.any(stop.signum is not None, device)
    return False


def save_state(ctx: RunContext, s: Session) -> None:
    """Save state.pt, with the tracker's and the monitor's current state and the wall time."""
    s.loop.elapsed_s = time.perf_counter() - s.start
    s.loop.tracker = s.tracker.state_dict()
    s.loop.health = runstate.as_dict(s.health)
    runstate.save(ctx.writer.run_dir, s.loop, identity=ctx.identity, **owners(ctx, s))


def finish(ctx: RunContext, s: Session) -> dict[str, Any]:
    """Test accuracy at the best-validation and at the last checkpoint; `last.pt`, then `result.json`."""
    s.bar.close()
    for t in s.trackers:
        t.close()
    speed, wall_s = speed_record(ctx, s), time.perf_counter() - s.start  # wall time summed over resumed sessions
    loop, model, dd, writer, eval_batch = s.loop, ctx.model, ctx.dd, ctx.writer, ctx.resolved.protocol.eval_batch
    val_acc_last, steps_done = loop.last_row["val_acc"], loop.last_row["step"]
    logits_last = predict(model, dd.x_test, eval_batch, dd.inputs)
    writer.checkpoint(records.LAST_CKPT, {"step": steps_done, "val_acc": val_acc_last, "model": model.state_dict()})
    writer.checkpoint(
        records.BEST_CKPT, {"step": loop.best_step, "val_acc": loop.best_val, "model": loop.best_model}
    )  # the same as saved at its evaluation, unless a kill outran it
    model.load_state_dict(loop.best_model)
    logits_best = predict(model, dd.x_test, eval_batch, dd.inputs)
    result = result_record(ctx, s, (logits_best, logits_last), speed, wall_s)
    writer.last(records.RESULT, result)  # the run is complete: nothing left to resume
    return result
