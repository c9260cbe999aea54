"""Live tracking (`--log tensorboard`, ssl_bench.run.tracking): the metrics rows as TensorBoard scalars, also
across a kill and resume (the killed session's events past the resumed step are purged)."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import cli
from tests.test_resume import ARGS, killed_at

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(run_dir: Path, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
    """The scalars TensorBoard shows; `purge=False`: as the event files hold them, for readers that do not
    purge a killed session's events past a resume (SessionLog.START)."""
    acc = EventAccumulator(str(run_dir / "tensorboard"), purge_orphaned_data=purge)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_scalars_are_the_metrics(run_dir: Path) -> None:
    rows = records.read_jsonl(run_dir / records.METRICS)
    got = scalars(run_dir)
    for key in ("val_acc", "loss", "ce", "cons", "lr", "top_class_share"):
        assert [step for step, _ in got[key]] == [r["step"] for r in rows], key  # each evaluation once
        assert [v for _, v in got[key]] == pytest.approx([r[key] for r in rows], rel=1e-6), key
    assert [step for step, _ in got["steps_per_s"]] == [r["step"] for r in rows[1:]]
    assert all(v > 0 for _, v in got["steps_per_s"])


def test_a_resumed_run_keeps_one_event_per_step(tmp_path):
    """The scalars are the metrics rows, one event per evaluation, also after a kill and a resume."""
    args = [*ARGS, "--out", str(tmp_path), "--log", "tensorboard"]
    run_dir = killed_at(
        "state-write", 30, tmp_path, args=args
    )  # row 30 shown, killed saving its state: resumed from step 25
    assert [s for s, _ in scalars(run_dir)["val_acc"]] == [15, 30]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "resumed from step 25" in again.stderr
    assert_scalars_are_the_metrics(run_dir)


def test_a_session_resumed_in_the_same_second_shows_each_step_once(tmp_path, monkeypatch):
    """TensorBoard reads a folder's event files in name order, and SummaryWriter names a file by the second
    it was opened, then host and pid: a session resumed in the same second as the killed one, by a process
    whose pid sorts first, got a name that sorted first, and TensorBoard showed [30, 45, 60, 15, 30]. Here
    every session opens its file in one second, each with a pid that sorts before the previous one's."""
    from ssl_bench.run.tracking import TensorBoardTracker

    clock = itertools.count()
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000 + next(clock) * 1e-6)  # all in one second
    row = lambda step, session: {"step": step, "val_acc": step / 100 + session / 1000, "loss": 1.0, "time_s": step / 10}

    def session(pid: int, purge_step: int | None, steps: list[int], number: int) -> None:
        monkeypatch.setattr(os, "getpid", lambda: pid)
        tracker = TensorBoardTracker(
            tmp_path, purge_step=purge_step, last_row=None if purge_step is None else row(purge_step - 10, 0)
        )
        for step in steps:
            tracker.log(row(step, number))  # flushed: what a kill leaves on disk
        tracker.close()

    session(300, None, [15, 30], 0)  # killed after row 30, its state of step 25 saved
    session(200, 25, [30, 45], 1)  # resumed from step 25, killed after row 45 (state of step 40)
    session(1000, 40, [45, 60], 2)  # resumed from step 40, to the end ("1000" sorts before "200")
    want = [(15, 0.15), (30, 0.301), (45, 0.452), (60, 0.602)]  # each step once, from the last session that wrote it
    for purge in (True, False):
        got = scalars(tmp_path, purge=purge)["val_acc"]
        assert [s for s, _ in got] == [s for s, _ in want], purge
        assert [v for _, v in got] == pytest.approx([v for _, v in want]), purge
