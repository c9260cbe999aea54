"""A run's data on the training device: the split's tensors, evaluation.

Samples stay as stored (uint8 images stay uint8) and are normalized per batch; the batches are drawn by
ssl_bench.run.streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ssl_bench.data import DataArrays, Split


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
