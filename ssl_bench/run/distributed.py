"""One run on several processes (`torchrun --nproc-per-node N -m ssl_bench.cli run …`): data parallel with
the protocol's global batch.

Every rank builds the same split, initial weights and batch index streams, and takes its slice of each
global batch (`batch_lb / N` labeled and `batch_ulb / N` unlabeled samples: both must divide), so the
global batch is what the protocol says whatever N is. After the backward pass the gradients are
averaged over the ranks with one explicit all-reduce (`average_gradients`), not DDP's wrapper: dninv's
loss contains a gradient (`x̂ = (∂f/∂x)ᵀ f(x)`, `autograd.grad(create_graph=True)`), and DDP's reducer is
not built for higher-order gradients — PyTorch tracks it as unsupported (pytorch/pytorch#63929) and
wrong gradients were reported for losses built with `autograd.grad` under DDP (#47562), because its
hooks and bucket bookkeeping assume each parameter's gradient arrives once, by the plain path. An
all-reduce after `loss.backward()` sees only the finished gradients, so nothing can go wrong there; with
equal slices the mean of the ranks' mean losses is the global mean loss, so the averaged gradient is the
full batch's (tests/test_distributed.py checks it against one process for every method). The cost is no
overlap of communication with the backward pass, which matters little for the paper's small models.
Random draws that are per sample (the method's augmentations,
dropout) come from per-rank streams, so they are independent across ranks (not the one-process draws).
Models with BatchNorm normalize with their rank's slice (as DDP without SyncBatchNorm does).

Rank 0 writes every record and holds the run folder's lock; all ranks evaluate (identical weights),
and stop decisions (health, Ctrl-C/SIGTERM) are agreed on by collectives so that no rank is left
waiting. The world size is part of the protocol fingerprint and recorded as `world_size`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ssl_bench.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes records."""
        return self.rank == 0

    def stream_purpose(self, purpose: str) -> str:
        """A per-rank random stream (rank 0 keeps the one-process stream, so N = 1 changes nothing)."""
        return purpose if self.rank == 0 else f"{purpose}-rank{self.rank}"

    def local(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch of indices (equal slices: the batch divides by the size)."""
        n = len(idx) // self.size
        return idx[self.rank * n : (self.rank + 1) * n]

    def average_gradients(self, model: nn.Module) -> None:
        """Average the parameters' gradients over the ranks: one all-reduce of one flat buffer."""
        if self.size == 1:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of `values` over the ranks (the logged losses are the global batch's)."""
        if self.size == 1:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values / self.size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on some rank (host sync)."""
        if self.size == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t)
        return t.item() > 0

    def gather(self, obj):
        """`obj` of every rank, in rank order, on every rank (small picklable objects)."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def world_from_env() -> World:
    """The world torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    return World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def check_divides(world: World, batch_lb: int, batch_ulb: int) -> None:
    if batch_lb % world.size or batch_ulb % world.size:
        raise UserError(
            f"{world.size} processes need batch sizes that divide by {world.size}; "
            f"got --batch-lb {batch_lb} and --batch-ulb {batch_ulb}"
        )


@contextmanager
def joined(world: World, device: torch.device):
    """The block as a member of the process group (gloo on CPU, NCCL on CUDA, joined here unless the
    caller already has), yielding this rank's device: a CUDA rank takes the GPU of its local rank."""
    if world.size == 1:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    ours = not dist.is_initialized()
    if ours:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        if ours:
            dist.destroy_process_group()
