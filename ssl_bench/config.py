"""User input checked before any work: typed configs from `key=value` strings or typed data (TOML, JSON)
and output folders. Unknown keys and bad values are refused in one line, naming the field (and the valid
keys); every number must be finite and within float32's range, and numbers read from text are ASCII
digits only (`parse_int`, `parse_float`, and the click types `WholeNumber`, `Number`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import string
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ssl_bench.errors import UserError

FLOAT_MAX = 3.4028234663852886e38  # float32's largest: training computes in float32, where a larger number is inf
MAX_STEPS = 10**8  # a step budget above this is refused: ~95× FixMatch's 2^20, the longest in the SSL literature (docs/errors.md)
EXPECTED = {bool: "bool (true or false)", int: "int (a whole number)", float: "float (a number)", str: "str (text)"}  # in messages


@dataclass(frozen=True)
class Range:
    """The bounds of a number, declared with its type: `width: Annotated[int, Range(1, 4096)] = 32`."""

    low: float
    high: float
    high_open: bool = False  # [low, high) instead of [low, high]

    def check(self, value: Any, key: str, what: str) -> None:
        if not (self.low <= value and (value < self.high if self.high_open else value <= self.high)):
            shown = lambda x: str(int(x)) if float(x).is_integer() else f"{x:g}"
            raise UserError(f"{what}: {key} must be in [{shown(self.low)}, {shown(self.high)}{')' if self.high_open else ']'}, got {value!r}")


INT_TEXT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() and regex `\d` also take '５０', '٣', and int() '1_0'
FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def parse_int(text: str) -> int:
    """A whole number written with ASCII digits and an optional sign; ValueError otherwise.

    Python's int() also reads `1_0` as 10, fullwidth `５０` as 50 and other scripts' digits; a number the user
    did not mean to type (or a typo) must not become a setting. Surrounding ASCII whitespace is ignored.
    """
    text = text.strip(string.whitespace)
    if not INT_TEXT.fullmatch(text):
        raise ValueError(f"not a whole number (ASCII digits 0-9): {text!r}")
    return int(text)


def parse_float(text: str) -> float:
    """A number written with ASCII digits (`0.5`, `-1e-3`, `.5`; `nan` and `inf` too, which the finite
    checks refuse with their own message); ValueError otherwise (`1_0.5`, `０.５`, `0x1p3`)."""
    text = text.strip(string.whitespace)
    if not FLOAT_TEXT.fullmatch(text):
        raise ValueError(f"not a number (ASCII digits 0-9): {text!r}")
    return float(text)


class WholeNumber(click.IntRange):
    """click's `IntRange` reading ASCII digits only (click's INT is Python's int(), which takes `1_0` and
    `５０`); `why`, if given, is said when the value is above `max`."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None, why: str = "") -> None:
        super().__init__(min=min, max=max)
        self.why = why

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str):
            try:
                value = parse_int(value)
            except ValueError:
                self.fail(f"{value!r} is not a whole number (ASCII digits 0-9 only, no '_')", param, ctx)
        if self.why and self.max is not None and isinstance(value, int) and value > self.max:
            self.fail(f"{value} is above {self.max}, {self.why}", param, ctx)
        return super().convert(value, param, ctx)

    def _describe_range(self) -> str:
        """No `[x<=None]` in --help for an unbounded number (click's IntRange assumes a bound)."""
        return "" if self.min is None and self.max is None else super()._describe_range()


class Number(click.FloatRange):
    """click's `FloatRange` reading ASCII digits only (click's FLOAT is Python's float(): `1_0`, `５`)."""

    name = "float"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str):
            try:
                value = parse_float(value)
            except ValueError:
                self.fail(f"{value!r} is not a number (ASCII digits 0-9 only, no '_')", param, ctx)
        return super().convert(value, param, ctx)


def check_finite(value: float, key: str, what: str, given: Any = None) -> None:
    """Refuse nan, ±inf and numbers beyond float32's range (1e39 is inf once it meets a tensor)."""
    if not (math.isfinite(value) and abs(value) <= FLOAT_MAX):
        raise UserError(f"{what}: {key} must be a finite number (within float32's ±{FLOAT_MAX:.3g}), got {value if given is None else given!r}")


def parse_assignments(items: typing.Iterable[str], what: str) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}`; a malformed or repeated item is refused."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{what}: expected key=value, got {item!r}")
        if key in out:
            raise UserError(f"{what}: {key!r} is given twice")
        out[key] = value.strip()
    return out


def parse_option_values(options: dict[str, str]) -> dict[str, Any]:
    """Model and dataset options: `"32"` -> 32, `"0.5"` -> 0.5, `"true"` -> True, else the string.

    The builder that receives them validates names and values.
    """

    def literal(value: str) -> Any:
        for tp in (parse_int, parse_float):
            try:
                return tp(value)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(value.lower(), value)

    return {k: literal(v) if isinstance(v, str) else v for k, v in options.items()}


def _convert(value: str, tp: Any, key: str, what: str) -> Any:
    """Convert one string to the annotated field type (bool, int, float, str, tuples, or `parse`)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _convert(value, typing.get_args(tp)[0], key, what)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value.lower() in ("none", "null", ""):
                    return None
                continue
            try:
                return _convert(value, arg, key, what)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{what}: bad value for {key}: {value!r}")
    if origin is tuple:
        (arg, *_rest) = typing.get_args(tp) or (str,)
        parts = [p for p in value.split(",") if p.strip()]
        return tuple(_convert(p.strip(), arg, key, what) for p in parts)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{what}: {key} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if hasattr(tp, "parse"):
        try:
            return tp.parse(value)
        except ValueError as exc:
            raise UserError(f"{what}: bad value for {key}: {exc}") from None
    try:
        if tp is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is float:
            number = parse_float(value)
            check_finite(number, key, what, given=value)  # "nan", "inf", "1e400"
            return number
        if tp is int:
            return parse_int(value)
        if tp is str:
            return value
    except ValueError:
        raise UserError(f"{what}: {key} expects {EXPECTED.get(tp, tp.__name__)}, got {value!r}") from None
    raise UserError(f"{what}: cannot set {key} of type {tp} from the command line")


def check_value(value: Any, tp: Any, key: str, what: str) -> Any:
    """`value` if it has the annotated type `tp`, else a one-line `UserError` naming `key`.

    For typed data (TOML, JSON, Python) and for strings already converted by `_convert`: int fields take
    ints (not bools), float fields ints or floats (finite, within float32's range), bool fields bools;
    `Annotated[…, Range(…)]` bounds are checked. Other classes (e.g. `Schedule`) are left to the config's
    own `__post_init__`. Lists given for tuple fields come back as tuples.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Annotated:
        value = check_value(value, args[0], key, what)
        for rule in args[1:]:
            if isinstance(rule, Range):
                rule.check(value, key, what)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arg, key, what)
            except UserError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise UserError(f"{what}: {key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{what}: {key} expects a list, got {value!r}")
        return tuple(check_value(v, args[0] if args else Any, key, what) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{what}: {key} expects a table of key = value, got {value!r}")
        return value
    wrong = {
        bool: not isinstance(value, bool),
        int: isinstance(value, bool) or not isinstance(value, int),
        float: isinstance(value, bool) or not isinstance(value, (int, float)),
        str: not isinstance(value, str),
    }
    if wrong.get(tp, False):
        raise UserError(f"{what}: {key} expects {EXPECTED[tp]}, got {value!r}")
    if tp is float:
        check_finite(value, key, what)
    return value


def build_config(cls: type, overrides: dict[str, Any], what: str) -> Any:
    """Instantiate dataclass `cls` with `overrides` (strings are converted to the field types).

    Other values must have the field's type (`check_value`: ints are not bools, floats are finite).
    Unknown keys, wrong types and values the dataclass refuses in `__post_init__` become one-line
    `UserError`s naming the field.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none: it takes no parameters)"
        raise UserError(f"{what}: unknown key {', '.join(map(repr, unknown))}; valid keys: {valid}")
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {
        key: check_value(_convert(value, hints[key], key, what) if isinstance(value, str) else value, hints[key], key, what)
        for key, value in overrides.items()
    }
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{what}: {exc}") from None


def to_jsonable(obj: Any) -> Any:
    """A dataclass (possibly nested, with schedule objects) as plain JSON data."""
    if hasattr(obj, "to_json") and not isinstance(obj, type):  # before the dataclass case: Schedule is one
        return obj.to_json()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` as a folder that can be written, else a one-line `UserError` — checked before any work.

    Refused: `''`, a path through a file, a place where no folder can be made (read-only, /proc, no
    permission). The test is real: a temporary folder is made and removed in the nearest existing folder
    (`os.access` says yes to root everywhere), so nothing is left behind.
    """
    if not str(path).strip():
        raise UserError(f"{option} is empty; give a folder, e.g. {option} runs")
    target = Path(path).expanduser()
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == target else f"is below {existing}, which is a file"
        raise UserError(f"{option} {path} {where}, not a folder; give a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ssl-bench-probe-", dir=existing))
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create a folder in {existing} ({exc.strerror or exc})") from None
    return target
