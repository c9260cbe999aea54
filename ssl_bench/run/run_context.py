"""What the training loop's functions share (ssl_bench.run.training): the run in this process (`RunContext`),
fixed once its folder is open, and this session of it (`Session`), whose bookkeeping state.pt saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ssl_bench.data import Split
from ssl_bench.method import SSLMethod
from ssl_bench.protocol import Resolved
from ssl_bench.run import compiled
from ssl_bench.run.device_data import DeviceData
from ssl_bench.run.distributed import World
from ssl_bench.run.health import HealthMonitor
from ssl_bench.run.loss_tracker import LossTracker
from ssl_bench.run.runfolder import Writer
from ssl_bench.run.runstate import LoopState


@dataclass
class RunContext:
    """The run in this process, fixed once its folder is open: what the loop's functions share."""

    resolved: Resolved  # on this process's device
    world: World  # the processes of the run (ssl_bench.run.distributed)
    dd: DeviceData
    split: Split
    model: nn.Module
    method: SSLMethod
    identity: dict[str, Any]  # its fingerprints and what they cover (ssl_bench.run.identity)
    writer: Writer  # its folder's records (rank 0 writes)
    echo: Callable[[str], None]  # notices (rank 0's only)
    state_every: int  # steps between state saves


@dataclass
class Session:
    """This process's session of the run (a resumed run has several): the parts of a step and the loop's
    bookkeeping, which state.pt saves (ssl_bench.run.runstate)."""

    optimizer: torch.optim.Optimizer
    streams: dict  # the protocol's batch streams (ssl_bench.run.streams)
    gradients: compiled.Step  # method.loss → backward, eager or compiled
    optimizer_step: Callable[[], None]  # the optimizer's step, eager or compiled
    terms: tuple[str, ...]  # the method's logged terms
    tracker: LossTracker
    health: HealthMonitor
    loop: LoopState
    start: float = 0.0  # perf_counter at the run's step 0 (earlier sessions' wall time included)
    bar: Any = None  # the progress bar
    trackers: list = field(default_factory=list)  # live trackers (ssl_bench.run.tracking)


def owners(ctx: RunContext, s: Session) -> dict[str, Any]:
    """The objects whose tensors the run state holds (ssl_bench.run.runstate.save and restore)."""
    return dict(model=ctx.model, optimizer=s.optimizer, streams=s.streams, method=ctx.method, world=ctx.world)
