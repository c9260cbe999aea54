"""Unsupervised Data Augmentation, UDA (Xie, Dai, Hovy, Luong, Le; NeurIPS 2020, arXiv 1904.12848): the
strong view must predict the sharpened prediction on the original unlabeled sample,
`L = CE(labeled) + λ·mean_b 1[max p_b > β]·KL(sharpen(p_b, T) ‖ f(strong_b))` with `p = softmax(f(x_ulb))`
detached and the mean over the whole unlabeled batch.

The "original" is `batch.x_ulb` itself, as in the paper (unaugmented with the protocol's `--augment none`,
weakly augmented alike for every method with `--augment weak`), so only the strong view is declared.
As in the paper's code: one forward over `[labeled, original, strong]` (BatchNorm statistics over the
whole batch); the mask keeps max p > β (strictly); the target is `softmax(logits / T)` (= `sharpen(p, T)`).

TSA (Training Signal Annealing, optional): labeled samples whose correct-class probability exceeds
`η_t = α_t·(1 − 1/K) + 1/K` are left out of CE (which averages over the samples kept); α_t = t/T (linear),
1 − e^(−5t/T) (log) or e^(5(t/T − 1)) (exp). The paper recommends exp when labels are very few and the
model overfits fast, log when it does not. Default none: the authors' released CIFAR-10/SVHN GPU scripts
run without it (it helped on TPUs with large unlabeled batches, not on GPUs with small ones:
google-research/uda#19), as does USB's `uda`; and TSA changes the supervised term that every method of
a comparison shares. With λ = 0 and no TSA the step is exactly `supervised` (one clean labeled pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from ssl_bench import SSLMethod, View
from ssl_bench.config import Range, check_fields
from ssl_bench.losses import sharpen
from ssl_bench.method import supervised_step


def tsa_threshold(schedule: str, progress: float, num_classes: int) -> float:
    """TSA's η_t at training progress t/T = `progress` in [0, 1]: from 1/K at the start to 1 at the end (1 for none)."""
    if schedule == "none":
        return 1.0
    # e ** x, not math.exp(x): compiled (--compile), Progress.step is symbolic, and math.exp would specialize
    # it (one recompilation per step until Dynamo's limit fails the run); a power stays symbolic
    if schedule == "linear":
        alpha = progress
    elif schedule == "log":
        alpha = 1 - math.e ** (-5 * progress)
    else:
        alpha = math.e ** (5 * (progress - 1))
    return alpha * (1 - 1 / num_classes) + 1 / num_classes


@dataclass(frozen=True)
class UDAConfig:
    lambda_: Annotated[float, Range(0)] = 1.0  # λ: weight of the consistency term (paper: 1)
    # T: sharpening of the target; 1 = none (paper: 0.4, ImageNet; USB: 0.4)
    temperature: Annotated[float, Range(0, low_open=True, note="T")] = 0.4
    # β: the consistency counts for samples with max p > β; 0 = all (paper: 0.8, CIFAR-10/SVHN)
    threshold: Annotated[float, Range(0, 1, note="β, a probability")] = 0.8
    tsa: Literal["none", "linear", "log", "exp"] = "none"  # Training Signal Annealing schedule of the labeled CE

    def __post_init__(self) -> None:
        check_fields(self)


class UDA(SSLMethod):
    Config = UDAConfig
    terms = ("ce", "unsup", "mask")  # ce: annealed when TSA is on; mask: the fraction of the unlabeled batch above β
    supervised_equivalent = {"lambda_": 0.0, "tsa": "none"}
    unlabeled_active = {"threshold": 0.0}  # an untrained model is never confident enough for the paper's threshold

    def views(self):
        return {"ulb_strong": View("x_ulb", "strong")}

    def supervised(self, logits, y, progress):
        """CE of the labeled batch, with TSA when configured."""
        if self.config.tsa == "none":
            return F.cross_entropy(logits, y)
        eta = tsa_threshold(self.config.tsa, progress.fraction, self.context.num_classes)
        correct = logits.detach().softmax(1).gather(1, y[:, None]).squeeze(1)  # (B_lb,)
        keep = (correct <= eta).to(logits.dtype)  # samples already above η give no signal
        return (F.cross_entropy(logits, y, reduction="none") * keep).sum() / keep.sum().clamp_min(1)

    def loss(self, model, batch, progress):
        cfg = self.config
        if cfg.lambda_ == 0:  # no consistency term: one clean labeled pass (exactly `supervised` without TSA)
            return supervised_step(model, batch, self.terms, ce=partial(self.supervised, progress=progress))
        strong = batch.views["ulb_strong"]
        logits = model(torch.cat([batch.x_lb, batch.x_ulb, strong]))  # (B_lb + 2·B_ulb, K)
        logits_lb, logits_ori, logits_strong = logits.split([len(batch.x_lb), len(batch.x_ulb), len(strong)])
        ce = self.supervised(logits_lb, batch.y_lb, progress)
        p = logits_ori.detach().softmax(1)  # (B_ulb, K)
        mask = (p.max(1).values > cfg.threshold).to(logits.dtype)  # (B_ulb,)
        target = sharpen(p, cfg.temperature)  # (B_ulb, K), no gradient
        kl = F.kl_div(logits_strong.log_softmax(1), target, reduction="none").sum(1)  # (B_ulb,) KL(target ‖ p_strong)
        unsup = (kl * mask).mean()
        return ce + cfg.lambda_ * unsup, {"ce": ce.detach(), "unsup": unsup.detach(), "mask": mask.mean()}
