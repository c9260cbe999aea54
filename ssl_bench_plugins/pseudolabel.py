"""Pseudo-Label (Dong-Hyun Lee, "Pseudo-Label: the simple and efficient semi-supervised learning method
for deep neural networks", ICML 2013 Workshop on Challenges in Representation Learning; no arXiv id):
cross-entropy on the labeled batch plus `w(t)` times the cross-entropy of the unlabeled batch against the
model's own argmax predictions, recomputed at every step and detached,

    L = CE(labeled) + w(t)·(1/B_ulb)·Σ_i m_i·CE(f(x_i), argmax_c f(x_i)_c),  m_i = [max_c p_ic ≥ τ].

`w(t)` is the paper's deterministic ramp α(t): 0 before T1, linear from 0 to `alpha_f` between
T1 and T2, `alpha_f` after. The paper uses α_f = 3, T1 = 100 and T2 = 600 epochs (without pre-training);
we keep α_f = 3 and the ratio T1 : T2 = 1 : 6 as fractions of training, t1 = 0.1 and t2 = 0.6, so that
the last 40 % of training runs at the full weight.

`threshold` τ is the modern form's confidence mask (Oliver et al., NeurIPS 2018, "Realistic evaluation
of deep semi-supervised learning algorithms", and USB use τ = 0.95): only unlabeled samples whose top
class probability reaches τ contribute; the others count as zeros in the mean over the unlabeled batch.
The default is that modern form, τ = 0.95: the paper's form, τ = 0 (`-p threshold=0`: every unlabeled
sample gets its pseudo-label), killed the paper's own MNIST network on MNIST-shaped data in our check
(smallcnn on digits at 1×28×28, 130 steps of 8 + 8: one class on seed 0, 25 % on seed 1, where τ = 0.95
gave 77.9 % and 76.9 %, supervised 77.1 % and 78.7 %), and the reports show both forms. USB also uses a
weight of 1 reached linearly over the first 40 % of training (`alpha_f=1, t1=0, t2=0.4`; Oliver et al. ramp
over 40 % with a sigmoid shape instead).

The unlabeled batch is its own forward pass (as in `entmin`); BatchNorm running averages see both passes
(Oliver et al. normalize labeled and unlabeled samples together; USB freezes the averages for the
unlabeled pass). Targets are the argmax of the logits (not of bf16-rounded probabilities, which tie
near-equal classes). With `alpha_f = 0` only the labeled batch is forwarded, so the step is exactly
`supervised`'s, and `pl` is logged as NaN (not computed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from ssl_bench import SSLMethod
from ssl_bench.config import Range, check_fields
from ssl_bench.method import supervised_step


@dataclass(frozen=True)
class PseudoLabelConfig:
    alpha_f: Annotated[float, Range(0, finite=True)] = 3.0  # final weight α_f of the pseudo-label term (paper: 3)
    t1: Annotated[float, Range(0, 1)] = 0.1  # T1: the weight is 0 before this fraction of training
    t2: Annotated[float, Range(0, 1)] = 0.6  # T2: the weight reaches alpha_f at this fraction of training, in [t1, 1]
    # confidence τ a pseudo-label needs; 0.95 = Oliver et al. 2018 and USB, 0 = every sample (the paper)
    threshold: Annotated[float, Range(0, 1)] = 0.95

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.t1 <= self.t2:
            raise ValueError(f"t2 must be in [t1, 1] = [{self.t1}, 1], got {self.t2}")


def ramp(progress: float, t1: float, t2: float) -> float:
    """Lee's α(t)/α_f: 0 before `t1`, linear from 0 to 1 on [t1, t2], 1 from `t2` on (a step at t1 = t2)."""
    if progress < t1:
        return 0.0
    if progress >= t2:
        return 1.0
    return (progress - t1) / (t2 - t1)


class PseudoLabel(SSLMethod):
    Config = PseudoLabelConfig
    terms = ("ce", "pl")
    supervised_equivalent = {"alpha_f": 0.0}
    unlabeled_active = {"threshold": 0.0}  # an untrained model is never 95 % sure

    def loss(self, model, batch, progress):
        cfg = self.config
        if self.is_supervised():  # no unlabeled term: exactly `supervised` (one clean pass)
            return supervised_step(model, batch, self.terms)
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        logits = model(batch.x_ulb)  # (B_ulb, K)
        with torch.no_grad():  # targets and mask are constants
            pseudo = logits.argmax(1)  # (B_ulb,) on the logits: bf16 probabilities would tie near-equal classes
            mask = (logits.float().softmax(1).amax(1) >= cfg.threshold).float()  # (B_ulb,)
        pl = (F.cross_entropy(logits, pseudo, reduction="none") * mask).mean()
        w = cfg.alpha_f * ramp(progress.fraction, cfg.t1, cfg.t2)
        return ce + w * pl, {"ce": ce.detach(), "pl": pl.detach()}
