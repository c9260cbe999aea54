"""The training loop (SPEC §5): one loop, identical for every method of a comparison.

`train` takes the run folder's lock, starts the run or resumes it from its saved state, and reads top to
bottom: learning rate → `method.loss` → backward → clip → step → periodic evaluation, state saving and
stop requests. Each of those is a named function below; the run's state lives in ssl_bench.runstate.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ssl_bench import compiled, distributed, records, runstate
from ssl_bench.augment import AUGMENTATIONS, augmentation
from ssl_bench.config import to_jsonable
from ssl_bench.data import DataArrays, Split, make_split
from ssl_bench.distributed import World, world_from_env
from ssl_bench.device_data import AugmentStream, DeviceData, IndexStream, accuracy, group_accuracy, predict, to_device
from ssl_bench.errors import UserError
from ssl_bench.health import HealthMonitor
from ssl_bench.interrupts import Interrupted, stop_requests
from ssl_bench.method import Batch, MethodContext, Progress, SSLMethod
from ssl_bench.models import create_model
from ssl_bench.protocol import ProtocolConfig, Resolved, lr_factor, protocol_fields
from ssl_bench.runlock import LOCK, run_lock
from ssl_bench.runstate import LoopState
from ssl_bench.seeding import derive_seed, make_generator
from ssl_bench.tracking import check_trackers, open_trackers
from ssl_bench.views import make_views

CHECK_EVERY = 10  # steps between checks for a non-finite loss (each check is one host sync)
STATE_EVERY = 500  # default steps between state saves (besides every evaluation and every stop request)


class NonFiniteLoss(UserError):
    """The loss was not finite: the run ends with `failed.json`."""


class AlreadyComplete(UserError):
    """The run folder already holds a complete run (`result`); `force` runs it again."""

    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


def prepare(resolved: Resolved) -> tuple[DataArrays, Split]:
    """Load the data and draw the split (refusing impossible label counts) — still before training."""
    spec, info = resolved.spec, resolved.info
    from ssl_bench.data import default_data_dir

    data_dir = Path(spec.data_dir).expanduser() if spec.data_dir else default_data_dir() / info.name
    try:
        data = info.load(data_dir=data_dir, download=spec.download, **spec.dataset_options)
    except TypeError as exc:
        raise UserError(f"dataset {info.name!r}: {exc}") from None
    split = make_split(
        data.y_train,
        labels=spec.labels,
        val_size=resolved.val_size,
        num_classes=info.num_classes,
        seed=resolved.protocol.seed,
        groups=data.groups_train,
        exclude_labeled=spec.exclude_labeled,
    )
    return data, split


def init_model(resolved: Resolved, input_shape: tuple[int, ...]) -> nn.Module:
    """The initial model of this seed: built on CPU from the `init` stream, the same on every device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(resolved.protocol.seed, "init"))
        return create_model(
            resolved.model,
            num_classes=resolved.info.num_classes,
            input_shape=input_shape,
            modality=resolved.info.modality,
            **resolved.spec.model_options,
        )


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LossTracker:
    """Running sums of (loss, *terms) between evaluations, and the first step whose loss was not finite —
    kept on the device, so that a step costs no host sync."""

    def __init__(self, n_terms: int, device: torch.device):
        self.sums = torch.zeros(n_terms + 1, device=device)  # (1+T,)
        self.count = torch.zeros((), dtype=torch.long, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
        self.bad_values = torch.zeros(n_terms + 1, device=device)  # (1+T,) at that step

    def add(self, step: int, values: torch.Tensor) -> None:
        first = ~torch.isfinite(values[0]) & (self.bad_step < 0)
        self.bad_step = torch.where(first, self.bad_step.new_full((), step), self.bad_step)
        self.bad_values = torch.where(first, values, self.bad_values)
        self.sums += values
        self.count += 1

    def means(self) -> list[float]:
        """The mean of each value since the last call, and a fresh start (host sync)."""
        out = (self.sums / self.count).tolist()
        self.sums.zero_()
        self.count.zero_()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ("sums", "count", "bad_step", "bad_values")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            getattr(self, k).copy_(v)


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
    with `wait_for_lock`). Under torchrun every rank calls it; rank 0 writes (ssl_bench.distributed).
    `log` names live trackers (ssl_bench.tracking). `on_start(config)` is called once the data and split
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
        generator = make_generator(resolved.protocol.seed, world.stream_purpose("method"), device)
        method = resolved.method_cls(resolved.method_config, MethodContext(resolved.info.modality, resolved.info.num_classes, generator, AUGMENTATIONS[resolved.info.modality]))
        method.check_model(model)  # e.g. layer names in the method's config: refused before anything is written
        identity = run_identity(resolved, split, model, tuple(data.x_train.shape[1:]))  # what a state.pt must match to be resumed
        on_wait = lambda owner: echo(f"{run_dir.name}: waiting for {owner} to finish it")
        with run_lock(run_dir, wait=wait_for_lock, on_wait=on_wait) if world.main else nullcontext():
            resume = world.broadcast(open_folder(run_dir, identity, force=force, restart=restart) if world.main else None)  # rank 0 decides
            return _train(resolved, run_dir, data, split, model, method, world, identity, resume=resume, show_progress=show_progress and world.main, state_every=state_every, log=log if world.main else (), on_start=on_start if world.main else None, echo=echo)


def refuse_complete(run_dir: Path) -> None:
    """Raise `AlreadyComplete` if `run_dir` holds a complete run."""
    if records.is_complete(run_dir):
        runstate.remove(run_dir)  # left by a kill between result.json and its removal
        raise AlreadyComplete(f"{run_dir} already holds a complete run; use --force to run it again", records.read_result(run_dir))


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


def _train(resolved: Resolved, run_dir: Path, data: DataArrays, split: Split, model: nn.Module, method: SSLMethod, world: World, identity: dict[str, Any], *, resume: bool, show_progress: bool, state_every: int, log: tuple[str, ...], on_start, echo) -> dict[str, Any]:
    from tqdm.auto import tqdm

    p, info, device = resolved.protocol, resolved.info, resolved.device
    dd = to_device(data, split, device)
    model.to(device).train()
    torch.manual_seed(derive_seed(p.seed, world.stream_purpose("global")))  # dropout and other in-model randomness
    split_fp = identity["split_fingerprint"]
    fingerprints = {k: identity[k] for k in runstate.FINGERPRINTS}
    writer = Writer(run_dir, world)
    config = {**resolved.as_json(), "device": records.device_name(device), "run_id": run_dir.name}
    writer.json(records.CONFIG, config)
    if on_start is not None:
        on_start(config)
    writer.json(records.SPLIT, {"fingerprint": split_fp, **split.as_json()})

    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    streams = protocol_streams(dd, p, info.modality, device)
    method.setup(model)  # state that mirrors the model (e.g. an EMA teacher), before a resumed state is restored
    terms = method.term_names()
    name = f"{resolved.model}/{resolved.spec.method}"  # in --compile's warning lines
    gradients = compiled.gradients(model, method, p.precision, p.compile, device, name, warn=echo)  # method.loss → backward, eager or compiled
    update = compiled.optimizer_step(optimizer, p.compile, name, warn=echo)  # optimizer.step, eager or compiled
    reset_peak_memory(device)
    tracker = LossTracker(len(terms), device)
    health = HealthMonitor(p.steps, p.collapse_patience, info.num_classes, grace_steps=p.warmup_steps)
    loop = LoopState()
    owners = dict(model=model, optimizer=optimizer, streams=streams, method=method, world=world)
    if resume:
        loop = runstate.restore(run_dir, **owners)
        tracker.load_state_dict(loop.tracker)
        health = HealthMonitor(**loop.health)
        echo(f"{run_dir.name}: resumed from step {loop.step}")
    trackers = open_trackers(log, run_dir, resumed_step=loop.step + 1 if resume else None, last_row=loop.last_row)

    start = time.perf_counter() - loop.elapsed_s
    save_state = lambda: runstate.save(run_dir, _with(loop, tracker, health, start), identity=identity, **owners)
    bar = tqdm(total=p.steps, initial=loop.step, desc=f"{resolved.spec.method} s{p.seed}", disable=not show_progress, leave=False, dynamic_ncols=True)
    with stop_requests() as stop:
        for step in range(loop.step, p.steps if not loop.stopped else loop.step):
            set_lr(optimizer, p, step)
            progress = Progress(step, p.steps)
            batch = make_views(method, next_batch(dd, streams, world), info.modality)  # the protocol's batch, then the method's views and random tensors
            values = train_step(model, optimizer, gradients, update, batch, progress, p.clip_grad_norm, terms, world)  # (1+T,) global means
            method.after_step(model, progress)  # the method's own state (e.g. its EMA teacher), after the optimizer step
            tracker.add(step, values)
            if step == 0:
                health.initial_loss = values[0].item()  # host sync, once
            bar.update(1)

            loop.step = done = step + 1
            is_eval = done % p.eval_every == 0 or done == p.steps
            if done % CHECK_EVERY == 0 or is_eval:
                check_finite(tracker, terms, writer, resolved.spec.method)  # host sync every CHECK_EVERY steps
            if is_eval:
                row = evaluate(loop, model, dd, p, tracker, health, terms, optimizer, writer, start, bar)
                for t in trackers:
                    t.log(row)
                loop.stopped = world.broadcast(health.stop)  # rank 0's judgement
            stopping = stop_requested(stop, world, done, is_eval, device)
            if is_eval or done % state_every == 0 or stopping:
                save_state()
            if stopping:
                raise Interrupted(stop.signum or signal.SIGTERM, f"{run_dir.name}: stopped at step {done} of {p.steps}, state saved; rerun the same command to resume")
            if loop.stopped:
                break
    bar.close()
    for t in trackers:
        t.close()
    speed = {"peak_memory_mb": peak_memory_mb(device), **({"compiled_step": compiled.record(gradients, update)} if p.compile else {})}
    return finish(resolved, loop, model, dd, split, health, writer, fingerprints, time.perf_counter() - start, world, speed)


def stop_requested(stop, world: World, done: int, is_eval: bool, device: torch.device) -> bool:
    """Whether to stop after step `done` for Ctrl-C / SIGTERM. Several ranks agree at the non-finite
    check steps (a collective), so that they all stop at the same step."""
    if world.size == 1:
        return stop.signum is not None
    if done % CHECK_EVERY == 0 or is_eval:
        return world.any(stop.signum is not None, device)
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


def _with(loop: LoopState, tracker: LossTracker, health: HealthMonitor, start: float) -> LoopState:
    """`loop` with the tracker's and the monitor's current state and the wall time, ready to save."""
    loop.elapsed_s = time.perf_counter() - start
    loop.tracker = tracker.state_dict()
    loop.health = runstate.as_dict(health)
    return loop


def run_identity(resolved: Resolved, split: Split, model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The run's fingerprints (recorded in result.json), the protocol they cover, the method and its
    config: a state.pt must have been saved with the same to be resumed (ssl_bench.runstate.check).
    `model` is the initial model."""
    split_fp, init_fp = split.fingerprint(resolved.info.name), records.state_fingerprint(model.state_dict())
    protocol = protocol_components(resolved, input_shape, split_fp, init_fp)
    fingerprints = {"split_fingerprint": split_fp, "init_fingerprint": init_fp, "protocol_fingerprint": records.fingerprint(protocol)}
    return {**fingerprints, "protocol": protocol, "method": resolved.spec.method, "params": to_jsonable(resolved.method_config)}


def protocol_components(resolved: Resolved, input_shape: tuple[int, ...], split_fp: str, init_fp: str) -> dict[str, Any]:
    """What every method of a comparison shares for this seed (not the method): the protocol fingerprint's input."""
    return {
        "dataset": resolved.info.name,
        "dataset_options": resolved.spec.dataset_options,
        "input_shape": input_shape,
        "split": split_fp,
        "model": resolved.model,
        "model_options": resolved.spec.model_options,
        "init": init_fp,
        "optimizer": "adam",
        "device_type": resolved.device.type,  # batch permutations are drawn on the device: CPU and CUDA streams differ
        "protocol": protocol_fields(resolved.protocol, resolved.device),
        **({"world_size": resolved.world_size} if resolved.world_size > 1 else {}),  # one process: as before processes counted
    }


def protocol_streams(dd: DeviceData, p: ProtocolConfig, modality: str, device: torch.device) -> dict:
    """The protocol's random streams, each seeded for its purpose: labeled and unlabeled batch indices and,
    with `--augment`, the augmentation of both batches (saved and restored with the run state)."""
    streams = {
        "labeled": IndexStream(len(dd.x_lb), p.batch_lb, make_generator(p.seed, "labeled-batches", device), device),
        "unlabeled": IndexStream(len(dd.x_ulb), p.batch_ulb, make_generator(p.seed, "unlabeled-batches", device), device),
    }
    if p.augment != "none":
        streams["augment"] = AugmentStream(augmentation(modality, p.augment), make_generator(p.seed, "augment-batches", device))
    return streams


def next_batch(dd: DeviceData, streams: dict, world: World) -> Batch:
    """This rank's slice of the next global batch, with the protocol's augmentation (`--augment`) when on.
    The global batch is augmented before it is sliced, so that the draws do not depend on the processes."""
    i_lb, i_ulb = streams["labeled"].next(), streams["unlabeled"].next()
    if "augment" not in streams:
        i_lb, i_ulb = world.local(i_lb), world.local(i_ulb)
        return Batch(dd.inputs(dd.x_lb[i_lb]), dd.y_lb[i_lb], dd.inputs(dd.x_ulb[i_ulb]))
    augment = streams["augment"]
    x_lb, x_ulb = augment(dd.inputs(dd.x_lb[i_lb])), augment(dd.inputs(dd.x_ulb[i_ulb]))
    return Batch(world.local(x_lb), world.local(dd.y_lb[i_lb]), world.local(x_ulb))


def set_lr(optimizer: torch.optim.Optimizer, p: ProtocolConfig, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = p.lr * lr_factor(p, step)


def train_step(model: nn.Module, optimizer, gradients: compiled.Step, update: Callable[[], None], batch: Batch, progress: Progress, clip: float, terms, world: World) -> torch.Tensor:
    """One optimizer step on the method's loss; returns the detached (loss, *terms) (1+T,) of the global
    batch (the mean over ranks), no host sync. `gradients` is `method.loss` → backward, in the run's
    precision, and `update` the optimizer's step, each eager or compiled (ssl_bench.compiled)."""
    optimizer.zero_grad(set_to_none=True)
    loss, logged = gradients(batch, progress)  # sets each parameter's .grad
    world.average_gradients(model)  # several ranks: the global batch's gradient (no-op for one process)
    if clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    update()
    return world.mean(torch.stack([loss.detach(), *(logged[k].detach().float() for k in terms)]))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated by tensors since `reset_peak_memory` (this session of a resumed run); None on CPU."""
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def check_finite(tracker: LossTracker, terms, writer: Writer, method: str) -> None:
    """Stop the run with `failed.json` at the first non-finite loss (one host sync)."""
    bad_step = tracker.bad_step.item()
    if bad_step < 0:
        return
    shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(("loss", *terms), tracker.bad_values.tolist()))
    error = f"non-finite loss at step {bad_step} of {method}: {shown}; try a lower --lr or other params"
    writer.json(records.FAILED, {"error": error, "step": bad_step})
    if writer.active:
        runstate.remove(writer.run_dir)  # nothing to resume: the weights are not finite
    raise NonFiniteLoss(error)  # the saved best checkpoint predates it; the weights now are not used


def evaluate(loop: LoopState, model, dd: DeviceData, p: ProtocolConfig, tracker: LossTracker, health: HealthMonitor, terms, optimizer, writer: Writer, start: float, bar) -> dict[str, Any]:
    """Validation accuracy and health after `loop.step` steps: a metrics row (returned), and best.pt if it is the best."""
    done = loop.step
    means = tracker.means()  # host sync
    val_logits = predict(model, dd.x_val, p.eval_batch, dd.inputs)  # (N_val, K)
    val_acc = accuracy(val_logits, dd.y_val)
    event = health.check(done, val_logits, means[0])
    if event and writer.active:
        bar.write(f"{writer.run_dir.name}: {event}", file=sys.stderr)
    row = {"step": done, "val_acc": val_acc, "top_class_share": round(health.share, 4), "loss": means[0], **dict(zip(terms, means[1:])), "lr": optimizer.param_groups[0]["lr"], "time_s": round(time.perf_counter() - start, 3)}
    loop.last_row, loop.metrics_bytes = row, writer.metrics_row(row)
    if val_acc > loop.best_val:
        loop.best_val, loop.best_step = val_acc, done
        loop.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        writer.checkpoint(records.BEST_CKPT, {"step": done, "val_acc": val_acc, "model": loop.best_model})
    bar.set_postfix(loss=f"{means[0]:.3f}", val=f"{val_acc:.3f}", best=f"{loop.best_val:.3f}")
    return row


def finish(resolved: Resolved, loop: LoopState, model, dd: DeviceData, split: Split, health: HealthMonitor, writer: Writer, fingerprints: dict, wall_s: float, world: World, speed: dict) -> dict[str, Any]:
    """Test accuracy at the best-validation and at the last checkpoint; `last.pt`, then `result.json`."""
    p, info, device = resolved.protocol, resolved.info, resolved.device
    val_acc_last, steps_done = loop.last_row["val_acc"], loop.last_row["step"]
    logits_last = predict(model, dd.x_test, p.eval_batch, dd.inputs)
    writer.checkpoint(records.LAST_CKPT, {"step": steps_done, "val_acc": val_acc_last, "model": model.state_dict()})
    writer.checkpoint(records.BEST_CKPT, {"step": loop.best_step, "val_acc": loop.best_val, "model": loop.best_model})  # the same as saved at its evaluation, unless a kill outran it
    model.load_state_dict(loop.best_model)
    logits_best = predict(model, dd.x_test, p.eval_batch, dd.inputs)

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
        "health": health.record(),  # {"status": "ok"} or collapsed / diverged (ssl_bench.health)
        "test_acc": accuracy(logits_best, dd.y_test),
        "test_acc_last": accuracy(logits_last, dd.y_test),
        "val_acc_best": loop.best_val,
        "val_acc_last": val_acc_last,
        "best_step": loop.best_step,
        "n_labeled": len(split.labeled),
        "n_unlabeled": len(dd.x_ulb),
        "n_val": len(split.val),
        "n_test": len(dd.y_test),
        "wall_time_s": round(wall_s, 3),  # training and evaluation, summed over resumed sessions
        **speed,  # peak_memory_mb (CUDA; None on CPU), compiled_step (with --compile)
        "device": records.device_name(device),
        "cpu_threads": torch.get_num_threads(),  # = protocol.cpu_threads: CPU float results depend on it
        "world_size": world.size,  # processes of this data-parallel run (ssl_bench.distributed)
        "versions": records.versions(),
        "git_commit": records.git_commit(),
        **fingerprints,
        "run_id": writer.run_dir.name,
    }
    if dd.groups_test is not None:
        result["test_acc_recording"] = group_accuracy(logits_best, dd.y_test, dd.groups_test)
        result["test_acc_recording_last"] = group_accuracy(logits_last, dd.y_test, dd.groups_test)
    writer.json(records.RESULT, result)
    if writer.active:
        runstate.remove(writer.run_dir)  # the run is complete: nothing left to resume
    return result
