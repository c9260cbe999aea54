"""What `ssl-bench list` shows: the registered methods, datasets and models as table rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from ssl_bench.data import dataset_names, default_data_dir, get_dataset
from ssl_bench.errors import UserError
from ssl_bench.method import load_method, method_distribution, method_names
from ssl_bench.models import create_model, get_model_entry, model_names
from ssl_bench.models.registry import model_prefixes


def format_table(rows: list[dict]) -> str:
    """Left-aligned columns, header from the first row's keys."""
    if not rows:
        return "(none)"
    keys = list(rows[0])
    cells = [keys] + [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def method_rows() -> list[dict]:
    rows = []
    for name in method_names():
        try:
            cls = load_method(name)
            params = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Config)) or "-"
            rows.append(
                {
                    "method": name,
                    "distribution": method_distribution(name),
                    "terms": ",".join(cls.terms) or "-",
                    "params": params,
                }
            )
        except UserError as exc:  # a broken plugin is listed as such; the others still show
            rows.append(
                {"method": name, "distribution": method_distribution(name), "terms": "BROKEN", "params": str(exc)}
            )
    return rows


def dataset_rows(data_dir: str | None = None) -> list[dict]:
    rows = []
    for name in dataset_names():
        try:
            info = get_dataset(name)
        except UserError as exc:  # a broken package's dataset is listed as such; the others still show
            rows.append({"dataset": name, "modality": "BROKEN", "description": str(exc)})
            continue
        where = (Path(data_dir).expanduser() if data_dir else default_data_dir()) / name
        local = "offline" if info.offline else ("yes" if info.available(where) else f"no ({where})")
        rows.append(
            {
                "dataset": name,
                "modality": info.modality,
                "shape": "x".join(map(str, info.shape)),
                "classes": info.num_classes,
                "val": info.val_size,
                "local": local,
                "description": info.description,
            }
        )
    return rows


def model_rows(dataset: str) -> list[dict]:
    info = get_dataset(dataset)
    rows = []
    for name in model_names():
        try:
            entry = get_model_entry(name)
        except UserError as exc:  # a broken package's model is listed as such; the others still show
            rows.append({"model": name, "inputs": "BROKEN", "description": str(exc)})
            continue
        description = entry.description
        if info.modality in entry.modalities:
            try:
                model = create_model(name, num_classes=info.num_classes, input_shape=info.shape, modality=info.modality)
                params = f"{sum(p.numel() for p in model.parameters()):,}"
                batchnorm = (
                    "yes" if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else "no"
                )
            except UserError as exc:  # e.g. inputs too small for the network
                params, batchnorm, description = "(cannot take)", "-", str(exc)
        else:
            params, batchnorm = f"(takes {'/'.join(entry.modalities)})", "-"
        rows.append(
            {
                "model": name,
                "inputs": "/".join(entry.modalities),
                f"params ({dataset})": params,
                "batchnorm": batchnorm,
                "lr": f"{entry.lr:.4g}",
                "description": description,
            }
        )
    for prefix in model_prefixes():
        rows.append(
            {
                "model": f"{prefix}<name>",
                "inputs": "image",
                f"params ({dataset})": "(per model)",
                "batchnorm": "most",
                "lr": "0.001",
                "description": f"any {prefix[:-1]} model by name, e.g. {prefix}resnet18",
            }
        )
    return rows
