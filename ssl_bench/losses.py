"""Loss pieces shared by several methods (written once, imported by the plugins)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def not_computed(device: torch.device) -> torch.Tensor:
    """The logged value of a term a step skipped (its weight is 0): NaN, `null` in metrics.jsonl. Not 0,
    which would read as a perfect score (no reconstruction error, full consistency, no confident sample)."""
    return torch.full((), math.nan, device=device)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy `−Σ_c p_c log p_c` of `softmax(logits)` over the batch (nats)."""
    logp = F.log_softmax(logits, dim=1)  # (B, K)
    return -(logp.exp() * logp).sum(1).mean()


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature sharpening of class distributions `p` (B, K): `p^(1/T) / Σ_c p_c^(1/T)` (MixMatch,
    UDA). T → 0 tends to one-hot; T = 1 is the identity."""
    logp = torch.log(p.clamp_min(1e-12)) / temperature  # in log space: no underflow of p^(1/T) at small T
    return torch.softmax(logp, dim=1)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy `−Σ_c q_c log softmax(logits)_c` against target distributions `q` (B, K)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
