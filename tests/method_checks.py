"""Pieces shared by the per-method tests (tests/test_<method>.py): a method built as the harness builds it (from
its name or class), a linear model whose logits are its inputs, plain-Python cross-entropy, gradients of a loss."""

from __future__ import annotations

import math

import torch
from torch import nn

from ssl_bench.config import build_config
from ssl_bench.method import MethodContext, SSLMethod, load_method


def method_context(num_classes: int = 10, seed: int | None = 5, modality: str = "image") -> MethodContext:
    """What the harness tells a method: its generator seeded with `seed` (None: `torch.Generator()` unseeded)."""
    generator = torch.Generator() if seed is None else torch.Generator().manual_seed(seed)
    return MethodContext(modality, num_classes, generator)


def make_method(name_or_cls: str | type[SSLMethod], num_classes: int = 10, seed: int | None = 5, **params):
    """A method built as the harness builds it: a registered name or a class (a test's own method), `params` as
    `-p key=value` gives them (strings converted, `build_config`), the context of `method_context`."""
    cls = load_method(name_or_cls) if isinstance(name_or_cls, str) else name_or_cls
    name = name_or_cls if isinstance(name_or_cls, str) else cls.__name__
    return cls(build_config(cls.Config, params, name), method_context(num_classes, seed))


def identity_model(k: int) -> nn.Linear:
    """A linear model whose logits are exactly its inputs (B, K): weight I, bias 0, float64."""
    model = nn.Linear(k, k).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(k, dtype=torch.float64))
        model.bias.zero_()
    return model


def ce(z: list[float], c: int) -> float:
    """Cross-entropy of logits `z` against class `c`, in plain Python."""
    return math.log(sum(math.exp(v) for v in z)) - z[c]


def grads_of(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))
