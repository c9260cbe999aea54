"""`ssl-bench sweep`: methods × seeds under one protocol, resumable, with a summary table."""

from __future__ import annotations

import statistics

import pytest
from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.errors import UserError
from ssl_bench.sweeps.grid import Grid, load_grid_file
from ssl_bench.sweeps.sweep import run_sweep
from tests.conftest import ROOT

SWEEP = ["sweep", "--dataset", "digits", "--labels", "50", "--steps", "10", "--eval-every", "5", "--quiet"]


def test_sweep_runs_every_method_and_seed_then_resumes(tmp_path):
    args = [*SWEEP, "--methods", "supervised,entmin", "--seeds", "0,1", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    results = [records.read_json(p / "result.json") for p in sorted(tmp_path.iterdir())]
    assert sorted((r["method"], r["seed"]) for r in results) == [
        ("entmin", 0),
        ("entmin", 1),
        ("supervised", 0),
        ("supervised", 1),
    ]
    for seed in (0, 1):  # one protocol per seed, whatever the method
        assert len({r["protocol_fingerprint"] for r in results if r["seed"] == seed}) == 1
    # the table: mean ± std over the two seeds, as computed here from the records
    sup = [r["test_acc"] for r in results if r["method"] == "supervised"]
    expected = f"{100 * statistics.fmean(sup):.2f} ± {100 * statistics.stdev(sup):.2f}"
    (row,) = [line for line in result.output.splitlines() if line.split()[2:3] == ["supervised"]]
    assert expected in row and " 2 " in row
    # resume: an interrupted run (no result.json) is redone, complete ones are skipped
    victim = next(p for p in tmp_path.iterdir() if "entmin" in p.name and p.name.endswith(p.name[-8:]))
    (victim / "result.json").unlink()
    mtimes = {p.name: (p / "result.json").stat().st_mtime_ns for p in tmp_path.iterdir() if p != victim}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    assert "3 already complete" in again.stderr and "1 to run" in again.stderr
    assert records.is_complete(victim)
    assert mtimes == {p.name: (p / "result.json").stat().st_mtime_ns for p in tmp_path.iterdir() if p != victim}


def test_method_params_are_addressed_per_method(tmp_path):
    args = [
        *SWEEP,
        "--methods",
        "supervised,entmin",
        "--seeds",
        "0",
        "--out",
        str(tmp_path),
        "-p",
        "entmin.lambda_=0.9",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (entmin,) = [records.read_json(p / "result.json") for p in tmp_path.iterdir() if "entmin" in p.name]
    assert entmin["params"] == {"lambda_": 0.9}
    assert "entmin λ=0.9" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-p", "alpha=0.5"], "METHOD.KEY=VALUE"),
        (["-p", "pimodel.w_max=1"], "not among the sweep's methods"),
        (["-p", "entmin.nope=1"], "unknown key 'nope'"),
        (["--methods", "supervised,nope"], "unknown method 'nope'"),
    ],
)
def test_bad_sweeps_are_refused_before_any_run(tmp_path, extra, message):
    args = [*SWEEP, "--methods", "supervised,entmin", "--seeds", "0", "--out", str(tmp_path)]
    if "--methods" in extra:
        args = [a for a in args if a not in ("--methods", "supervised,entmin")]
    result = CliRunner().invoke(cli, [*args, *extra])
    assert result.exit_code == 2 and message in result.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_grid_file_expands_params_and_axes(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        """
[sweep]
methods = ["supervised", "entmin"]
datasets = ["digits"]
labels = [50]
seeds = [0, 1]
steps = 10
protocol = { eval_every = 5 }

[params.entmin]
lambda_ = [0.1, 0.5]
"""
    )
    g = load_grid_file(grid, {})
    specs = g.specs()
    assert len(specs) == 2 + 2 * 2  # supervised × 2 seeds + entmin × 2 lambdas × 2 seeds
    assert sorted(s.params.get("lambda_", 0) for s in specs if s.method == "entmin") == [0.1, 0.1, 0.5, 0.5]
    assert all(s.steps == 10 for s in specs)
    outcome = run_sweep(specs, tmp_path / "runs", workers=2, show_progress=False, echo=lambda m: None)
    results = outcome.results
    assert not outcome.failed and len(results) == 6 and all(r["steps"] == 10 for r in results)
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nmethods = ["supervised"]\ndatasets = ["digits"]\nlabels = [50]\nstep = 3\n')
    with pytest.raises(UserError, match="unknown key in \\[sweep\\]: step"):
        load_grid_file(bad, {})


def test_grid_refuses_params_of_absent_methods():
    with pytest.raises(UserError, match="not among the sweep's methods"):
        Grid(methods=("supervised",), datasets=("digits",), labels=(50,), params={"entmin": {"lambda_": (1,)}}).specs()


@pytest.mark.parametrize("grid", sorted((ROOT / "examples" / "grids").glob("*.toml")), ids=lambda p: p.stem)
def test_example_grids_resolve(grid):
    """Every shipped grid names real methods, datasets, models and valid params (no data is loaded)."""
    from ssl_bench.protocol import resolve

    specs = load_grid_file(grid, {}).specs()
    assert specs
    for spec in specs:
        resolve(spec)


def test_a_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from ssl_bench_plugins.entmin import EntMin

    original = EntMin.loss

    def diverge(self, model, batch, progress):  # entmin's loss turns NaN at step 3
        loss, terms = original(self, model, batch, progress)
        return (loss * float("nan"), terms) if progress.step == 3 else (loss, terms)

    monkeypatch.setattr(EntMin, "loss", diverge)
    args = [*SWEEP, "--methods", "supervised,entmin", "--seeds", "0,1", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "of 4 runs, 2 failed" in result.stderr and "non-finite loss at step 3 of entmin" in result.stderr
    assert " supervised " in result.output and " entmin " not in result.output  # the table of what completed
    failed = sorted(p for p in tmp_path.iterdir() if "entmin" in p.name)
    assert len(failed) == 2 and all(records.failure(p).startswith("non-finite loss at step 3") for p in failed)
    assert all(records.is_complete(p) for p in tmp_path.iterdir() if "supervised" in p.name)
    # resumed: failed runs are skipped (and still reported) unless --retry-failed
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "2 failed before (skipped" in again.stderr and "0 to run" in again.stderr
    monkeypatch.setattr(EntMin, "loss", original)
    retried = CliRunner().invoke(cli, [*args, "--retry-failed"])
    assert retried.exit_code == 0, retried.output
    assert all(records.is_complete(p) and records.failure(p) is None for p in failed)
    # the report counts a failed run as diverged (without accuracy), with its error
    from ssl_bench.reporting.runs import collect

    (failed[0] / "result.json").unlink()
    records.write_json(failed[0] / "failed.json", {"error": "non-finite loss at step 3 of entmin: x", "step": 3})
    runs, skipped = collect([tmp_path])
    (diverged,) = [r for r in runs if r.failed]
    assert len(runs) == 4 and not skipped and diverged.flag.startswith("diverged at step 3: non-finite loss at step 3")
    assert (diverged.result["method"], diverged.seed, diverged.unmeasured) == (
        "entmin",
        0,
        ["test_acc", "test_acc_last"],
    )


def run_records(out) -> dict[str, tuple]:
    """Per run: its metrics lines and test accuracies, without wall times."""
    recorded = {}
    for p in sorted(out.iterdir()):
        lines = [{k: v for k, v in line.items() if k != "time_s"} for line in records.read_jsonl(p / records.METRICS)]
        result = records.read_json(p / records.RESULT)
        recorded[p.name] = (lines, result["test_acc"], result["test_acc_last"], result["init_fingerprint"])
    return recorded


def test_a_run_does_not_depend_on_the_worker_that_ran_it(tmp_path):
    """Workers are long-lived (each trains runs one after another): 4 runs on 2 workers, so a worker
    trains runs of different methods, give the same records as each run alone in this process."""
    specs = Grid(
        methods=("entmin", "supervised"),
        datasets=("digits",),
        labels=(50,),
        seeds=(0, 1),
        common={"steps": 12, "protocol": {"eval_every": 4}},
    ).specs()
    alone = tmp_path / "alone"
    for spec in reversed(specs):  # one by one, in the opposite order
        run_sweep([spec], alone, workers=1, show_progress=False, echo=lambda m: None)
    outcome = run_sweep(specs, tmp_path / "pool", workers=2, show_progress=False, echo=lambda m: None)
    assert not outcome.failed and len(outcome.results) == 4
    assert run_records(tmp_path / "pool") == run_records(alone)
