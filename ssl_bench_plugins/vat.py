"""Virtual Adversarial Training (Miyato, Maeda, Koyama & Ishii, "Virtual adversarial training: a
regularization method for supervised and semi-supervised learning", TPAMI 2018, arXiv 1704.03976):
cross-entropy on the labeled batch plus `alpha` times the local distributional smoothness (LDS) of the
unlabeled batch, `L = CE(labeled) + α·LDS(unlabeled)`, with

    LDS(x) = KL(p(y|x) ‖ p(y|x + r_adv)),   r_adv = ε·g/‖g‖,   g = ∇_r KL(p(y|x) ‖ p(y|x + r))|_{r = ξd}.

The KL direction is the paper's: the clean prediction p(y|x) is the target (the paper's p(y|x, θ̂),
detached), the perturbed prediction is fitted to it, so the parameters get gradient only through the
pass at x + r_adv. `d` is a standard normal draw from the method's own generator (never the global RNG),
refined by `power_iterations` steps d ← g (K = 1 in the paper); `d` and `g` are normalized per sample, in
L2 over all non-batch dimensions. `g` is `torch.autograd.grad` with respect to `d` only: the power
iteration puts no gradient on the parameters. As in the authors' code (takerum/vat_tf), no unlabeled
pass updates BatchNorm running averages (they normalize with the batch's statistics); the labeled pass does.

Defaults: α = 1 and K = 1 (the paper). ε is the L2 norm of r_adv per sample in the network's input space,
here the harness's standardized inputs (per-channel zero mean, unit variance). The paper's values, in
these units: 8.0 on CIFAR-10 (ZCA-whitened inputs, unit variance per dimension already) and 2.5 on SVHN
(pixels in [−0.5, 0.5], std ≈ 0.2: ≈ 12). Oliver et al. 2018 use 6.0 on CIFAR-10 (whitened) and 1.0 on
SVHN (pixels in [−1, 1]: ≈ 2.5), USB 6.0 everywhere. We take 6.0, the re-implementations' common value,
inside that 2.5–12 range. It is an absolute norm, not scaled by the input size: on 3×32×32 inputs an RMS
of 0.11 per value, on 8×8 digits (‖x‖ ≈ 8) a far larger relative perturbation (there, 300 steps, 50
labels: 89–90 % test against supervised's 82.5 %, and 93–94 % with ε = 1–2). Like the paper, tune ε per
dataset (`-p eps=…`).

ξ = 1e-2, not the paper's 1e-6: in float32, x + 1e-6·d rounds back to x in most coordinates of
unit-variance inputs and the logits move less than their rounding error, so g is noise (tests/test_vat.py:
on tinycnn its cosines with the exact direction, a float64 finite-difference power iteration, range from
−0.6 to 0.7; at ξ = 1e-2 they are above 0.98, what is left being the network's curvature over the step).
The KL is quadratic in r near 0, so a step of 1e-2 ≪ ε keeps the method's meaning. For the same reason
the clean pass and the power iteration run without autocast (in the inputs' dtype) under
`--precision bf16`, whose 8-bit mantissa resolves no small ξ; the adversarial pass keeps bf16.

Pure VAT by default. `entmin` > 0 adds `entmin`·E(unlabeled), the mean prediction entropy of the clean
unlabeled pass (with its gradient): the paper's "VAT+EntMin" (weight 1 there), logged as `ent`. USB's
"vat" adds such a term by default (weight 0.06); here it is off unless asked for. With α = 0 and
`entmin` = 0 only the labeled batch is forwarded, exactly `supervised`'s step; a skipped `lds` is logged
as NaN. `d` is drawn by the harness before the step (`random_tensors`) and, inside the compiled step
(`--compile`), g is a `torch.func.grad` (ssl_bench.functional), detached: the step compiles.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import SSLMethod
from ssl_bench.config import Range, check_fields
from ssl_bench.functional import inside_transforms
from ssl_bench.losses import entropy, not_computed
from ssl_bench.method import supervised_step

Weight = Annotated[float, Range(0, finite=True)]  # >= 0
Length = Annotated[float, Range(0, low_open=True, finite=True)]  # > 0


@dataclass(frozen=True)
class VATConfig:
    alpha: Weight = 1.0  # weight α of the LDS term (paper: 1)
    eps: Length = 6.0  # ε: L2 norm of r_adv per sample, in standardized input units
    # ξ: finite-difference step of the power iteration (paper: 1e-6, too small for float32)
    xi: Length = 1e-2
    power_iterations: Annotated[int, Range(1)] = 1  # K: power-iteration steps (paper: 1)
    entmin: Weight = 0.0  # weight of the unlabeled entropy ("VAT+EntMin"); 0 = pure VAT (default)

    def __post_init__(self) -> None:
        check_fields(self)


def kl_divergence(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of `KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)`, p = softmax(target_logits), q = softmax(logits)."""
    logp = F.log_softmax(target_logits, dim=1)  # (B, K)
    return (logp.exp() * (logp - F.log_softmax(logits, dim=1))).sum(1).mean()


def l2_normalize(d: torch.Tensor) -> torch.Tensor:
    """`d` over its L2 norm across all non-batch dimensions, per sample (a zero sample stays zero)."""
    dims = tuple(range(1, d.dim()))
    d = d / d.abs().amax(dims, keepdim=True).clamp_min(1e-30)  # max |d| = 1 first: d² cannot underflow (as vat_tf)
    return d / d.square().sum(dims, keepdim=True).sqrt().clamp_min(1e-30)


@contextmanager
def frozen_bn_stats(model: nn.Module):
    """Forward passes that normalize with batch statistics but leave BatchNorm running averages as they are."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in bns]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, t in zip(bns, tracking):
            m.track_running_stats = t


def adversarial_direction(
    model: nn.Module, x: torch.Tensor, target_logits: torch.Tensor, xi: float, iterations: int, d: torch.Tensor
) -> torch.Tensor:
    """Unit direction `g/‖g‖` of r_adv per sample (B, *shape): `iterations` finite-difference power-iteration
    steps from `d` (B, *shape), a standard normal draw; `target_logits` (B, K) are the clean logits of `x`."""
    target = target_logits.detach()
    for _ in range(iterations):
        d = kl_gradient(model, x, target, xi * l2_normalize(d))
    return l2_normalize(d)


def kl_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """`∇_r KL(softmax(target) ‖ softmax(model(x + r)))` (B, *shape), with respect to r only: a constant of
    the step, no gradient on the parameters. Inside the compiled step a `torch.func.grad`, detached."""
    if inside_transforms():
        return torch.func.grad(lambda r: kl_divergence(target, model(x + r)))(r).detach()
    r = r.detach().requires_grad_()
    with torch.enable_grad():
        (g,) = torch.autograd.grad(kl_divergence(target, model(x + r)), r)
    return g


class VAT(SSLMethod):
    Config = VATConfig
    terms = ("ce", "lds")
    supervised_equivalent = {"alpha": 0.0, "entmin": 0.0}

    def term_names(self):
        return self.terms + (("ent",) if self.config.entmin > 0 else ())

    def random_tensors(self, batch):
        """The power iteration's start `d` (like x_ulb), a standard normal draw; none without the LDS term."""
        if self.config.alpha == 0:
            return {}
        x = batch.x_ulb
        return {"d": torch.randn(x.shape, generator=self.context.generator, device=x.device, dtype=x.dtype)}

    def loss(self, model, batch, progress):
        cfg, x = self.config, batch.x_ulb
        if self.is_supervised():  # no unlabeled term: exactly `supervised` (one clean pass)
            return supervised_step(model, batch, self.terms)
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        loss, logged = ce, {"ce": ce.detach(), "lds": not_computed(ce.device)}
        with frozen_bn_stats(model):
            with torch.autocast(x.device.type, enabled=False), torch.set_grad_enabled(cfg.entmin > 0):
                logits = model(x)  # (B_ulb, K) clean: the target (detached), with gradient only for the entropy
            if cfg.alpha > 0:
                with torch.autocast(x.device.type, enabled=False):  # finite differences: no bf16
                    r_adv = cfg.eps * adversarial_direction(
                        model, x, logits, cfg.xi, cfg.power_iterations, batch.random["d"]
                    )
                lds = kl_divergence(logits.detach(), model(x + r_adv))
                loss, logged["lds"] = loss + cfg.alpha * lds, lds.detach()
        if cfg.entmin > 0:
            ent = entropy(logits)
            loss, logged["ent"] = loss + cfg.entmin * ent, ent.detach()
        return loss, logged
