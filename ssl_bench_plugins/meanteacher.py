"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017, arXiv
1703.01780): `L = CE(labeled, student) + w(t)·MSE(softmax student(u_a), softmax teacher(u_b))` over the
unlabeled batch, where u_a, u_b are two weak augmentations of it, the teacher's output is a constant
target, the teacher's weights are an exponential moving average of the student's, and `w(t) =
w_max·exp(−5(1 − min(t/T, 1))²)`.

Choices (written down here and in the run's config):
- Teacher: `torch.optim.swa_utils.AveragedModel` of the student (parameters and buffers), made in
  `setup` and updated in `after_step` with decay α = 0.999 (the paper) and the paper's warm-up: update
  k = 1, 2, … uses the decay `min(1 − 1/k, α)`, so the teacher is the plain mean of the student's
  weights after steps 1..k until that reaches α (k = 1000), and a short run's teacher is not mostly
  the first step's weights. (The authors' PyTorch code uses `min(1 − 1/(k+1), α)`: its extra sample is
  the teacher's own random initialization; here update 1 copies the student, as AveragedModel does.)
  Oliver et al. 2018 used α = 0.95.
- Defaults `w_max = 8`, ramp-up over 40 % of training: Oliver et al. 2018 (arXiv 1804.09170, their
  hyperparameters for Mean Teacher; 8 is also the paper's CIFAR-10 4000-label value 100·4000/50000).
- The cross-entropy is on the clean labeled batch, as `supervised`'s, and shares the student's forward
  with u_a; the consistency term is over the unlabeled batch (which holds the labeled samples too).
- The teacher runs in the student's mode (training: dropout and batch statistics, as in the paper). With
  BatchNorm its forward also nudges its running statistics; each update pulls them back to the EMA of
  the student's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ssl_bench import SSLMethod
from ssl_bench.config import Range, check_fields
from ssl_bench.method import View, supervised_step
from ssl_bench.schedules import sigmoid_rampup


@dataclass(frozen=True)
class MeanTeacherConfig:
    w_max: Annotated[float, Range(0)] = 8.0  # final consistency weight (Oliver et al. 2018); 0 = exactly `supervised`
    rampup: Annotated[float, Range(0, 1)] = 0.4  # sigmoid ramp-up length T as a fraction of training; 0 = none
    decay: Annotated[float, Range(0, 1)] = 0.999  # EMA decay α of the teacher's weights (after the warm-up above)

    def __post_init__(self) -> None:
        check_fields(self)


def warmup_ema(decay: float):
    """An AveragedModel `multi_avg_fn`: `get_ema_multi_avg_fn` with the decay `min(1 − 1/(n+1), decay)`
    when n updates are already averaged (n ≥ 1; AveragedModel copies the model at n = 0)."""

    def update(averaged, current, n_averaged):
        n = int(n_averaged)  # host sync, once per update (AveragedModel itself syncs on n_averaged)
        get_ema_multi_avg_fn(min(1 - 1 / (n + 1), decay))(averaged, current, n_averaged)

    return update


class MeanTeacher(SSLMethod):
    Config = MeanTeacherConfig
    terms = ("ce", "cons")
    supervised_equivalent = {"w_max": 0.0}

    teacher: AveragedModel | None = None

    def views(self):
        if self.is_supervised():
            return {}
        return {"student": View("x_ulb", "weak"), "teacher": View("x_ulb", "weak")}

    def setup(self, model):
        self.teacher = AveragedModel(model, multi_avg_fn=warmup_ema(self.config.decay), use_buffers=True)
        self.teacher.requires_grad_(False)  # a target, never optimized

    def after_step(self, model, progress):
        self._teacher().update_parameters(model)

    def state_dict(self):
        return {"teacher": self._teacher().state_dict()}  # the averaged weights and n_averaged

    def load_state_dict(self, state):
        self._teacher().load_state_dict(state["teacher"])

    def _teacher(self) -> AveragedModel:
        if self.teacher is None:
            raise RuntimeError(
                "meanteacher: setup(model) was not called (the training loop calls it before the first step)"
            )
        return self.teacher

    def loss(self, model, batch, progress):
        if self.is_supervised():  # no consistency: exactly `supervised` (one clean pass), cons not computed
            return supervised_step(model, batch, self.terms)
        teacher, n_lb = self._teacher(), len(batch.x_lb)
        logits = model(torch.cat([batch.x_lb, batch.views["student"]]))  # (B_lb + B_ulb, K)
        with torch.no_grad():
            teacher.train(model.training)
            target = teacher(batch.views["teacher"]).softmax(1)  # (B_ulb, K), a constant
        ce = F.cross_entropy(logits[:n_lb], batch.y_lb)
        cons = F.mse_loss(logits[n_lb:].softmax(1), target)
        w = self.config.w_max * sigmoid_rampup(progress.fraction, self.config.rampup)
        return ce + w * cons, {"ce": ce.detach(), "cons": cons.detach()}
