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


def check_layers(model: nn.Module, names: tuple[str, ...] | list[str]) -> None:
    """Raise `UserError` listing the model's layers if a name is not one of them."""
    valid = layer_names(model)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UserError(
            f"unknown layer {', '.join(map(repr, unknown))} for {type(model).__name__}; its layers: {', '.join(valid)}"
        )


def forward_intermediates(
    model: nn.Module, x: torch.Tensor, names: tuple[str, ...] | list[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return `(logits, {name: output of submodule name})` from one forward pass."""
    check_layers(model, names)
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


class LayerTaps:
    """Forward hooks on named layers, registered once, for code that runs inside `torch.func` transforms
    and `torch.compile` (the compiled step), where a hook cannot be registered: Dynamo traces hooks that
    exist before compiling, not `register_forward_hook` itself. Idle, a tap changes nothing (the hook
    returns None); `zeros` and `probed` switch them on for one forward pass each.

    `probed(model, x, probes, buffers)` is the forward pass that makes `∂f/∂z⁽ˡ⁾` a derivative with respect to an
    input: each layer's output `z` becomes `z + p` with `p` a zero tensor of its shape, so `∂f/∂p = ∂f/∂z`
    through every path from `z` (a `torch.func.vjp` over `(x, *probes)` gives `(x̂, *ẑ)`).
    """

    def __init__(self, model: nn.Module, names: tuple[str, ...] | list[str]):
        check_layers(model, names)
        self.names = tuple(names)
        self._mode: str | None = None  # None (idle) | "shape" | "probe"
        self._probes: dict[str, torch.Tensor] = {}
        self._seen: dict[str, list] = {}
        modules = dict(model.named_modules())
        for name in self.names:
            modules[name].register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            if self._mode == "shape":
                self._seen.setdefault(name, []).append(output)
            elif self._mode == "probe" and name in self._probes:
                self._seen.setdefault(name, []).append(output)
                return output + self._probes[name]
            return None

        return hook

    def _forward(
        self,
        mode: str,
        model: nn.Module,
        x: torch.Tensor,
        buffers: dict[str, torch.Tensor],
        probes: dict[str, torch.Tensor],
    ):
        self._mode, self._probes, self._seen = mode, probes, {}
        try:
            logits = torch.func.functional_call(model, buffers, (x,))
            seen = self._seen
        finally:
            self._mode, self._probes, self._seen = None, {}, {}
        twice = [n for n, outputs in seen.items() if len(outputs) > 1]
        if twice:  # eager (forward_intermediates) keeps the last output; a probe would be added to each
            raise NotImplementedError(
                f"layer {', '.join(twice)} runs more than once in a forward pass: no probe for its output"
            )
        return logits, {n: outputs[0] for n, outputs in seen.items()}

    def zeros(
        self, model: nn.Module, x: torch.Tensor, names: tuple[str, ...], buffers: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """`{name: zeros like the layer's output}` for input `x`, from one forward pass with `buffers` (copies:
        a forward in training mode updates BatchNorm's in place). Compiled, that pass is dead code: the zeros
        are made from its outputs' static shapes, not from the outputs (so the compiler drops it)."""
        _, outputs = self._forward("shape", model, x, buffers, {})
        missing = [n for n in names if n not in outputs]
        if missing:
            raise NotImplementedError(f"layer {', '.join(missing)} does not run in the forward pass")
        return {n: torch.zeros(outputs[n].shape, dtype=outputs[n].dtype, device=outputs[n].device) for n in names}

    def probed(
        self, model: nn.Module, x: torch.Tensor, probes: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`(logits, {name: z})` from one forward pass in which each probed layer's output is `z + probes[name]`."""
        return self._forward("probe", model, x, buffers, probes)
