"""Π-model (Laine & Aila, ICLR 2017, arXiv 1610.02242): two stochastic passes over the whole batch
(two weak draws of it, the declared view `x`, plus the model's dropout) and `L = CE(labeled, pass 1) +
w(t)·MSE(softmax pass 1, softmax pass 2)` over all samples, with `w(t) = w_max·exp(−5(1 − min(t/T, 1))²)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch.nn.functional as F

from ssl_bench import SSLMethod, View
from ssl_bench.config import Range, check_fields
from ssl_bench.method import supervised_step
from ssl_bench.schedules import sigmoid_rampup


@dataclass(frozen=True)
class PiModelConfig:
    w_max: Annotated[float, Range(0)] = 10.0  # final consistency weight
    rampup: Annotated[float, Range(0, 1)] = 0.4  # ramp-up length T as a fraction of training; 0 = none

    def __post_init__(self) -> None:
        check_fields(self)


class PiModel(SSLMethod):
    Config = PiModelConfig
    terms = ("ce", "cons")
    supervised_equivalent = {"w_max": 0.0}

    def views(self):
        """Two weak draws of labeled + unlabeled inputs, made by the harness outside the (compiled) step."""
        return {} if self.is_supervised() else {"x": View("x", "weak", draws=2)}

    def loss(self, model, batch, progress):
        n_lb = len(batch.x_lb)
        if self.is_supervised():  # no consistency: exactly `supervised` (one clean pass), cons not computed
            return supervised_step(model, batch, self.terms)
        x1, x2 = batch.views["x"]  # (B_lb + B_ulb, ...) each
        logits1 = model(x1)  # (B, K)
        logits2 = model(x2)
        ce = F.cross_entropy(logits1[:n_lb], batch.y_lb)
        cons = F.mse_loss(logits1.softmax(1), logits2.softmax(1))
        w = self.config.w_max * sigmoid_rampup(progress.fraction, self.config.rampup)
        return ce + w * cons, {"ce": ce.detach(), "cons": cons.detach()}
