"""Where a sweep's runs are, from their folders alone: complete, flagged, running, interrupted, failed.

A run folder is
- `complete`: `result.json`, healthy; `flagged`: `result.json` with a collapse or divergence flag;
- `running`: not complete and its lock is held by a live process (ssl_bench.runlock.is_locked);
- `failed`: `failed.json` (a non-finite loss), not running;
- `interrupted`: anything else (a `state.pt` to resume from, or none yet: the run starts over).
Given the sweep's runs (its grid or flags), runs of it without a folder are `not started`. Counts are
per group: dataset-labels, model and the method with its params off their defaults (as in sweep's table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssl_bench import records
from ssl_bench.errors import UserError

STATES = ("complete", "flagged", "running", "interrupted", "failed", "not started")


def state_of(run_dir: Path) -> str:
    """One of STATES for a run folder (`not started` when it does not exist)."""
    from ssl_bench.health import flag_of
    from ssl_bench.runlock import is_locked

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "not started"
    if records.is_complete(run_dir):
        try:
            return "flagged" if flag_of(records.read_json(run_dir / records.RESULT)) else "complete"
        except (OSError, ValueError, AttributeError, TypeError):
            return "complete"  # a damaged result.json: `ssl-bench report` names it
    if is_locked(run_dir):
        return "running"
    if (run_dir / records.FAILED).is_file():
        return "failed"
    return "interrupted"


def group_of(config: dict) -> tuple[str, str, str]:
    """(dataset-labels, model, method label) of a run's config.json or `Resolved.as_json()`."""
    from ssl_bench.report_groups import canonical, method_defaults, row_label

    params = config.get("params") or {}
    defaults = method_defaults(config["method"])
    changed = {k for k, v in params.items() if defaults is None or canonical(defaults.get(k)) != canonical(v)}
    labels = config.get("labels")
    return f"{config['dataset']}-{labels if labels is not None else 'all'}", str(config["model"]), row_label(config["method"], params, changed)


@dataclass(frozen=True)
class Status:
    rows: list[dict]  # one per group: dataset, model, method, a count per state, total
    unreadable: list[str]  # run folders whose config.json cannot be read (not counted)


def status(runs_dir: Path, resolved: list | None = None) -> Status:
    """Counts per group of the run folders in `runs_dir`, or, given a sweep's resolved runs, of those runs
    (each in its folder under `runs_dir`, or not started)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir} is not a folder of runs")
    entries: list[tuple[tuple, str]] = []
    unreadable: list[str] = []
    if resolved is not None:
        entries = [(group_of(r.as_json()), state_of(runs_dir / r.run_id())) for r in resolved]
    else:
        for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            config = run_dir / records.CONFIG
            if not config.is_file():
                if (run_dir / ".lock").is_file():  # a run that stopped before writing its config
                    unreadable.append(run_dir.name)
                continue  # not a run folder
            try:
                entries.append((group_of(records.read_json(config)), state_of(run_dir)))
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
    return Status(rows, unreadable)


def totals(rows: list[dict]) -> dict[str, int]:
    """The counts of all groups together."""
    keys = [k for k in (*STATES, "total") if rows and k in rows[0]]
    return {k: sum(r[k] for r in rows) for k in keys}
