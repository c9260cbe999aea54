"""Sweep grids: what a sweep runs, from CLI flags or a TOML grid file (examples/grids/).

A grid is the product of lists (methods × datasets × labels × models × seeds, and per method the product
of its parameters' value lists); `Grid.specs()` expands it into `RunSpec`s.
"""

from __future__ import annotations

import itertools
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ssl_bench.config import MAX_STEPS, check_finite, check_value
from ssl_bench.errors import UserError
from ssl_bench.method import load_method
from ssl_bench.protocol import ProtocolConfig, RunSpec


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
            raise UserError(
                f"params given for {', '.join(unknown)}, "
                f"which is not among the sweep's methods: {', '.join(self.methods)}"
            )
        out = []
        for dataset, labels, model, method in itertools.product(self.datasets, self.labels, self.models, self.methods):
            grid = self.params.get(method, {})
            for values in itertools.product(*grid.values()):
                for seed in self.seeds:
                    params = dict(zip(grid.keys(), values))
                    out.append(
                        RunSpec(
                            method=method,
                            dataset=dataset,
                            labels=labels,
                            model=model,
                            seed=seed,
                            params=params,
                            **self.common,
                        )
                    )
        return out


def parse_method_params(items: dict[str, str], methods: Iterable[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """`{"dninv.alpha": "0.6"}` -> `{"dninv": {"alpha": ("0.6",)}}`; grids of values go in a TOML file."""
    methods = list(methods)
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for key, value in items.items():
        method, dot, name = key.partition(".")
        if not dot or not name:
            raise UserError(
                f"-p: sweep parameters are addressed per method as METHOD.KEY=VALUE (e.g. dninv.alpha=0.6), got {key!r}"
            )
        if method not in methods:
            raise UserError(f"-p {key}: {method!r} is not among the sweep's methods: {', '.join(methods)}")
        out.setdefault(method, {})[name] = (value,)
    return out


def load_grid_file(path: Path, overrides: dict[str, Any]) -> Grid:
    """A TOML grid file (see examples/grids/); `overrides` (from CLI flags) replace its entries.

    Every key's value is checked (type, non-empty lists, finite numbers) with a one-line error naming the
    file and the key.
    """
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(
            f"cannot read grid file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read grid file {path}: {' '.join(str(exc).split())}") from None
    check_grid_doc(doc, path)
    sweep = dict(doc.get("sweep", {}))
    sweep.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("methods", "datasets", "labels"):
        if key not in sweep:
            raise UserError(f"{path}: [sweep] needs {key} = [...]")
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


def as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


AXES = {  # [sweep] list -> (is an allowed element?, what its elements are)
    "methods": (lambda v: isinstance(v, str) and bool(v), "method names"),
    "datasets": (lambda v: isinstance(v, str) and bool(v), "dataset names"),
    "models": (lambda v: isinstance(v, str) and bool(v), "model names"),
    "labels": (
        lambda v: v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        'whole numbers >= 1 or "all"',
    ),
    "seeds": (lambda v: isinstance(v, int) and not isinstance(v, bool), "whole numbers"),
}
COMMON = {  # the RunSpec fields a [sweep] may set for every run, with their types
    name: hint
    for name, hint in typing.get_type_hints(RunSpec).items()
    if name not in ("method", "dataset", "labels", "model", "seed", "params")
}
SCALARS = (str, int, float, bool, dict)  # a method param's value: TOML's scalars, or a table (dninv's gamma)


def check_grid_doc(doc: dict[str, Any], path: Path) -> None:
    """Refuse, in one line naming `path` and the key, a grid whose entries have the wrong type or run nothing."""
    unknown = sorted(set(doc) - {"sweep", "params"})
    if unknown:
        raise UserError(f"{path}: unknown section {', '.join(unknown)}; a grid has [sweep] and [params.METHOD]")
    sweep, params = doc.get("sweep", {}), doc.get("params", {})
    if not isinstance(sweep, dict):
        raise UserError(f"{path}: sweep must be a [sweep] section of key = value lines, got {sweep!r}")
    allowed = set(AXES) | set(COMMON)
    unknown = sorted(set(sweep) - allowed)
    if unknown:
        raise UserError(
            f"{path}: unknown key in [sweep]: {', '.join(unknown)}; valid keys: {', '.join(sorted(allowed))}"
        )
    for key, value in sweep.items():
        if key in AXES:
            ok, kind = AXES[key]
            values = as_tuple(value)
            if not values:
                raise UserError(f"{path}: [sweep] {key} is empty, so the sweep would run nothing; list at least one")
            bad = [v for v in values if not ok(v)]
            if bad:
                raise UserError(f"{path}: [sweep] {key} must be {kind}, got {bad[0]!r}")
        elif key == "protocol":
            check_protocol_table(value, path)
        else:
            check_value(value, COMMON[key], key, f"{path}: [sweep]")
        if key == "steps":
            check_steps(value, "steps", path)
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise UserError(f"{path}: params must be sections [params.METHOD] of KEY = [values], got {params!r}")
    for method, kv in params.items():
        for key, value in kv.items():
            values = as_tuple(value)
            if not values:
                raise UserError(
                    f"{path}: [params.{method}] {key} is empty, so the sweep would run nothing; list at least one value"
                )
            for v in values:
                if not isinstance(v, SCALARS):
                    raise UserError(
                        f"{path}: [params.{method}] {key} must list numbers, text, true/false or tables, got {v!r}"
                    )
                if isinstance(v, float):
                    check_finite(v, key, f"{path}: [params.{method}]")
        check_method_params(method, kv, path)


def check_protocol_table(table: Any, path: Path) -> None:
    """`protocol = { … }` of a [sweep]: known keys, each with the type of its `ProtocolConfig` field — typed
    like the command line's options (`cpu_threads = "2"` is refused, as `--cpu-threads` takes no text)."""
    check_value(table, dict, "protocol", f"{path}: [sweep]")
    hints = typing.get_type_hints(ProtocolConfig)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise UserError(f"{path}: [sweep] protocol: unknown key {', '.join(unknown)}; valid keys: {', '.join(hints)}")
    for key, value in table.items():
        check_value(value, hints[key], f"protocol.{key}", f"{path}: [sweep]")
    if "steps" in table:
        check_steps(table["steps"], "protocol.steps", path)


def check_steps(value: Any, key: str, path: Path) -> None:
    if isinstance(value, int) and value > MAX_STEPS:
        raise UserError(
            f"{path}: [sweep] {key} must be at most {MAX_STEPS} "
            f"(10^8, the largest step budget ssl-bench takes; docs/errors.md), got {value}"
        )


def check_method_params(method: str, params: dict[str, Any], path: Path) -> None:
    """[params.METHOD]: each value has the type of the method's config field. Text is only for fields that
    take text (names, choices, schedules such as `"linear:1:0.2"`): `lambda_ = ["0.5"]` is refused."""
    try:
        config = load_method(method).Config
    except UserError:
        return  # an unknown method: refused with the sweep's methods (Grid.specs) or the known ones
    hints = typing.get_type_hints(config, include_extras=True)
    for key, value in params.items():
        if key not in hints:
            continue  # refused with the valid keys when the runs are resolved
        for v in as_tuple(value):
            check_value(v, hints[key], key, f"{path}: [params.{method}]")
