"""`results.csv` of a report: one row per complete run, its `result.json` flattened, for analysis elsewhere.

Nested fields are joined with dots (`health.status`, `params.alpha.start`, `versions.torch`); lists are
written as JSON. Besides the result's fields, `run_folder` and `in_tables` (false for a run flagged as
collapsed or diverged: listed here, left out of every table and mean of the report).
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


def write_results_csv(path: Path, runs: list[tuple[Path, dict[str, Any], bool]]) -> None:
    """`runs`: (run folder, result record, in the report's tables) in report order."""
    rows = [{"run_folder": str(folder), "in_tables": in_tables, **flatten(result)} for folder, result, in_tables in runs]
    columns = list(dict.fromkeys(k for row in rows for k in row))  # first-seen order, the union of all rows
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
