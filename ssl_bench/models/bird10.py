"""`bird10net`: the paper's 1-D CNN for raw bird-song audio (appendix A.2, docs/design.md §3).

conv1d 1→42 (kernel 1024, stride 512) → ReLU → maxpool1d(4, 2) → conv1d 42→42 (kernel 3, stride 2) →
ReLU → dense 32 → ReLU → dropout 0.5 → dense 10. The dense layer's input size follows from the input
length, so any sample rate and window length works (at 44.1 kHz × 500 ms: 22,050 samples, 60,842
parameters). The activations after each layer are our reading of the paper's arrow notation.

The first conv's kernel and stride default to the paper's share of its window: 1024 and 512 of the
22,050 samples of a 500 ms window at 44.1 kHz (23.2 ms and 11.6 ms), scaled to the input length. On
500 ms windows that is the same duration at any sample rate (at 4 kHz: 93 and 46 of 2,000 samples) and the
same layer sizes after it (conv1 42 steps, pool1 20, conv2 9); `-m kernel=… -m stride=…` set samples.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench.models.init import he_init
from ssl_bench.models.registry import Channels, Dropout, Length, register_model

PAPER_WINDOW, PAPER_KERNEL, PAPER_STRIDE = 22050, 1024, 512  # samples: 500 ms at 44.1 kHz, 23.2 ms, 11.6 ms


def paper_share(length: int, size: int) -> int:
    """`size` samples of the paper's 22,050-sample window, scaled to a window of `length` samples."""
    return max(1, round(size * length / PAPER_WINDOW))


def conv_out(length: int, kernel: int, stride: int) -> int:
    """Output length of an unpadded conv/pool, 0 if the input is shorter than the kernel."""
    return (length - kernel) // stride + 1 if length >= kernel else 0


class Bird10Net(nn.Module):
    """Named layers: `conv1`, `pool1`, `conv2`, `fc1` (each after its activation)."""

    feature_layers = ("conv1", "pool1", "conv2", "fc1")

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        *,
        width: int,
        kernel: int | None,
        stride: int | None,
        hidden: int,
        dropout: float,
    ):
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"takes (C, L) signals, got input shape {tuple(input_shape)}")
        kernel = paper_share(input_shape[1], PAPER_KERNEL) if kernel is None else kernel
        stride = paper_share(input_shape[1], PAPER_STRIDE) if stride is None else stride
        sizes = {"width": width, "kernel": kernel, "stride": stride, "hidden": hidden}
        for key, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive whole number, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        channels, length = input_shape
        out_length = conv_out(conv_out(conv_out(length, kernel, stride), 4, 2), 3, 2)
        if out_length < 1:  # conv2 needs 3 pooled steps, the pool 8 conv1 steps
            raise ValueError(
                f"with kernel {kernel} and stride {stride} "
                f"it needs signals of at least {kernel + 7 * stride} samples, got {length}"
            )
        self.conv1 = nn.Sequential(nn.Conv1d(channels, width, kernel, stride), nn.ReLU())
        self.pool1 = nn.MaxPool1d(4, 2)
        self.conv2 = nn.Sequential(nn.Conv1d(width, width, 3, 2), nn.ReLU())
        self.fc1 = nn.Sequential(nn.Linear(width * out_length, hidden), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)
        he_init(self, "relu", output=self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv2(self.pool1(self.conv1(x)))  # (B, width, out_length)
        return self.head(self.dropout(self.fc1(z.flatten(1))))  # (B, K)


@register_model(modalities=("signal",), lr=0.01 / 3)
def bird10net(
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    width: Channels = 42,
    kernel: Length | None = None,
    stride: Length | None = None,
    hidden: Channels = 32,
    dropout: Dropout = 0.5,
):
    """Bird10 1-D CNN on raw audio (paper A.2); any sample rate and window length (kernel/stride: the paper's
    share of the window)."""
    return Bird10Net(
        num_classes, input_shape, width=width, kernel=kernel, stride=stride, hidden=hidden, dropout=dropout
    )
