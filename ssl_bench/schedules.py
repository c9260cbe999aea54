"""Weights that change over training: schedules of the progress t/T, and the Π-model ramp-up.

Shared by every method that needs them (written once, imported by the plugins).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ssl_bench.config import FLOAT_MAX, parse_float

KINDS = ("constant", "linear", "cosine")


def sigmoid_rampup(progress: float, rampup: float) -> float:
    """Laine & Aila's ramp-up `exp(−5(1 − min(t/T, 1))²)`, with `rampup` = T as a fraction of training.

    `rampup = 0` means no ramp-up (the weight is 1 from the first step).
    """
    if rampup <= 0:
        return 1.0
    t = min(progress / rampup, 1.0)
    # e ** x, not math.exp(x): compiled (--compile), progress is symbolic, and math.exp would specialize it
    # (a recompilation every step, then eager). They differ by at most an ulp of float64; as float32 weights
    # (w_max 1, 8, 10 at every step of runs of 200 to 40,000 steps) they are equal.
    return math.e ** (-5.0 * (1.0 - t) ** 2)


@dataclass(frozen=True)
class Schedule:
    """A value that moves from `start` to `end` over training: constant, linear or cosine.

    Written on the command line as `0.2` (constant), `linear:1.0:0.2` or `cosine:1.0:0.2`.
    """

    kind: str = "constant"  # constant | linear | cosine
    start: float = 0.0  # value at progress 0
    end: float = 0.0  # value at progress 1 (equal to start for constant)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and abs(value) <= FLOAT_MAX)
            ):
                raise ValueError(f"a schedule's {name} must be a finite number (within float32's range), got {value!r}")
        if self.kind == "constant" and self.end != self.start:
            object.__setattr__(self, "end", self.start)

    @classmethod
    def constant(cls, value: float) -> "Schedule":
        return cls("constant", float(value), float(value))

    @classmethod
    def coerce(cls, value: Any) -> "Schedule":
        """A `Schedule` from a Schedule, a number, CLI text (`linear:1:0.2`, `parse`) or its JSON form
        (`to_json`, as config.json holds it); ValueError otherwise."""
        if isinstance(value, Schedule):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls.constant(value)
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, dict):
            try:
                return cls(**value)
            except TypeError:
                pass
        raise ValueError(f"expected a number or KIND:START:END, got {value!r}")

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        """`"0.2"`, `"constant:0.2"`, `"linear:1:0.2"` or `"cosine:1:0.2"`; raises ValueError otherwise."""
        parts = [p.strip() for p in str(text).split(":")]
        kind, numbers = ("constant", parts) if len(parts) == 1 else (parts[0], parts[1:])
        try:
            values = [parse_float(p) for p in numbers]  # ASCII digits only (float() takes '1_0', '０.５')
        except ValueError:
            values = []
        if len(values) != {"constant": 1, "linear": 2, "cosine": 2}.get(kind):
            raise ValueError(f"expected a number or KIND:START:END with KIND linear or cosine, got {text!r}")
        return (
            cls.constant(values[0]) if kind == "constant" else cls(kind, *values)
        )  # a non-finite number is refused there

    def at(self, progress: float) -> float:
        """The value at training progress `progress` in [0, 1] (clamped)."""
        t = min(max(progress, 0.0), 1.0)
        if self.kind == "linear":
            return (1.0 - t) * self.start + t * self.end  # exactly start at t = 0 and end at t = 1
        if self.kind == "cosine":
            w = 0.5 * (1.0 + math.cos(math.pi * t))  # 1 at t = 0, exactly 0 at t = 1
            return w * self.start + (1.0 - w) * self.end
        return self.start

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value the schedule takes."""
        return min(self.start, self.end), max(self.start, self.end)

    def is_constant(self) -> bool:
        return self.start == self.end

    def is_zero(self) -> bool:
        """Zero for the whole run."""
        return self.is_constant() and self.start == 0.0

    def to_json(self) -> float | dict:
        """A constant as its number; otherwise the resolved kind, start and end."""
        return self.start if self.kind == "constant" else {"kind": self.kind, "start": self.start, "end": self.end}

    def __str__(self) -> str:
        return f"{self.start:g}" if self.kind == "constant" else f"{self.kind}:{self.start:g}:{self.end:g}"
