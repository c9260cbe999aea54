"""Reports (`ssl-bench report`): run folders → comparison groups → statistics → report.md, report.html, figures.

The steps live in their own modules: reading and checking run folders (ssl_bench.reporting.runs), comparison
groups and row labels (ssl_bench.reporting.groups: runs whose protocol fingerprints differ are never
averaged together), statistics (ssl_bench.reporting.stats: mean ± sample std over seeds, paired differences to the
baseline method with a 95 % Student-t interval), figures (ssl_bench.reporting.figures), Markdown/HTML
(ssl_bench.reporting.render) and results.csv (ssl_bench.reporting.results_csv). This module assembles the document.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ssl_bench.config import check_output_folder
from ssl_bench.errors import UserError
from ssl_bench.protocol import LATER_FIELDS
from ssl_bench.reporting import figures
from ssl_bench.reporting.groups import Group, Row, describe_section, is_u_model, make_groups
from ssl_bench.reporting.render import markdown, to_html
from ssl_bench.reporting.results_csv import write_results_csv
from ssl_bench.reporting.runs import Run, Skipped, collect
from ssl_bench.reporting.stats import paired_difference, summarize

ACCURACIES = (  # result key, column title; the per-recording ones only where runs have them (bird10)
    ("test_acc", "test acc @ best val (%)"),
    ("test_acc_last", "test acc @ last step (%)"),
    ("test_acc_recording", "per recording @ best val (%)"),
    ("test_acc_recording_last", "per recording @ last step (%)"),
)
DELTAS = (("test_acc", "best val"), ("test_acc_last", "last step"))  # paired differences to the baseline
HEALTHY = "healthy seeds only: best val / last step (%)"  # a column of sections with a collapsed or diverged run
U_MODEL_NOTE = (
    '† our interpretation of the paper\'s inhibitor ("U") networks, which the paper does not define (docs/design.md §3)'
)
STATS_NOTE = (
    "Accuracies in percent: mean ± sample standard deviation (n − 1 denominator; – for one seed) over all seeds "
    "of a row, runs that collapsed or diverged included at their measured test accuracy (usually near chance; "
    "one that recorded no accuracy counts as 0 %). seeds: the healthy runs of all, then how many collapsed or "
    "diverged (`2 of 3 · 1 collapsed`). Where a run of the section is flagged, the column “healthy seeds only” "
    "gives the means without the flagged runs. Δ: paired difference to the baseline `{baseline}` of the same "
    "protocol group on every seed both have, flagged runs of either included as in the means, so both methods "
    "are compared on the same seeds; in percentage points, mean [95 % confidence interval] = mean ± "
    "t₀.₉₇₅,ₙ₋₁ · sd / √n (Student t, n − 1 degrees of freedom; no interval for n < 2). Test accuracy is read "
    "at the best validation checkpoint and at the last step; the test set never selects a checkpoint."
)

# The paper's numbers (accuracy %, test set; docs/reports.md), shown beside ours and never mixed with them.
PAPER_NUMBERS = {
    "mnist": [
        ("50 labels", "DN inversion (this paper)", "98.2–99.14 (Resnet2-32 max 99.14, SmallCNN mean 99.07)"),
        ("1000 labels", "same nets, supervised (this paper)", "≈ 95.3"),
        ("100 labels", "Bad-GAN / Triple-GAN / Ladder (cited in this paper)", "99.2 / 99.09 / 98.94"),
    ],
    "svhn": [
        ("500 labels", "DN inversion (this paper), ReLU / sigmoid nets", "86.9–89.75 / 88.2–89.5"),
        ("500 labels", "Π-model / Improved GAN (cited in this paper)", "92.95 / 81.56"),
        (
            "1000 labels",
            (
                "Oliver et al. 2018 (WRN-28-2, one protocol; not from this paper): "
                "supervised / Π / pseudo-label / Mean Teacher / VAT"
            ),
            "87.17 / 92.81 / 92.38 / 94.35 / 94.37 (100 − error; errors 12.83 / 7.19 / 7.62 / 5.65 / 5.63)",
        ),
    ],
    "cifar10": [
        ("4000 labels", "DN inversion (this paper), ReLU / sigmoid nets", "75.3–77.75 / 73.1–75.25"),
        ("4000 labels", "Π-model / Bad-GAN (cited in this paper)", "83.45 / 85.59"),
        (
            "4000 labels",
            (
                "Oliver et al. 2018 (WRN-28-2, one protocol; not from this paper): "
                "supervised / Π / pseudo-label / Mean Teacher / VAT"
            ),
            "79.74 / 83.63 / 82.22 / 84.13 / 86.14 (100 − error; errors 20.26 / 16.37 / 17.78 / 15.87 / 13.86)",
        ),
    ],
    "bird10": [
        ("all labels", "DN inversion as regularizer (this paper) / its supervised baseline", "≈ 51.2–52.95 / 51.40"),
    ],
}


# --------------------------------------------------------------------------------------------------
# Runs and groups


# --------------------------------------------------------------------------------------------------
# The document: blocks rendered to Markdown and to self-contained HTML


def describe_protocol(key: dict[str, Any]) -> str:
    parts = [f"model {key['model']}"]
    for name in ("model_options", "dataset_options"):
        if key.get(name):
            parts.append(f"{name} {json.dumps(key[name], sort_keys=True)}")
    parts.append(f"validation {key['val_size']}")
    if key.get("exclude_labeled"):
        parts.append("labeled samples excluded from the unlabeled set")
    protocol = {
        **key["protocol"],
        "augment": key["protocol"].get("augment", LATER_FIELDS["augment"]),
    }  # recorded only when not "none"; always shown
    parts += [f"{k}={v}" for k, v in protocol.items()]
    return ", ".join(parts)


def seeds_cell(row: Row) -> str:
    """`3 of 3`, `2 of 3 · 1 collapsed`: healthy runs of all, then the flagged ones by status."""
    parts = [f"{len(row.runs) - len(row.flagged)} of {len(row.runs)}"]
    for status, n in sorted(Counter(r.status for r in row.flagged).items()):
        unmeasured = sum(1 for r in row.flagged if r.status == status and r.unmeasured)
        parts.append(f"{n} {status}" + (f" ({unmeasured} without accuracy: 0 %)" if unmeasured else ""))
    return " · ".join(parts)


def healthy_cell(row: Row) -> str:
    """Mean ± std at best val / at the last step over the healthy runs of `row` (the column HEALTHY)."""
    if not row.flagged:
        return "all healthy"
    stats = [summarize(row.values(k, healthy_only=True).values()) for k, _ in DELTAS]
    return " / ".join(map(str, stats)) if all(stats) else "– (none healthy)"


def results_table(groups: list[Group], baseline: str) -> tuple[list[str], list[list[str]]]:
    """The main table of one dataset × labels section: a row per (group, method + params, model)."""
    accs = [(k, t) for k, t in ACCURACIES if any(r.result.get(k) is not None for g in groups for r in g.runs)]
    flagged = any(row.flagged for g in groups for row in g.rows)
    headers = ["protocol", "method", "model", "seeds"] + [t for _, t in accs] + ([HEALTHY] if flagged else [])
    headers += [f"Δ vs {baseline} @ {when} (pp)" for _, when in DELTAS]
    rows = []
    for group in groups:
        base = next((r for r in group.rows if r.method == baseline), None)
        for row in group.rows:
            model = row.model + (" †" if is_u_model(row.model) else "")
            cells = [group.name, row.label, model, seeds_cell(row)]
            cells += [str(summarize(row.values(k).values()) or "–") for k, _ in accs]
            cells += [healthy_cell(row)] if flagged else []
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

    failed = [r for r in runs if r.failed]
    runs = [r for r in runs if not r.failed]  # the runs with result.json: what made them
    blocks: list[tuple] = [("h", 2, "Provenance")]
    blocks.append(
        (
            "ul",
            [
                f"ssl-bench: {counted(r.result.get('versions', {}).get('ssl_bench') for r in runs)}",
                f"torch: {counted(r.result.get('versions', {}).get('torch') for r in runs)}",
                f"python: {counted(r.result.get('versions', {}).get('python') for r in runs)}",
                f"devices: {counted(r.result.get('device') for r in runs)}",
                f"git commits: {counted(r.result.get('git_commit') for r in runs)}",
                f"generated: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            ],
        )
    )
    blocks.append(("p", "Regenerate this report with:"))
    blocks.append(("code", command))
    table = []
    for g in groups:
        for seed in sorted({r.seed for r in g.runs if not r.failed}):
            of_seed = [r for r in g.runs if r.seed == seed and not r.failed]
            table.append(
                [
                    g.name,
                    str(seed),
                    counted(r.fingerprint for r in of_seed),
                    counted(r.result.get("split_fingerprint") for r in of_seed),
                ]
            )
    blocks.append(
        (
            "p",
            "Protocol fingerprints per group and seed "
            "(one per seed: every method of a seed saw the same split, initial weights and batches):",
        )
    )
    blocks.append(("table", ["group", "seed", "protocol fingerprint", "split fingerprint"], table))
    if failed:
        blocks.append(
            (
                "p",
                "Runs stopped by a non-finite loss "
                f"(failed.json, no result.json; in the tables as diverged, at 0 %): {len(failed)}",
            )
        )
        blocks.append(("ul", [f"`{r.path}`: {r.result['health']['detail']}" for r in failed]))
    if skipped:
        blocks.append(("p", f"Skipped run folders (not averaged): {len(skipped)}"))
        blocks.append(("ul", [f"`{s.path}`: {s.reason}" for s in skipped]))
    return blocks


def build_report(
    dirs: list[Path],
    out: Path,
    *,
    baseline: str = "supervised",
    reconstructions: bool = True,
    data_dir: str | None = None,
    command: str | None = None,
) -> Report:
    """Collect the runs under `dirs` and write `out`/report.md, `out`/report.html, `out`/results.csv
    (ssl_bench.reporting.results_csv) and `out`/figures/.

    The report is written in a temporary folder beside `out`, then moved in: a failed write (disk full)
    leaves no part of it in `out`."""
    runs, skipped = collect(dirs)
    where = ", ".join(map(str, dirs))
    if not runs:
        found = (
            f"found {len(skipped)} run folders, none complete"
            if skipped
            else "found no run folders (folders with config.json)"
        )
        damaged = [s for s in skipped if s.damaged]
        if damaged:
            shown = "; ".join(f"{s.path}: {s.reason}" for s in damaged[:3]) + ("; …" if len(damaged) > 3 else "")
            found = f"found {len(skipped)} run folders, none complete and readable ({shown})"
        raise UserError(
            f"nothing to report under {where}: {found}; make runs with `ssl-bench run …` or `ssl-bench sweep …` "
            "(a sweep resumes unfinished runs) and pass their --out folder"
        )
    groups, warnings = make_groups(runs, baseline)
    flagged = [r for r in runs if r.flag]
    if flagged:
        warnings.insert(
            0,
            f"{len(flagged)} run(s) collapsed or diverged; they count in the tables' means and Δ at their "
            "measured test accuracy (a run without one as 0 %), "
            "and only the column “healthy seeds only” leaves them out: "
            + "; ".join(
                f"{r.path.name} {r.flag}"
                + (
                    " (no result.json: counted as 0 %)"
                    if r.failed
                    else f" (no {' or '.join(r.unmeasured)} recorded: counted as 0 %)"
                    if r.unmeasured
                    else ""
                )
                for r in flagged
            ),
        )
    if not any(row.method == baseline for g in groups for row in g.rows):
        warnings.append(
            f"no runs of the baseline {baseline!r}, so no paired differences; choose another with --baseline"
        )
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
        counted = counted_columns(groups)
        write_results_csv(tmp / "results.csv", [(r.path, counted[r.path], r.result) for r in runs])
        move_into(tmp, out)
    except OSError as exc:  # disk full, no permission: nothing of this report is left in `out`
        raise UserError(f"cannot write the report in {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(
        groups,
        warnings,
        skipped,
        "\n".join(markdown(t) for t in section_tables(groups, baseline)),
        out / "report.md",
        out / "report.html",
    )


def counted_columns(groups: list[Group]) -> dict[Path, dict[str, Any]]:
    """Per run folder, how the tables count the run: results.csv's columns before the result's own."""
    out: dict[Path, dict[str, Any]] = {}
    for group in groups:
        for row in group.rows:
            counted = {k: row.counted(k) for k, _ in ACCURACIES}
            for run in [*row.runs.values(), *row.duplicates]:
                used = row.runs.get(run.seed) is run
                out[run.path] = {
                    "group": group.name,
                    "row": row.label,
                    "status": run.status,
                    "failed": run.failed,
                    "in_means": used,
                    "in_healthy_means": used and not run.flag,
                }
                out[run.path] |= {
                    f"{k}_in_means": v[run.seed] if used and run.seed in v else None for k, v in counted.items() if v
                }
    return out


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
    return [
        [("h", 3, describe_section(gs[0].key)), ("table", *results_table(gs, baseline))] for gs in sections.values()
    ]


def report_blocks(
    runs: list[Run],
    groups: list[Group],
    warnings: list[str],
    skipped: list[Skipped],
    baseline: str,
    out: Path,
    data_dir: str | None,
    reconstructions: bool,
    command: str,
) -> list[tuple]:
    """The whole document; its figures are written under `out`/figures/."""
    (out / "figures").mkdir(parents=True, exist_ok=True)

    blocks: list[tuple] = [("h", 1, "ssl-bench report")]
    flagged, failed = sum(1 for r in runs if r.flag), sum(1 for r in runs if r.failed)
    failed_note = f" and {failed} run(s) stopped by a non-finite loss" if failed else ""
    flagged_note = f", {flagged} of them collapsed or diverged (see Warnings)" if flagged else ""
    skipped_note = (
        f"; {len(skipped)} run folder(s) skipped as incomplete or damaged (listed under Provenance)" if skipped else ""
    )
    blocks.append(
        (
            "p",
            f"{len(runs) - failed} complete run(s){failed_note} "
            f"in {len(groups)} protocol group(s){flagged_note}{skipped_note}.",
        )
    )
    if warnings:
        blocks += [("h", 2, "Warnings"), ("ul", warnings)]
    blocks += [("h", 2, "Results"), ("p", STATS_NOTE.format(baseline=baseline))]
    sections: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        sections[g.section].append(g)
    for section_groups, table in zip(sections.values(), section_tables(groups, baseline)):
        blocks += table
        blocks.append(
            (
                "ul",
                [f"{g.name}: {describe_protocol(g.key)}" + (f" ({g.note})" if g.note else "") for g in section_groups],
            )
        )
        if any(is_u_model(r.model) for g in section_groups for r in g.rows):
            blocks.append(("p", U_MODEL_NOTE))
        for g in section_groups:
            blocks += figures.group_figures(g, out)
    blocks += figures.reconstruction_blocks(groups, out, data_dir, reconstructions)
    paper = [[d, *entry] for d in sorted({g.key["dataset"] for g in groups}) for entry in PAPER_NUMBERS.get(d, [])]
    if paper:
        blocks.append(("h", 2, "Reported in the paper (not reproduced here)"))
        blocks.append(
            (
                "p",
                "The paper's numbers (docs/design.md §6), test accuracy in percent, as printed: they are the "
                "paper's, not results of these runs, and come from other protocols.",
            )
        )
        blocks.append(("table", ["dataset", "setting", "method (source)", "test accuracy (%)"], paper))
    return blocks + provenance_blocks(runs, groups, skipped, command)


@click.command()
@click.argument("runs_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Folder for report.md, report.html and figures/."
)
@click.option(
    "--baseline",
    default="supervised",
    show_default=True,
    help="Method every other method is compared with (paired, same seeds).",
)
@click.option("--no-reconstructions", is_flag=True, help="Do not draw reconstruction figures of dninv runs.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Dataset files for the reconstruction figures (default: as for runs).",
)
def report(
    runs_dirs: tuple[Path, ...], out: str, baseline: str, no_reconstructions: bool, data_dir: str | None
) -> None:
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
    args += (["--baseline", baseline] if baseline != "supervised" else []) + (
        ["--no-reconstructions"] if no_reconstructions else []
    )
    args += ["--data-dir", data_dir] if data_dir else []
    result = build_report(
        list(runs_dirs),
        out,
        baseline=baseline,
        reconstructions=not no_reconstructions,
        data_dir=data_dir,
        command=shlex.join(args),
    )
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    for s in result.skipped:
        if s.damaged:
            click.echo(f"Warning: skipped {s.path}: {s.reason}", err=True)
    click.echo(result.tables_markdown)
    click.echo(f"report: {result.md_path} and {result.html_path}")
