"""Live tracking (`--log tensorboard`, ssl_bench.tracking): the metrics rows as TensorBoard scalars, also
across a kill and resume (the killed session's events past the resumed step are purged)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import cli
from tests.test_resume import ARGS, killed_at

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / "tensorboard"))
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
    run_dir = killed_at("state-write", 30, tmp_path, args=args)  # row 30 shown, killed saving its state: resumed from step 25
    assert [s for s, _ in scalars(run_dir)["val_acc"]] == [15, 30]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "resumed from step 25" in again.stderr
    assert_scalars_are_the_metrics(run_dir)
