"""The training protocol (SPEC §5): one loop, identical for every method of a comparison.

For one seed, the split, the initial weights and the sequence of labeled / unlabeled batch indices come
from their own seeded streams, so they do not depend on the method; a method's randomness draws from
the method's own generator. `protocol_fingerprint` covers all of that and not the method.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_bench import records
from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.config import build_config, to_jsonable
from ssl_bench.data import DataArrays, Split, get_dataset, make_split
from ssl_bench.data.splits import check_labels
from ssl_bench.data.registry import DatasetInfo
from ssl_bench.errors import UserError
from ssl_bench.health import HealthMonitor
from ssl_bench.method import Batch, MethodContext, Progress, SSLMethod, load_method
from ssl_bench.models import create_model
from ssl_bench.models.registry import check_model
from ssl_bench.seeding import derive_seed, make_generator


@dataclass(frozen=True)
class ProtocolConfig:
    steps: int  # optimizer steps (the budget)
    lr: float  # Adam learning rate
    batch_lb: int = 32  # labeled samples per step
    batch_ulb: int = 128  # unlabeled samples per step
    lr_schedule: str = "constant"  # constant | cosine (to 0 at the last step)
    warmup_steps: int = 100  # linear lr warm-up: step i uses lr·(i+1)/N for i < N (docs/models.md); 0 = none
    weight_decay: float = 0.0  # Adam L2 penalty
    clip_grad_norm: float = 0.0  # max global gradient norm; 0 = no clipping
    eval_every: int = 100  # steps between validation evaluations
    eval_batch: int = 1024  # samples per evaluation forward pass
    collapse_patience: float = 0.25  # stop a run collapsed (one predicted class) for this fraction of the budget; 0 = never (ssl_bench.health)
    seed: int = 0  # seeds every stream: split, init, batch order, method, dropout
    cpu_threads: int = 1  # torch threads on CPU: float reductions, hence results, depend on it (README, "The protocol")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_lb", "batch_ulb", "eval_every", "eval_batch", "cpu_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not 0 <= self.collapse_patience <= 1:
            raise ValueError(f"collapse_patience must be in [0, 1], got {self.collapse_patience}")
        for name in ("clip_grad_norm", "weight_decay"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run, as the user asked for it."""

    method: str
    dataset: str
    labels: int | None  # None = all training data labeled
    model: str | None = None  # None = the dataset's default model
    seed: int = 0
    steps: int | None = None  # None = the dataset's default budget
    lr: float | None = None  # None = the model's paper learning rate
    val_size: int | None = None  # None = the dataset's default
    params: dict[str, Any] = field(default_factory=dict)  # method config overrides
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)  # other ProtocolConfig overrides
    exclude_labeled: bool = False  # keep labeled samples out of the unlabeled set
    data_dir: str | None = None
    download: bool = True
    device: str = "auto"  # auto | cpu | cuda


def spec_from_config(config: dict[str, Any], **overrides) -> RunSpec:
    """The `RunSpec` of a run's `config.json` (what `Resolved.as_json` wrote); `overrides` replace fields."""
    protocol = dict(config["protocol"])
    fields = dict(
        method=config["method"],
        params=config.get("params", {}),
        dataset=config["dataset"],
        labels=config["labels"],
        model=config["model"],
        seed=protocol.pop("seed"),
        steps=protocol.pop("steps"),
        lr=protocol.pop("lr"),
        val_size=config["val_size"],
        model_options=config.get("model_options", {}),
        dataset_options=config.get("dataset_options", {}),
        protocol=protocol,
        exclude_labeled=config.get("exclude_labeled", False),
    )
    return RunSpec(**{**fields, **overrides})


@dataclass
class Resolved:
    """A `RunSpec` checked and completed with defaults, before any data is loaded."""

    spec: RunSpec
    method_cls: type[SSLMethod]
    method_config: Any
    info: DatasetInfo
    model: str
    protocol: ProtocolConfig
    val_size: int
    device: torch.device

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.spec.method,
            "params": to_jsonable(self.method_config),
            "dataset": self.info.name,
            "dataset_options": self.spec.dataset_options,
            "labels": self.spec.labels,
            "val_size": self.val_size,
            "exclude_labeled": self.spec.exclude_labeled,
            "model": self.model,
            "model_options": self.spec.model_options,
            "protocol": dataclasses.asdict(self.protocol),
        }

    def run_id(self) -> str:
        """A readable, deterministic folder name: same run → same folder (sweeps resume on it)."""
        labels = "all" if self.spec.labels is None else self.spec.labels
        model = self.model.replace(":", "_").replace("/", "_")
        return f"{self.info.name}-{labels}-{model}-{self.spec.method}-s{self.protocol.seed}-{records.fingerprint(self.as_json())[:8]}"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def resolve(spec: RunSpec) -> Resolved:
    """Check every name and setting of `spec` (refusing bad ones) without loading any data."""
    method_cls = load_method(spec.method)
    method_config = build_config(method_cls.Config, spec.params, f"method {spec.method!r}")
    info = get_dataset(spec.dataset)
    model = spec.model or info.default_model
    entry = check_model(model, info.modality, spec.model_options)
    check_labels(spec.labels, info.num_classes)
    overrides = dict(spec.protocol)
    given = {"steps": spec.steps, "lr": spec.lr, "seed": spec.seed}  # None = the default; 0 is a value (and refused)
    overrides.update({k: v for k, v in given.items() if v is not None})
    overrides.setdefault("steps", info.default_steps)
    overrides.setdefault("lr", entry.lr)
    protocol = build_config(ProtocolConfig, overrides, "protocol")
    val_size = info.val_size if spec.val_size is None else spec.val_size
    if not (isinstance(val_size, int) and val_size >= 1):
        raise UserError(f"val_size must be a whole number >= 1 (model selection needs a validation split), got {val_size!r}")
    return Resolved(spec, method_cls, method_config, info, model, protocol, val_size, resolve_device(spec.device))


# --------------------------------------------------------------------------------------------------
# Data on the device


@dataclass
class DeviceData:
    """The split's tensors on the training device, as stored (uint8 images stay uint8: 4× less memory);
    `inputs(x)` normalizes a batch with the training split's per-channel statistics."""

    x_lb: torch.Tensor  # (N_lb, *shape) uint8 or float
    y_lb: torch.Tensor  # (N_lb,) int64
    x_ulb: torch.Tensor  # (N_ulb, *shape)
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    groups_test: torch.Tensor | None
    mean: torch.Tensor  # (C,) per-channel statistics of the training split (val excluded), on the device
    std: torch.Tensor

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of stored samples as normalized float inputs."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x.float() - self.mean.view(shape)) / self.std.view(shape)

    def original_units(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of `inputs` (for plots): normalized values back in the data's units."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.std.view(shape) + self.mean.view(shape)


def normalization(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over samples and positions of `x_train` (N, C, ...)."""
    x = x_train.float().transpose(0, 1).reshape(x_train.shape[1], -1)  # (C, N*positions)
    return x.mean(1), x.std(1).clamp_min(1e-6)


def to_device(data: DataArrays, split: Split, device: torch.device) -> DeviceData:
    train_idx = torch.from_numpy(np.union1d(split.labeled, split.unlabeled))  # validation excluded
    mean, std = normalization(data.x_train[train_idx])
    x_ulb = data.x_train[torch.from_numpy(split.unlabeled)]
    if data.x_extra is not None:
        x_ulb = torch.cat([x_ulb, data.x_extra])
    part = lambda t, idx: t[torch.from_numpy(idx)].to(device)
    return DeviceData(
        x_lb=part(data.x_train, split.labeled),
        y_lb=part(data.y_train, split.labeled),
        x_ulb=x_ulb.to(device),
        x_val=part(data.x_train, split.val),
        y_val=part(data.y_train, split.val),
        x_test=data.x_test.to(device),
        y_test=data.y_test.to(device),
        groups_test=None if data.groups_test is None else data.groups_test.to(device),
        mean=mean.to(device),
        std=std.to(device),
    )


class IndexStream:
    """Batches of indices in [0, n): slices of successive on-device permutations (one per epoch)."""

    def __init__(self, n: int, batch: int, generator: torch.Generator, device: torch.device):
        self.n, self.batch, self.gen, self.device = n, batch, generator, device
        self.buffer = torch.empty(0, dtype=torch.long, device=device)

    def next(self) -> torch.Tensor:
        while len(self.buffer) < self.batch:
            perm = torch.randperm(self.n, generator=self.gen, device=self.device)
            self.buffer = torch.cat([self.buffer, perm])
        idx, self.buffer = self.buffer[: self.batch], self.buffer[self.batch :]
        return idx  # (batch,)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int, inputs=lambda x: x) -> torch.Tensor:
    """Logits (N, K) of `inputs(x)` in eval mode, `batch` samples at a time; the model is put back in train mode."""
    model.eval()
    try:
        return torch.cat([model(inputs(x[i : i + batch])) for i in range(0, len(x), batch)])
    finally:
        model.train()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()  # host sync


def group_accuracy(logits: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> float:
    """Per-recording accuracy: the class of the mean of a recording's window logits."""
    ids, inverse = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(len(ids), logits.shape[1], device=logits.device).index_add_(0, inverse, logits)
    labels = torch.zeros(len(ids), dtype=torch.long, device=logits.device).scatter_(0, inverse, y)
    return (sums.argmax(1) == labels).float().mean().item()  # host sync


class NonFiniteLoss(UserError):
    pass


CHECK_EVERY = 10  # steps between checks for a non-finite loss (each check is one host sync)


def lr_factor(protocol: ProtocolConfig, step: int) -> float:
    """The learning rate of `step` as a fraction of `protocol.lr`: linear warm-up, then the schedule."""
    warmup = min(1.0, (step + 1) / protocol.warmup_steps) if protocol.warmup_steps else 1.0
    if protocol.lr_schedule == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * step / protocol.steps))
    return warmup


# --------------------------------------------------------------------------------------------------
# The run


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


def protocol_fields(p: ProtocolConfig, device: torch.device) -> dict[str, Any]:
    """The protocol as fingerprinted: `cpu_threads` counts only for runs on the CPU."""
    fields = dataclasses.asdict(p)
    if device.type != "cpu":
        del fields["cpu_threads"]
    return fields


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(resolved: Resolved, out_root: Path, *, show_progress: bool = True, force: bool = False, on_start=None) -> dict[str, Any]:
    """Run one experiment into `out_root/<run id>/` and return its result record.

    `on_start(config)` is called with the resolved config once the data and split are ready.
    """
    with torch_threads(resolved.protocol.cpu_threads):
        return _train(resolved, out_root, show_progress=show_progress, force=force, on_start=on_start)


def _train(resolved: Resolved, out_root: Path, *, show_progress: bool, force: bool, on_start) -> dict[str, Any]:
    from tqdm.auto import tqdm

    p, info, device = resolved.protocol, resolved.info, resolved.device
    run_dir = Path(out_root) / resolved.run_id()
    if records.is_complete(run_dir) and not force:
        raise UserError(f"{run_dir} already holds a complete run; use --force to run it again")
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted (or forced) run starts over
    data, split = prepare(resolved)
    start = time.perf_counter()
    input_shape = tuple(data.x_train.shape[1:])
    model = init_model(resolved, input_shape)
    init_fp = records.state_fingerprint(model.state_dict())
    context = MethodContext(info.modality, info.num_classes, make_generator(p.seed, "method", device), AUGMENTATIONS[info.modality])
    method = resolved.method_cls(resolved.method_config, context)
    method.check_model(model)  # e.g. layer names in the method's config: refused before anything is written
    run_dir.mkdir(parents=True)

    dd = to_device(data, split, device)
    model.to(device).train()
    torch.manual_seed(derive_seed(p.seed, "global"))  # dropout and other in-model randomness
    terms = method.term_names()
    split_fp = split.fingerprint(info.name)
    protocol_fp = records.fingerprint(
        {
            "dataset": info.name,
            "dataset_options": resolved.spec.dataset_options,
            "input_shape": input_shape,
            "split": split_fp,
            "model": resolved.model,
            "model_options": resolved.spec.model_options,
            "init": init_fp,
            "optimizer": "adam",
            "device_type": device.type,  # batch permutations are drawn on the device: CPU and CUDA streams differ
            "protocol": protocol_fields(p, device),
        }
    )
    config = {**resolved.as_json(), "device": records.device_name(device), "run_id": run_dir.name}
    records.write_json(run_dir / records.CONFIG, config)
    if on_start is not None:
        on_start(config)
    records.write_json(run_dir / records.SPLIT, {"fingerprint": split_fp, **split.as_json()})

    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    lb_stream = IndexStream(len(dd.x_lb), p.batch_lb, make_generator(p.seed, "labeled-batches", device), device)
    ulb_stream = IndexStream(len(dd.x_ulb), p.batch_ulb, make_generator(p.seed, "unlabeled-batches", device), device)

    sums = torch.zeros(len(terms) + 1, device=device)  # running sums of (loss, *terms) since last eval
    bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
    bad_values = torch.zeros(len(terms) + 1, device=device)  # (loss, *terms) at that step
    n_sum = 0
    best_val, best_step, best_state = -1.0, 0, None
    health = HealthMonitor(p.steps, p.collapse_patience, info.num_classes, grace_steps=p.warmup_steps)
    bar = tqdm(total=p.steps, desc=f"{resolved.spec.method} s{p.seed}", disable=not show_progress, leave=False, dynamic_ncols=True)
    for step in range(p.steps):
        for group in optimizer.param_groups:
            group["lr"] = p.lr * lr_factor(p, step)
        i_lb, i_ulb = lb_stream.next(), ulb_stream.next()
        batch = Batch(dd.inputs(dd.x_lb[i_lb]), dd.y_lb[i_lb], dd.inputs(dd.x_ulb[i_ulb]))
        loss, logged = method.loss(model, batch, Progress(step, p.steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if p.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), p.clip_grad_norm)
        optimizer.step()
        values = torch.stack([loss.detach(), *(logged[k].detach().float() for k in terms)])  # (1+T,)
        first = ~torch.isfinite(values[0]) & (bad_step < 0)  # no host sync: remember the first bad step
        bad_step = torch.where(first, bad_step.new_full((), step), bad_step)
        bad_values = torch.where(first, values, bad_values)
        sums += values
        n_sum += 1
        if step == 0:
            health.initial_loss = values[0].item()  # host sync, once
        bar.update(1)

        done = step + 1
        is_eval = done % p.eval_every == 0 or done == p.steps
        if (done % CHECK_EVERY == 0 or is_eval) and bad_step.item() >= 0:  # host sync every CHECK_EVERY steps
            shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(("loss", *terms), bad_values.tolist()))
            error = f"non-finite loss at step {bad_step.item()} of {resolved.spec.method}: {shown}; try a lower --lr or other params"
            records.write_json(run_dir / records.FAILED, {"error": error, "step": bad_step.item()})
            raise NonFiniteLoss(error)  # the saved best checkpoint predates it; the weights now are not used
        if is_eval:
            means = (sums / n_sum).tolist()  # host sync
            val_logits = predict(model, dd.x_val, p.eval_batch, dd.inputs)  # (N_val, K)
            val_acc = accuracy(val_logits, dd.y_val)
            event = health.check(done, val_logits, means[0])
            if event:
                bar.write(f"{run_dir.name}: {event}", file=sys.stderr)
            row = {"step": done, "val_acc": val_acc, "top_class_share": round(health.share, 4), "loss": means[0], **dict(zip(terms, means[1:])), "lr": optimizer.param_groups[0]["lr"], "time_s": round(time.perf_counter() - start, 3)}
            records.append_jsonl(run_dir / records.METRICS, row)
            if val_acc > best_val:
                best_val, best_step = val_acc, done
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                records.save_checkpoint(run_dir / records.BEST_CKPT, {"step": done, "val_acc": val_acc, "model": best_state})
            bar.set_postfix(loss=f"{means[0]:.3f}", val=f"{val_acc:.3f}", best=f"{best_val:.3f}")
            sums.zero_()
            n_sum = 0
            if health.stop:
                break
    bar.close()

    val_acc_last, steps_done = row["val_acc"], row["step"]
    logits_last = predict(model, dd.x_test, p.eval_batch, dd.inputs)
    records.save_checkpoint(run_dir / records.LAST_CKPT, {"step": steps_done, "val_acc": val_acc_last, "model": model.state_dict()})
    model.load_state_dict(best_state)
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
        "val_acc_best": best_val,
        "val_acc_last": val_acc_last,
        "best_step": best_step,
        "n_labeled": len(split.labeled),
        "n_unlabeled": len(dd.x_ulb),
        "n_val": len(split.val),
        "n_test": len(dd.y_test),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "device": records.device_name(device),
        "cpu_threads": torch.get_num_threads(),  # = protocol.cpu_threads: CPU float results depend on it
        "versions": records.versions(),
        "git_commit": records.git_commit(),
        "split_fingerprint": split_fp,
        "protocol_fingerprint": protocol_fp,
        "init_fingerprint": init_fp,
        "run_id": run_dir.name,
    }
    if dd.groups_test is not None:
        result["test_acc_recording"] = group_accuracy(logits_best, dd.y_test, dd.groups_test)
        result["test_acc_recording_last"] = group_accuracy(logits_last, dd.y_test, dd.groups_test)
    records.write_json(run_dir / records.RESULT, result)
    return result
