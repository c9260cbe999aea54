"""Supervised only: cross-entropy on the labeled batch; the unlabeled batch is ignored.

The baseline every semi-supervised method is compared against, under the same protocol.
"""

from __future__ import annotations

import torch.nn.functional as F

from ssl_bench import SSLMethod


class Supervised(SSLMethod):
    terms = ("ce",)

    def loss(self, model, batch, progress):
        ce = F.cross_entropy(model(batch.x_lb), batch.y_lb)
        return ce, {"ce": ce.detach()}
