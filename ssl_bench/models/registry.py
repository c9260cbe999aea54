"""A timm-style model registry: one `@register_model` function per variant, its name is the key.

A builder's keyword-only parameters (besides `num_classes`, `input_shape`) are the model's options; their
annotations declare what each takes (`Channels`, `Dropout`, `Literal[…]`, `bool`), and `check_model`
refuses any other value, naming the option, before anything is built or written.

Models are found by name the way methods are (ssl_bench.registries): the built-ins from `BUILTIN_MODELS`,
another installed package's from the entry-point group `ssl_bench.models` (docs/models.md), each module
imported only when one of its names is asked for.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Annotated, Callable

from torch import nn

from ssl_bench import registries
from ssl_bench.config import Range, check_value
from ssl_bench.errors import UserError

ENTRY_POINT_GROUP = "ssl_bench.models"

# The built-in models, name -> "module:attribute" (a builder decorated with `register_model`). Unlike the
# built-in methods they are not entry points of this project's pyproject.toml: entry points are read from an
# installation's metadata, so a new built-in there would need a reinstall, and a checkout run with another
# checkout's environment would not see it. A third-party package uses the entry-point group (docs/models.md).
BUILTIN_MODELS = {
    "bird10net": "ssl_bench.models.bird10:bird10net",
    "largecnn": "ssl_bench.models.paper:largecnn",
    "largeucnn": "ssl_bench.models.paper:largeucnn",
    "resnet2_32": "ssl_bench.models.paper:resnet2_32",
    "resnet3_16": "ssl_bench.models.paper:resnet3_16",
    "smallcnn": "ssl_bench.models.paper:smallcnn",
    "smallucnn": "ssl_bench.models.paper:smallucnn",
    "tinycnn": "ssl_bench.models.tiny:tinycnn",
    "uresnet2_32": "ssl_bench.models.paper:uresnet2_32",
    "uresnet3_16": "ssl_bench.models.paper:uresnet3_16",
}
# Families of models built on demand, prefix -> "module:attribute" (a factory: full name -> `ModelEntry`).
BUILTIN_PREFIXES = {"timm:": "ssl_bench.models.timm_models:timm_entry"}

MAX_CHANNELS = (
    1024  # a sanity bound on widths: 5× the widest layer here (largecnn's 192); tinycnn at 1024 has 57M weights
)
Channels = Annotated[int, Range(1, MAX_CHANNELS)]  # channels or units of a layer
Length = Annotated[int, Range(1, 1 << 24)]  # a kernel or stride in samples (1-D inputs)
Dropout = Annotated[float, Range(0.0, 1.0, high_open=True)]  # drop probability, 0 = none


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]  # build(num_classes=…, input_shape=…, **options)
    modalities: tuple[str, ...]  # input kinds it takes: "image" (C, H, W), "signal" (C, L)
    lr: float  # the Adam learning rate the paper used for it (docs/models.md)
    description: str

    def options(self) -> list[str]:
        params = inspect.signature(self.build).parameters
        return [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n not in ("num_classes", "input_shape")]

    def check_options(self, options: dict) -> None:
        """Refuse (`UserError`) an unknown option or a value its annotation does not allow."""
        valid = self.options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise UserError(
                f"model {self.name!r}: unknown option {', '.join(unknown)}; "
                f"valid options: {', '.join(valid) or '(none)'}"
            )
        hints = typing.get_type_hints(self.build, include_extras=True)
        for key, value in options.items():
            check_value(value, hints.get(key, typing.Any), key, f"model {self.name!r}")


_MODELS: dict[str, ModelEntry] = {}  # registered in this process (`register_model` outside an entry point's module)
_LOADED: dict[str, ModelEntry] = {}  # built-in and installed ones, once imported
_PREFIXES: dict[str, Callable[[str], ModelEntry]] = {}  # e.g. "timm:" -> entry factory, once loaded or registered


@functools.cache
def _model_entry_points() -> dict[str, EntryPoint]:
    return registries.find("model", ENTRY_POINT_GROUP, BUILTIN_MODELS)


def refresh_models() -> None:
    """Forget the cached entry points and loaded models (after installing a package in this process)."""
    _model_entry_points.cache_clear()
    _LOADED.clear()


def register_model(fn: Callable | None = None, *, modalities: tuple[str, ...] = ("image",), lr: float = 1e-3):
    """Make `fn` a model named after the function. Usable bare or with `modalities=`/`lr=` keywords.

    Its `ModelEntry` is attached as `fn.model_entry`. In the module that a built-in's or an installed package's
    entry point names, that is all: the registry finds it through the entry point. Anywhere else it registers
    the model in this process; a name registered twice (or one that an entry point claims) is refused."""

    def wrap(f: Callable) -> Callable:
        doc = (inspect.getdoc(f) or "").split("\n")[0]
        f.model_entry = ModelEntry(f.__name__, f, tuple(modalities), lr, doc)
        ep = _model_entry_points().get(f.__name__)
        if ep is not None and ep.module == f.__module__:
            return f
        if f.__name__ in _MODELS or ep is not None:
            raise ValueError(f"model {f.__name__!r} is registered twice")
        _MODELS[f.__name__] = f.model_entry
        return f

    return wrap(fn) if fn is not None else wrap


def register_prefix(prefix: str, factory: Callable[[str], ModelEntry]) -> None:
    """Models named `prefix + anything` (e.g. `timm:resnet18`) are built by `factory(name)`."""
    _PREFIXES[prefix] = factory


def get_model_entry(name: str) -> ModelEntry:
    if name in _MODELS:
        return _MODELS[name]
    if name in _LOADED:
        return _LOADED[name]
    eps = _model_entry_points()
    if name in eps:
        _LOADED[name] = _check(name, eps[name], registries.load("model", eps[name]))
        return _LOADED[name]
    for prefix in model_prefixes():
        if name.startswith(prefix):
            return _prefix_factory(prefix)(name)
    known = ", ".join(model_names() + [p + "<name>" for p in model_prefixes()])
    raise UserError(f"unknown model {name!r}; known models: {known}")


def _check(name: str, ep: EntryPoint, obj: object) -> ModelEntry:
    """The entry `obj` is: a `ModelEntry` named `name`, or a function `name` decorated with `register_model`."""
    entry = obj if isinstance(obj, ModelEntry) else getattr(obj, "model_entry", None)
    if isinstance(entry, ModelEntry) and entry.name == name:
        return entry
    raise UserError(
        f"model {name!r} from {registries.origin(ep)} ({ep.value}) is neither a ModelEntry named {name!r} "
        f"nor a function named {name!r} decorated with @ssl_bench.models.register_model"
    )


def _prefix_factory(prefix: str) -> Callable[[str], ModelEntry]:
    if prefix not in _PREFIXES:
        _PREFIXES[prefix] = EntryPoint(prefix, BUILTIN_PREFIXES[prefix], ENTRY_POINT_GROUP).load()
    return _PREFIXES[prefix]


def model_names() -> list[str]:
    return sorted(set(_MODELS) | set(_model_entry_points()))


def model_prefixes() -> list[str]:
    """Prefixes that name families of models built on demand (e.g. `timm:`)."""
    return sorted(set(_PREFIXES) | set(BUILTIN_PREFIXES))


def check_model(name: str, modality: str, options: dict) -> ModelEntry:
    """The entry of model `name` if it takes `modality` inputs and every option's value, else a `UserError`."""
    entry = get_model_entry(name)
    if modality not in entry.modalities:
        raise UserError(f"model {name!r} takes {' or '.join(entry.modalities)} inputs, not {modality} inputs")
    entry.check_options(options)
    return entry


def create_model(
    name: str, *, num_classes: int, input_shape: tuple[int, ...], modality: str | None = None, **options
) -> nn.Module:
    """Build model `name` for inputs of `input_shape` ((C, H, W) or (C, L)) and `num_classes` outputs.

    Unknown options are refused with the valid ones named; a model asked for an input kind it cannot
    take is refused with the kinds it supports.
    """
    entry = check_model(name, modality or ("image" if len(input_shape) == 3 else "signal"), options)
    try:
        return entry.build(num_classes=num_classes, input_shape=tuple(input_shape), **options)
    except ValueError as exc:
        raise UserError(f"model {name!r}: {exc}") from None
