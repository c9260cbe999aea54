"""Pseudo-label (Lee, ICML 2013 workshop, "Pseudo-Label: the simple and efficient semi-supervised
learning method"): cross-entropy on the labeled batch plus `weight` times the cross-entropy of the
unlabeled batch against its own confident predictions (max probability >= `threshold`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import SSLMethod


@dataclass(frozen=True)
class PseudoLabelConfig:
    weight: float = 1.0  # weight of the pseudo-label term, >= 0
    threshold: float = 0.95  # confidence a prediction needs to become a pseudo-label, in [0, 1]

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")


class PseudoLabel(SSLMethod):
    name = "pseudolabel"
    Config = PseudoLabelConfig
    terms = ("ce", "pl")  # exactly the keys `loss` logs
    supervised_equivalent = {"weight": 0.0}  # the config under which it is plain `supervised`

    def loss(self, model, batch, progress):
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        logits = model(batch.x_ulb)  # (B_ulb, K)
        with torch.no_grad():
            conf, target = logits.softmax(1).max(1)
            mask = (conf >= self.config.threshold).float()  # (B_ulb,)
        pl = (F.cross_entropy(logits, target, reduction="none") * mask).mean()
        return ce + self.config.weight * pl, {"ce": ce.detach(), "pl": pl.detach()}
