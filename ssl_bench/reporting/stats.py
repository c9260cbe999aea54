"""Statistics of a report, in percent: mean ± sample standard deviation over seeds, and the paired
difference of two rows over the seeds both have with a 95 % Student-t interval (n − 1 degrees of freedom)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass


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
        return (
            f"{signed(self.mean)} [{signed(self.mean - self.half_width)}, "
            f"{signed(self.mean + self.half_width)}] (n={self.n})"
        )


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
