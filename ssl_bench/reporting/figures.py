"""The report's figures: learning curves, the `alpha × beta` heat map, reconstructions.

PNG files drawn with matplotlib's object API (no pyplot, so no global backend state is touched). Each
figure is returned as a document block `("img", path relative to the report folder, caption)`.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ssl_bench import records
from ssl_bench.reporting.groups import Group, constant, row_label
from ssl_bench.reporting.runs import Run

RECONSTRUCTION_METHODS = ("dninv",)  # methods whose runs get reconstruction figures
HEATMAP_PARAMS = ("alpha", "beta")  # a method with both params gets a heat map over their constant values
LINESTYLES = ("-", "--", ":", "-.")


def group_figures(group: Group, out: Path) -> list[tuple]:
    """The learning curves of `group` and its heat maps, written under `out`/figures/."""
    path = learning_curves(group, out / "figures" / f"curves-{group.name}.png")
    caption = f"{group.name}: validation accuracy against step, mean ± std over seeds"
    if any(row.flagged for row in group.rows):
        caption += " (healthy runs only: a collapsed or diverged run may have stopped early)"
    blocks = [("img", os.path.relpath(path, out), caption)]
    for i, grid in enumerate(heatmap_grids(group)):
        path = heatmap(grid, out / "figures" / f"heatmap-{group.name}-{i + 1}.png")
        caption = (
            f"{group.name} {grid['title']} ({grid['model']}): test accuracy at best validation (%) over α × β, "
            "mean over seeds as in the table (n per cell)"
        )
        blocks.append(("img", os.path.relpath(path, out), caption))
    return blocks


# --------------------------------------------------------------------------------------------------
# What the figures show


def mean_curve(runs: Iterable[Run]) -> tuple[list[int], list[float], list[float]]:
    """Validation accuracy (%) against step, mean and std over seeds, at the steps every run logged."""
    curves = [{row["step"]: 100 * row["val_acc"] for row in records.read_jsonl(r.path / records.METRICS)} for r in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    means = [statistics.fmean(c[s] for c in curves) for s in steps]
    stds = [statistics.stdev(c[s] for c in curves) if len(curves) > 1 else 0.0 for s in steps]
    return steps, means, stds


def heatmap_grids(group: Group) -> list[dict[str, Any]]:
    """Mean test accuracy at best val (%) over `alpha × beta`, for each method with both params.

    One grid per (method, model, other params) whose runs take ≥ 2 constant values of alpha or beta;
    scheduled (non-constant) values are left out. `mean[j][i]` is the cell (xs[i], ys[j]), None if empty.
    """
    a, b = HEATMAP_PARAMS
    found: dict[str, dict] = {}
    for row in group.rows:
        x, y = constant(row.params.get(a)), constant(row.params.get(b))
        if x is None or y is None:
            continue
        rest = {k: v for k, v in row.params.items() if k not in HEATMAP_PARAMS}
        same_method = [r.params for r in group.rows if r.method == row.method]
        varying = {k for k in rest if len({json.dumps(p.get(k), sort_keys=True) for p in same_method}) > 1}
        grid = found.setdefault(
            json.dumps([row.method, row.model, rest], sort_keys=True),
            {"title": row_label(row.method, rest, varying), "model": row.model, "cells": {}},
        )
        grid["cells"][x, y] = list(row.values("test_acc").values())
    grids = []
    for grid in found.values():
        cells = grid.pop("cells")
        xs, ys = sorted({x for x, _ in cells}), sorted({y for _, y in cells})
        if len(xs) < 2 and len(ys) < 2:
            continue
        mean = [[statistics.fmean(cells[x, y]) if cells.get((x, y)) else None for x in xs] for y in ys]
        n = [[len(cells.get((x, y), [])) for x in xs] for y in ys]
        grids.append({**grid, "xs": xs, "ys": ys, "mean": mean, "n": n})
    return grids


# --------------------------------------------------------------------------------------------------
# Drawing


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # local: 0.3-0.6 s to import, which every CLI command would pay

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def learning_curves(group: Group, path: Path) -> Path:
    """Validation accuracy (%) against step for each row of `group`: mean over its healthy seeds, ± std
    shaded. (A collapsed or diverged run may have stopped early, and a curve is drawn only at the steps
    every run logged.)"""
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    for i, row in enumerate(group.rows):
        healthy = [r for r in row.runs.values() if not r.flag]
        steps, mean, std = mean_curve(healthy)
        if not steps:
            continue
        (line,) = ax.plot(steps, mean, LINESTYLES[(i // 10) % len(LINESTYLES)], label=f"{row.label} (n={len(healthy)})")
        if len(healthy) > 1:
            ax.fill_between(
                steps,
                [m - s for m, s in zip(mean, std)],
                [m + s for m, s in zip(mean, std)],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    labels = "all" if group.key["labels"] is None else group.key["labels"]
    ax.set(
        xlabel="step",
        ylabel="validation accuracy (%)",
        title=f"{group.name}: {group.key['dataset']}, {labels} labels, {group.key['model']}",
    )
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path)
    return path


def heatmap(grid: dict[str, Any], path: Path) -> Path:
    """A grid of `heatmap_grids`: mean accuracy per (alpha, beta) cell with its n; empty cells blank."""
    values = np.array(
        [[np.nan if v is None else v for v in row] for row in grid["mean"]], dtype=float
    )  # (len(ys), len(xs))
    fig = _figure(1.6 + 1.1 * len(grid["xs"]), 1.2 + 0.8 * len(grid["ys"]))
    ax = fig.add_subplot()
    image = ax.imshow(values, origin="lower", cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="test acc @ best val (%)")
    ax.set_xticks(range(len(grid["xs"])), [f"{x:g}" for x in grid["xs"]])
    ax.set_yticks(range(len(grid["ys"])), [f"{y:g}" for y in grid["ys"]])
    ax.set(xlabel="α (alpha)", ylabel="β (beta)", title=f"{grid['title']} ({grid['model']})")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for j, row in enumerate(grid["mean"]):
        for i, value in enumerate(row):
            if value is not None:
                ax.text(
                    i,
                    j,
                    f"{value:.2f}\nn={grid['n'][j][i]}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value < middle else "black",
                )
    fig.savefig(path)
    return path


def reconstruction_blocks(groups: list[Group], out: Path, data_dir: str | None, enabled: bool) -> list[tuple]:
    """A reconstruction figure per row of a reconstruction method (its lowest healthy seed), or a note saying why not.

    Drawn by `ssl_bench.reporting.reconstruct.save_reconstruction_figure`, which is optional: if it is missing or
    fails, the report says so and is written anyway.
    """
    rows = [(g, row) for g in groups for row in g.rows if row.method in RECONSTRUCTION_METHODS]
    if not rows:
        return []
    blocks: list[tuple] = [("h", 2, "Reconstructions")]
    if not enabled:
        return blocks + [("p", "Skipped (`--no-reconstructions`).")]
    try:
        from ssl_bench.reporting.reconstruct import save_reconstruction_figure  # local: the report goes on without it
    except Exception as exc:  # ImportError, or an error inside the optional module
        return blocks + [
            (
                "p",
                "Reconstruction figures are unavailable: cannot import "
                f"`ssl_bench.reporting.reconstruct` ({type(exc).__name__}: {exc}).",
            )
        ]
    for group, row in rows:
        healthy = [r for _, r in sorted(row.runs.items()) if not r.flag]
        if not healthy:
            blocks.append(
                ("p", f"{group.name} {row.label}: no reconstruction figure (every run collapsed or diverged).")
            )
            continue
        run = healthy[0]
        try:
            path = Path(
                save_reconstruction_figure(
                    run.path, out / "figures" / f"reconstruction-{run.path.name}.png", data_dir=data_dir
                )
            )
        except Exception as exc:  # one failing run does not stop the report
            blocks.append(
                (
                    "p",
                    f"{group.name} {row.label}, seed {run.seed}: "
                    f"no reconstruction figure ({type(exc).__name__}: {exc}).",
                )
            )
            continue
        caption = (
            f"{group.name} {row.label} ({row.model}), seed {run.seed}: inputs and their reconstructions (test split)"
        )
        blocks.append(("img", os.path.relpath(path, out), caption))
    return blocks
