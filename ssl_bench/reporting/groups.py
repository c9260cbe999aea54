"""Comparison groups and row labels (ssl-bench report, sweep and status tables).

A *comparison group* is one protocol up to the seed: dataset and its options, labels, validation size,
`exclude_labeled`, model and its options, and the protocol settings except the seed (all read from each
run's config.json). Inside a group, every run of one seed must carry the same protocol fingerprint (same
split, initial weights and batch settings). Runs that do not are split into separate groups, with a
warning, and never averaged together. A row is one method with one set of params on one model; its
label names the params that are off the plugin's defaults or vary between runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ssl_bench import records
from ssl_bench.config import to_jsonable
from ssl_bench.method import load_method
from ssl_bench.reporting.runs import MEASURED, Run, measured

KEY_FIELDS = ("dataset", "dataset_options", "labels", "val_size", "exclude_labeled", "model", "model_options")
SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "lambda_": "λ"}


@dataclass
class Row:
    """One method with one set of params on one model: its runs by seed."""

    label: str
    method: str
    params: dict[str, Any]
    model: str
    runs: dict[int, Run]  # seed -> run
    duplicates: list[Run] = field(default_factory=list)  # further runs of a seed in `runs`: not used

    def counted(self, key: str, *, healthy_only: bool = False) -> dict[int, float]:
        """Accuracy `key` (a fraction) by seed, as the report's means count it.

        Every seed, runs flagged as collapsed or diverged included at their measured accuracy; a flagged
        run that has none (missing, null or NaN) counts as 0, the worst case, if the key is one every run
        records (MEASURED) or another run of the row has it. `healthy_only`: flagged runs left out. Seeds
        of healthy runs without the key (no per-recording accuracy) are left out."""
        applies = key in MEASURED or any(measured(r.result.get(key)) is not None for r in self.runs.values())
        out = {}
        for seed, run in sorted(self.runs.items()):
            value = measured(run.result.get(key))
            if run.flag and (healthy_only or (value is None and not applies)):
                continue
            if value is None and run.flag:
                value = 0.0  # no accuracy recorded: the worst case, never left out
            if value is not None:
                out[seed] = value
        return out

    def values(self, key: str, *, healthy_only: bool = False) -> dict[int, float]:
        """`counted` in percent."""
        return {seed: 100 * v for seed, v in self.counted(key, healthy_only=healthy_only).items()}

    @property
    def flagged(self) -> list[Run]:
        return [r for r in self.runs.values() if r.flag]


@dataclass
class Group:
    name: str  # P1, P2, … in report order
    key: dict[str, Any]  # protocol without the seed
    runs: list[Run]
    rows: list[Row] = field(default_factory=list)
    note: str = ""  # why it was split from another group

    @property
    def section(self) -> tuple:
        return self.key["dataset"], self.key["labels"]


def describe_section(key: dict[str, Any]) -> str:
    return f"{key['dataset']}, {'all' if key['labels'] is None else key['labels']} labels"


def protocol_key(config: dict[str, Any]) -> dict[str, Any]:
    """The run's protocol without the seed: runs with equal keys are compared with each other."""
    key = {k: config.get(k) for k in KEY_FIELDS}
    key["protocol"] = {k: v for k, v in config.get("protocol", {}).items() if k != "seed"}
    return key


def split_by_fingerprint(runs: list[Run]) -> list[list[Run]]:
    """Parts of `runs` in which every seed has one protocol fingerprint (usually one part: `runs`).

    Runs with one fingerprint stay together; across seeds, runs are linked by the code that made them
    (ssl-bench version, torch version, git commit), since fingerprints of different seeds always differ.
    A failed run has no fingerprint: it joins the first part that has its seed (else the first part).
    """
    cells: dict[tuple[int, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.fingerprint is not None:
            cells[run.seed, run.fingerprint].append(run)
    if len(cells) == len({seed for seed, _ in cells}):
        return [runs]
    parts: list[dict[str, Any]] = []  # {"seeds": set, "codes": set, "runs": list}
    for (seed, _fp), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], -len(kv[1]), kv[0][1])):
        codes = {run.code for run in cell}
        part = next((p for p in parts if seed not in p["seeds"] and p["codes"] & codes), None)
        if part is None:
            part = {"seeds": set(), "codes": set(), "runs": []}
            parts.append(part)
        part["seeds"].add(seed)
        part["codes"] |= codes
        part["runs"] += cell
    for run in runs:
        if run.fingerprint is None:
            next((p for p in parts if run.seed in p["seeds"]), parts[0])["runs"].append(run)
    return [p["runs"] for p in parts]


def make_groups(runs: list[Run], baseline: str) -> tuple[list[Group], list[str]]:
    """Comparison groups in report order, with their rows, and the warnings raised on the way."""
    by_key: dict[str, tuple[dict, list[Run]]] = {}
    for run in runs:
        key = protocol_key(run.config)
        by_key.setdefault(records.fingerprint(key), (key, []))[1].append(run)

    def order(item):
        fp, (key, _) = item
        return (str(key["dataset"]), key["labels"] is None, key["labels"] or 0, str(key["model"]), fp)

    groups: list[Group] = []
    warnings: list[str] = []
    shown = shown_params(runs)
    for _fp, (key, members) in sorted(by_key.items(), key=order):
        parts = split_by_fingerprint(members)
        names = [f"P{len(groups) + i + 1}" for i in range(len(parts))]
        for i, part in enumerate(parts):
            note = (
                f"split from {', '.join(n for n in names if n != names[i])}: protocol fingerprints differ"
                if len(parts) > 1
                else ""
            )
            group = Group(names[i], key, part, note=note)
            group.rows, dup = make_rows(part, baseline, shown)
            warnings += [f"{group.name}: {w}" for w in dup]
            groups.append(group)
        if len(parts) > 1:
            seeds = sorted(
                {r.seed for r in members if len({m.fingerprint for m in members if m.seed == r.seed} - {None}) > 1}
            )
            warnings.append(
                f"{describe_section(key)}, {key['model']}: runs of seed {', '.join(map(str, seeds))} "
                "carry different protocol fingerprints "
                "(different split, initial weights or batches, e.g. made by different code); they are shown "
                f"as separate groups {', '.join(names)} and never averaged together"
            )
    return groups, warnings


def make_rows(runs: list[Run], baseline: str, shown: dict[str, set[str]]) -> tuple[list[Row], list[str]]:
    """Rows of one group (baseline first), one run per seed; duplicate runs of a seed are warned about."""
    rows: dict[str, Row] = {}
    warnings = []
    for run in sorted(runs, key=lambda r: str(r.path)):
        method, params, model = run.result["method"], run.result.get("params", {}), run.result["model"]
        row_id = json.dumps([method, {k: canonical(v) for k, v in params.items()}, model], sort_keys=True)
        row = rows.setdefault(
            row_id, Row(row_label(method, params, shown.get(method, set())), method, params, model, {})
        )
        if run.seed in row.runs:
            warnings.append(
                f"{row.label}: seed {run.seed} appears twice ({row.runs[run.seed].path} and {run.path}); "
                "using the first"
            )
            row.duplicates.append(run)
            continue
        row.runs[run.seed] = run
    ordered = sorted(rows.items(), key=lambda kv: (kv[1].method != baseline, kv[1].method, kv[0]))
    return [row for _, row in ordered], warnings


def method_defaults(method: str) -> dict[str, Any] | None:
    """The method's default config as JSON data, or None when its plugin cannot be loaded here."""
    try:
        return to_jsonable(load_method(method).Config())
    except Exception:  # an uninstalled or broken plugin: its runs are still reported
        return None


def shown_params(runs: list[Run]) -> dict[str, set[str]]:
    """Per method, the params a row label names: those off the plugin's defaults or varying between runs."""
    values: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for run in runs:
        for k, v in run.result.get("params", {}).items():
            values[run.result["method"]][k].add(json.dumps(canonical(v), sort_keys=True))
    shown = {}
    for method, params in values.items():
        defaults = method_defaults(method)
        shown[method] = {
            k
            for k, vs in params.items()
            if len(vs) > 1 or defaults is None or vs != {json.dumps(canonical(defaults.get(k)), sort_keys=True)}
        }
    return shown


def format_value(value: Any) -> str:
    if isinstance(value, dict) and {"kind", "start", "end"} <= set(value):
        if value["kind"] == "constant":
            return f"{value['start']:g}"
        return f"{value['kind']}:{value['start']:g}:{value['end']:g}"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def row_label(method: str, params: dict[str, Any], shown: set[str]) -> str:
    """`dninv α=0.5 β=0.3`: the method and the params worth naming."""
    return " ".join([method] + [f"{SYMBOLS.get(k, k)}={format_value(params[k])}" for k in sorted(shown) if k in params])


def constant(value: Any) -> float | None:
    """A param's value when it is a number or a constant schedule, else None."""
    if isinstance(value, dict) and value.get("kind") == "constant":
        return float(value["start"])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def canonical(value: Any) -> Any:
    """A param value for comparisons: a constant schedule and its number are the same value."""
    number = constant(value)
    return value if number is None else number


def is_u_model(model: str) -> bool:
    return model.startswith("u") or "ucnn" in model
