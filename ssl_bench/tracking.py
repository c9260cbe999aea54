"""Live tracking while a run trains (`--log tensorboard`): a view of the run, never its record.

The run's JSON records (`metrics.jsonl`, `result.json`) stay the source of truth; a tracker receives
each evaluation's metrics row as it is written and shows it elsewhere. TensorBoard (the `tensorboard`
extra) gets the loss and each loss term, validation accuracy, the top-class share, the learning rate
and training steps per second, under `<run folder>/tensorboard/`. A resumed run appends to the same
event files from the step it resumed at.
"""

from __future__ import annotations

import math
from pathlib import Path

from ssl_bench.errors import UserError

TRACKERS = ("tensorboard",)
SKIP = {"step", "time_s"}  # row fields that are axes, not scalars


class TensorBoardTracker:
    def __init__(self, run_dir: Path, purge_step: int | None = None, last_row: dict | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--log tensorboard needs the tensorboard package: pip install 'ssl-bench[tensorboard]'") from None
        # purge_step drops events a killed session wrote past the resumed step (TensorBoard's own mechanism)
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge_step)
        self.last = None if last_row is None else (last_row["step"], last_row["time_s"])  # (step, time_s) of the previous row

    def log(self, row: dict) -> None:
        step = row["step"]
        for key, value in row.items():
            if key not in SKIP and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        if self.last is not None and row["time_s"] > self.last[1]:
            self.writer.add_scalar("steps_per_s", (step - self.last[0]) / (row["time_s"] - self.last[1]), step)
        self.last = (step, row["time_s"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_trackers(names: tuple[str, ...]) -> None:
    """Refuse unknown tracker names (before any work)."""
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UserError(f"--log: unknown tracker {', '.join(map(repr, unknown))}; known: {', '.join(TRACKERS)}")


def open_trackers(names: tuple[str, ...], run_dir: Path, resumed_step: int | None = None, last_row: dict | None = None) -> list[TensorBoardTracker]:
    """The trackers of `names` (checked by `check_trackers` before any work); a resumed run passes the
    first step it redoes and its last metrics row."""
    return [TensorBoardTracker(run_dir, purge_step=resumed_step, last_row=last_row) for name in names if name == "tensorboard"]
