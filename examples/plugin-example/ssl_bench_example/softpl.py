"""Soft pseudo-labels: an example ssl-bench method plugin (not a method of the literature as such; the
self-distillation of UDA and MixMatch without their masks and mixing). Cross-entropy on the labeled batch
plus `weight` times the soft cross-entropy of a weakly augmented view of the unlabeled batch against the
sharpened (temperature `T`), detached prediction on the unlabeled batch itself.

It shows the three things a plugin usually needs: a validated `Config`, a view declared for the harness
to make (`views`), and the shared pieces of `ssl_bench.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_bench import SSLMethod, View
from ssl_bench.losses import sharpen, soft_cross_entropy


@dataclass(frozen=True)
class SoftPLConfig:
    weight: float = 1.0  # weight of the soft pseudo-label term, >= 0
    T: float = 0.5  # sharpening temperature of the targets, > 0 (1 = the plain prediction)

    def __post_init__(self) -> None:  # validation: refused before any training
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if not self.T > 0:
            raise ValueError(f"T must be > 0, got {self.T}")


class SoftPL(SSLMethod):
    Config = SoftPLConfig
    terms = ("ce", "pl")  # exactly the keys `loss` logs
    supervised_equivalent = {"weight": 0.0}  # the config under which it is plain `supervised`

    def views(self):
        return {"ulb_weak": View("x_ulb", "weak")}  # made by the harness, from this method's generator

    def loss(self, model, batch, progress):
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        if self.config.weight == 0:  # exactly `supervised`
            return ce, {"ce": ce.detach(), "pl": torch.zeros((), device=ce.device)}
        with torch.no_grad():
            target = sharpen(model(batch.x_ulb).softmax(1), self.config.T)  # (B_ulb, K)
        pl = soft_cross_entropy(model(batch.views["ulb_weak"]), target)
        return ce + self.config.weight * pl, {"ce": ce.detach(), "pl": pl.detach()}
