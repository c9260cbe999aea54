"""The running sums of the loss and its terms between evaluations, and the first step whose loss was not
finite, kept on the device so that a training step costs no host sync (the loop reads them every
`CHECK_EVERY` steps and at each evaluation; saved with the run state, ssl_bench.run.runstate).
"""

from __future__ import annotations

import torch


class LossTracker:
    """Running sums of (loss, *terms) between evaluations, and the first step whose loss was not finite —
    kept on the device, so that a step costs no host sync."""

    def __init__(self, n_terms: int, device: torch.device):
        self.sums = torch.zeros(n_terms + 1, device=device)  # (1+T,)
        self.count = torch.zeros((), dtype=torch.long, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
        self.bad_values = torch.zeros(n_terms + 1, device=device)  # (1+T,) at that step

    def add(self, step: int, values: torch.Tensor) -> None:
        first = ~torch.isfinite(values[0]) & (self.bad_step < 0)
        self.bad_step = torch.where(first, self.bad_step.new_full((), step), self.bad_step)
        self.bad_values = torch.where(first, values, self.bad_values)
        self.sums += values
        self.count += 1

    def means(self) -> list[float]:
        """The mean of each value since the last call, and a fresh start (host sync)."""
        out = (self.sums / self.count).tolist()
        self.sums.zero_()
        self.count.zero_()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ("sums", "count", "bad_step", "bad_values")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            getattr(self, k).copy_(v)
