"""The training protocol (README, "The protocol"): what a run is (`RunSpec`), checked and completed
(`resolve`), and the protocol every method of a comparison shares (`ProtocolConfig`). The loop itself is
ssl_bench.run.training.

For one seed, the split, the initial weights and the sequence of labeled / unlabeled batch indices come
from their own seeded streams, so they do not depend on the method; a method's randomness draws from
the method's own generator. The protocol fingerprint (ssl_bench.run.training) covers all of that and not the method.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch

from ssl_bench import records
from ssl_bench.config import Range, build_config, check_fields, setting, to_jsonable
from ssl_bench.data import get_dataset
from ssl_bench.data.registry import DatasetInfo
from ssl_bench.data.splits import check_labels
from ssl_bench.errors import UserError
from ssl_bench.method import SSLMethod, load_method
from ssl_bench.models.registry import check_model
from ssl_bench.run.distributed import check_divides, world_from_env
from ssl_bench.run.precision import PRECISIONS

Count = Annotated[int, Range(1)]  # a whole number >= 1
NonNegative = Annotated[float, Range(0, finite=True)]


@dataclass(frozen=True)
class ProtocolConfig:
    """The protocol every method of a comparison shares, each field declared once: its type (checked by
    ssl_bench.config: `Range`, `Literal`), its default and its doc, which is also the help of its `run` /
    `sweep` option (`--batch-lb` for `batch_lb`, derived by `config.config_options`). A field marked
    `cli=False` is set through a grid file's `protocol = { … }` or a run's config.json; `steps`, `lr` and
    `seed` are `RunSpec` fields with options of their own (their defaults come from the dataset, the model
    and the sweep's seeds). A field added after runs were recorded is `later=True`: left out of run ids,
    config.json and fingerprints while at its default (`LATER_FIELDS`), so that earlier runs keep their
    folders and fingerprints.
    """

    steps: Count = setting(doc="Optimizer steps (the budget)", cli=False)
    lr: Annotated[float, Range(0, low_open=True, finite=True)] = setting(doc="Adam learning rate", cli=False)
    batch_lb: Count = setting(32, "Labeled samples per step")
    batch_ulb: Count = setting(128, "Unlabeled samples per step")
    # cosine: after the warm-up, lr·½(1 + cos(π·step/steps)), to 0 at the end of the budget. Cosine since issue 30:
    # constant-lr Adam collapses the paper's nets once the labeled set is memorized (docs/dninv.md)
    lr_schedule: Literal["cosine", "constant"] = setting(
        "cosine",
        "Learning rate after the warm-up: cosine decay to 0 over the budget, or constant (part of the protocol)",
    )
    # step i uses lr·(i+1)/N for i < N (docs/models.md)
    warmup_steps: Annotated[int, Range(0)] = setting(100, "Linear learning-rate warm-up steps, 0 = none")
    weight_decay: NonNegative = setting(0.0, "Adam L2 penalty", cli=False)
    clip_grad_norm: NonNegative = setting(0.0, "Max global gradient norm; 0 = no clipping", cli=False)
    eval_every: Count = setting(100, "Steps between validation evaluations")
    eval_batch: Count = setting(1024, "Samples per evaluation forward pass", cli=False)
    collapse_patience: Annotated[float, Range(0, 1)] = setting(
        0.25,
        "Stop a run collapsed (one predicted class) for this fraction of the budget; 0 = never (ssl_bench.run.health)",
        cli=False,
    )
    seed: int = setting(0, "Seeds every stream: split, init, batch order, method, dropout", cli=False)
    # float reductions, hence results, depend on it (README, "The protocol")
    cpu_threads: Count = setting(1, "Torch threads of a CPU run (part of the protocol)")
    precision: Literal[PRECISIONS] = setting(
        "fp32", "Training precision: bf16 autocasts the step (part of the protocol)", later=True
    )
    compile: bool = setting(
        False,
        "torch.compile the training step; eager with one warning where it cannot (part of the protocol)",
        later=True,
    )
    augment: Literal["none", "weak"] = setting(
        "none",
        "Input augmentation of every method's labeled and unlabeled batches, from a protocol stream "
        "(part of the protocol)",
        later=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)


def later_fields(cls: type = ProtocolConfig) -> dict[str, Any]:
    """The protocol fields added after runs were recorded (`later=True`), with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("later")}


LATER_FIELDS = later_fields()  # precision, compile, augment


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
    world_size: int = 1  # processes of one data-parallel run (torchrun; ssl_bench.run.distributed)

    def as_json(self) -> dict[str, Any]:
        world = (
            {"world_size": self.world_size} if self.world_size > 1 else {}
        )  # one process: as before processes counted
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
            "protocol": recorded_fields(self.protocol),
            **world,
        }

    def run_id(self) -> str:
        """A readable, deterministic folder name: same run → same folder (sweeps resume on it)."""
        labels = "all" if self.spec.labels is None else self.spec.labels
        model = self.model.replace(":", "_").replace("/", "_")
        return (
            f"{self.info.name}-{labels}-{model}-{self.spec.method}-s{self.protocol.seed}-"
            f"{records.fingerprint(self.as_json())[:8]}"
        )


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
        raise UserError(
            f"val_size must be a whole number >= 1 (model selection needs a validation split), got {val_size!r}"
        )
    world = world_from_env()
    check_divides(world, protocol.batch_lb, protocol.batch_ulb)
    return Resolved(
        spec, method_cls, method_config, info, model, protocol, val_size, resolve_device(spec.device), world.size
    )


def lr_factor(protocol: ProtocolConfig, step: int) -> float:
    """The learning rate of `step` as a fraction of `protocol.lr`: linear warm-up, then the schedule."""
    warmup = min(1.0, (step + 1) / protocol.warmup_steps) if protocol.warmup_steps else 1.0
    if protocol.lr_schedule == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * step / protocol.steps))
    return warmup


def recorded_fields(p: ProtocolConfig) -> dict[str, Any]:
    """The protocol's fields as recorded, without the `LATER_FIELDS` that are at their defaults."""
    later = later_fields(type(p))
    return {k: v for k, v in dataclasses.asdict(p).items() if not (k in later and v == later[k])}


def protocol_fields(p: ProtocolConfig, device: torch.device) -> dict[str, Any]:
    """The protocol as fingerprinted: `cpu_threads` counts only for runs on the CPU; the `LATER_FIELDS`
    (`precision`, `compile`, `augment`) only when not at their defaults (fp32, eager, none)."""
    fields = recorded_fields(p)
    if device.type != "cpu":
        del fields["cpu_threads"]
    return fields
