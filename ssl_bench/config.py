"""User input checked before any work: typed configs from `key=value` strings or typed data (TOML, JSON)
and output folders. Unknown keys and bad values are refused in one line, naming the field (and the valid
keys); every number must be finite and within float32's range, and numbers read from text are ASCII
digits only (`parse_int`, `parse_float`, and the click types `WholeNumber`, `Number`).

A config's fields are declared once: bounds and choices as types (`Annotated[int, Range(1)]`,
`Literal[…]`), checked here for text, typed data and by the config itself (`check_fields`); `setting`
adds a field's doc, from which `config_options` derives its command-line option (ssl_bench.protocol).
"""

from __future__ import annotations

import dataclasses
import functools
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
MAX_STEPS = (
    10**8
)  # a step budget above this is refused: ~95× FixMatch's 2^20, the longest in the SSL literature (docs/errors.md)
EXPECTED = {
    bool: "bool (true or false)",
    int: "int (a whole number)",
    float: "float (a number)",
    str: "str (text)",
}  # in messages
MUST = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}  # in a config's own checks


@dataclass(frozen=True)
class Range:
    """The bounds of a number, declared with its type: `width: Annotated[int, Range(1, 4096)] = 32`;
    `Range(0)` has no upper bound, `Range(0, low_open=True)` means > 0. A value with `bounds()` (a
    `Schedule`) must stay within them over its whole course."""

    low: float
    high: float = math.inf
    high_open: bool = False  # [low, high) instead of [low, high]
    low_open: bool = False  # (low, …] instead of [low, …]
    note: str = ""  # said after the field's name in errors: `threshold (τ, a probability) must be in [0, 1]`
    finite: bool = False  # errors say `a finite number > 0` rather than `> 0` (a float is checked finite either way)
    say: str = ""  # what errors say the value must do, instead of what the bounds make: "stay in [0, 1] over training"

    def holds(self, value: Any) -> bool:
        low, high = value.bounds() if hasattr(value, "bounds") else (value, value)
        above = self.low < low if self.low_open else self.low <= low
        return above and (high < self.high if self.high_open else high <= self.high)

    def condition(self, integer: bool = False) -> str:
        """What the value must do, as errors say it: `be in [0, 1)`, `be at least 1` (a whole number without
        an upper bound), `be > 0` or `be a finite number > 0` (a number without one)."""
        shown = lambda x: str(int(x)) if float(x).is_integer() else f"{x:g}"
        if self.say:
            return self.say
        if math.isinf(self.high):
            if integer:
                return f"be at least {shown(self.low + 1 if self.low_open else self.low)}"
            return f"be {'a finite number ' if self.finite else ''}{'>' if self.low_open else '>='} {shown(self.low)}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"be in {opening}{shown(self.low)}, {shown(self.high)}{closing}"

    def check(self, value: Any, key: str, what: str, integer: bool = False) -> None:
        if not self.holds(value):
            name = f"{key} ({self.note})" if self.note else key
            got = str(value) if hasattr(value, "bounds") else repr(value)
            raise UserError(f"{where(what, name)} must {self.condition(integer)}, got {got}")


def where(what: str, key: str) -> str:
    """The start of an error about `key`: `what: key`, or the bare `key` when a config checks itself."""
    return f"{what}: {key}" if what else key


INT_TEXT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() and regex `\d` also take '５０', '٣', and int() '1_0'
FLOAT_TEXT = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE
)


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


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, cli: bool = True, later: bool = False) -> Any:
    """A config field declared once: its default and its doc, which is also its command-line help.

    `cli=False`: not an option of the commands that take the config's options (`config_options`);
    `later=True`: added after runs were recorded, so left out of records while at its default
    (ssl_bench.protocol.LATER_FIELDS).
    """
    return dataclasses.field(default=default, metadata={"doc": doc, "cli": cli, "later": later})


def option_fields(cls: type) -> tuple[str, ...]:
    """The names of `cls`'s fields that are command-line options (declared with `setting`, `cli` true)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", False))


def click_type(tp: Any) -> Any:
    """The click type of an annotated field type: its `Range` as `WholeNumber`/`Number` bounds, a `Literal`
    as a `Choice`, `str` as text (a bool is a `--x/--no-x` flag, see `config_options`)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    rules = [r for r in args[1:] if isinstance(r, Range)] if origin is typing.Annotated else []
    base = args[0] if origin is typing.Annotated else tp
    bound = lambda x: None if x is None or math.isinf(x) else x
    low, high = (rules[0].low, bound(rules[0].high)) if rules else (None, None)
    if base is int:
        return WholeNumber(min=None if low is None else int(low) + bool(rules[0].low_open), max=high)
    if base is float:
        low_open, high_open = (rules[0].low_open, rules[0].high_open) if rules else (False, False)
        return Number(min=low, max=high, min_open=low_open, max_open=high_open)
    if typing.get_origin(base) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(base)])
    if base is str:
        return click.STRING
    raise TypeError(f"no command-line option for a field of type {tp}")


def config_options(cls: type) -> list[Any]:
    """click options for the `option_fields` of dataclass `cls`, derived from their declarations: `--batch-lb`
    for `batch_lb` (`--compile/--no-compile` for a bool), the type's checks (`click_type`), and as help the
    field's doc with its default, e.g. `[32]`. An option's own default is None (not given): the config's
    default applies where the config is completed, and a sweep tells given options from the grid file's."""
    options = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", False):
            continue
        tp, flag, doc = field_types(cls)[f.name], "--" + f.name.replace("_", "-"), f.metadata["doc"]
        if tp is bool:
            shown = f.name if f.default else "no-" + f.name
            options.append(click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=f"{doc} [{shown}]."))
        else:
            shown = f.default if f.default is not dataclasses.MISSING else "required"
            options.append(click.option(flag, f.name, type=click_type(tp), default=None, help=f"{doc} [{shown}]."))
    return options


def check_finite(value: float, key: str, what: str, given: Any = None) -> None:
    """Refuse nan, ±inf and numbers beyond float32's range (1e39 is inf once it meets a tensor)."""
    if not (math.isfinite(value) and abs(value) <= FLOAT_MAX):
        got = value if given is None else given
        raise UserError(f"{where(what, key)} must be a finite number (within float32's ±{FLOAT_MAX:.3g}), got {got!r}")


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
            raise UserError(f"{what}: {key} must be one of {', '.join(map(str, choices))}, got {value!r}")
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
    `Annotated[…, Range(…)]` bounds are checked. A class with a `coerce` classmethod (`Schedule`, dninv's
    `LayerWeights`) takes what `coerce` takes (e.g. a number or `linear:1:0.2` for a schedule) and gives
    its instance; lists given for tuple fields come back as tuples. Without `what` (a config checking
    itself, `check_fields`) the messages read `key must be …`.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Annotated:
        value = check_value(value, args[0], key, what)
        for rule in args[1:]:
            if isinstance(rule, Range):
                rule.check(value, key, what, integer=args[0] is int)
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
            raise UserError(f"{where(what, key)} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where(what, key)} expects a list, got {value!r}")
        return tuple(check_value(v, args[0] if args else Any, key, what) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where(what, key)} expects a table of key = value, got {value!r}")
        return value
    if isinstance(tp, type) and hasattr(tp, "coerce"):
        try:
            return tp.coerce(value)
        except ValueError as exc:
            raise UserError(f"{what + ': ' if what else ''}bad value for {key}: {exc}") from None
    wrong = {
        bool: not isinstance(value, bool),
        int: isinstance(value, bool) or not isinstance(value, int),
        float: isinstance(value, bool) or not isinstance(value, (int, float)),
        str: not isinstance(value, str),
    }
    if wrong.get(tp, False):
        if not what:
            raise UserError(f"{key} must be {MUST[tp]}, got {value!r}")
        raise UserError(f"{what}: {key} expects {EXPECTED[tp]}, got {value!r}")
    if tp is float:
        check_finite(value, key, what)
    return value


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The annotated types of a dataclass's fields, `Annotated` rules included."""
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(config: Any) -> None:
    """A config dataclass checking its own fields by their annotated types (`check_value`), from its
    `__post_init__`: a `ValueError` `key must be …` for the first bad one, so that a config built in Python
    is held to what `build_config` checks. A value given in another form that the type takes (a list for
    a tuple, a number for a `Schedule`) is stored as the type's."""
    types_ = field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        try:
            checked = check_value(value, types_[f.name], f.name, "")
        except UserError as exc:
            raise ValueError(str(exc)) from None
        if checked is not value:
            object.__setattr__(config, f.name, checked)


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
        key: check_value(
            _convert(value, hints[key], key, what) if isinstance(value, str) else value, hints[key], key, what
        )
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
