"""Named intermediate representations of any model, in one uniform way.

A model lists its inner layers as `feature_layers` (names of submodules, in forward order); timm models
are covered through their `feature_info`. `forward_intermediates` captures those submodules' outputs with
forward hooks, so the captured tensors stay in the autograd graph: `∂f/∂z` can be taken w.r.t. them.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench.errors import UserError


def layer_names(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "feature_layers", None)
    if names is None and hasattr(model, "feature_info"):  # timm
        names = [info["module"] for info in model.feature_info]
    if names is None:  # any other module: its direct children
        names = [name for name, _ in model.named_children()]
    return tuple(names)


def forward_intermediates(model: nn.Module, x: torch.Tensor, names: tuple[str, ...] | list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return `(logits, {name: output of submodule name})` from one forward pass."""
    valid = layer_names(model)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UserError(f"unknown layer {', '.join(map(repr, unknown))} for {type(model).__name__}; its layers: {', '.join(valid)}")
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        def hook(_module, _inputs, output, name=name):
            captured[name] = output
        hooks.append(modules[name].register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, captured
