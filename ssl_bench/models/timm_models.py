"""`timm:<name>`: any timm model, randomly initialized (never pretrained), for the dataset's channels and classes.

Models whose constructor takes `img_size` (ViTs and the like) get the dataset's image size. Option
`small_input=true` adapts the stem to 28/32 px images: the stem conv gets stride 1 and an early max-pool
is dropped. It supports timm's ResNet family (`resnet*`, `resnext*`, `wide_resnet*`, `seresnet*`, … — any
model built by timm's `ResNet` class; `conv1` stride 1, `maxpool` removed) and the EfficientNet /
MobileNetV3 families (`conv_stem` stride 1); other architectures are refused. Most timm models have
BatchNorm, which couples the samples of a batch (docs/dninv.md): expected, and the dninv method warns.
Named inner layers are timm's `feature_info` modules.
"""

from __future__ import annotations

import difflib

import timm
from timm.models import EfficientNet, MobileNetV3, ResNet
from torch import nn

from ssl_bench.errors import UserError
from ssl_bench.models.registry import ModelEntry

PREFIX = "timm:"
LR = 1e-3  # Adam's usual default; the paper used no timm model


def timm_entry(name: str) -> ModelEntry:
    """The registry entry of `timm:<arch>`; an unknown architecture is refused with close matches."""
    arch = name[len(PREFIX) :]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise UserError(
            f"unknown timm model {arch!r}; {hint}list them with: "
            f"python -c \"import timm; print(timm.list_models('{arch[:4]}*'))\""
        )

    def build(*, num_classes: int, input_shape: tuple[int, ...], small_input: bool = False) -> nn.Module:
        if len(input_shape) != 3:
            raise ValueError(f"takes (C, H, W) images, got input shape {tuple(input_shape)}")
        if not isinstance(small_input, bool):
            raise ValueError(f"small_input must be true or false, got {small_input!r}")
        kwargs = dict(pretrained=False, num_classes=num_classes, in_chans=input_shape[0])
        try:
            model = timm.create_model(arch, img_size=tuple(input_shape[1:]), **kwargs)
        except TypeError as exc:  # the constructor takes no img_size (raised before anything is built)
            if "img_size" not in str(exc):
                raise
            model = timm.create_model(arch, **kwargs)
        if small_input:
            adapt_small_input(model, arch)
        return model

    return ModelEntry(name, build, ("image",), LR, f"timm {arch}, random init (BatchNorm as timm builds it)")


def adapt_small_input(model: nn.Module, arch: str) -> None:
    """Stride-1 stem conv and no early max-pool, in place (see the module docstring for the families)."""
    if isinstance(model, ResNet):
        stem = (
            model.conv1
            if isinstance(model.conv1, nn.Conv2d)
            else next(m for m in model.conv1.modules() if isinstance(m, nn.Conv2d))
        )
        stem.stride = (1, 1)  # deep stems (resnet*d, resnet10t): their first conv
        model.maxpool = nn.Identity()
    elif isinstance(model, (EfficientNet, MobileNetV3)):
        model.conv_stem.stride = (1, 1)
    else:
        raise ValueError(
            f"small_input supports timm ResNet, EfficientNet and MobileNetV3 models, "
            f"not {arch} ({type(model).__name__})"
        )
