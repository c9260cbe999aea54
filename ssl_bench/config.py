"""Typed configs from `key=value` strings: unknown keys and bad values are refused, naming the valid ones."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from ssl_bench.errors import UserError


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
        for tp in (int, float):
            try:
                return tp(value)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(value.lower(), value)

    return {k: literal(v) if isinstance(v, str) else v for k, v in options.items()}


def _convert(value: str, tp: Any, key: str, what: str) -> Any:
    """Convert one string to the annotated field type (bool, int, float, str, tuples, or `parse`)."""
    origin = typing.get_origin(tp)
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
        if tp in (int, float, str):
            return tp(value)
    except ValueError:
        raise UserError(f"{what}: {key} expects {tp.__name__}, got {value!r}") from None
    raise UserError(f"{what}: cannot set {key} of type {tp} from the command line")


def build_config(cls: type, overrides: dict[str, Any], what: str) -> Any:
    """Instantiate dataclass `cls` with `overrides` (strings are converted to the field types).

    Unknown keys and values the dataclass refuses in `__post_init__` become one-line `UserError`s.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none: it takes no parameters)"
        raise UserError(f"{what}: unknown key {', '.join(map(repr, unknown))}; valid keys: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {
        key: _convert(value, hints[key], key, what) if isinstance(value, str) else value
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
