"""Reports (`ssl-bench report`): run folders → comparison groups → statistics → report.md, report.html, figures.

A *comparison group* is one protocol up to the seed: dataset and its options, labels, validation size,
`exclude_labeled`, model and its options, and the protocol settings except the seed (all read from each
run's config.json). Inside a group, every run of one seed must carry the same protocol fingerprint (same
split, initial weights and batch settings). Runs that do not are split into separate groups, with a
warning, and never averaged together.

Statistics, in percent: mean ± sample standard deviation (n − 1) over seeds; the paired difference of a
row to the baseline method of its group (default `supervised`) over the seeds both have, with a 95 %
Student-t interval on n − 1 degrees of freedom.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shlex
import shutil
import statistics
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable

import click

from ssl_bench import records
from ssl_bench.config import Range, check_output_folder, check_value
from ssl_bench.errors import UserError
from ssl_bench.health import flag_of
from ssl_bench.protocol import LATER_FIELDS
from ssl_bench.report_csv import write_results_csv
from ssl_bench.report_render import markdown, to_html

REQUIRED = ("method", "model", "seed", "test_acc", "test_acc_last", "protocol_fingerprint")  # in result.json
Accuracy = Annotated[float, Range(0.0, 1.0)]  # a fraction of samples
RESULT_TYPES = {  # what the report reads from result.json (REQUIRED, and the others where present)
    "method": str, "model": str, "seed": int, "test_acc": Accuracy, "test_acc_last": Accuracy, "protocol_fingerprint": str,
    "params": dict, "versions": dict, "git_commit": str | None, "device": str, "split_fingerprint": str, "health": dict | None,
    "test_acc_recording": Accuracy | None, "test_acc_recording_last": Accuracy | None,
}
CONFIG_TYPES = {  # what it reads from config.json ("dataset" and "protocol" required)
    "dataset": str, "protocol": dict, "labels": int | None, "val_size": int | None, "exclude_labeled": bool | None,
    "model": str | None, "model_options": dict | None, "dataset_options": dict | None,
}
METRICS_TYPES = {"step": int, "val_acc": Accuracy}  # what it reads from each metrics.jsonl row
KEY_FIELDS = ("dataset", "dataset_options", "labels", "val_size", "exclude_labeled", "model", "model_options")
ACCURACIES = (  # result key, column title; the per-recording ones only where runs have them (bird10)
    ("test_acc", "test acc @ best val (%)"),
    ("test_acc_last", "test acc @ last step (%)"),
    ("test_acc_recording", "per recording @ best val (%)"),
    ("test_acc_recording_last", "per recording @ last step (%)"),
)
DELTAS = (("test_acc", "best val"), ("test_acc_last", "last step"))  # paired differences to the baseline
SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "lambda_": "λ"}
U_MODEL_NOTE = "† our interpretation of the paper's inhibitor (\"U\") networks, which the paper does not define (SPEC §3)"
STATS_NOTE = (
    "Accuracies in percent: mean ± sample standard deviation (n − 1 denominator; – for one seed) over n seeds. "
    "Δ: paired difference to the baseline `{baseline}` of the same protocol group on the seeds both have, in "
    "percentage points, mean [95 % confidence interval] = mean ± t₀.₉₇₅,ₙ₋₁ · sd / √n (Student t, n − 1 degrees "
    "of freedom; no interval for n < 2). Test accuracy is read at the best validation checkpoint and at the last "
    "step; the test set never selects a checkpoint."
)

# SPEC §6: the paper's numbers (accuracy %, test set), shown beside ours and never mixed with them.
PAPER_NUMBERS = {
    "mnist": [
        ("50 labels", "DN inversion (this paper)", "98.2–99.14 (Resnet2-32 max 99.14, SmallCNN mean 99.07)"),
        ("1000 labels", "same nets, supervised (this paper)", "≈ 95.3"),
        ("100 labels", "Bad-GAN / Triple-GAN / Ladder (cited in this paper)", "99.2 / 99.09 / 98.94"),
    ],
    "svhn": [
        ("500 labels", "DN inversion (this paper), ReLU / sigmoid nets", "86.9–89.75 / 88.2–89.5"),
        ("500 labels", "Π-model / Improved GAN (cited in this paper)", "92.95 / 81.56"),
        ("1000 labels", "Oliver et al. 2018 (WRN-28-2, one protocol; not from this paper): supervised / Π / pseudo-label / Mean Teacher / VAT", "87.17 / 92.81 / 92.38 / 94.35 / 94.37 (100 − error; errors 12.83 / 7.19 / 7.62 / 5.65 / 5.63)"),
    ],
    "cifar10": [
        ("4000 labels", "DN inversion (this paper), ReLU / sigmoid nets", "75.3–77.75 / 73.1–75.25"),
        ("4000 labels", "Π-model / Bad-GAN (cited in this paper)", "83.45 / 85.59"),
        ("4000 labels", "Oliver et al. 2018 (WRN-28-2, one protocol; not from this paper): supervised / Π / pseudo-label / Mean Teacher / VAT", "79.74 / 83.63 / 82.22 / 84.13 / 86.14 (100 − error; errors 20.26 / 16.37 / 17.78 / 15.87 / 13.86)"),
    ],
    "bird10": [
        ("all labels", "DN inversion as regularizer (this paper) / its supervised baseline", "≈ 51.2–52.95 / 51.40"),
    ],
}


# --------------------------------------------------------------------------------------------------
# Runs and groups


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    result: dict[str, Any]

    @property
    def seed(self) -> int:
        return self.result["seed"]

    @property
    def fingerprint(self) -> str:
        return self.result["protocol_fingerprint"]

    @property
    def code(self) -> tuple:
        """What produced the run: linking key for runs of different seeds when fingerprints conflict."""
        v = self.result.get("versions", {})
        return (v.get("ssl_bench"), v.get("torch"), self.result.get("git_commit"))


@dataclass
class Row:
    """One method with one set of params on one model: its runs by seed."""

    label: str
    method: str
    params: dict[str, Any]
    model: str
    runs: dict[int, Run]  # seed -> run

    def values(self, key: str) -> dict[int, float]:
        """Accuracy `key` in percent by seed (seeds whose result lacks the key left out)."""
        return {s: 100 * r.result[key] for s, r in sorted(self.runs.items()) if r.result.get(key) is not None}


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


@dataclass
class Skipped:
    path: Path
    reason: str
    flagged: bool = False  # complete, but collapsed or diverged (ssl_bench.health): never averaged
    result: dict[str, Any] | None = None  # a flagged run's result.json (it goes to results.csv)
    damaged: bool = False  # a record that cannot be read or has fields of the wrong type (also told on the terminal)


class DamagedRecord(Exception):
    """A record file of a run folder that holds wrong values; the message names the file."""


class UnreadableRecord(DamagedRecord):
    """A record file that is not a JSON object."""


def collect(dirs: Iterable[Path]) -> tuple[list[Run], list[Skipped]]:
    """Every run folder (a folder with config.json) under `dirs`: complete runs and skipped ones.

    Every record is checked (JSON, field types, finite accuracies in [0, 1]); a damaged one skips its run
    with the file and the problem named."""
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
                    skipped.append(Skipped(run_dir, f"failed: {error}" if error else "incomplete: no result.json (interrupted or still running)"))
                    continue
                run = Run(run_dir, read_record(config_path), read_record(run_dir / records.RESULT))
                missing = [k for k in REQUIRED if k not in run.result] + [k for k in ("dataset", "protocol") if k not in run.config]
                if missing:
                    skipped.append(Skipped(run_dir, f"record without {', '.join(missing)} (made by another version?)"))
                    continue
                check_fields(run.result, RESULT_TYPES, run_dir / records.RESULT)
                check_fields(run.config, CONFIG_TYPES, config_path)
                check_params(run.result.get("params", {}), run_dir / records.RESULT)
                check_metrics(run_dir / records.METRICS)
            except (OSError, ValueError, DamagedRecord) as exc:
                kind = "damaged" if type(exc) is DamagedRecord else "unreadable"
                skipped.append(Skipped(run_dir, f"{kind} record: {exc}", damaged=True))
                continue
            if flag_of(run.result):
                skipped.append(Skipped(run_dir, f"flagged, {flag_of(run.result)}", flagged=True, result=run.result))
                continue
            runs.append(run)
    return runs, skipped


def read_record(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; `DamagedRecord` naming the file when it is not one."""
    try:
        doc = records.read_json(path)
    except UnicodeDecodeError as exc:
        raise UnreadableRecord(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UnreadableRecord(f"{path.name}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise UnreadableRecord(f"{path.name}: expected a JSON object, got {type(doc).__name__}")
    return doc


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


def protocol_key(config: dict[str, Any]) -> dict[str, Any]:
    """The run's protocol without the seed: runs with equal keys are compared with each other."""
    key = {k: config.get(k) for k in KEY_FIELDS}
    key["protocol"] = {k: v for k, v in config.get("protocol", {}).items() if k != "seed"}
    return key


def split_by_fingerprint(runs: list[Run]) -> list[list[Run]]:
    """Parts of `runs` in which every seed has one protocol fingerprint (usually one part: `runs`).

    Runs with one fingerprint stay together; across seeds, runs are linked by the code that made them
    (ssl-bench version, torch version, git commit), since fingerprints of different seeds always differ.
    """
    cells: dict[tuple[int, str], list[Run]] = defaultdict(list)
    for run in runs:
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
            note = f"split from {', '.join(n for n in names if n != names[i])}: protocol fingerprints differ" if len(parts) > 1 else ""
            group = Group(names[i], key, part, note=note)
            group.rows, dup = make_rows(part, baseline, shown)
            warnings += [f"{group.name}: {w}" for w in dup]
            groups.append(group)
        if len(parts) > 1:
            seeds = sorted({r.seed for r in members if len({m.fingerprint for m in members if m.seed == r.seed}) > 1})
            warnings.append(
                f"{describe_section(key)}, {key['model']}: runs of seed {', '.join(map(str, seeds))} carry different protocol "
                f"fingerprints (different split, initial weights or batches, e.g. made by different code); they are shown "
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
        row = rows.setdefault(row_id, Row(row_label(method, params, shown.get(method, set())), method, params, model, {}))
        if run.seed in row.runs:
            warnings.append(f"{row.label}: seed {run.seed} appears twice ({row.runs[run.seed].path} and {run.path}); using the first")
            continue
        row.runs[run.seed] = run
    ordered = sorted(rows.items(), key=lambda kv: (kv[1].method != baseline, kv[1].method, kv[0]))
    return [row for _, row in ordered], warnings


def method_defaults(method: str) -> dict[str, Any] | None:
    """The method's default config as JSON data, or None when its plugin cannot be loaded here."""
    from ssl_bench.config import to_jsonable
    from ssl_bench.method import load_method

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
            k for k, vs in params.items() if len(vs) > 1 or defaults is None or vs != {json.dumps(canonical(defaults.get(k)), sort_keys=True)}
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


# --------------------------------------------------------------------------------------------------
# Statistics (percent)


@dataclass
class Stat:
    mean: float
    std: float | None  # sample std; None for one value
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {'–' if self.std is None else f'{self.std:.2f}'}"


@dataclass
class Diff:
    mean: float
    half_width: float | None  # of the 95 % interval; None for n < 2
    n: int

    def __str__(self) -> str:
        if self.half_width is None:
            return f"{signed(self.mean)} (n={self.n}, no CI)"
        return f"{signed(self.mean)} [{signed(self.mean - self.half_width)}, {signed(self.mean + self.half_width)}] (n={self.n})"


def signed(x: float) -> str:
    """`+1.23`, `-0.40`, and `+0.00` rather than `-0.00` for a tiny negative."""
    return f"{round(x, 2) + 0.0:+.2f}"


def summarize(values: Iterable[float]) -> Stat | None:
    values = list(values)
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Diff | None:
    """Mean of a[s] − b[s] over the seeds in both, with the half-width of its 95 % t interval."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if not diffs:
        return None
    if len(diffs) < 2:
        return Diff(diffs[0], None, 1)
    from scipy.stats import t

    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Diff(statistics.fmean(diffs), half, len(diffs))


# --------------------------------------------------------------------------------------------------
# The document: blocks rendered to Markdown and to self-contained HTML


def describe_section(key: dict[str, Any]) -> str:
    return f"{key['dataset']}, {'all' if key['labels'] is None else key['labels']} labels"


def describe_protocol(key: dict[str, Any]) -> str:
    parts = [f"model {key['model']}"]
    for name in ("model_options", "dataset_options"):
        if key.get(name):
            parts.append(f"{name} {json.dumps(key[name], sort_keys=True)}")
    parts.append(f"validation {key['val_size']}")
    if key.get("exclude_labeled"):
        parts.append("labeled samples excluded from the unlabeled set")
    protocol = {**key["protocol"], "augment": key["protocol"].get("augment", LATER_FIELDS["augment"])}  # recorded only when not "none"; always shown
    parts += [f"{k}={v}" for k, v in protocol.items()]
    return ", ".join(parts)


def results_table(groups: list[Group], baseline: str) -> tuple[list[str], list[list[str]]]:
    """The main table of one dataset × labels section: a row per (group, method + params, model)."""
    accs = [(k, t) for k, t in ACCURACIES if any(r.result.get(k) is not None for g in groups for r in g.runs)]
    headers = ["protocol", "method", "model", "n"] + [t for _, t in accs]
    headers += [f"Δ vs {baseline} @ {when} (pp)" for _, when in DELTAS]
    rows = []
    for group in groups:
        base = next((r for r in group.rows if r.method == baseline), None)
        for row in group.rows:
            model = row.model + (" †" if is_u_model(row.model) else "")
            cells = [group.name, row.label, model, str(len(row.runs))]
            cells += [str(summarize(row.values(k).values()) or "–") for k, _ in accs]
            for k, _ in DELTAS:
                if row is base:
                    cells.append("(baseline)")
                elif base is None:
                    cells.append(f"– (no {baseline} runs)")
                else:
                    cells.append(str(paired_difference(row.values(k), base.values(k)) or "– (no shared seeds)"))
            rows.append(cells)
    return headers, rows


# --------------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    groups: list[Group]
    warnings: list[str]
    skipped: list[Skipped]
    tables_markdown: str  # the main tables, as printed by the CLI
    md_path: Path
    html_path: Path


def provenance_blocks(runs: list[Run], groups: list[Group], skipped: list[Skipped], command: str) -> list[tuple]:
    def counted(values) -> str:
        return ", ".join(f"{v} ({n} runs)" for v, n in sorted(Counter(map(str, values)).items()))

    blocks: list[tuple] = [("h", 2, "Provenance")]
    blocks.append(("ul", [
        f"ssl-bench: {counted(r.result.get('versions', {}).get('ssl_bench') for r in runs)}",
        f"torch: {counted(r.result.get('versions', {}).get('torch') for r in runs)}",
        f"python: {counted(r.result.get('versions', {}).get('python') for r in runs)}",
        f"devices: {counted(r.result.get('device') for r in runs)}",
        f"git commits: {counted(r.result.get('git_commit') for r in runs)}",
        f"generated: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]))
    blocks.append(("p", "Regenerate this report with:"))
    blocks.append(("code", command))
    table = []
    for g in groups:
        for seed in sorted({r.seed for r in g.runs}):
            of_seed = [r for r in g.runs if r.seed == seed]
            table.append([g.name, str(seed), counted(r.fingerprint for r in of_seed), counted(r.result.get("split_fingerprint") for r in of_seed)])
    blocks.append(("p", "Protocol fingerprints per group and seed (one per seed: every method of a seed saw the same split, initial weights and batches):"))
    blocks.append(("table", ["group", "seed", "protocol fingerprint", "split fingerprint"], table))
    if skipped:
        blocks.append(("p", f"Skipped run folders (not averaged): {len(skipped)}"))
        blocks.append(("ul", [f"`{s.path}`: {s.reason}" for s in skipped]))
    return blocks


def build_report(dirs: list[Path], out: Path, *, baseline: str = "supervised", reconstructions: bool = True,
                 data_dir: str | None = None, command: str | None = None) -> Report:
    """Collect the runs under `dirs` and write `out`/report.md, `out`/report.html, `out`/results.csv
    (ssl_bench.report_csv) and `out`/figures/.

    The report is written in a temporary folder beside `out`, then moved in: a failed write (disk full)
    leaves no part of it in `out`."""
    runs, skipped = collect(dirs)
    where = ", ".join(map(str, dirs))
    if not runs:
        found = f"found {len(skipped)} run folders, none complete" if skipped else "found no run folders (folders with config.json)"
        damaged = [s for s in skipped if s.damaged]
        if damaged:
            shown = "; ".join(f"{s.path}: {s.reason}" for s in damaged[:3]) + ("; …" if len(damaged) > 3 else "")
            found = f"found {len(skipped)} run folders, none complete and readable ({shown})"
        raise UserError(f"nothing to report under {where}: {found}; make runs with `ssl-bench run …` or `ssl-bench sweep …` (a sweep resumes unfinished runs) and pass their --out folder")
    groups, warnings = make_groups(runs, baseline)
    flagged = [s for s in skipped if s.flagged]
    if flagged:
        warnings.insert(0, f"{len(flagged)} run(s) collapsed or diverged and are left out of every table and mean: "
                        + "; ".join(f"{s.path.name} {s.reason.removeprefix('flagged, ')}" for s in flagged))
    if not any(row.method == baseline for g in groups for row in g.rows):
        warnings.append(f"no runs of the baseline {baseline!r}, so no paired differences; choose another with --baseline")
    command = command or shlex.join(["ssl-bench", "report", *map(str, dirs), "--out", str(out)])
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot write the report in {out}: {exc.strerror or exc}") from None
    try:
        blocks = report_blocks(runs, groups, warnings, skipped, baseline, tmp, data_dir, reconstructions, command)
        (tmp / "report.md").write_text(markdown(blocks), encoding="utf-8")
        (tmp / "report.html").write_text(to_html(blocks, tmp, "ssl-bench report"), encoding="utf-8")
        write_results_csv(tmp / "results.csv", [(r.path, r.result, True) for r in runs] + [(s.path, s.result, False) for s in flagged])
        move_into(tmp, out)
    except OSError as exc:  # disk full, no permission: nothing of this report is left in `out`
        raise UserError(f"cannot write the report in {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(groups, warnings, skipped, "\n".join(markdown(t) for t in section_tables(groups, baseline)), out / "report.md", out / "report.html")


def move_into(tmp: Path, out: Path) -> None:
    """Move the files written under `tmp` to the same places under `out` (renames: no half file)."""
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            target = out / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def section_tables(groups: list[Group], baseline: str) -> list[list[tuple]]:
    """Per dataset × labels section, its title and main table as document blocks (in report order)."""
    sections: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        sections[g.section].append(g)
    return [[("h", 3, describe_section(gs[0].key)), ("table", *results_table(gs, baseline))] for gs in sections.values()]


def report_blocks(runs: list[Run], groups: list[Group], warnings: list[str], skipped: list[Skipped], baseline: str, out: Path,
                  data_dir: str | None, reconstructions: bool, command: str) -> list[tuple]:
    """The whole document; its figures are written under `out`/figures/."""
    from ssl_bench import report_figures

    (out / "figures").mkdir(parents=True, exist_ok=True)

    blocks: list[tuple] = [("h", 1, "ssl-bench report")]
    skipped_note = f"; {len(skipped)} run folder(s) skipped as incomplete, damaged or flagged (listed under Provenance)" if skipped else ""
    blocks.append(("p", f"{len(runs)} complete run(s) in {len(groups)} protocol group(s){skipped_note}."))
    if warnings:
        blocks += [("h", 2, "Warnings"), ("ul", warnings)]
    blocks += [("h", 2, "Results"), ("p", STATS_NOTE.format(baseline=baseline))]
    sections: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        sections[g.section].append(g)
    for section_groups, table in zip(sections.values(), section_tables(groups, baseline)):
        blocks += table
        blocks.append(("ul", [f"{g.name}: {describe_protocol(g.key)}" + (f" ({g.note})" if g.note else "") for g in section_groups]))
        if any(is_u_model(r.model) for g in section_groups for r in g.rows):
            blocks.append(("p", U_MODEL_NOTE))
        for g in section_groups:
            blocks += report_figures.group_figures(g, out)
    blocks += report_figures.reconstruction_blocks(groups, out, data_dir, reconstructions)
    paper = [[d, *entry] for d in sorted({g.key["dataset"] for g in groups}) for entry in PAPER_NUMBERS.get(d, [])]
    if paper:
        blocks.append(("h", 2, "Reported in the paper (not reproduced here)"))
        blocks.append(("p", "The paper's numbers (SPEC §6), test accuracy in percent, as printed: they are the paper's, not results of these runs, and come from other protocols."))
        blocks.append(("table", ["dataset", "setting", "method (source)", "test accuracy (%)"], paper))
    return blocks + provenance_blocks(runs, groups, skipped, command)


@click.command()
@click.argument("runs_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for report.md, report.html and figures/.")
@click.option("--baseline", default="supervised", show_default=True, help="Method every other method is compared with (paired, same seeds).")
@click.option("--no-reconstructions", is_flag=True, help="Do not draw reconstruction figures of dninv runs.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset files for the reconstruction figures (default: as for runs).")
def report(runs_dirs: tuple[Path, ...], out: str, baseline: str, no_reconstructions: bool, data_dir: str | None) -> None:
    """Write a report of the runs under RUNS_DIRS: tables, paired differences, figures, provenance.

    Run folders are found recursively; incomplete runs are listed and skipped. Runs whose protocol
    fingerprints differ are never averaged together.

    \b
    Example:
        ssl-bench report runs --out reports/digits
        ssl-bench report runs/mnist runs/svhn --out reports/paper --no-reconstructions
    """
    out = check_output_folder(out)  # before any work ('' would be the current folder as a Path)
    args = ["ssl-bench", "report", *map(str, runs_dirs), "--out", str(out)]
    args += (["--baseline", baseline] if baseline != "supervised" else []) + (["--no-reconstructions"] if no_reconstructions else [])
    args += ["--data-dir", data_dir] if data_dir else []
    result = build_report(list(runs_dirs), out, baseline=baseline, reconstructions=not no_reconstructions, data_dir=data_dir, command=shlex.join(args))
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    for s in result.skipped:
        if s.damaged:
            click.echo(f"Warning: skipped {s.path}: {s.reason}", err=True)
    click.echo(result.tables_markdown)
    click.echo(f"report: {result.md_path} and {result.html_path}")
