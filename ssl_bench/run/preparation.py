"""What a run is built from before its first step, the same for every method of a seed: the data and its
split, the initial model, the method with its own random stream, the optimizer, and the step's two
functions in the run's precision, eager or compiled (docs/speed.md).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ssl_bench.data import DataArrays, Split, default_data_dir, make_split
from ssl_bench.errors import UserError
from ssl_bench.method import MethodContext, SSLMethod
from ssl_bench.models import create_model
from ssl_bench.protocol import Resolved
from ssl_bench.run import compiled
from ssl_bench.run.distributed import World
from ssl_bench.seeding import derive_seed, make_generator

Warn = Callable[[str], None]


def prepare(resolved: Resolved) -> tuple[DataArrays, Split]:
    """Load the data and draw the split (refusing impossible label counts) — still before training."""
    spec, info = resolved.spec, resolved.info
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


def make_method(resolved: Resolved, world: World) -> SSLMethod:
    """The run's method, with its own random stream on the run's device (one per rank)."""
    info, device = resolved.info, resolved.device
    generator = make_generator(resolved.protocol.seed, world.stream_purpose("method"), device)
    context = MethodContext(info.modality, info.num_classes, generator)
    return resolved.method_cls(resolved.method_config, context)


def make_optimizer(model: nn.Module, resolved: Resolved) -> torch.optim.Optimizer:
    """The protocol's optimizer (Adam, as the protocol fingerprint says), at the protocol's base rate."""
    p = resolved.protocol
    return torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)


def step_functions(
    resolved: Resolved, model: nn.Module, method: SSLMethod, optimizer: torch.optim.Optimizer, warn: Warn
) -> tuple[compiled.Step, Callable[[], None]]:
    """`method.loss` → backward in the run's precision (ssl_bench.run.precision), and the optimizer's step,
    each eager or compiled with `--compile` (ssl_bench.run.compiled; `warn` gets its fallback lines)."""
    p = resolved.protocol
    name = f"{resolved.model}/{resolved.spec.method}"  # in --compile's warning lines
    gradients = compiled.gradients(model, method, p.precision, p.compile, resolved.device, name, warn=warn)
    return gradients, compiled.optimizer_step(optimizer, p.compile, name, warn=warn)


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
