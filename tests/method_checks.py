"""Pieces shared by the per-method tests (tests/test_<method>.py): a method built as the harness builds it,
a linear model whose logits are its inputs, plain-Python cross-entropy, gradients of a loss."""

from __future__ import annotations

import math

import torch
from torch import nn

from ssl_bench.config import build_config
from ssl_bench.method import MethodContext, load_method


def make_method(name: str, num_classes: int = 10, **params):
    cls = load_method(name)
    ctx = MethodContext("image", num_classes, torch.Generator().manual_seed(5))
    return cls(build_config(cls.Config, params, name), ctx)


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
