"""Collapse and divergence (ssl_bench.run.health): caught in real runs, flagged in records, sweeps and reports;
a slow learner that starts at chance is not stopped."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import ssl_bench.protocol as protocol
import ssl_bench.run.training as training
from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.run.health import HealthMonitor, flag_of, top_class_share

DIGITS = ["--dataset", "digits", "--labels", "50", "--quiet"]


def one_class(n: int = 100, k: int = 10, c: int = 3) -> torch.Tensor:
    logits = torch.randn(n, k)
    logits[:, c] += 100
    return logits


def test_top_class_share():
    logits = torch.eye(4)[[0, 0, 0, 1]]
    assert top_class_share(logits) == (0, 0.75)


def test_monitor_warns_then_stops_after_the_patience():
    monitor = HealthMonitor(steps=1000, collapse_patience=0.25, num_classes=10, grace_steps=100, initial_loss=2.3)
    assert monitor.check(100, one_class(), 2.30).startswith("warning: collapsed at step 100")
    assert monitor.status == "collapsed" and not monitor.stop
    assert monitor.check(300, one_class(), 2.30) is None and not monitor.stop
    assert monitor.check(350, one_class(), 2.30).startswith("collapsed:") and monitor.stop
    assert monitor.record() == {"status": "collapsed", "step": 100, "detail": monitor.detail}
    assert "class 3 for 100%" in monitor.detail and "ln 10 = 2.303" in monitor.detail


def test_monitor_recovery_clears_the_flag_and_grace_ignores_the_warmup():
    monitor = HealthMonitor(steps=1000, collapse_patience=0.25, num_classes=10, grace_steps=100, initial_loss=2.3)
    assert monitor.check(50, one_class(), 2.3) is None and monitor.status == "ok"  # still warming up
    monitor.check(100, one_class(), 2.3)
    assert monitor.check(200, torch.randn(300, 10), 2.0).startswith("recovered at step 200")
    assert monitor.record() == {"status": "ok"} and not monitor.stop


def test_monitor_patience_zero_never_stops_but_still_flags():
    monitor = HealthMonitor(steps=100, collapse_patience=0.0, num_classes=10, initial_loss=2.3)
    for step in range(10, 101, 10):
        monitor.check(step, one_class(), 2.3)
    assert not monitor.stop and monitor.status == "collapsed"


def test_monitor_divergence_is_relative_to_the_first_loss():
    monitor = HealthMonitor(steps=100, collapse_patience=0.25, num_classes=10, initial_loss=2.0)
    assert monitor.check(10, torch.randn(50, 10), 1999.0) is None  # < 1000 × 2.0
    assert monitor.check(20, torch.randn(50, 10), 2001.0).startswith("diverged") and monitor.stop
    assert flag_of({"health": monitor.record()}).startswith("diverged at step 20")
    assert flag_of({"health": {"status": "ok"}}) is None and flag_of({}) is None  # records made before health checks


def test_a_run_killed_by_its_learning_rate_is_caught_and_flagged(tmp_path):
    """tinycnn at lr 0.3 without warm-up dies within 20 steps: flagged, stopped early, exit 2 with the hint."""
    args = [
        "run",
        "--method",
        "supervised",
        *DIGITS,
        "--lr",
        "0.3",
        "--warmup-steps",
        "0",
        "--steps",
        "400",
        "--eval-every",
        "20",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "collapsed at step 20" in result.stderr and "--lr" in result.stderr
    (run_dir,) = tmp_path.iterdir()
    saved = records.read_json(run_dir / records.RESULT)
    assert saved["health"]["status"] == "collapsed" and saved["health"]["step"] == 20
    assert saved["steps_done"] == 120 < saved["steps"]  # stopped once collapsed for 25 % of 400 steps
    assert saved["test_acc"] < 0.2


def test_an_exploding_run_is_flagged_diverged(tmp_path):
    args = ["run", "--method", "supervised", *DIGITS, "--lr", "1e6", "--steps", "300", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "diverged at step 100" in result.stderr
    (run_dir,) = tmp_path.iterdir()
    saved = records.read_json(run_dir / records.RESULT)
    assert saved["health"]["status"] == "diverged" and saved["steps_done"] == 100


@pytest.fixture
def slow_start(monkeypatch):
    """Models start at chance: +40 on class 0's output bias, so every input is class 0 until training undoes it."""
    original = training.init_model

    def biased(resolved, input_shape):
        model = original(resolved, input_shape)
        with torch.no_grad():
            model.head.bias[0] += 40
        return model

    monkeypatch.setattr(training, "init_model", biased)


SLOW = [
    "--method",
    "supervised",
    *DIGITS,
    "--lr",
    "3e-4",
    "--warmup-steps",
    "0",
    "--steps",
    "400",
    "--eval-every",
    "10",
]


def test_a_slow_learner_that_starts_at_chance_is_not_stopped(tmp_path, slow_start):
    result = CliRunner().invoke(cli, ["run", *SLOW, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: collapsed at step 10" in result.stderr and "recovered at step" in result.stderr
    (run_dir,) = tmp_path.iterdir()
    saved = records.read_json(run_dir / records.RESULT)
    shares = [row["top_class_share"] for row in records.read_jsonl(run_dir / records.METRICS)]
    assert shares[0] == 1.0 and max(shares[-5:]) < 0.5  # it did start at chance, and learned
    assert saved["health"] == {"status": "ok"} and saved["steps_done"] == 400 and saved["test_acc"] > 0.5


def test_a_short_patience_stops_the_same_slow_learner(tmp_path, slow_start):
    """The same run with a patience shorter than its slow start (4 % of 400 = 16 steps) is stopped: the
    patience is what protects slow learners."""
    spec = protocol.RunSpec(
        method="supervised",
        dataset="digits",
        labels=50,
        lr=3e-4,
        steps=400,
        protocol={"eval_every": 10, "warmup_steps": 0, "collapse_patience": 0.04},
    )
    saved = training.train(protocol.resolve(spec), tmp_path, show_progress=False)
    assert saved["health"]["status"] == "collapsed" and saved["steps_done"] < 100


def test_sweep_lists_flagged_runs_and_report_counts_them(tmp_path):
    from ssl_bench.reporting.report import build_report

    base = [
        "sweep",
        "--methods",
        "supervised",
        "--dataset",
        "digits",
        "--labels",
        "50",
        "--steps",
        "200",
        "--quiet",
        "--out",
        str(tmp_path),
    ]
    healthy = CliRunner().invoke(cli, [*base, "--seeds", "0,1"])
    assert healthy.exit_code == 0, healthy.output
    dead = CliRunner().invoke(cli, [*base, "--seeds", "0", "--lr", "0.3", "--warmup-steps", "0", "--eval-every", "20"])
    assert (
        dead.exit_code == 2
        and "flagged: digits-50-tinycnn-supervised-s0" in dead.stderr
        and "1 collapsed or diverged" in dead.stderr
    )
    report = build_report([tmp_path], tmp_path / "report", reconstructions=False)
    assert report.warnings[0].startswith("1 run(s) collapsed or diverged; they count in the tables' means")
    assert sum(len(g.runs) for g in report.groups) == 3  # the collapsed run counts against its method
    text = (tmp_path / "report" / "report.md").read_text()
    assert "collapsed at step 20" in text and "| 0 of 1 · 1 collapsed |" in text
