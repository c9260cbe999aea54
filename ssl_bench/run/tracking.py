"""Live tracking while a run trains (`--log tensorboard`): a view of the run, never its record.

The run's JSON records (`metrics.jsonl`, `result.json`) stay the source of truth; a tracker receives
each evaluation's metrics row as it is written and shows it elsewhere. TensorBoard (the `tensorboard`
extra) gets the loss and each loss term, validation accuracy, the top-class share, the learning rate
and training steps per second, under `<run folder>/tensorboard/`.

A resumed run shows each step once. TensorBoard reads a folder's event files in name order, and
SummaryWriter names a file `events.out.tfevents.<second>.<host>.<pid>.<n>`: a session resumed in the same
second as the killed one, by a process whose pid sorts first, would be read first, and TensorBoard's own
purge (a SessionLog.START at the resumed step, which drops the events read *before* it) would then keep
the killed session's events after the resumed ones. So a resumed session first rewrites the earlier
sessions' event files as one file, `EARLIER`, that holds only their events before the resumed step (in
session order: by the wall time of each file's first event, a sub-second clock) and whose name sorts
before any name SummaryWriter gives; then it opens its own file. The files then hold each step once,
for any reader, whatever the names of the sessions' files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ssl_bench.errors import UserError

TRACKERS = ("tensorboard",)
SKIP = {"step", "time_s"}  # row fields that are axes, not scalars
EARLIER = "events.out.tfevents.0000000000.ssl-bench"  # earlier sessions' events: sorts before SummaryWriter's files


class TensorBoardTracker:
    def __init__(self, run_dir: Path, purge_step: int | None = None, last_row: dict | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "--log tensorboard needs the tensorboard package: pip install 'ssl-bench[tensorboard]'"
            ) from None
        folder = Path(run_dir) / "tensorboard"
        if purge_step is not None:
            try:
                keep_earlier_sessions(folder, purge_step)
            except OSError:
                # cannot rewrite them (disk full): left to TensorBoard's purge, right when the names sort in
                # session order
                pass
        # purge_step also writes TensorBoard's SessionLog.START: a TensorBoard already showing the killed
        # session's events (it does not reread EARLIER) drops those past the resumed step
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
        self.last = (
            None if last_row is None else (last_row["step"], last_row["time_s"])
        )  # (step, time_s) of the previous row

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


def keep_earlier_sessions(folder: Path, before_step: int) -> None:
    """Rewrite the event files in `folder` as one, `EARLIER`, holding their scalars of steps before
    `before_step` (one event per step and tag: the latest session's) after the first file's version header."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    def events(path: Path) -> list[Event]:
        return [
            Event.FromString(raw) for raw in RawEventFileLoader(str(path)).Load()
        ]  # stops at a record torn by a kill

    files = sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
    if not files:
        return
    read = {path: events(path) for path in files}
    opened = lambda path: read[path][0].wall_time if read[path] else math.inf
    header, kept = None, {}
    for path in sorted(files, key=lambda p: (p.name != EARLIER, opened(p), p.name)):  # session order
        for event in read[path]:
            if event.HasField("summary"):
                if event.step < before_step:
                    kept[event.step, tuple(v.tag for v in event.summary.value)] = event  # a later session's replaces
            elif header is None and event.file_version:
                header = event
    tmp = folder / ".earlier-sessions.tmp"  # no "tfevents" in the name: no reader takes it for an event file
    with open(tmp, "wb") as fh:
        writer = RecordWriter(fh)
        for event in ([header] if header else []) + sorted(kept.values(), key=lambda e: e.step):
            writer.write(event.SerializeToString())
    os.replace(tmp, folder / EARLIER)
    for path in files:
        if path.name != EARLIER:
            path.unlink()


def check_trackers(names: tuple[str, ...]) -> None:
    """Refuse unknown tracker names (before any work)."""
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UserError(f"--log: unknown tracker {', '.join(map(repr, unknown))}; known: {', '.join(TRACKERS)}")


def open_trackers(
    names: tuple[str, ...], run_dir: Path, resumed_step: int | None = None, last_row: dict | None = None
) -> list[TensorBoardTracker]:
    """The trackers of `names` (checked by `check_trackers` before any work); a resumed run passes the
    first step it redoes and its last metrics row."""
    return [
        TensorBoardTracker(run_dir, purge_step=resumed_step, last_row=last_row)
        for name in names
        if name == "tensorboard"
    ]
