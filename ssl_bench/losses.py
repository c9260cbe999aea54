"""Loss pieces shared by several methods (written once, imported by the plugins)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy `−Σ_c p_c log p_c` of `softmax(logits)` over the batch (nats)."""
    logp = F.log_softmax(logits, dim=1)  # (B, K)
    return -(logp.exp() * logp).sum(1).mean()
