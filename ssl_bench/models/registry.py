"""A timm-style model registry: one `@register_model` function per variant, its name is the key.

A builder's keyword-only parameters (besides `num_classes`, `input_shape`) are the model's options; their
annotations declare what each takes (`Channels`, `Dropout`, `Literal[…]`, `bool`), and `check_model`
refuses any other value, naming the option, before anything is built or written.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Callable

from torch import nn

from ssl_bench.config import Range, check_value
from ssl_bench.errors import UserError

MAX_CHANNELS = 1024  # a sanity bound on widths: 5× the widest layer here (largecnn's 192); tinycnn at 1024 has 57M weights
Channels = Annotated[int, Range(1, MAX_CHANNELS)]  # channels or units of a layer
Length = Annotated[int, Range(1, 1 << 24)]  # a kernel or stride in samples (1-D inputs)
Dropout = Annotated[float, Range(0.0, 1.0, high_open=True)]  # drop probability, 0 = none


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]  # build(num_classes=…, input_shape=…, **options)
    modalities: tuple[str, ...]  # input kinds it takes: "image" (C, H, W), "signal" (C, L)
    lr: float  # the Adam learning rate the paper used for it (SPEC §5)
    description: str

    def options(self) -> list[str]:
        params = inspect.signature(self.build).parameters
        return [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in ("num_classes", "input_shape")]

    def check_options(self, options: dict) -> None:
        """Refuse (`UserError`) an unknown option or a value its annotation does not allow."""
        valid = self.options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise UserError(f"model {self.name!r}: unknown option {', '.join(unknown)}; valid options: {', '.join(valid) or '(none)'}")
        hints = typing.get_type_hints(self.build, include_extras=True)
        for key, value in options.items():
            check_value(value, hints.get(key, typing.Any), key, f"model {self.name!r}")


_MODELS: dict[str, ModelEntry] = {}
_PREFIXES: dict[str, Callable[[str], ModelEntry]] = {}  # e.g. "timm:" -> entry factory


def register_model(fn: Callable | None = None, *, modalities: tuple[str, ...] = ("image",), lr: float = 1e-3):
    """Register `fn` under its function name. Usable bare or with `modalities=`/`lr=` keywords."""

    def wrap(f: Callable) -> Callable:
        if f.__name__ in _MODELS:
            raise ValueError(f"model {f.__name__!r} is registered twice")
        doc = (inspect.getdoc(f) or "").split("\n")[0]
        _MODELS[f.__name__] = ModelEntry(f.__name__, f, tuple(modalities), lr, doc)
        return f

    return wrap(fn) if fn is not None else wrap


def register_prefix(prefix: str, factory: Callable[[str], ModelEntry]) -> None:
    """Models named `prefix + anything` (e.g. `timm:resnet18`) are built by `factory(name)`."""
    _PREFIXES[prefix] = factory


def get_model_entry(name: str) -> ModelEntry:
    _import_builtin_models()
    if name in _MODELS:
        return _MODELS[name]
    for prefix, factory in _PREFIXES.items():
        if name.startswith(prefix):
            return factory(name)
    known = ", ".join(list(_MODELS) + [p + "<name>" for p in _PREFIXES])
    raise UserError(f"unknown model {name!r}; known models: {known}")


def model_names() -> list[str]:
    _import_builtin_models()
    return sorted(_MODELS)


def model_prefixes() -> list[str]:
    """Prefixes that name families of models built on demand (e.g. `timm:`)."""
    _import_builtin_models()
    return sorted(_PREFIXES)


def check_model(name: str, modality: str, options: dict) -> ModelEntry:
    """The entry of model `name` if it takes `modality` inputs and every option's value, else a `UserError`."""
    entry = get_model_entry(name)
    if modality not in entry.modalities:
        raise UserError(f"model {name!r} takes {' or '.join(entry.modalities)} inputs, not {modality} inputs")
    entry.check_options(options)
    return entry


def create_model(name: str, *, num_classes: int, input_shape: tuple[int, ...], modality: str | None = None, **options) -> nn.Module:
    """Build model `name` for inputs of `input_shape` ((C, H, W) or (C, L)) and `num_classes` outputs.

    Unknown options are refused with the valid ones named; a model asked for an input kind it cannot
    take is refused with the kinds it supports.
    """
    entry = check_model(name, modality or ("image" if len(input_shape) == 3 else "signal"), options)
    try:
        return entry.build(num_classes=num_classes, input_shape=tuple(input_shape), **options)
    except ValueError as exc:
        raise UserError(f"model {name!r}: {exc}") from None


@functools.cache
def _import_builtin_models() -> None:
    # Each module registers its models on import.
    import ssl_bench.models.bird10  # noqa: F401
    import ssl_bench.models.paper  # noqa: F401
    import ssl_bench.models.tiny  # noqa: F401
    import ssl_bench.models.timm_models  # noqa: F401  (the "timm:" prefix; imports timm only when used)
