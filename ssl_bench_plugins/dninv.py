"""Deep network inversion (Balestriero, Roger, Glotin & Baraniuk, "Semi-supervised learning via new deep
network inversion", arXiv 1711.04313): cross-entropy on the labeled batch plus the error of the network's
own inverse `x̂ = (∂f/∂x)ᵀ f(x)` on all samples and the prediction entropy of the unlabeled ones (eq. 10),
with the paper's extensions (eq. 11–13): per-layer reconstruction and weights scheduled over training,

    L = α·CE(labeled) + (1−α)·(β·R(all) + (1−β)·E(unlabeled)) + Σ_l γ⁽ˡ⁾·R⁽ˡ⁾(all),
    R = ‖x̂ − x‖²,  R⁽ˡ⁾ = ‖(∂f/∂z⁽ˡ⁾)ᵀ f − z⁽ˡ⁾‖²,  E = −Σ_c p_c log p_c.

Each term is averaged over its own part of the batch. `x̂` is one VJP with `create_graph=True`, so the
parameter gradient flows through it (double backprop); `formulation=jvp` gives R the same value and
gradient from `⟨x̂, r⟩ = ⟨f, J·r⟩`, r = stopgrad(x̂ − x), with a forward-mode JVP and no double backward
(ssl_bench.inversion.reconstruction_by_jvp). The γ weights are absolute, as in eq. 11 (not scaled by
1−α). Weights are read at t = step / (steps − 1): the first step uses a schedule's start value and the
last step its end value.

A term whose weight is zero for the whole run (a constant schedule) is not added to the loss. `ce` and
`ent` come from logits that are computed anyway and are logged regardless; `rec` and `rec_<layer>` need
a VJP and are logged as NaN when skipped. With α ≡ 1 and no γ only the labeled batch is forwarded, so the
step is exactly `supervised`'s (same gradients, bit for bit) and `rec` and `ent` are logged as NaN.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F

from ssl_bench import SSLMethod
from ssl_bench.config import Range, check_fields, to_jsonable
from ssl_bench.errors import UserError
from ssl_bench.inversion import (
    couples_samples,
    forward_mode_inexact,
    name_layers,
    reconstruct_layers,
    reconstruction_by_jvp,
    squared_error,
)
from ssl_bench.losses import entropy, not_computed
from ssl_bench.method import supervised_step
from ssl_bench.models import LayerTaps, layer_names
from ssl_bench.schedules import Schedule

Weight = Annotated[Schedule, Range(0, 1, say="stay in [0, 1] over training")]  # a number or linear|cosine:START:END


def coerce_weight(value: Any, layer: str) -> Schedule:
    """The weight schedule of γ layer `layer` (`Schedule.coerce`); its ValueError names the layer."""
    try:
        return Schedule.coerce(value)
    except ValueError as exc:
        raise ValueError(f"gamma of layer {layer!r}: {exc}") from None


@dataclass(frozen=True)
class LayerWeights:
    """Per-layer reconstruction weights γ⁽ˡ⁾ ≥ 0, each a schedule; CLI: `conv2:0.1,conv3:linear:0.5:0`."""

    items: tuple[tuple[str, Schedule], ...] = ()  # (layer name, weight schedule), in the order given

    def __post_init__(self) -> None:
        items = tuple((str(name), coerce_weight(s, name)) for name, s in self.items)
        object.__setattr__(self, "items", items)
        names = [name for name, _ in items]
        if any(not name for name in names) or len(set(names)) != len(names):
            raise ValueError(f"gamma: layer names must be non-empty and distinct, got {', '.join(names)}")
        for name, s in items:
            lo, hi = s.bounds()
            if not (lo >= 0 and math.isfinite(hi)):
                raise ValueError(f"gamma of layer {name!r} must be a finite weight >= 0, got {s}")

    @classmethod
    def parse(cls, text: str) -> "LayerWeights":
        """`"conv2:0.1,conv3:linear:0.5:0"`; `""` or `"none"` for no layer. Raises ValueError."""
        if str(text).strip().lower() in ("", "none"):
            return cls()
        items = []
        for part in str(text).split(","):
            name, sep, weight = part.strip().partition(":")
            if not sep or not name.strip():
                raise ValueError(
                    f"expected LAYER:WEIGHT[,LAYER:WEIGHT…] (WEIGHT a number or KIND:START:END), got {part.strip()!r}"
                )
            items.append((name.strip(), Schedule.parse(weight)))
        return cls(tuple(items))

    @classmethod
    def coerce(cls, value: Any) -> "LayerWeights":
        """From LayerWeights, CLI text, or a mapping `{layer: weight}` (e.g. from config.json or a TOML grid)."""
        if isinstance(value, LayerWeights):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, dict):
            return cls(tuple(value.items()))
        raise ValueError(f"expected LAYER:WEIGHT,… or a mapping of layer to weight, got {value!r}")

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.items)

    def to_json(self) -> dict:
        return {name: s.to_json() for name, s in self.items}

    def __str__(self) -> str:
        return ",".join(f"{name}:{s}" for name, s in self.items) or "none"


@dataclass(frozen=True)
class DNInvConfig:
    alpha: Weight = Schedule.constant(0.7)  # CE vs unsupervised weight
    beta: Weight = Schedule.constant(0.2)  # reconstruction vs entropy weight within the unsupervised part
    # R and R⁽ˡ⁾: mean (per element, MSE) | sum (per sample), both averaged over samples
    reduction: Literal["mean", "sum"] = "mean"
    detach_cotangent: bool = False  # x̂ = (∂f/∂x)ᵀ stopgrad(f): same x̂, no gradient through the cotangent
    gamma: LayerWeights = LayerWeights()  # per-layer weights γ⁽ˡ⁾ >= 0, e.g. conv2:0.1,conv3:linear:0.5:0
    # how R's parameter gradient is computed: double_backward (x̂ with create_graph, the paper's) | jvp (reverse over
    # forward: the same gradient, no double backward; no gamma)
    formulation: Literal["double_backward", "jvp"] = "double_backward"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.formulation == "jvp" and self.gamma.items:
            raise ValueError(
                f"formulation=jvp has no per-layer terms; drop gamma ({self.gamma}) or use formulation=double_backward"
            )

    def to_json(self) -> dict:
        """The fields as JSON data; `formulation` only when not `double_backward`, so that runs recorded before
        it existed keep their run ids (the same convention as the protocol's LATER_FIELDS)."""
        data = {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)}
        if self.formulation == "double_backward":
            del data["formulation"]
        return data


class DNInv(SSLMethod):
    Config = DNInvConfig
    terms = ("ce", "rec", "ent")  # plus rec_<layer> for each γ layer, see term_names()
    supervised_equivalent = {"alpha": 1.0}

    def __init__(self, config: DNInvConfig, context):
        super().__init__(config, context)
        self.warned_batchnorm = False
        self.taps = None  # LayerTaps on the γ layers, made in setup (what a compiled step takes ẑ⁽ˡ⁾ through)
        cfg = self.config
        alpha_one = cfg.alpha.is_constant() and cfg.alpha.start == 1.0
        beta_one = cfg.beta.is_constant() and cfg.beta.start == 1.0
        self.use_ce = not cfg.alpha.is_zero()
        self.use_rec = not (alpha_one or cfg.beta.is_zero())  # weight (1−α)β
        self.use_ent = not (alpha_one or beta_one)  # weight (1−α)(1−β)
        self.layers = tuple(name for name, s in cfg.gamma.items if not s.is_zero())
        self.supervised_only = alpha_one and not self.layers

    def term_names(self) -> tuple[str, ...]:
        return self.terms + tuple(f"rec_{name}" for name in self.config.gamma.names())

    def check_model(self, model) -> None:
        unknown = [name for name in self.config.gamma.names() if name not in layer_names(model)]
        if unknown:
            raise UserError(
                f"dninv gamma: unknown layer {', '.join(map(repr, unknown))} for {type(model).__name__}; "
                f"its layers: {', '.join(layer_names(model))}"
            )
        inexact = forward_mode_inexact(model) if self.config.formulation == "jvp" and self.use_rec else []
        if inexact:
            raise UserError(
                f"dninv formulation=jvp: its gradient is not exact through {name_layers(inexact)} "
                f"of {type(model).__name__}; use formulation=double_backward"
            )

    def loss(self, model, batch, progress):
        cfg = self.config
        if self.supervised_only:  # α ≡ 1: exactly `supervised` (the labeled batch alone)
            return supervised_step(model, batch, self.term_names())

        t = progress.fraction  # 0 at the first step, 1 at the last
        alpha, beta = cfg.alpha.at(t), cfg.beta.at(t)
        n_lb = len(batch.x_lb)
        x = torch.cat([batch.x_lb, batch.x_ulb])  # (B_lb + B_ulb, ...)
        rec = None
        if self.use_rec and cfg.formulation == "jvp":  # no γ layers (refused by the config)
            logits, _, rec = reconstruction_by_jvp(
                model, x, reduction=cfg.reduction, detach_cotangent=cfg.detach_cotangent
            )  # (B, K), R
            inner = {}
        elif self.use_rec or self.layers:
            self.warn_if_coupled(model)
            logits, x_hat, inner = reconstruct_layers(
                model,
                x,
                self.layers,
                input=self.use_rec,
                create_graph=True,
                detach_cotangent=cfg.detach_cotangent,
                taps=self.taps,
            )  # (B, K), like x, {layer: (z, ẑ)}
            rec = squared_error(x_hat, x, cfg.reduction) if self.use_rec else None
        else:
            logits, inner = model(x), {}
        ce = F.cross_entropy(logits[:n_lb], batch.y_lb)
        ent = entropy(logits[n_lb:])
        rec_layers = {name: squared_error(z_hat, z, cfg.reduction) for name, (z, z_hat) in inner.items()}

        parts = [alpha * ce] if self.use_ce else []
        if self.use_rec:
            parts.append((1 - alpha) * beta * rec)
        if self.use_ent:
            parts.append((1 - alpha) * (1 - beta) * ent)
        parts += [s.at(t) * rec_layers[name] for name, s in cfg.gamma.items if name in rec_layers]
        return sum(parts), self.logged(ce, rec, ent, rec_layers)

    def logged(self, ce, rec, ent, rec_layers) -> dict[str, torch.Tensor]:
        """The declared terms, detached; a term that was not computed (None) is logged as NaN."""
        nan = not_computed(ce.device)
        values = {"ce": ce, "rec": rec, "ent": ent} | {f"rec_{n}": rec_layers.get(n) for n in self.config.gamma.names()}
        return {k: nan if v is None else v.detach() for k, v in values.items()}

    def setup(self, model) -> None:
        """Warns at the start of a run (a compiled step cannot warn: `warnings.warn` does not trace), and taps
        the γ layers: a compiled step cannot register hooks, so its ẑ⁽ˡ⁾ come through hooks made here
        (idle in eager steps, which take the layers with temporary hooks as before)."""
        if self.use_rec or self.layers:
            self.warn_if_coupled(model)
        if self.layers:
            self.taps = LayerTaps(model, self.layers)

    def warn_if_coupled(self, model) -> None:
        if not self.warned_batchnorm and couples_samples(model):
            self.warned_batchnorm = True
            warnings.warn(
                f"dninv: {type(model).__name__} has BatchNorm in training mode, which normalizes with batch "
                "statistics and so couples the samples of a batch: the batch inverse x̂ = (∂f/∂x)ᵀf(x) then mixes "
                "samples and is not the per-sample inverse of the paper (whose models have no BatchNorm). "
                "Training goes on.",
                stacklevel=3,
            )
