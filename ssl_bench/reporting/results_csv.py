"""`results.csv` of a report: one row per complete run, its `result.json` flattened, for analysis elsewhere.

First the columns that say how the report's tables count the run, so that every table cell can be
recomputed from this file: `run_folder`, `group` (P1, …) and `row` (the table's method label), `status`
(`ok`, `collapsed` or `diverged`), `in_means` (false only for a second run of a seed, which the tables do
not use), `in_healthy_means` (false also for a collapsed or diverged run) and, per accuracy of the tables,
`test_acc_in_means`, `test_acc_last_in_means`, …: the fraction the means and Δ use — the measured
accuracy, or 0 for a flagged run that recorded none. Then the result's fields: nested fields are joined
with dots (`health.status`, `params.alpha.start`, `versions.torch`); lists are written as JSON.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, dict)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def write_results_csv(path: Path, runs: list[tuple[Path, dict[str, Any], dict[str, Any]]]) -> None:
    """`runs`: (run folder, how the tables count it, result record) in report order."""
    rows = [{"run_folder": str(folder), **counted, **flatten(result)} for folder, counted, result in runs]
    columns = list(dict.fromkeys(k for row in rows for k in row))  # first-seen order, the union of all rows
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
