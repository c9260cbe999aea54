"""`ssl-bench report` on synthetic run folders (records written by hand, no training), whose numbers are
chosen so that means, sample stds and paired t intervals can be worked out by hand; plus one real
end-to-end report of two short runs."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench.cli import cli

PROTOCOL = {
    "steps": 100,
    "lr": 0.003,
    "batch_lb": 32,
    "batch_ulb": 128,
    "lr_schedule": "constant",
    "weight_decay": 0.0,
    "clip_grad_norm": 0.0,
    "eval_every": 50,
    "eval_batch": 1024,
}
T975 = {1: 12.706204736174694, 2: 4.302652729749464}  # Student t 97.5 % quantiles for 1 and 2 dof (tables)
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def write_run(
    root: Path,
    method: str,
    seed: int,
    test_acc: float | None,
    test_acc_last: float | None = None,
    *,
    params=None,
    dataset="digits",
    labels=50,
    model="tinycnn",
    commit="aaa",
    fingerprint=None,
    curve=(0.5, 0.8),
    protocol=None,
) -> Path:
    """A run folder as `protocol.train` writes it; `test_acc=None` leaves it incomplete (no result.json)."""
    params = params or {}
    protocol = {**PROTOCOL, **(protocol or {}), "seed": seed}
    run_id = (
        f"{dataset}-{labels}-{model}-{method}-"
        f"{hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:6]}-s{seed}-{commit}"
    )
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    config = {
        "method": method,
        "params": params,
        "dataset": dataset,
        "dataset_options": {},
        "labels": labels,
        "val_size": 300,
        "exclude_labeled": False,
        "model": model,
        "model_options": {},
        "protocol": protocol,
        "device": "cpu",
        "run_id": run_id,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": 50 * (i + 1), "val_acc": v, "loss": 1.0, "lr": 0.003, "time_s": 1.0}) + "\n"
            for i, v in enumerate(curve)
        )
    )
    if test_acc is None:
        return run_dir
    result = {
        "method": method,
        "params": params,
        "dataset": dataset,
        "dataset_options": {},
        "labels": labels,
        "model": model,
        "model_options": {},
        "seed": seed,
        "steps": protocol["steps"],
        "test_acc": test_acc,
        "test_acc_last": test_acc if test_acc_last is None else test_acc_last,
        "val_acc_best": 0.8,
        "val_acc_last": 0.8,
        "best_step": 100,
        "wall_time_s": 1.0,
        "device": "cpu",
        "versions": {"ssl_bench": "0.1.0", "torch": "2.11.0", "python": "3.11.7"},
        "git_commit": commit,
        "split_fingerprint": f"split-{dataset}-{labels}-s{seed}",
        "protocol_fingerprint": fingerprint or f"fp-{dataset}-{labels}-{model}-s{seed}",
        "run_id": run_id,
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def report(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


def table_cells(md: str, protocol: str, label: str) -> dict[str, str]:
    """The cells of the results-table row (`protocol`, `label`), by column title."""
    headers = None
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells[0] == "protocol":
            headers = cells
        elif headers and cells[:2] == [protocol, label]:
            return dict(zip(headers, cells))
    raise AssertionError(f"no row {protocol} {label!r} in:\n{md}")


def ci(mean: float, half: float, n: int) -> str:
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] (n={n})"


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    for seed, best, last in [(0, 0.90, 0.89), (1, 0.92, 0.91), (2, 0.94, 0.96)]:
        write_run(root, "supervised", seed, best, last, curve=(0.5 + 0.1 * seed, 0.8))
    for seed, best, last in [(0, 0.93, 0.90), (1, 0.96, 0.91), (2, 0.96, 0.95)]:  # other commit, same fingerprints
        write_run(root, "entmin", seed, best, last, params={"lambda_": 0.1}, commit="bbb")
    for seed, best in [(0, 0.95), (1, 0.91)]:
        write_run(root, "pimodel", seed, best)
    constant = lambda v: {"kind": "constant", "start": v, "end": v}
    for alpha, beta, accs in [(0.5, 0.2, {0: 0.95, 1: 0.97}), (0.7, 0.2, {0: 0.96, 1: 0.92}), (0.5, 0.5, {0: 0.97})]:
        for seed, acc in accs.items():  # seed 1 of α=0.7 records α as a constant schedule: the same value
            write_run(
                root,
                "dninv",
                seed,
                acc,
                params={"alpha": constant(alpha) if (alpha, seed) == (0.7, 1) else alpha, "beta": beta},
            )
    write_run(root, "dninv", 0, 0.90, params={"alpha": {"kind": "linear", "start": 1.0, "end": 0.5}, "beta": 0.2})
    return root


def test_tables_hold_hand_computed_means_stds_and_paired_intervals(runs, tmp_path):
    out = tmp_path / "report"
    result = report(runs, "--out", out, "--no-reconstructions")
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()

    sup = table_cells(md, "P1", "supervised")
    assert sup["seeds"] == "3 of 3"
    assert sup["test acc @ best val (%)"] == "92.00 ± 2.00"  # 90, 92, 94
    assert sup["test acc @ last step (%)"] == f"92.00 ± {math.sqrt(26 / 2):.2f}"  # 89, 91, 96: squares 9 + 1 + 16
    assert sup["Δ vs supervised @ best val (pp)"] == "(baseline)"

    ent = table_cells(md, "P1", "entmin λ=0.1")
    assert ent["test acc @ best val (%)"] == f"95.00 ± {math.sqrt(6 / 2):.2f}"  # 93, 96, 96
    assert ent["test acc @ last step (%)"] == f"92.00 ± {math.sqrt(14 / 2):.2f}"  # 90, 91, 95
    assert (
        ent["Δ vs supervised @ best val (pp)"]
        == ci(3.0, T975[2] * 1.0 / math.sqrt(3), 3)
        == "+3.00 [+0.52, +5.48] (n=3)"
    )  # diffs 3, 4, 2
    assert ent["Δ vs supervised @ last step (pp)"] == ci(0.0, T975[2] * 1.0 / math.sqrt(3), 3)  # diffs 1, 0, -1

    pi = table_cells(md, "P1", "pimodel")
    assert pi["seeds"] == "2 of 2" and pi["test acc @ best val (%)"] == f"93.00 ± {math.sqrt(8):.2f}"
    assert pi["Δ vs supervised @ best val (pp)"] == ci(
        2.0, T975[1] * math.sqrt(18) / math.sqrt(2), 2
    )  # diffs 5, -1 on seeds 0, 1

    single = table_cells(md, "P1", "dninv α=0.5 β=0.5")
    assert single["seeds"] == "1 of 1" and single["test acc @ best val (%)"] == "97.00 ± –"
    assert single["Δ vs supervised @ best val (pp)"] == "+7.00 (n=1, no CI)"
    assert (
        table_cells(md, "P1", "dninv α=0.7 β=0.2")["test acc @ best val (%)"] == f"94.00 ± {math.sqrt(8):.2f}"
    )  # 0.7 and constant:0.7 are one row
    assert table_cells(md, "P1", "dninv α=linear:1:0.5 β=0.2")["seeds"] == "1 of 1"

    # one group (different commits with equal fingerprints are not split), statistics method stated, plots embedded
    assert "| P2 |" not in md and "Warning" not in result.stderr
    assert "Student t" in md and "sample standard deviation" in md
    assert (out / "figures" / "curves-P1.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "heatmap-P1-1.png").is_file()
    # the CLI prints the main table and where the report is
    assert "| P1 | entmin λ=0.1 | tinycnn | 3 of 3 | 95.00 ± 1.73 |" in result.stdout
    assert str(out / "report.html") in result.stdout
    # provenance: both commits, the regenerating command, fingerprints per seed, no paper table for digits
    assert "aaa (11 runs)" in md and "bbb (3 runs)" in md
    assert f"ssl-bench report {runs} --out {out} --no-reconstructions" in md
    assert "| P1 | 2 | fp-digits-50-tinycnn-s2 (2 runs) |" in md
    assert "Reported in the paper" not in md


def flag(run_dir: Path, status: str, **changes) -> Path:
    """Mark a run of `write_run` collapsed or diverged as the health check does; `changes` replace fields of
    its result.json (a value `...` removes the field; NaN is written as JSON's `NaN`, as `json.dump` does)."""
    result = json.loads((run_dir / "result.json").read_text())
    result |= {"health": {"status": status, "step": 50, "detail": f"{status} for the test"}, **changes}
    (run_dir / "result.json").write_text(json.dumps({k: v for k, v in result.items() if v is not ...}))
    return run_dir


def results_tables(md: str, page: str) -> tuple[list[list[str]], list[list[str]]]:
    """The first results table (header row first) of report.md and of report.html, as lists of cells."""
    lines = md.split("| protocol |", 1)[1].split("\n\n", 1)[0].splitlines()
    md_rows = [["protocol", *[c.strip() for c in lines[0].strip().strip("|").split(" | ")]]]
    md_rows += [[c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")] for line in lines[2:]]
    table = page.split("<th>protocol</th>", 1)[1].split("</table>", 1)[0]
    html_rows = [["protocol", *map(html.unescape, re.findall(r"<th>(.*?)</th>", table.split("</thead>")[0]))]]
    html_rows += [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    ]
    return md_rows, html_rows


def mean_std(xs: list[float]) -> str:
    """`mean ± sample std` as the tables print it, computed here by hand."""
    m = sum(xs) / len(xs)
    return f"{m:.2f} ± " + (f"{math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)):.2f}" if len(xs) > 1 else "–")


def test_collapsed_and_diverged_runs_count_against_their_method(tmp_path, monkeypatch):
    """A flagged run is in the means and Δ at its measured accuracy (0 % when it recorded none, or failed
    with a non-finite loss), and out of the "healthy seeds only" column; report.md, report.html and
    results.csv say the same."""
    root = tmp_path / "runs"
    for seed, best, last in [(0, 0.80, 0.79), (1, 0.84, 0.83), (2, 0.88, 0.90)]:
        write_run(root, "supervised", seed, best, last)
    damaged = flag(
        write_run(root, "supervised", 3, 0.5), "ok", health={"status": "ok"}, test_acc=None
    )  # healthy without accuracy: damaged
    for seed, best, last in [(0, 0.90, 0.89), (1, 0.92, 0.91), (2, 0.10, 0.12)]:
        run = write_run(root, "entmin", seed, best, last)
    collapsed = flag(run, "collapsed")  # seed 2, at its measured 10 % / 12 %
    write_run(root, "pimodel", 0, 0.86, 0.85)
    diverged = flag(
        write_run(root, "pimodel", 1, 0.5), "diverged", test_acc=float("nan"), test_acc_last=...
    )  # no accuracy
    write_run(root, "pimodel", 2, 0.94, 0.95)
    flag(write_run(root, "dninv", 0, 0.11), "collapsed")
    flag(write_run(root, "dninv", 1, 0.10), "diverged")
    failed = write_run(root, "dninv", 2, None)  # a non-finite loss: failed.json, no result.json
    (failed / "failed.json").write_text(
        json.dumps({"error": "non-finite loss at step 3 of dninv: loss=nan", "step": 3})
    )
    out = tmp_path / "report"
    result = report(root, "--out", out, "--no-reconstructions")
    assert result.exit_code == 0, result.output
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    best, last, healthy = (
        "test acc @ best val (%)",
        "test acc @ last step (%)",
        "healthy seeds only: best val / last step (%)",
    )
    d_best, d_last = "Δ vs supervised @ best val (pp)", "Δ vs supervised @ last step (pp)"

    sup = table_cells(md, "P1", "supervised")
    assert (sup["seeds"], sup[best], sup[last], sup[healthy]) == (
        "3 of 3",
        "84.00 ± 4.00",
        f"84.00 ± {math.sqrt(31):.2f}",
        "all healthy",
    )  # last: 79, 83, 90
    ent = table_cells(md, "P1", "entmin")
    assert ent["seeds"] == "2 of 3 · 1 collapsed"
    assert ent[best] == f"64.00 ± {math.sqrt(2188):.2f}"  # 90, 92, 10: deviations 26, 28, -54
    assert ent[last] == f"64.00 ± {math.sqrt(2029):.2f}"  # 89, 91, 12: deviations 25, 27, -52
    assert ent[healthy] == f"91.00 ± {math.sqrt(2):.2f} / 90.00 ± {math.sqrt(2):.2f}"  # 90, 92 / 89, 91
    assert ent[d_best] == ent[d_last] == ci(-20.0, T975[2] * math.sqrt(2524) / math.sqrt(3), 3)  # 10, 8, -78 (both)
    pi = table_cells(md, "P1", "pimodel")
    assert pi["seeds"] == "2 of 3 · 1 diverged (1 without accuracy: 0 %)"
    assert pi[best] == f"60.00 ± {math.sqrt(2716):.2f}"  # 86, 0, 94: deviations 26, -60, 34
    assert pi[last] == f"60.00 ± {math.sqrt(2725):.2f}"  # 85, 0, 95: deviations 25, -60, 35
    assert pi[healthy] == f"90.00 ± {math.sqrt(32):.2f} / 90.00 ± {math.sqrt(50):.2f}"
    assert (
        pi[d_best] == ci(-24.0, T975[2] * math.sqrt(2700) / math.sqrt(3), 3) == "-24.00 [-153.08, +105.08] (n=3)"
    )  # 6, -84, 6
    assert pi[d_last] == ci(-24.0, T975[2] * math.sqrt(2611) / math.sqrt(3), 3)  # 6, -83, 5
    dn = table_cells(md, "P1", "dninv")
    assert dn["seeds"] == "0 of 3 · 1 collapsed · 2 diverged (1 without accuracy: 0 %)"
    assert (dn[best], dn[healthy]) == (
        f"7.00 ± {math.sqrt(37):.2f}",
        "– (none healthy)",
    )  # 11, 10, 0: deviations 4, 3, -7
    assert dn[d_best] == ci(-77.0, T975[2] * math.sqrt(97) / math.sqrt(3), 3)  # -69, -74, -88

    # said above the tables, never silently dropped; the healthy run without accuracy is damaged, not 0 %
    assert (
        "11 complete run(s) and 1 run(s) stopped by a non-finite loss in 1 protocol group(s), "
        "5 of them collapsed or diverged (see Warnings)"
    ) in md
    warning = md.split("## Warnings")[1].split("##")[0]
    assert "5 run(s) collapsed or diverged" in warning and f"{collapsed.name} collapsed at step 50" in warning
    assert (
        f"{diverged.name} diverged at step 50: diverged for the test "
        "(no test_acc or test_acc_last recorded: counted as 0 %)"
    ) in warning
    assert (
        f"{failed.name} diverged at step 3: non-finite loss at step 3 of dninv: loss=nan "
        "(no result.json: counted as 0 %)"
    ) in warning
    assert f"`{failed}`: non-finite loss at step 3 of dninv: loss=nan" in md.split("## Provenance")[1]
    assert f"`{damaged}`: damaged record: result.json: test_acc" in md
    assert "| P1 | entmin | tinycnn | 2 of 3 · 1 collapsed | 64.00 ±" in result.stdout
    assert (
        "*P1: validation accuracy against step, mean ± std over seeds "
        "(healthy runs only: a collapsed or diverged run may have stopped early)*"
    ) in md

    # report.html shows the same table
    md_rows, html_rows = results_tables(md, page)
    assert md_rows == html_rows and len(md_rows) == 5 and healthy in md_rows[0]

    # results.csv: every cell recomputed from its columns
    import csv

    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and all(r["in_means"] == "True" for r in rows)
    by_row: dict[str, list[dict]] = {}
    for r in rows:
        by_row.setdefault(r["row"], []).append(r)
    for cells in md_rows[1:]:
        label, of_row = cells[1], by_row[cells[1]]
        cell = dict(zip(md_rows[0], cells))
        ok = [r for r in of_row if r["in_healthy_means"] == "True"]
        flags = sorted({r["status"] for r in of_row} - {"ok"})
        no_acc = {s: sum(1 for r in of_row if r["status"] == s and r["test_acc"] in ("", "nan")) for s in flags}
        assert cell["seeds"] == " · ".join(
            [f"{len(ok)} of {len(of_row)}"]
            + [
                f"{sum(r['status'] == s for r in of_row)} {s}"
                + (f" ({no_acc[s]} without accuracy: 0 %)" if no_acc[s] else "")
                for s in flags
            ]
        )
        for key, column in [("test_acc", best), ("test_acc_last", last)]:
            assert cell[column] == mean_std([100 * float(r[f"{key}_in_means"]) for r in of_row])
        if ok and len(ok) < len(of_row):
            assert cell[healthy] == " / ".join(
                mean_std([100 * float(r[f"{k}_in_means"]) for r in ok]) for k in ("test_acc", "test_acc_last")
            )
        if label != "supervised":
            base = {r["seed"]: float(r["test_acc_in_means"]) for r in by_row["supervised"]}
            diffs = [100 * (float(r["test_acc_in_means"]) - base[r["seed"]]) for r in of_row]
            m = sum(diffs) / len(diffs)
            half = (
                T975[len(diffs) - 1]
                * math.sqrt(sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1))
                / math.sqrt(len(diffs))
            )
            assert cell[d_best] == ci(m, half, len(diffs))
    diverged_row = next(r for r in rows if r["run_folder"] == str(diverged))
    assert (
        diverged_row["status"],
        diverged_row["test_acc"],
        diverged_row["test_acc_last"],
        diverged_row["test_acc_in_means"],
    ) == ("diverged", "nan", "", "0.0")
    failed_row = next(r for r in rows if r["run_folder"] == str(failed))
    assert (
        failed_row["status"],
        failed_row["failed"],
        failed_row["seed"],
        failed_row["test_acc"],
        failed_row["test_acc_in_means"],
    ) == ("diverged", "True", "2", "", "0.0")

    # no reconstruction is drawn from a collapsed or diverged run
    calls = []
    monkeypatch.setitem(
        sys.modules,
        "ssl_bench.reporting.reconstruct",
        types.SimpleNamespace(save_reconstruction_figure=lambda *a, **k: calls.append(a)),
    )
    assert report(root, "--out", tmp_path / "with-figures").exit_code == 0
    assert (
        calls == []
        and "P1 dninv: no reconstruction figure (every run collapsed or diverged)."
        in (tmp_path / "with-figures" / "report.md").read_text()
    )


def test_heatmap_grid_and_learning_curve_numbers(runs):
    from ssl_bench.reporting.figures import heatmap_grids, mean_curve
    from ssl_bench.reporting.groups import make_groups
    from ssl_bench.reporting.runs import collect

    (group,), warnings = make_groups(collect([runs])[0], "supervised")
    assert warnings == []
    (grid,) = heatmap_grids(group)  # the linear alpha schedule is not a cell
    assert grid["xs"] == [0.5, 0.7] and grid["ys"] == [0.2, 0.5]
    assert (
        grid["mean"][0] == pytest.approx([96.0, 94.0])
        and grid["mean"][1][0] == pytest.approx(97.0)
        and grid["mean"][1][1] is None
    )
    assert grid["n"] == [[2, 2], [1, 0]]
    (sup,) = [r for r in group.rows if r.method == "supervised"]
    steps, mean, std = mean_curve(sup.runs.values())  # val 0.5, 0.6, 0.7 at step 50, all 0.8 at step 100
    assert steps == [50, 100] and mean == pytest.approx([60.0, 80.0]) and std == pytest.approx([10.0, 0.0])


def test_mismatched_fingerprints_are_separate_groups_with_a_warning(tmp_path):
    root = tmp_path / "runs"
    for commit, accs in [("aaa", (0.90, 0.92)), ("bbb", (0.80, 0.84))]:
        for seed, acc in enumerate(accs):
            for method, shift in [("supervised", 0.0), ("entmin", 0.02)]:
                write_run(root, method, seed, acc + shift, commit=commit, fingerprint=f"fp-{commit}-s{seed}")
    write_run(
        root, "pimodel", 0, 0.99, commit="ccc", fingerprint="fp-aaa-s0"
    )  # other code, same protocol as aaa's seed 0
    failed = write_run(
        root, "pseudolabel", 1, None
    )  # stopped by a non-finite loss: no fingerprint, joins the first part with seed 1
    (failed / "failed.json").write_text(json.dumps({"error": "non-finite loss at step 3", "step": 3}))
    out = tmp_path / "report"
    result = report(root, "--out", out, "--no-reconstructions")
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    assert "Warning:" in result.stderr and "never averaged together" in result.stderr and "P1, P2" in result.stderr
    assert "## Warnings" in md and "never averaged together" in md
    a, b = table_cells(md, "P1", "supervised"), table_cells(md, "P2", "supervised")
    assert (a["seeds"], a["test acc @ best val (%)"]) == ("2 of 2", f"91.00 ± {math.sqrt(2):.2f}")  # 90, 92
    assert (b["seeds"], b["test acc @ best val (%)"]) == (
        "2 of 2",
        f"82.00 ± {math.sqrt(8):.2f}",
    )  # 80, 84: not 86.50 mixed
    assert table_cells(md, "P2", "entmin")["Δ vs supervised @ best val (pp)"] == "+2.00 [+2.00, +2.00] (n=2)"
    assert table_cells(md, "P1", "pimodel")["Δ vs supervised @ best val (pp)"] == "+9.00 (n=1, no CI)"
    assert "P2 | pimodel" not in md
    assert (
        table_cells(md, "P1", "pseudolabel")["seeds"] == "0 of 1 · 1 diverged (1 without accuracy: 0 %)"
        and "P2 | pseudolabel" not in md
    )
    assert (
        "runs of seed 0, 1 carry different protocol fingerprints" in md
    )  # the failed run's missing fingerprint is no conflict


def test_empty_and_incomplete_folders_give_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = report(empty, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert (
        "found no run folders" in result.stderr
        and "ssl-bench run" in result.stderr
        and "ssl-bench sweep" in result.stderr
    )
    assert "Traceback" not in result.output

    partial = tmp_path / "partial"
    write_run(partial, "supervised", 0, None)
    write_run(partial, "entmin", 0, None)
    result = report(partial, "--out", tmp_path / "r")
    assert (
        result.exit_code == 2
        and "found 2 run folders, none complete" in result.stderr
        and "ssl-bench sweep" in result.stderr
    )
    assert not (tmp_path / "r" / "report.md").exists()

    missing = report(tmp_path / "nope", "--out", tmp_path / "r")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_incomplete_and_duplicate_runs_are_listed_not_averaged(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", "supervised", 0, 0.90)
    write_run(root / "a", "supervised", 1, 0.94)
    incomplete = write_run(root / "a", "supervised", 2, None)
    broken = write_run(root / "c", "supervised", 3, 0.5)
    (broken / "result.json").write_text('{"method": "supervised"')  # torn
    old = write_run(root / "c", "supervised", 4, 0.5)
    (old / "result.json").write_text('{"method": "supervised", "seed": 4}')  # keys missing
    copy = root / "b" / "copied"
    shutil.copytree(next((root / "a").glob("*-s0-*")), copy)
    out = tmp_path / "report"
    result = report(root, root / "a", "--out", out, "--no-reconstructions")  # root/a is found twice, counted once
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    assert table_cells(md, "P1", "supervised")["test acc @ best val (%)"] == f"92.00 ± {math.sqrt(8):.2f}"
    assert "3 complete run(s) in 1 protocol group(s); 3 run folder(s) skipped" in md
    assert f"`{incomplete}`: incomplete" in md and f"`{broken}`: unreadable record" in md
    assert f"`{old}`: record without model, test_acc, test_acc_last, protocol_fingerprint" in md
    assert "seed 0 appears twice" in result.stderr and str(copy) in result.stderr


def test_html_is_self_contained(runs, tmp_path):
    out = tmp_path / "report"
    assert report(runs, "--out", out, "--no-reconstructions").exit_code == 0
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    for external in ('src="http', "src='http", 'href="http', "<script", "<link", "@import", "url("):
        assert external not in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) == 2  # learning curves and the alpha × beta heat map
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "95.00 ± 1.73" in page and "<table>" in page


def test_reconstruction_figures_or_a_note(runs, tmp_path, monkeypatch):
    calls = []

    def save_reconstruction_figure(run_dir, out, n=16, split="test", data_dir=None):
        calls.append(Path(run_dir))
        if "linear" in (Path(run_dir) / "config.json").read_text():
            raise RuntimeError("cannot draw this one")
        Path(out).write_bytes(PNG_1X1)
        return Path(out)

    monkeypatch.setitem(
        sys.modules,
        "ssl_bench.reporting.reconstruct",
        types.SimpleNamespace(save_reconstruction_figure=save_reconstruction_figure),
    )
    out = tmp_path / "with"
    assert report(runs, "--out", out).exit_code == 0
    md = (out / "report.md").read_text()
    assert len(calls) == 4 and all("-s0-" in p.name for p in calls)  # one per dninv row, its lowest seed
    assert md.count("inputs and their reconstructions") == 3
    assert "no reconstruction figure (RuntimeError: cannot draw this one)" in md
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', (out / "report.html").read_text())) == 2 + 3

    monkeypatch.setitem(sys.modules, "ssl_bench.reporting.reconstruct", None)  # the module is missing
    assert report(runs, "--out", tmp_path / "without").exit_code == 0
    assert (
        "Reconstruction figures are unavailable: cannot import `ssl_bench.reporting.reconstruct`"
        in (tmp_path / "without" / "report.md").read_text()
    )


def test_paper_numbers_and_u_models_are_labelled(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "supervised", seed, 0.95, dataset="mnist", model="smallucnn")
    out = tmp_path / "report"
    assert report(root, "--out", out, "--no-reconstructions").exit_code == 0
    md = (out / "report.md").read_text()
    assert "| P1 | supervised | smallucnn † | 2 of 2 | 95.00 ± 0.00 |" in md
    assert "our interpretation of the paper's inhibitor" in md
    paper = md.split("## Reported in the paper (not reproduced here)")[1].split("## Provenance")[0]
    assert "99.14" in paper and "95.3" in paper and "svhn" not in paper and "89.75" not in paper


def test_end_to_end_report_of_two_real_runs(tmp_path):
    from ssl_bench.protocol import RunSpec, resolve
    from ssl_bench.run.training import train

    results = [
        train(
            resolve(
                RunSpec(
                    method="supervised",
                    dataset="digits",
                    labels=50,
                    steps=20,
                    seed=seed,
                    protocol={"eval_every": 10},
                    device="cpu",
                )
            ),
            tmp_path / "runs",
            show_progress=False,
        )
        for seed in (0, 1)
    ]
    out = tmp_path / "report"
    result = report(tmp_path / "runs", "--out", out)
    assert result.exit_code == 0, result.output
    accs = [100 * r["test_acc"] for r in results]
    mean, std = sum(accs) / 2, abs(accs[0] - accs[1]) / math.sqrt(2)
    assert f"| P1 | supervised | tinycnn | 2 of 2 | {mean:.2f} ± {std:.2f} |" in result.stdout
    md = (out / "report.md").read_text()
    assert results[0]["protocol_fingerprint"] in md and results[1]["protocol_fingerprint"] in md
    assert (out / "report.html").is_file() and (out / "figures" / "curves-P1.png").is_file()


def test_differences_are_signed_without_a_negative_zero():
    from ssl_bench.reporting.stats import Diff

    assert str(Diff(-0.001, None, 1)) == "+0.00 (n=1, no CI)"
    assert str(Diff(-1.234, 0.5, 2)) == "-1.23 [-1.73, -0.73] (n=2)"


def test_report_help_has_an_example():
    result = report("--help")
    assert (
        result.exit_code == 0
        and "Example:" in result.output
        and "ssl-bench report runs --out reports/digits" in result.output
    )


def test_results_csv_has_one_flattened_row_per_complete_run(runs, tmp_path):
    flagged = write_run(runs, "supervised", 7, 0.1)
    result = json.loads((flagged / "result.json").read_text())
    (flagged / "result.json").write_text(
        json.dumps({**result, "health": {"status": "collapsed", "step": 50, "detail": "one class"}})
    )
    incomplete = write_run(runs, "supervised", 8, None)
    out = tmp_path / "report"
    assert report(runs, "--out", out, "--no-reconstructions").exit_code == 0
    import csv

    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    complete = [p for p in runs.iterdir() if (p / "result.json").exists()]
    assert sorted(r["run_folder"] for r in rows) == sorted(map(str, complete)) and str(incomplete) not in {
        r["run_folder"] for r in rows
    }
    by_folder = {r["run_folder"]: r for r in rows}
    for folder in complete:
        record = json.loads((folder / "result.json").read_text())
        row = by_folder[str(folder)]
        assert float(row["test_acc"]) == record["test_acc"] and int(row["seed"]) == record["seed"]
        assert row["versions.torch"] == record["versions"]["torch"]  # nested fields are flattened with dots
    flagged_row = by_folder[str(flagged)]  # in the means at its accuracy, out of the healthy ones
    assert (
        flagged_row["status"],
        flagged_row["in_means"],
        flagged_row["in_healthy_means"],
        flagged_row["test_acc_in_means"],
    ) == ("collapsed", "True", "False", "0.1")
    assert flagged_row["health.status"] == "collapsed"
    assert {(r["status"], r["in_means"], r["in_healthy_means"]) for r in rows if r["run_folder"] != str(flagged)} == {
        ("ok", "True", "True")
    }
    dninv = next(r for r in rows if r["params.alpha.kind"] == "linear")  # a schedule, flattened
    assert (dninv["params.alpha.start"], dninv["params.alpha.end"]) == ("1.0", "0.5")


def test_the_protocol_line_always_says_the_augmentation():
    from ssl_bench.reporting.report import describe_protocol

    key = {"model": "tinycnn", "val_size": 300, "protocol": {"steps": 600}}
    assert describe_protocol(key).endswith("steps=600, augment=none")  # recorded only when not none
    weak = describe_protocol({**key, "protocol": {"steps": 600, "augment": "weak"}})
    assert weak.count("augment=") == 1 and "augment=weak" in weak
