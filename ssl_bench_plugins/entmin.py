"""Entropy minimization (Grandvalet & Bengio, NeurIPS 2004, "Semi-supervised learning by entropy
minimization"): cross-entropy on the labeled batch plus `lambda_` times the mean prediction entropy of
the unlabeled batch, `L = CE(labeled) + λ·E(unlabeled)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch.nn.functional as F

from ssl_bench import SSLMethod
from ssl_bench.config import Range, check_fields
from ssl_bench.losses import entropy


@dataclass(frozen=True)
class EntMinConfig:
    lambda_: Annotated[float, Range(0)] = 0.3  # weight of the unlabeled entropy term

    def __post_init__(self) -> None:
        check_fields(self)


class EntMin(SSLMethod):
    Config = EntMinConfig
    terms = ("ce", "ent")
    supervised_equivalent = {"lambda_": 0.0}

    def loss(self, model, batch, progress):
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        ent = entropy(model(batch.x_ulb))
        return ce + self.config.lambda_ * ent, {"ce": ce.detach(), "ent": ent.detach()}
