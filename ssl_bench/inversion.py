"""Deep network inversion (Balestriero et al., arXiv 1711.04313, eq. 6 and 12), as pure functions.

For a network `f` (logits) the inverse of an input `x` is `x̂ = (∂f/∂x)ᵀ f(x)`: one vector-Jacobian
product whose cotangent is the logits themselves (equivalently `x̂ = ∇ₓ ½‖f(x)‖²`). For a piecewise
linear network `f(x) = A[x]x + b[x]` this is `A[x]ᵀ(A[x]x + b[x])`, the paper's eq. 5. The same product
taken with respect to an inner representation `z⁽ˡ⁾` gives its reconstruction `ẑ⁽ˡ⁾ = (∂f/∂z⁽ˡ⁾)ᵀ f`.

One VJP for a whole batch is the per-sample inverse as long as nothing couples the samples of the batch;
BatchNorm in training mode does (`couples_samples`). Used by the `dninv` method (with `create_graph=True`,
so that parameter gradients flow through `x̂`) and by `ssl-bench reconstruct`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ssl_bench.models import forward_intermediates


def couples_samples(model: nn.Module) -> bool:
    """Whether a forward pass of `model` mixes the samples of a batch (BatchNorm using batch statistics)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
        for m in model.modules()
    )


def reconstruct(
    model: nn.Module, x: torch.Tensor, *, create_graph: bool = False, detach_cotangent: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(logits, x̂)` with `x̂ = (∂f/∂x)ᵀ f(x)`, the same shape as `x`.

    `create_graph=True` keeps `x̂` differentiable with respect to the parameters (double backprop);
    `detach_cotangent=True` uses `stopgrad(f)` as the cotangent (same `x̂`, other parameter gradient).
    """
    logits, x_hat, _ = reconstruct_layers(model, x, (), input=True, create_graph=create_graph, detach_cotangent=detach_cotangent)
    return logits, x_hat


def reconstruct_layers(
    model: nn.Module,
    x: torch.Tensor,
    layers: tuple[str, ...] | list[str],
    *,
    input: bool = True,
    create_graph: bool = False,
    detach_cotangent: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """One forward pass and one VJP: `(logits, x̂ or None, {layer: (z, ẑ)})`.

    `layers` are names from `ssl_bench.models.layer_names(model)` (unknown names raise `UserError`);
    `ẑ⁽ˡ⁾ = (∂f/∂z⁽ˡ⁾)ᵀ f`, the derivative taken through every path from `z⁽ˡ⁾` to the logits. `x̂` is
    computed only when `input` is true. A layer the logits do not depend on gets `ẑ = 0`.
    """
    if _functional:
        return _reconstruct_layers_func(model, x, tuple(layers), input=input, detach_cotangent=detach_cotangent)
    x_in = x if x.requires_grad else x.detach().requires_grad_(input)
    with torch.enable_grad():
        if layers:
            logits, captured = forward_intermediates(model, x_in, tuple(layers))  # (B, K), {name: (B, ...)}
        else:
            logits, captured = model(x_in), {}
        wrt = ([x_in] if input else []) + [captured[name] for name in layers]
        if not wrt:
            raise ValueError("nothing to reconstruct: input=False and no layers")
        cotangent = logits.detach() if detach_cotangent else logits  # (B, K)
        grads = torch.autograd.grad(
            logits, wrt, grad_outputs=cotangent, create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
    x_hat = grads[0] if input else None
    inner = grads[1:] if input else grads
    return logits, x_hat, {name: (captured[name], z_hat) for name, z_hat in zip(layers, inner)}


_functional = False  # inside torch.func transforms (ssl_bench.compiled): x̂ by torch.func.vjp


@contextmanager
def functional_transforms():
    """Within the block, `reconstruct_layers` computes its VJP with `torch.func.vjp` instead of
    `torch.autograd.grad`, so that it runs inside `torch.func.grad` and compiles (ssl_bench.compiled).
    Same values; always differentiable (the double backward is the outer transform's)."""
    global _functional
    previous, _functional = _functional, True
    try:
        yield
    finally:
        _functional = previous


def _reconstruct_layers_func(model, x, layers, *, input, detach_cotangent):
    """`reconstruct_layers` for the input as one `torch.func.vjp` (inside `torch.func.grad`, this is the
    double backward). Per-layer ẑ is not written this way: it raises, and a compiled step runs eager."""
    if layers or not input:
        raise NotImplementedError("per-layer reconstruction (gamma) has no torch.func form here")
    logits, vjp_fn = torch.func.vjp(model, x)
    cotangent = logits.detach() if detach_cotangent else logits  # (B, K)
    (x_hat,) = vjp_fn(cotangent)
    return logits, x_hat, {}


def squared_error(x_hat: torch.Tensor, x: torch.Tensor, reduction: str) -> torch.Tensor:
    """`‖x̂ − x‖²` averaged over samples: per element (`mean`, the MSE) or summed per sample (`sum`)."""
    err = (x_hat - x).pow(2).flatten(1)  # (B, D)
    if reduction == "mean":
        return err.mean()
    if reduction == "sum":
        return err.sum(1).mean()
    raise ValueError(f"reduction must be mean or sum, got {reduction!r}")
