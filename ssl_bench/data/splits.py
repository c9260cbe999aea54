"""Train / validation / labeled / unlabeled splits (docs/design.md §4), drawn from the seed and fingerprinted.

Validation is carved from the training data first; the labeled set is then drawn class-balanced
(`labels / classes` per class) from what remains; the unlabeled set is the rest of the training data
(labeled samples included unless `exclude_labeled`). When the data has groups (e.g. the windows of one
recording), every choice is made per group, so no group is ever in two splits, and `labels` counts
groups.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ssl_bench.errors import UserError
from ssl_bench.seeding import derive_seed

MIN_TRAIN_PER_CLASS = 1  # what validation must leave: at least one labeled unit per class


@dataclass(frozen=True)
class Split:
    val: np.ndarray  # int64 indices into the training arrays
    labeled: np.ndarray
    unlabeled: np.ndarray

    def fingerprint(self, dataset: str) -> str:
        h = hashlib.sha256(dataset.encode())
        for part in (self.val, self.labeled, self.unlabeled):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def as_json(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in ("val", "labeled", "unlabeled")}


def _units(y: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The units a split chooses among: samples, or groups with their (single) label and members."""
    if groups is None:
        idx = np.arange(len(y))
        return idx, y, [np.array([i]) for i in idx]
    ids, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    labels = np.array([y[m[0]] for m in members])
    for m, lab in zip(members, labels):
        if (y[m] != lab).any():
            raise UserError(f"group {groups[m[0]]} mixes labels; every recording must have one label")
    return np.arange(len(ids)), labels, members


def check_labels(labels: int | None, num_classes: int) -> None:
    """Refuse a labeled-set size that cannot be class-balanced (`None` = everything labeled)."""
    if labels is not None and (isinstance(labels, bool) or not isinstance(labels, int)):
        raise UserError(f"labels must be a whole number or 'all', got {labels!r}")
    if labels is not None and (labels <= 0 or labels % num_classes):
        raise UserError(f"--labels {labels} is not a positive multiple of the {num_classes} classes")


def make_split(
    y_train: np.ndarray | torch.Tensor,
    *,
    labels: int | None,
    val_size: int,
    num_classes: int,
    seed: int,
    groups: np.ndarray | torch.Tensor | None = None,
    exclude_labeled: bool = False,
) -> Split:
    """Draw the split for `seed`. `labels=None` labels all remaining training data.

    Impossible requests (labels not divisible by classes, more per class than a class has, a
    validation split that leaves too little) are refused with a `UserError` before any work.
    """
    y = np.asarray(y_train.cpu() if isinstance(y_train, torch.Tensor) else y_train, dtype=np.int64)
    g = None if groups is None else np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups)
    unit_ids, unit_y, members = _units(y, g)
    n_units = len(unit_ids)
    what = "recordings" if g is not None else "samples"

    if val_size < 1:
        raise UserError(f"--val-size must be at least 1 (model selection needs a validation split), got {val_size}")
    check_labels(labels, num_classes)
    rng = np.random.default_rng(derive_seed(seed, "split"))

    # 1. validation, carved first: whole units in random order until val_size samples are reached.
    order = rng.permutation(n_units)
    sizes = np.array([len(members[u]) for u in order])
    n_val_units = min(int(np.searchsorted(np.cumsum(sizes), val_size, side="left")) + 1, n_units)
    val_units, rest_units = order[:n_val_units], np.sort(order[n_val_units:])
    rest_counts = np.bincount(unit_y[rest_units], minlength=num_classes)
    if rest_counts.min() < MIN_TRAIN_PER_CLASS:
        raise UserError(
            f"--val-size {val_size} leaves too little training data ({len(rest_units)} {what}; "
            f"class {int(rest_counts.argmin())} has none left); use a smaller --val-size"
        )

    # 2. labeled: class-balanced, drawn from what validation left.
    if labels is None:
        lab_units = rest_units
    else:
        per_class = labels // num_classes
        if per_class > rest_counts.min():
            c = int(rest_counts.argmin())
            raise UserError(
                f"--labels {labels} asks for {per_class} labeled {what} per class, but class {c} has only "
                f"{rest_counts[c]} outside validation; use at most {rest_counts.min() * num_classes} labels"
            )
        chosen = [rng.choice(rest_units[unit_y[rest_units] == c], per_class, replace=False) for c in range(num_classes)]
        lab_units = np.sort(np.concatenate(chosen))

    # 3. unlabeled: the rest of the training data.
    ulb_units = np.setdiff1d(rest_units, lab_units) if exclude_labeled else rest_units
    if len(ulb_units) == 0:
        raise UserError("no unlabeled training data is left; drop --exclude-labeled or use fewer labels")

    def expand(units: np.ndarray) -> np.ndarray:
        if len(units) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate([members[u] for u in units])).astype(np.int64)

    return Split(val=expand(val_units), labeled=expand(lab_units), unlabeled=expand(ulb_units))
