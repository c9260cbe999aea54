"""MixMatch (Berthelot, Carlini, Goodfellow, Papernot, Oliver & Raffel, "MixMatch: a holistic approach
to semi-supervised learning", NeurIPS 2019, arXiv 1905.02249): guess each unlabeled sample's label as
the sharpened mean prediction over K weak augmentations, MixUp the labeled and unlabeled samples (with
their targets) with a shuffled copy of both, and minimize `L = CE(mixed labeled, mixed targets) +
λ_u(t)·MSE(softmax(mixed unlabeled), mixed targets)`.

Choices (written down here and in the run's config):
- Defaults from the paper: K = 2, T = 0.5, α = 0.75; λ_u ramps up linearly over the first 1/64 of
  training (the paper: 16k of its 2^20 steps; the authors' code: 1024 of 65536 kimg). λ_u is per
  dataset in the paper (75 CIFAR-10, 250 SVHN, 50 STL-10), for ~10^6 steps of wide ResNets; ours is 10:
  at 75 every check here collapsed (digits 8×8 and MNIST-1D with tinycnn, 3 seeds each; smallcnn on
  digits at 1×28×28), at 10 they train (reports/digits-50, reports/mnist1d-100 show both;
  `-p lambda_u=75` gives the paper's CIFAR-10 value).
- MixUp draws λ ~ Beta(α, α) per sample and uses λ' = max(λ, 1 − λ) (the paper's "per mixing op", as
  the authors' code); one random permutation of the concatenated labeled and unlabeled samples gives
  the partners. Both come from the method's generator: the permutation first, then λ (Beta as a
  2-component Dirichlet, `torch._sample_dirichlet`, the sampler behind torch.distributions, which
  takes a generator), drawn by the harness after the views (`random_tensors`), so the step compiles.
- The guess is made under `no_grad` (a constant target) with the model in its training mode; the mixed
  batch goes through the model in one forward, so the authors' interleaving (which makes their separate
  BatchNorm batches alike) is not needed.
- `lambda_u = 0` with `alpha = 0` (no MixUp) is exactly `supervised`: one clean pass over the labeled
  batch, no views drawn. Either alone is a valid ablation (the paper's "without MixUp" is α = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from ssl_bench import SSLMethod
from ssl_bench.config import Range, check_fields
from ssl_bench.losses import sharpen, soft_cross_entropy
from ssl_bench.method import View, supervised_step


@dataclass(frozen=True)
class MixMatchConfig:
    lambda_u: Annotated[float, Range(0)] = 10.0  # final weight of the unlabeled L2 term (paper: 75 CIFAR-10; see above)
    rampup: Annotated[float, Range(0, 1)] = 1 / 64  # linear ramp-up of lambda_u as a fraction of training; 0 = none
    temperature: Annotated[float, Range(0, low_open=True)] = 0.5  # sharpening temperature T of the guesses (1 = none)
    alpha: Annotated[float, Range(0)] = 0.75  # MixUp's Beta(α, α) parameter; 0 = no MixUp
    draws: Annotated[int, Range(1)] = 2  # K weak augmentations of each unlabeled sample averaged for its guess

    def __post_init__(self) -> None:
        check_fields(self)


def sample_beta(alpha: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) independent draws of Beta(α, α), α > 0, from `gen` (on its device)."""
    concentration = torch.full((n, 2), alpha, device=gen.device)
    return torch._sample_dirichlet(concentration, generator=gen)[:, 0]  # Beta(a, b) = Dirichlet(a, b)'s first part


def mixup_draws(n: int, alpha: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """MixUp's random numbers for `n` samples: a permutation `perm` (n,), then `lam` (n,) ~ Beta(α, α)."""
    perm = torch.randperm(n, generator=gen, device=gen.device)
    return {"perm": perm, "lam": sample_beta(alpha, n, gen)}


def mixup(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp of inputs `x` (N, ...) and targets `y` (N, C) with the permutation `perm` of themselves:
    `λ'x + (1 − λ')x[perm]` (and the same for `y`), `λ' = max(λ, 1 − λ)` per sample (`mixup_draws`)."""
    lam = lam.to(x.dtype)
    lam = torch.maximum(lam, 1 - lam)  # (N,), >= 0.5: each mixed sample stays closer to its own
    lx = lam.view(-1, *[1] * (x.dim() - 1))
    ly = lam.view(-1, 1).to(y.dtype)
    return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]


class MixMatch(SSLMethod):
    Config = MixMatchConfig
    terms = ("ce", "l2u")
    supervised_equivalent = {"lambda_u": 0.0, "alpha": 0.0}

    def views(self):
        if self.is_supervised():
            return {}
        return {"lb": View("x_lb", "weak"), "ulb": View("x_ulb", "weak", draws=self.config.draws)}

    def random_tensors(self, batch):
        cfg = self.config
        if self.is_supervised() or cfg.alpha == 0:
            return {}
        return mixup_draws(len(batch.x_lb) + cfg.draws * len(batch.x_ulb), cfg.alpha, self.context.generator)

    def loss(self, model, batch, progress):
        cfg = self.config
        if self.is_supervised():  # exactly `supervised` (one clean pass), l2u not computed
            return supervised_step(model, batch, self.terms)
        n_lb, n_ulb = len(batch.x_lb), len(batch.x_ulb)
        x = batch.views["lb"]  # (B_lb, ...)
        u = batch.views["ulb"].reshape(cfg.draws * n_ulb, *batch.x_ulb.shape[1:])  # (K·B_ulb, ...), draw-major
        with torch.no_grad():
            p = model(u).softmax(1).view(cfg.draws, n_ulb, -1).mean(0)  # (B_ulb, C): mean over the K draws
            guess = sharpen(p, cfg.temperature)
        inputs = torch.cat([x, u])  # (B_lb + K·B_ulb, ...)
        one_hot = (batch.y_lb[:, None] == torch.arange(p.shape[1], device=p.device)).to(
            p.dtype
        )  # (B_lb, C); F.one_hot does not compile inside torch.func.grad
        targets = torch.cat([one_hot, guess.repeat(cfg.draws, 1)])  # (B_lb + K·B_ulb, C)
        if cfg.alpha > 0:
            inputs, targets = mixup(inputs, targets, batch.random["perm"], batch.random["lam"])
        logits = model(inputs)
        ce = soft_cross_entropy(logits[:n_lb], targets[:n_lb])
        l2u = F.mse_loss(logits[n_lb:].softmax(1), targets[n_lb:])  # (1 / (C·K·B_ulb))·Σ‖q − p‖², the paper's L_U
        ramp = min(progress.fraction / cfg.rampup, 1.0) if cfg.rampup > 0 else 1.0
        return ce + cfg.lambda_u * ramp * l2u, {"ce": ce.detach(), "l2u": l2u.detach()}
