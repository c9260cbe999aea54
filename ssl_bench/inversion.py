"""Deep network inversion (Balestriero et al., arXiv 1711.04313, eq. 6 and 12), as pure functions.

For a network `f` (logits) the inverse of an input `x` is `x̂ = (∂f/∂x)ᵀ f(x)`: one vector-Jacobian
product whose cotangent is the logits themselves (equivalently `x̂ = ∇ₓ ½‖f(x)‖²`). For a piecewise
linear network `f(x) = A[x]x + b[x]` this is `A[x]ᵀ(A[x]x + b[x])`, the paper's eq. 5. The same product
taken with respect to an inner representation `z⁽ˡ⁾` gives its reconstruction `ẑ⁽ˡ⁾ = (∂f/∂z⁽ˡ⁾)ᵀ f`.

One VJP for a whole batch is the per-sample inverse as long as nothing couples the samples of the batch;
BatchNorm in training mode does (`couples_samples`). Used by the `dninv` method (with `create_graph=True`,
so that parameter gradients flow through `x̂`) and by `ssl-bench reconstruct`.

`reconstruction_by_jvp` gives the same reconstruction error with the same parameter gradient without a
double backward ("reverse over forward", docs/design.md §1): dninv's `formulation=jvp`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.autograd import forward_ad as fwAD

from ssl_bench.functional import inside_transforms
from ssl_bench.models import LayerTaps, forward_intermediates


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
    logits, x_hat, _ = reconstruct_layers(
        model, x, (), input=True, create_graph=create_graph, detach_cotangent=detach_cotangent
    )
    return logits, x_hat


def reconstruct_layers(
    model: nn.Module,
    x: torch.Tensor,
    layers: tuple[str, ...] | list[str],
    *,
    input: bool = True,
    create_graph: bool = False,
    detach_cotangent: bool = False,
    taps: LayerTaps | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """One forward pass and one VJP: `(logits, x̂ or None, {layer: (z, ẑ)})`.

    `layers` are names from `ssl_bench.models.layer_names(model)` (unknown names raise `UserError`);
    `ẑ⁽ˡ⁾ = (∂f/∂z⁽ˡ⁾)ᵀ f`, the derivative taken through every path from `z⁽ˡ⁾` to the logits. `x̂` is
    computed only when `input` is true. A layer the logits do not depend on gets `ẑ = 0`. Inside the
    compiled step's transforms the layers must be tapped (`taps`: `LayerTaps` made before compiling, e.g.
    in a method's `setup`); eager steps take them with temporary hooks and ignore `taps`.
    """
    if inside_transforms():  # the compiled step (ssl_bench.functional): one torch.func.vjp
        return _reconstruct_layers_func(
            model, x, tuple(layers), input=input, detach_cotangent=detach_cotangent, taps=taps
        )
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


def _reconstruct_layers_func(model, x, layers, *, input, detach_cotangent, taps):
    """`reconstruct_layers` as one `torch.func.vjp` (inside `torch.func.grad`, this is the double backward).
    Per layer, the VJP is taken with respect to a zero probe added to the layer's output (`LayerTaps.probed`),
    whose derivative is the output's."""
    untapped = [n for n in layers if taps is None or n not in taps.names]
    if untapped:
        raise NotImplementedError(
            f"layer {', '.join(untapped)} is not tapped: "
            "a compiled step reconstructs inner layers through LayerTaps made before compiling"
        )
    logits, vjp_fn, captured = _vjp_updating_buffers(model, x, layers, taps)
    cotangent = logits.detach() if detach_cotangent else logits  # (B, K)
    x_hat, *inner = vjp_fn(cotangent)
    return logits, x_hat if input else None, {name: (captured[name], z_hat) for name, z_hat in zip(layers, inner)}


def _vjp_updating_buffers(
    model: nn.Module, x: torch.Tensor, layers: tuple[str, ...] = (), taps: LayerTaps | None = None
):
    """`(logits, vjp_fn, {layer: z})`: `torch.func.vjp` of the model at `x` and at zero probes on `layers`
    (`vjp_fn(c)` is `(x̂, *ẑ)`), for a forward that may update buffers in place (BatchNorm's running
    statistics in training mode). Inside a transform a tensor from outside it cannot be mutated, so the
    forward runs on copies of the buffers, returned beside the logits and copied back: the buffers end
    as after one eager forward."""
    buffers = dict(model.named_buffers())
    if not buffers and not layers:
        logits, vjp_fn = torch.func.vjp(model, x)
        return logits, vjp_fn, {}
    copies = lambda: {name: b.clone() for name, b in buffers.items()}
    probes = taps.zeros(model, x, layers, copies()) if layers else {}

    def forward(x, *probe_values):
        updated = copies()
        if not layers:
            return torch.func.functional_call(model, updated, (x,)), ({}, updated)
        logits, captured = taps.probed(model, x, dict(zip(layers, probe_values)), updated)
        return logits, (captured, updated)

    logits, vjp_fn, (captured, updated) = torch.func.vjp(forward, x, *probes.values(), has_aux=True)
    for name, b in buffers.items():
        b.copy_(updated[name])
    return logits, vjp_fn, captured


def reconstruction_by_jvp(
    model: nn.Module, x: torch.Tensor, *, reduction: str = "mean", detach_cotangent: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(logits, x̂, R)`: `R = squared_error(x̂, x, reduction)` in value, and in parameter gradient that of
    `x̂ = (∂f/∂x)ᵀ f(x)` taken with `create_graph=True` — computed without a double backward.

    With `r = stopgrad(x̂ − x)`, `⟨x̂, r⟩ = ⟨Jᵀf, r⟩ = ⟨f, J·r⟩`, so `∇θ‖x̂ − x‖² = 2·∇θ⟨f, J·r⟩` where `J·r`
    is a forward-mode JVP and both `f` and `J` depend on θ. Two forward passes: one with a VJP to the
    input (no graph kept) for the value of `x̂`, then one with dual tensors for `f` and `J·r`, both with
    their graphs to the parameters; the backward of `R` (or of a loss built on `logits`, which are the
    dual pass's) is an ordinary one. `detach_cotangent`: `⟨stopgrad(f), J·r⟩`, the gradient of
    `x̂ = Jᵀ stopgrad(f)`.

    The first pass leaves no trace: the random state and the buffers are put back after it, so the dual
    pass draws the same dropout masks and a step updates buffers once. Refused (ValueError) for a model
    with layers whose forward-mode derivative PyTorch does not differentiate exactly in reverse
    (`forward_mode_inexact`). Inside the compiled step's transforms (ssl_bench.functional): `torch.func.vjp`
    and `torch.func.jvp`; there the random state cannot be put back, so active dropout raises
    NotImplementedError (a compiled step then runs eager).
    """
    inexact = forward_mode_inexact(model)
    if inexact:
        raise ValueError(
            f"x̂ by JVP is not exact for {type(model).__name__}: {name_layers(inexact)} "
            "(PyTorch's forward-mode norm formulas are not differentiable through their statistics); "
            "use the double backward"
        )
    if inside_transforms() and any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in model.modules()
    ):
        raise NotImplementedError(
            "x̂ by JVP with dropout has no torch.func form here (its two passes must draw the same masks)"
        )
    restore = _state_restorer(model, x.device)
    x_hat = reconstruct(model, x)[1].detach()  # like x; its value only (no graph to the parameters)
    restore()  # the dual pass draws the same dropout masks; buffers are updated once
    r = (x_hat - x).detach()  # like x
    logits, jr = _jvp(model, x, r)  # (B, K) each, with their graphs to the parameters
    g = ((logits.detach() if detach_cotangent else logits) * jr).sum()  # ⟨f, J·r⟩
    value = squared_error(x_hat, x, reduction)  # no graph to the parameters
    scale = 2 / (r.numel() if reduction == "mean" else len(r))  # ∂R/∂x̂ = scale·(x̂ − x)
    return logits, x_hat, value + scale * (g - g.detach())  # value exactly ‖x̂ − x‖², gradient scale·∇θ⟨f, J·r⟩


def forward_mode_inexact(model: nn.Module) -> list[str]:
    """The layers of `model` (as `name (Type)`) through which `reconstruction_by_jvp`'s gradient is wrong.

    Measured (torch 2.11, float64, tests/test_dninv_jvp.py): batch norm and instance norm using the
    statistics of their input (training mode, or no running statistics) and layer norm give gradients
    off by O(1) — their forward-mode formulas use saved statistics that reverse mode treats as constants.
    Group norm, RMS norm, norms in eval mode with running statistics, and the paper's layers are exact.
    """
    batch_statistics = lambda m: m.training or m.running_mean is None
    return [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if isinstance(m, nn.LayerNorm)
        or (
            isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))
            and batch_statistics(m)
        )
    ]


def name_layers(names: list[str], most: int = 3) -> str:
    """`a, b, c, … (N layers)`: at most `most` of `names`, and how many there are when some are left out."""
    return ", ".join(names[:most]) + (f", … ({len(names)} layers)" if len(names) > most else "")


def _jvp(model: nn.Module, x: torch.Tensor, tangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(f(x), J·tangent)` from one forward pass with dual tensors (forward-mode AD)."""
    if inside_transforms():
        return torch.func.jvp(model, (x,), (tangent,))
    with fwAD.dual_level():
        return fwAD.unpack_dual(model(fwAD.make_dual(x, tangent)))[:2]


def _state_restorer(model: nn.Module, device: torch.device) -> Callable[[], None]:
    """A function putting back the random state (CPU's, and the GPU's on CUDA) and the buffers of `model` as
    they are now. Eager only: a compiled graph cannot read the random state, and under torch.func no
    buffer may be updated (so there is nothing to put back)."""
    if inside_transforms():
        return lambda: None
    cpu, gpu = torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    buffers = [b.clone() for b in model.buffers()]

    def restore() -> None:
        torch.set_rng_state(cpu)
        if gpu is not None:
            torch.cuda.set_rng_state(gpu, device)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)

    return restore


def squared_error(x_hat: torch.Tensor, x: torch.Tensor, reduction: str) -> torch.Tensor:
    """`‖x̂ − x‖²` averaged over samples: per element (`mean`, the MSE) or summed per sample (`sum`)."""
    err = (x_hat - x).pow(2).flatten(1)  # (B, D)
    if reduction == "mean":
        return err.mean()
    if reduction == "sum":
        return err.sum(1).mean()
    raise ValueError(f"reduction must be mean or sum, got {reduction!r}")
