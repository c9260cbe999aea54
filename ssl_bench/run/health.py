"""Collapse and divergence: a run that stops learning is flagged, never recorded as a plain result.

Checked at every evaluation (no extra host sync: the validation logits and the mean loss are computed
there anyway):

- **collapsed**: the model predicts one class for at least `COLLAPSE_SHARE` (95 %) of the validation
  set — a network whose ReLUs died outputs the same logits for every input and sits at chance, its
  cross-entropy at ln K. Judged from the first evaluation after the learning-rate warm-up on (before it,
  the network has barely moved from its initialization). The first such evaluation prints a warning. A
  run that stays collapsed at every evaluation for `collapse_patience` of its budget (protocol field,
  default 0.25) is stopped there; a
  slow learner that starts at chance and recovers within that window is not (a later healthy evaluation
  clears the streak). A run that is collapsed at its last evaluation is flagged even if it was not stopped.
- **diverged**: the mean training loss since the previous evaluation is finite but more than
  `EXPLODE_FACTOR` (1000×) the loss of the first step (or of 1, whichever is larger) — e.g. `--lr 1e6`
  reaches 1e27. The run stops at once. (A non-finite loss is `training.NonFiniteLoss`: no result at all.)

A flagged run still writes `result.json` (its accuracies, so nothing is hidden) with
`health = {"status": "collapsed" | "diverged", "step": …, "detail": …}`; `sweep` lists it like a failure,
and `report` counts it in its method's means at its measured accuracy and says so
(ssl_bench.reporting.report). Healthy runs carry `{"status": "ok"}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COLLAPSE_SHARE = 0.95  # share of the validation set in one predicted class that counts as collapsed
EXPLODE_FACTOR = 1e3  # mean loss over the first step's loss (at least 1) that counts as diverged
HINT = "try a lower --lr or more --warmup-steps"


def top_class_share(logits: torch.Tensor) -> tuple[int, float]:
    """The most predicted class of `logits` (N, K) and the share of samples predicted as it (host sync)."""
    counts = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
    top = int(counts.argmax())
    return top, counts[top].item() / max(len(logits), 1)


@dataclass
class HealthMonitor:
    """Watches one run's evaluations; `check` returns a line to print when something happens."""

    steps: int  # the run's budget
    collapse_patience: float  # fraction of the budget a collapse may last before the run stops; 0 = never stop
    num_classes: int
    grace_steps: int = 0  # collapse is judged only at evaluations after this many steps (the warm-up)
    initial_loss: float | None = None  # the first step's loss
    collapsed_since: int | None = None  # first evaluation step of the current collapse streak
    warned: bool = False
    status: str = "ok"  # ok | collapsed | diverged
    step: int | None = None
    detail: str = ""
    stop: bool = False  # the loop should stop now
    share: float = 0.0  # share of the validation set in its most predicted class, at the last check

    def check(self, step: int, val_logits: torch.Tensor, mean_loss: float) -> str | None:
        """Judge the evaluation after `step` steps (see the module docstring for the rules)."""
        top, share = top_class_share(val_logits)
        self.share = share
        limit = EXPLODE_FACTOR * max(abs(self.initial_loss or 0.0), 1.0)
        if math.isfinite(mean_loss) and mean_loss > limit:
            self.flag(
                "diverged",
                step,
                f"mean loss {mean_loss:.4g} at step {step}, "
                f"over {EXPLODE_FACTOR:.0f}× the first step's {self.initial_loss:.4g}",
            )
            self.stop = True
            return f"diverged: {self.detail}; stopped ({HINT})"
        if share < COLLAPSE_SHARE or step < self.grace_steps:
            recovered = self.collapsed_since is not None
            self.collapsed_since, self.status, self.step, self.detail = None, "ok", None, ""
            return f"recovered at step {step}: {share:.0%} of the validation set in one class" if recovered else None
        if self.collapsed_since is None:
            self.collapsed_since = step
        ln_k = math.log(self.num_classes)
        self.flag(
            "collapsed",
            self.collapsed_since,
            f"predicts class {top} for {share:.0%} of the validation set since step {self.collapsed_since} "
            f"(mean loss {mean_loss:.4g}; ln {self.num_classes} = {ln_k:.4g})",
        )
        patience = math.ceil(self.collapse_patience * self.steps)
        if self.collapse_patience > 0 and step - self.collapsed_since >= patience:
            self.stop = True
            return f"collapsed: {self.detail}; stopped at step {step} after {patience} steps of collapse ({HINT})"
        if not self.warned:
            self.warned = True
            stop_at = self.collapsed_since + patience
            until = (
                f"; the run stops if it lasts to step {stop_at}"
                if self.collapse_patience > 0 and stop_at < self.steps
                else "; the run is flagged unless it recovers by its last step"
            )
            return f"warning: collapsed at step {step}: {self.detail}{until} ({HINT})"
        return None

    def flag(self, status: str, step: int, detail: str) -> None:
        self.status, self.step, self.detail = status, step, detail

    def record(self) -> dict:
        """The `health` entry of result.json."""
        if self.status == "ok":
            return {"status": "ok"}
        return {"status": self.status, "step": self.step, "detail": self.detail}


def flag_of(result: dict) -> str | None:
    """`"collapsed at step N: …"` for a flagged result, None for a healthy one (or one made before health checks)."""
    health = result.get("health") or {"status": "ok"}
    if health.get("status", "ok") == "ok":
        return None
    return f"{health['status']} at step {health.get('step')}: {health.get('detail', '')}"
