"""The paper's image networks (docs/design.md §3), without BatchNorm.

- `smallcnn`, `largecnn`: Conv-Small and Conv-Large of the ladder network (Rasmus et al. 2015, arXiv
  1507.02672), the layer strings of its reference code (CuriousAI/ladder README), without the noise and
  BatchNorm of the ladder, and without Conv-Small's final dense layer (docs/design.md §3's parameter counts have none).
- `resnet2_32`, `resnet3_16`: ResnetD-W, a stem conv and 3 stages of D units `act(conv3×3(x) + conv1×1(x))`.
- `smallucnn`, `largeucnn`, `uresnet2_32`, `uresnet3_16`: OUR INTERPRETATION of the paper's "U" /
  inhibitor networks, which the paper does not define: every activation is `U(z) = concat[relu(z),
  −relu(−z)]`, so each layer after one sees twice the channels (and has about twice the weights).

Options: `pool` (`mean` | `max`, the 2×2 poolings; the final global pooling is always a mean), `act`
(`relu` | `leaky_relu` | `sigmoid`, not for U variants) and `dropout` (after each 2×2 pooling, 0 = none).
Named inner layers (`feature_layers`) are every conv block / residual unit after its activation.
Weights: He initialization for the activation, zero biases (`ssl_bench.models.init`).
"""

from __future__ import annotations

import typing
from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.models.init import he_init
from ssl_bench.models.registry import Dropout, register_model

Pool = Literal["mean", "max"]  # the option's declared values (ssl_bench.models.registry checks them)
Act = Literal["relu", "leaky_relu", "sigmoid"]
POOLS = typing.get_args(Pool)
ACTIVATIONS = typing.get_args(Act)
LEAKY_SLOPE = 0.1  # Conv-Large's leaky ReLU slope (Laine & Aila 2016); the paper does not give one

# Conv stacks, as in the ladder reference code: (out channels, kernel, padding) per conv, "pool" = 2×2.
# Padding 0 = "valid", kernel − 1 = "full". A 1×1 conv to the classes and a global mean pool follow.
CONV_SMALL = ((32, 5, 4), "pool", (64, 3, 0), (64, 3, 2), "pool", (128, 3, 0))
CONV_LARGE = (
    (96, 3, 0),
    (96, 3, 2),
    (96, 3, 2),
    "pool",
    (192, 3, 0),
    (192, 3, 2),
    (192, 3, 0),
    "pool",
    (192, 3, 0),
    (192, 1, 0),
)


class U(nn.Module):
    """`U(z) = concat[relu(z), −relu(−z)]` over channels: (B, C, …) -> (B, 2C, …). Our interpretation."""

    expansion = 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(z), -F.relu(-z)], dim=1)


def activation(name: str | None) -> nn.Module:
    """A fresh activation module; `U` (name None) doubles the channels (its `expansion`), the others keep them."""
    if name is None:
        return U()
    if name not in ACTIVATIONS:
        raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE), "sigmoid": nn.Sigmoid}[name]()


def pooling(name: str, dropout: float) -> nn.Module:
    if name not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {name!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    pool = nn.AvgPool2d(2) if name == "mean" else nn.MaxPool2d(2)
    return nn.Sequential(pool, nn.Dropout(dropout)) if dropout > 0 else pool


def init_weights(model: nn.Module, act: str | None, *, output: nn.Module) -> None:
    """He initialization for the activation `act` (None = U, which takes ReLU's gain), zero biases."""
    he_init(model, act or "relu", LEAKY_SLOPE, output=output)


class GlobalMeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)


def check_image_shape(input_shape: tuple[int, ...], layers: tuple) -> None:
    """Refuse (ValueError) an input whose spatial size some layer of `layers` cannot take."""
    if len(input_shape) != 3:
        raise ValueError(f"takes (C, H, W) images, got input shape {tuple(input_shape)}")

    def fits(n: int) -> bool:
        for layer in layers:
            n = n // 2 if layer == "pool" else n + 2 * layer[2] - layer[1] + 1
            if n < 1:
                return False
        return True

    smallest = next(n for n in range(1, 4096) if fits(n))
    if not (fits(input_shape[1]) and fits(input_shape[2])):
        raise ValueError(
            f"needs inputs of at least {smallest}×{smallest} pixels, got {input_shape[1]}×{input_shape[2]}"
        )


class PaperCNN(nn.Sequential):
    """A plain conv stack (`CONV_SMALL`, `CONV_LARGE`) → 1×1 conv to the classes → global mean pool.

    Children, in order: `conv1`, `pool1`, `conv2`, …, `logits` (the class maps), `gap`. `act=None`: U.
    """

    def __init__(
        self,
        layers: tuple,
        num_classes: int,
        input_shape: tuple[int, ...],
        *,
        pool: str,
        act: str | None,
        dropout: float,
    ):
        check_image_shape(input_shape, layers)
        channels = input_shape[0]
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        n_conv = n_pool = 0
        for layer in layers:
            if layer == "pool":
                n_pool += 1
                blocks[f"pool{n_pool}"] = pooling(pool, dropout)
            else:
                out, kernel, padding = layer
                n_conv += 1
                a = activation(act)
                blocks[f"conv{n_conv}"] = nn.Sequential(nn.Conv2d(channels, out, kernel, padding=padding), a)
                channels = out * getattr(a, "expansion", 1)
        blocks["logits"] = nn.Conv2d(channels, num_classes, 1)  # (B, K, h, w)
        blocks["gap"] = GlobalMeanPool()  # (B, K)
        super().__init__(blocks)
        self.feature_layers = tuple(f"conv{i}" for i in range(1, n_conv + 1))
        init_weights(self, act, output=self.logits)


class Unit(nn.Module):
    """Residual unit `act(conv3×3(x) + conv1×1(x))`, spatial size kept."""

    def __init__(self, c_in: int, c_out: int, act: str | None):
        super().__init__()
        self.conv3 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv1 = nn.Conv2d(c_in, c_out, 1)
        self.act = activation(act)
        self.expansion = getattr(self.act, "expansion", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(x) + self.conv1(x))


class PaperResNet(nn.Module):
    """ResnetD-W: stem conv3×3 → act → 3 stages (widths W, 2W, 4W) of D `Unit`s, 2×2 pooling between
    stages → global mean pool → dense to the classes.

    Named layers: `stem`, then `stage1.0` … `stage3.{D-1}` (the units' outputs). `act=None`: U.
    """

    def __init__(
        self,
        depth: int,
        width: int,
        num_classes: int,
        input_shape: tuple[int, ...],
        *,
        pool: str,
        act: str | None,
        dropout: float,
    ):
        super().__init__()
        check_image_shape(input_shape, ((width, 3, 1), "pool", (width, 3, 1), "pool"))
        a = activation(act)
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1), a)
        channels = width * getattr(a, "expansion", 1)
        for s in range(3):
            units = []
            for _ in range(depth):
                units.append(Unit(channels, width << s, act))
                channels = (width << s) * units[-1].expansion
            self.add_module(f"stage{s + 1}", nn.Sequential(*units))
            if s < 2:
                self.add_module(f"pool{s + 1}", pooling(pool, dropout))
        self.head = nn.Linear(channels, num_classes)
        self.feature_layers = ("stem",) + tuple(f"stage{s}.{d}" for s in (1, 2, 3) for d in range(depth))
        init_weights(self, act, output=self.head)
        with torch.no_grad():  # a unit adds two branches: halve each one's variance so the sum keeps it
            for unit in self.modules():
                if isinstance(unit, Unit):
                    unit.conv3.weight.mul_(0.5**0.5)
                    unit.conv1.weight.mul_(0.5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.stage1(self.stem(x)))
        x = self.pool2(self.stage2(x))
        x = self.stage3(x)  # (B, C, h, w)
        return self.head(x.mean(dim=(2, 3)))  # (B, K)


# --------------------------------------------------------------------------------------------------
# Variants (lr: the paper's Adam learning rate, docs/design.md §5; for our U nets, which the paper defines nowhere,
# the largest of 0.01/3, 1e-3 and 3e-4 at which each trained without diverging — docs/models.md)


@register_model(modalities=("image",), lr=0.01)
def smallcnn(
    *, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", act: Act = "relu", dropout: Dropout = 0.0
):
    """SmallCNN (Conv-Small), no BatchNorm; pool=mean|max, act=relu|leaky_relu|sigmoid."""
    return PaperCNN(CONV_SMALL, num_classes, input_shape, pool=pool, act=act, dropout=dropout)


@register_model(modalities=("image",), lr=0.01 / 3)
def largecnn(
    *, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", act: Act = "relu", dropout: Dropout = 0.0
):
    """LargeCNN (Conv-Large), no BatchNorm; pool=mean|max, act=relu|leaky_relu|sigmoid."""
    return PaperCNN(CONV_LARGE, num_classes, input_shape, pool=pool, act=act, dropout=dropout)


@register_model(modalities=("image",), lr=0.01 / 3)
def resnet2_32(
    *, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", act: Act = "relu", dropout: Dropout = 0.0
):
    """Resnet2-32 (2 units per stage, widths 32/64/128), no BatchNorm; pool=mean|max, act=…"""
    return PaperResNet(2, 32, num_classes, input_shape, pool=pool, act=act, dropout=dropout)


@register_model(modalities=("image",), lr=0.01 / 3)
def resnet3_16(
    *, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", act: Act = "relu", dropout: Dropout = 0.0
):
    """Resnet3-16 (3 units per stage, widths 16/32/64), no BatchNorm; pool=mean|max, act=…"""
    return PaperResNet(3, 16, num_classes, input_shape, pool=pool, act=act, dropout=dropout)


@register_model(modalities=("image",), lr=0.01 / 3)
def smallucnn(*, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", dropout: Dropout = 0.0):
    """SmallCNN with U(z)=concat[relu(z),-relu(-z)] activations (our interpretation of SmallUCNN)."""
    return PaperCNN(CONV_SMALL, num_classes, input_shape, pool=pool, act=None, dropout=dropout)


@register_model(modalities=("image",), lr=3e-4)
def largeucnn(*, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", dropout: Dropout = 0.0):
    """LargeCNN with U activations (our interpretation of LargeUCNN)."""
    return PaperCNN(CONV_LARGE, num_classes, input_shape, pool=pool, act=None, dropout=dropout)


@register_model(modalities=("image",), lr=3e-4)
def uresnet2_32(*, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", dropout: Dropout = 0.0):
    """Resnet2-32 with U activations (our interpretation of UResnet2-32)."""
    return PaperResNet(2, 32, num_classes, input_shape, pool=pool, act=None, dropout=dropout)


@register_model(modalities=("image",), lr=1e-3)
def uresnet3_16(*, num_classes: int, input_shape: tuple[int, ...], pool: Pool = "mean", dropout: Dropout = 0.0):
    """Resnet3-16 with U activations (our interpretation of UResnet3-16)."""
    return PaperResNet(3, 16, num_classes, input_shape, pool=pool, act=None, dropout=dropout)
