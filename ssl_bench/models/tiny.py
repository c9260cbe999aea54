"""`tinycnn`: a small ReLU CNN for tiny inputs (8×8 digits, short 1-D signals), the fast default."""

from __future__ import annotations

from torch import nn

from ssl_bench.models.init import he_init
from ssl_bench.models.registry import Channels, Dropout, register_model


class TinyCNN(nn.Module):
    """conv32 3×3 → ReLU → conv64 3×3 stride 2 → ReLU → conv64 3×3 → ReLU → global mean pool → dense.

    Named stages (`conv1`, `conv2`, `conv3`, `pool`, `head`) are its intermediate representations.
    """

    feature_layers = ("conv1", "conv2", "conv3")

    def __init__(self, num_classes: int, in_chans: int, dims: int, width: int = 32, dropout: float = 0.0):
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.conv1 = nn.Sequential(Conv(in_chans, width, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(Conv(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.conv3 = nn.Sequential(Conv(2 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.Flatten(2), nn.Dropout(dropout))  # (B, C, L)
        self.head = nn.Linear(2 * width, num_classes)
        he_init(self, "relu", output=self.head)

    def forward(self, x):
        z = self.pool(self.conv3(self.conv2(self.conv1(x))))  # (B, C, H*W)
        return self.head(z.mean(-1))  # (B, K)


@register_model(modalities=("image", "signal"), lr=3e-3)
def tinycnn(*, num_classes: int, input_shape: tuple[int, ...], width: Channels = 32, dropout: Dropout = 0.0):
    """Tiny 3-layer ReLU CNN (2-D or 1-D by input), for digits and quick tests."""
    return TinyCNN(num_classes, input_shape[0], dims=len(input_shape) - 1, width=width, dropout=dropout)
