"""Where a sweep's runs are, from their folders alone: complete, flagged, damaged, running, interrupted, failed.

A run folder is
- `complete`: `result.json`, healthy; `flagged`: `result.json` with a collapse or divergence flag;
- `damaged`: a `result.json` that `ssl-bench report` would skip as damaged (torn or non-UTF-8 JSON, not an
  object, a field of the wrong type: read and checked as the report does, ssl_bench.reporting.runs);
- `running`: not complete and its lock is held by a live process (ssl_bench.runlock.is_locked);
- `failed`: `failed.json` (a non-finite loss), not running;
- `interrupted`: anything else (a `state.pt` to resume from, or none yet: the run starts over).
Given the sweep's runs (its grid or flags), runs of it without a folder are `not started`. Counts are
per group: dataset-labels, model and the method with its params off their defaults (as in sweep's table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ssl_bench import records
from ssl_bench.errors import UserError
from ssl_bench.reporting.groups import canonical, method_defaults, row_label
from ssl_bench.reporting.runs import RESULT_TYPES, DamagedRecord, check_fields, check_params, read_record
from ssl_bench.run.health import flag_of
from ssl_bench.runlock import is_locked

STATES = ("complete", "flagged", "damaged", "running", "interrupted", "failed", "not started")


def state_of(run_dir: Path) -> str:
    """One of STATES for a run folder (`not started` when it does not exist)."""
    return check_run(run_dir)[0]


def check_run(run_dir: Path) -> tuple[str, str | None]:
    """(one of STATES, what is wrong with its result.json when it is `damaged`, else None)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "not started", None
    if records.is_complete(run_dir):
        try:
            result = read_result(run_dir / records.RESULT)
        except (OSError, DamagedRecord) as exc:
            return "damaged", str(exc)
        return ("flagged" if flag_of(result) else "complete"), None
    if is_locked(run_dir):
        return "running", None
    if (run_dir / records.FAILED).is_file():
        return "failed", None
    return "interrupted", None


def read_result(path: Path) -> dict:
    """A run's result.json, read and checked as `ssl-bench report` reads it (`DamagedRecord` naming the file)."""
    result = read_record(path)
    check_fields(result, RESULT_TYPES, path)
    check_params(result.get("params", {}), path)
    return result


def group_of(config: dict) -> tuple[str, str, str]:
    """(dataset-labels, model, method label) of a run's config.json or `Resolved.as_json()`."""
    params = config.get("params") or {}
    defaults = method_defaults(config["method"])
    changed = {k for k, v in params.items() if defaults is None or canonical(defaults.get(k)) != canonical(v)}
    labels = config.get("labels")
    return (
        f"{config['dataset']}-{labels if labels is not None else 'all'}",
        str(config["model"]),
        row_label(config["method"], params, changed),
    )


@dataclass(frozen=True)
class Status:
    rows: list[dict]  # one per group: dataset, model, method, a count per state, total
    unreadable: list[str]  # run folders whose config.json cannot be read (not counted)
    damaged: dict[str, str] = field(
        default_factory=dict
    )  # run folder -> what is wrong with its result.json (counted as damaged)


def status(runs_dir: Path, resolved: list | None = None) -> Status:
    """Counts per group of the run folders in `runs_dir`, or, given a sweep's resolved runs, of those runs
    (each in its folder under `runs_dir`, or not started)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir} is not a folder of runs")
    entries: list[tuple[tuple, str]] = []
    unreadable: list[str] = []
    damaged: dict[str, str] = {}

    def state(run_dir: Path) -> str:
        found, why = check_run(run_dir)
        if why is not None:
            damaged[run_dir.name] = why
        return found

    if resolved is not None:
        entries = [(group_of(r.as_json()), state(runs_dir / r.run_id())) for r in resolved]
    else:
        for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            config = run_dir / records.CONFIG
            if not config.is_file():
                if (run_dir / ".lock").is_file():  # a run that stopped before writing its config
                    unreadable.append(run_dir.name)
                continue  # not a run folder
            try:
                entries.append((group_of(records.read_json(config)), state(run_dir)))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                unreadable.append(run_dir.name)
    counts: dict[tuple, dict[str, int]] = {}
    for group, state in entries:
        counts.setdefault(group, dict.fromkeys(STATES, 0))[state] += 1
    shown = [s for s in STATES if s != "not started" or resolved is not None]
    rows = [
        {"dataset": dataset, "model": model, "method": method, **{s: c[s] for s in shown}, "total": sum(c.values())}
        for (dataset, model, method), c in counts.items()
    ]
    return Status(rows, unreadable, damaged)


def totals(rows: list[dict]) -> dict[str, int]:
    """The counts of all groups together."""
    keys = [k for k in (*STATES, "total") if rows and k in rows[0]]
    return {k: sum(r[k] for r in rows) for k in keys}
