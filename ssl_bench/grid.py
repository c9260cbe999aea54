"""Sweep grids: what a sweep runs, from CLI flags or a TOML grid file (examples/grids/).

A grid is the product of lists (methods × datasets × labels × models × seeds, and per method the product
of its parameters' value lists); `Grid.specs()` expands it into `RunSpec`s.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ssl_bench.errors import UserError
from ssl_bench.protocol import RunSpec


@dataclass(frozen=True)
class Grid:
    """What a sweep runs: the product of these lists (method params: the product of their value lists)."""

    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    labels: tuple[int | None, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str | None, ...] = (None,)  # None = each dataset's default model
    params: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)  # method -> key -> values
    common: dict[str, Any] = field(default_factory=dict)  # other RunSpec fields (steps, lr, protocol, …)

    def specs(self) -> list[RunSpec]:
        unknown = sorted(set(self.params) - set(self.methods))
        if unknown:
            raise UserError(f"params given for {', '.join(unknown)}, which is not among the sweep's methods: {', '.join(self.methods)}")
        out = []
        for dataset, labels, model, method in itertools.product(self.datasets, self.labels, self.models, self.methods):
            grid = self.params.get(method, {})
            for values in itertools.product(*grid.values()):
                for seed in self.seeds:
                    params = dict(zip(grid.keys(), values))
                    out.append(RunSpec(method=method, dataset=dataset, labels=labels, model=model, seed=seed, params=params, **self.common))
        return out


def parse_method_params(items: dict[str, str], methods: Iterable[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """`{"dninv.alpha": "0.6"}` -> `{"dninv": {"alpha": ("0.6",)}}`; grids of values go in a TOML file."""
    methods = list(methods)
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for key, value in items.items():
        method, dot, name = key.partition(".")
        if not dot or not name:
            raise UserError(f"-p: sweep parameters are addressed per method as METHOD.KEY=VALUE (e.g. dninv.alpha=0.6), got {key!r}")
        if method not in methods:
            raise UserError(f"-p {key}: {method!r} is not among the sweep's methods: {', '.join(methods)}")
        out.setdefault(method, {})[name] = (value,)
    return out


def load_grid_file(path: Path, overrides: dict[str, Any]) -> Grid:
    """A TOML grid file (see examples/grids/); `overrides` (from CLI flags) replace its entries."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read grid file {path}: {exc}") from None
    sweep = dict(doc.get("sweep", {}))
    allowed = {"methods", "datasets", "labels", "models", "seeds", *(f.name for f in dataclasses.fields(RunSpec))} - {"method", "dataset", "model", "seed", "params"}
    unknown = sorted(set(sweep) - allowed)
    if unknown:
        raise UserError(f"{path}: unknown key in [sweep]: {', '.join(unknown)}; valid keys: {', '.join(sorted(allowed))}")
    sweep.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("methods", "datasets", "labels"):
        if not sweep.get(key):
            raise UserError(f"{path}: [sweep] needs {key} = [...]")
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,)
    params = {m: {k: as_tuple(v) for k, v in kv.items()} for m, kv in doc.get("params", {}).items()}
    labels = tuple(None if lab == "all" else lab for lab in as_tuple(sweep.pop("labels")))
    return Grid(
        methods=as_tuple(sweep.pop("methods")),
        datasets=as_tuple(sweep.pop("datasets")),
        labels=labels,
        seeds=as_tuple(sweep.pop("seeds", (0, 1, 2))),
        models=as_tuple(sweep.pop("models", (None,))),
        params=params,
        common=sweep,
    )
