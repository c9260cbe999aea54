"""`ssl-bench status`: counts per group from the run folders alone (ssl_bench.sweeps.status)."""

from __future__ import annotations

from click.testing import CliRunner

from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run import runstate
from ssl_bench.runlock import is_locked, run_lock

FLAGS = [
    "--methods",
    "supervised,entmin",
    "--seeds",
    "0,1,2,3",
    "--dataset",
    "digits",
    "--labels",
    "50",
    "--steps",
    "30",
]


def make_runs(out):
    """Folders as runs leave them: seeds 0-3 of supervised and entmin, in every state but one not started."""
    resolved = {
        (m, s): resolve(RunSpec(method=m, dataset="digits", labels=50, seed=s, steps=30, device="cpu"))
        for m in ("supervised", "entmin")
        for s in range(4)
    }
    states = {("supervised", 0): "complete", ("supervised", 1): "complete",
              ("supervised", 2): "failed", ("supervised", 3): "running",
              ("entmin", 0): "flagged", ("entmin", 1): "interrupted", ("entmin", 2): "interrupted"}  # fmt: skip
    for key, state in states.items():
        run_dir = out / resolved[key].run_id()
        records.write_json(run_dir / records.CONFIG, {**resolved[key].as_json(), "run_id": run_dir.name})
        if state in ("complete", "flagged"):
            health = (
                {"status": "ok"} if state == "complete" else {"status": "collapsed", "step": 20, "detail": "one class"}
            )
            records.write_json(run_dir / records.RESULT, {"run_id": run_dir.name, "health": health})
        elif state == "failed":
            records.write_json(run_dir / records.FAILED, {"error": "non-finite loss at step 7"})
        elif state == "interrupted" and key[1] == 1:
            (run_dir / runstate.STATE).write_bytes(b"")  # one with a state to resume, one without
    return out / resolved[("supervised", 3)].run_id()


def row_of(output: str, method: str) -> list[str]:
    (row,) = [line.split() for line in output.splitlines() if line.split()[2:3] == [method]]
    return row


def test_status_counts_each_state_per_group(tmp_path):
    running = make_runs(tmp_path)
    (tmp_path / ".submitit").mkdir()  # submitit's logs: not a run
    with run_lock(running):
        assert is_locked(running)
        from_folders = CliRunner().invoke(cli, ["status", str(tmp_path)])
        of_the_sweep = CliRunner().invoke(cli, ["status", str(tmp_path), *FLAGS])
    assert not is_locked(running) and not is_locked(tmp_path / "nowhere")
    assert from_folders.exit_code == 0, from_folders.output
    header = from_folders.stdout.splitlines()[0].split()
    assert header == [
        "dataset",
        "model",
        "method",
        "complete",
        "flagged",
        "damaged",
        "running",
        "interrupted",
        "failed",
        "total",
    ]
    assert row_of(from_folders.stdout, "supervised")[3:] == ["2", "0", "0", "1", "0", "1", "4"]
    assert row_of(from_folders.stdout, "entmin")[3:] == ["0", "1", "0", "0", "2", "0", "3"]
    assert from_folders.stdout.splitlines()[-1] == "2 complete, 1 flagged, 1 running, 2 interrupted, 1 failed of 7 runs"

    assert of_the_sweep.exit_code == 0, of_the_sweep.output
    assert "not started" in of_the_sweep.stdout.splitlines()[0]
    assert row_of(of_the_sweep.stdout, "entmin")[3:] == ["0", "1", "0", "0", "2", "0", "1", "4"]  # seed 3: no folder
    assert of_the_sweep.stdout.splitlines()[-1].endswith("1 not started of 8 runs")


def test_status_of_another_sweep_counts_only_its_runs(tmp_path):
    make_runs(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "status",
            str(tmp_path),
            "--methods",
            "entmin",
            "--seeds",
            "0",
            "--dataset",
            "digits",
            "--labels",
            "50",
            "--steps",
            "31",
        ],
    )
    assert result.exit_code == 0, result.output
    assert row_of(result.stdout, "entmin")[3:] == [
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "1",
        "1",
    ]  # another protocol: other folders


def test_status_of_an_empty_folder_and_bad_input(tmp_path):
    empty = CliRunner().invoke(cli, ["status", str(tmp_path)])
    assert empty.exit_code == 0 and f"no runs in {tmp_path}" in empty.stdout
    missing = CliRunner().invoke(cli, ["status", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    bad = CliRunner().invoke(
        cli, ["status", str(tmp_path), "--methods", "nope", "--dataset", "digits", "--labels", "50"]
    )
    assert bad.exit_code == 2 and bad.stderr.count("Error:") == 1 and "unknown method 'nope'" in bad.stderr


def test_a_damaged_result_is_not_counted_complete(tmp_path):
    """A torn or mistyped result.json (which `report` skips) is counted as damaged and named, not complete."""
    make_runs(tmp_path)
    complete = sorted(p for p in tmp_path.iterdir() if "supervised" in p.name and (p / records.RESULT).is_file())
    (complete[0] / records.RESULT).write_bytes(b'{"run_id": "dig')  # torn by a full disk or a copy cut short
    records.write_json(complete[1] / records.RESULT, {"run_id": complete[1].name, "test_acc": "high"})
    for args in (["status", str(tmp_path)], ["status", str(tmp_path), *FLAGS]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert row_of(result.stdout, "supervised")[3:6] == ["0", "0", "2"]  # complete, flagged, damaged
        assert result.stdout.splitlines()[-1].startswith(
            "1 flagged, 2 damaged, 3 interrupted, 1 failed"
        )  # none complete
        warnings = sorted(line for line in result.stderr.splitlines() if line.startswith("Warning: "))
        assert len(warnings) == 2 and all("counted as damaged, not complete" in w for w in warnings), result.stderr
        assert f"Warning: {complete[0].name}: damaged record, result.json: not valid JSON" in result.stderr
        assert (
            f"Warning: {complete[1].name}: damaged record, result.json: test_acc expects float (a number), got 'high'"
            in result.stderr
        )
