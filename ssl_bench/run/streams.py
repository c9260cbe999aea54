"""The protocol's batches: random streams of indices (and, with `--augment`, of augmentations), the same
for every method of a seed, and this rank's slice of each global batch.

A batch is an index slice of an on-device `torch.randperm` (no DataLoader in the hot path). Each stream
is seeded for its purpose (ssl_bench.seeding) and saved and restored with the run state (ssl_bench.run.runstate).
"""

from __future__ import annotations

import torch

from ssl_bench.augment import augmentation
from ssl_bench.method import Batch
from ssl_bench.protocol import ProtocolConfig
from ssl_bench.run.device_data import DeviceData
from ssl_bench.run.distributed import World
from ssl_bench.seeding import make_generator


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

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Where the stream stands: its generator's state and the indices drawn but not yet served."""
        return {"generator": self.gen.get_state(), "buffer": self.buffer.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["generator"])
        self.buffer = state["buffer"].to(self.device)


class AugmentStream:
    """The protocol's augmentation (`--augment`): one batched augmentation function and its own seeded
    generator, applied alike to the labeled and unlabeled batches of every method, so that all methods
    of a seed still see the same batches. Saved with the run state like the index streams."""

    def __init__(self, augment, generator: torch.Generator):
        self.augment, self.gen = augment, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment(x, self.gen)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["generator"])


def protocol_streams(dd: DeviceData, p: ProtocolConfig, modality: str, device: torch.device) -> dict:
    """The protocol's random streams, each seeded for its purpose: labeled and unlabeled batch indices and,
    with `--augment`, the augmentation of both batches (saved and restored with the run state)."""
    streams = {
        "labeled": IndexStream(len(dd.x_lb), p.batch_lb, make_generator(p.seed, "labeled-batches", device), device),
        "unlabeled": IndexStream(
            len(dd.x_ulb), p.batch_ulb, make_generator(p.seed, "unlabeled-batches", device), device
        ),
    }
    if p.augment != "none":
        streams["augment"] = AugmentStream(
            augmentation(modality, p.augment), make_generator(p.seed, "augment-batches", device)
        )
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
