"""FixMatch (Sohn, Berthelot, Li, Zhang, Carlini, Cubuk, Kurakin, Zhang, Raffel; NeurIPS 2020, arXiv
2001.07685): the weak view's confident predictions become hard pseudo-labels for the strong view,
`L = CE(labeled) + λ_u·mean_b 1[max q_b ≥ τ]·CE(f(strong_b), argmax q_b)` with `q = softmax(f(weak))`
detached and the mean over the whole unlabeled batch.

Views: the unlabeled batch weakly and strongly augmented (`views`); the labeled batch is used as given —
the protocol's `--augment weak` augments it alike for every method. As in the paper's code, one forward
over `[labeled, weak, strong]` (BatchNorm statistics over the whole batch); with λ_u = 0 the step is
exactly `supervised` (one clean pass over the labeled batch, `unsup` and `mask` not computed: NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from ssl_bench import SSLMethod, View
from ssl_bench.config import Range, check_fields
from ssl_bench.method import supervised_step


@dataclass(frozen=True)
class FixMatchConfig:
    # τ: a weak-view prediction becomes a pseudo-label when max q ≥ τ; 1 = only q that rounds to 1 (paper: 0.95)
    threshold: Annotated[float, Range(0, 1, note="τ, a probability")] = 0.95
    lambda_u: Annotated[float, Range(0)] = 1.0  # λ_u: weight of the unlabeled term (paper: 1)

    def __post_init__(self) -> None:
        check_fields(self)


class FixMatch(SSLMethod):
    Config = FixMatchConfig
    terms = ("ce", "unsup", "mask")  # mask: the fraction of the unlabeled batch above τ
    supervised_equivalent = {"lambda_u": 0.0}
    unlabeled_active = {"threshold": 0.0}  # an untrained model is never confident enough for the paper's threshold

    def views(self):
        return {"ulb_weak": View("x_ulb", "weak"), "ulb_strong": View("x_ulb", "strong")}

    def loss(self, model, batch, progress):
        cfg = self.config
        if self.is_supervised():  # no unlabeled term: exactly `supervised`
            return supervised_step(model, batch, self.terms)
        weak, strong = batch.views["ulb_weak"], batch.views["ulb_strong"]
        logits = model(torch.cat([batch.x_lb, weak, strong]))  # (B_lb + 2·B_ulb, K)
        logits_lb, logits_weak, logits_strong = logits.split([len(batch.x_lb), len(weak), len(strong)])
        ce = F.cross_entropy(logits_lb, batch.y_lb)
        confidence, pseudo = logits_weak.detach().softmax(1).max(1)  # (B_ulb,), (B_ulb,)
        mask = (confidence >= cfg.threshold).to(logits.dtype)  # (B_ulb,)
        unsup = (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()
        return ce + cfg.lambda_u * unsup, {"ce": ce.detach(), "unsup": unsup.detach(), "mask": mask.mean()}
