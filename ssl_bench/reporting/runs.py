"""Run folders as a report reads them: complete (and failed) runs, and the skipped ones with the reason.

Every record a report reads is checked before it is used (JSON objects, field types, finite accuracies in
[0, 1], params); a damaged record skips its run with the file and the problem named. A run flagged by the
health check (collapsed or diverged) is a complete run like any other, and counts in the report's means
at its measured accuracy; it may lack a test accuracy (missing, null or NaN in result.json), which only
a flagged run may: `measured` says which it has. A run that failed with a non-finite loss (`failed.json`,
no result.json) diverged too: it is read from its config.json as a diverged run without accuracy
(`Run.failed`), so that it counts against its method as well. Used by ssl_bench.reporting.report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from ssl_bench import records
from ssl_bench.config import Range, check_value
from ssl_bench.errors import UserError
from ssl_bench.run.health import flag_of

REQUIRED = ("method", "model", "seed", "test_acc", "test_acc_last", "protocol_fingerprint")  # in result.json
MEASURED = (
    "test_acc",
    "test_acc_last",
)  # required of a healthy run; a flagged run may lack them (missing, null or NaN)
Accuracy = Annotated[float, Range(0.0, 1.0)]  # a fraction of samples
RESULT_TYPES = {  # what the report reads from result.json (REQUIRED, and the others where present)
    "method": str,
    "model": str,
    "seed": int,
    "test_acc": Accuracy,
    "test_acc_last": Accuracy,
    "protocol_fingerprint": str,
    "params": dict,
    "versions": dict,
    "git_commit": str | None,
    "device": str,
    "split_fingerprint": str,
    "health": dict | None,
    "test_acc_recording": Accuracy | None,
    "test_acc_recording_last": Accuracy | None,
}
CONFIG_TYPES = {  # what it reads from config.json ("dataset" and "protocol" required)
    "dataset": str,
    "protocol": dict,
    "labels": int | None,
    "val_size": int | None,
    "exclude_labeled": bool | None,
    "model": str | None,
    "model_options": dict | None,
    "dataset_options": dict | None,
}
METRICS_TYPES = {"step": int, "val_acc": Accuracy}  # what it reads from each metrics.jsonl row


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    result: dict[str, Any]  # result.json; for a failed run, what its config.json and failed.json say (`failed_run`)
    failed: bool = False  # no result.json: a non-finite loss stopped it (failed.json)

    @property
    def seed(self) -> int:
        return self.result["seed"]

    @property
    def fingerprint(self) -> str | None:
        """The protocol fingerprint; None for a failed run (it is computed with the result)."""
        return self.result["protocol_fingerprint"]

    @property
    def code(self) -> tuple:
        """What produced the run: linking key for runs of different seeds when fingerprints conflict."""
        v = self.result.get("versions", {})
        return (v.get("ssl_bench"), v.get("torch"), self.result.get("git_commit"))

    @property
    def status(self) -> str:
        """`ok`, or the health check's flag: `collapsed` or `diverged` (ssl_bench.run.health)."""
        return (self.result.get("health") or {}).get("status", "ok")

    @property
    def flag(self) -> str | None:
        """`"collapsed at step N: …"` for a flagged run, None for a healthy one."""
        return flag_of(self.result)

    @property
    def unmeasured(self) -> list[str]:
        """The keys of MEASURED this (flagged) run has no accuracy for."""
        return [k for k in MEASURED if measured(self.result.get(k)) is None]


def is_unmeasured(value: Any) -> bool:
    """An accuracy recorded as null or NaN (a missing one is None here too)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def measured(value: Any) -> float | None:
    """A checked record's accuracy, or None when it has none (missing, null or NaN)."""
    return None if is_unmeasured(value) else float(value)


@dataclass
class Skipped:
    path: Path
    reason: str
    damaged: bool = False  # a record that cannot be read or has fields of the wrong type (also told on the terminal)


class DamagedRecord(Exception):
    """A record file of a run folder that holds wrong values; the message names the file."""


class UnreadableRecord(DamagedRecord):
    """A record file that is not a JSON object."""


def collect(dirs: Iterable[Path]) -> tuple[list[Run], list[Skipped]]:
    """Every run folder (a folder with config.json) under `dirs`: complete runs (flagged ones included)
    and skipped ones.

    Every record is checked (JSON, field types, finite accuracies in [0, 1]; a flagged run's test
    accuracies may be missing, null or NaN); a damaged one skips its run with the file and the problem named."""
    runs, skipped, seen = [], [], set()
    for d in dirs:
        for config_path in sorted(Path(d).rglob(records.CONFIG)):
            run_dir = config_path.parent
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            try:
                if not records.is_complete(run_dir):
                    error = failure_of(run_dir)
                    run = failed_run(run_dir, error) if error else None
                    if run is None:
                        skipped.append(
                            Skipped(
                                run_dir,
                                f"failed: {error}"
                                if error
                                else "incomplete: no result.json (interrupted or still running)",
                            )
                        )
                    else:
                        runs.append(run)
                    continue
                run = Run(run_dir, read_record(config_path), read_record(run_dir / records.RESULT))
                flagged = (
                    isinstance(run.result.get("health"), dict) and flag_of(run.result) is not None
                )  # then it may have no accuracy
                missing = [k for k in REQUIRED if k not in run.result and not (flagged and k in MEASURED)]
                missing += [k for k in ("dataset", "protocol") if k not in run.config]
                if missing:
                    skipped.append(Skipped(run_dir, f"record without {', '.join(missing)} (made by another version?)"))
                    continue
                checked = {
                    k: v
                    for k, v in run.result.items()
                    if not (flagged and k.startswith("test_acc") and is_unmeasured(v))
                }
                check_fields(checked, RESULT_TYPES, run_dir / records.RESULT)
                check_fields(run.config, CONFIG_TYPES, config_path)
                check_params(run.result.get("params", {}), run_dir / records.RESULT)
                check_metrics(run_dir / records.METRICS)
            except (OSError, ValueError, DamagedRecord) as exc:
                kind = "damaged" if type(exc) is DamagedRecord else "unreadable"
                skipped.append(Skipped(run_dir, f"{kind} record: {exc}", damaged=True))
                continue
            runs.append(run)
    return runs, skipped


def failed_run(run_dir: Path, error: str) -> Run | None:
    """A run stopped by a non-finite loss as a diverged run without accuracy, from its config.json (None
    when that lacks what a table row needs: then it is only listed as skipped)."""
    config = read_record(run_dir / records.CONFIG)
    check_fields(config, CONFIG_TYPES, run_dir / records.CONFIG)
    seed = config.get("protocol", {}).get("seed")
    if not (
        isinstance(config.get("method"), str)
        and isinstance(config.get("model"), str)
        and isinstance(seed, int)
        and "dataset" in config
    ):
        return None
    step = read_record(run_dir / records.FAILED).get("step")
    result = {
        "method": config["method"],
        "params": config.get("params") or {},
        "model": config["model"],
        "seed": seed,
        "health": {"status": "diverged", "step": step, "detail": error},
        "protocol_fingerprint": None,
    }
    check_params(result["params"], run_dir / records.CONFIG)
    return Run(run_dir, config, result, failed=True)


def read_record(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; `DamagedRecord` naming the file when it is not one."""
    try:
        return records.read_object(path)
    except ValueError as exc:
        raise UnreadableRecord(str(exc)) from None


def check_metrics(path: Path) -> None:
    """Every row of `metrics.jsonl` (a torn last line is ignored) has an int `step` and a `val_acc` in [0, 1]."""
    try:
        rows = records.read_jsonl(path)
    except UnicodeDecodeError as exc:
        raise UnreadableRecord(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not set(METRICS_TYPES) <= set(row):
            raise DamagedRecord(f"{path.name} line {i}: expected an object with step and val_acc")
        check_fields(row, METRICS_TYPES, path.with_name(f"{path.name} line {i}"))


def failure_of(run_dir: Path) -> str | None:
    """The error in a failed run's `failed.json` (None when there is none); `DamagedRecord` if it is garbage."""
    path = run_dir / records.FAILED
    if not path.is_file():
        return None
    error = read_record(path).get("error")
    if not isinstance(error, str):
        raise DamagedRecord(f"{records.FAILED}: error must be text, got {error!r}")
    return error


def check_fields(doc: dict[str, Any], types: dict[str, Any], path: Path) -> None:
    """Every field of `types` present in `doc` has its type (`config.check_value`: finite, in range)."""
    for key, tp in types.items():
        if key in doc:
            try:
                check_value(doc[key], tp, key, path.name)
            except UserError as exc:
                raise DamagedRecord(str(exc)) from None


def check_params(params: dict[str, Any], path: Path) -> None:
    """A run's params as the report shows them: numbers finite, schedules `{kind, start, end}` with numbers."""
    for key, value in params.items():
        numbers = [value] if isinstance(value, float) else []
        if isinstance(value, dict) and {"kind", "start", "end"} <= set(value):
            numbers = [value["start"], value["end"]]
        for number in numbers:
            try:
                check_value(number, float, f"params.{key}", path.name)
            except UserError as exc:
                raise DamagedRecord(str(exc)) from None
