"""The method interface (`SSLMethod`) and the method registry (entry-point group `ssl_bench.methods`).

A method is its loss and nothing else: it receives the model, one batch and the training progress, and
returns the total loss and its named terms. Everything else (data, devices, optimizer, logging,
checkpoints) belongs to the harness. A method may declare the augmented views of a batch it needs
(`views`: the harness makes them, ssl_bench.views), draw the other random tensors of its step outside
the step (`random_tensors`, so that the step itself draws nothing and compiles) and keep state across
steps (`setup`, `after_step`, `state_dict`: e.g. an EMA teacher, updated by the loop after each
optimizer step).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import UserError
from ssl_bench.losses import not_computed

ENTRY_POINT_GROUP = "ssl_bench.methods"


@dataclass(frozen=True)
class Batch:
    """One training batch, already normalized and on the training device."""

    x_lb: torch.Tensor  # (B_lb, *shape) labeled inputs
    y_lb: torch.Tensor  # (B_lb,) int64 labels
    x_ulb: torch.Tensor  # (B_ulb, *shape) unlabeled inputs
    views: Mapping[str, torch.Tensor] = field(
        default_factory=dict
    )  # the method's declared views (`SSLMethod.views`), made by the harness
    random: Mapping[str, torch.Tensor] = field(
        default_factory=dict
    )  # the method's other random tensors of this step (`SSLMethod.random_tensors`)


@dataclass(frozen=True)
class View:
    """An augmented view of one part of the batch that a method asks the harness for (ssl_bench.views).

    `source` is "x_lb", "x_ulb" or "x" (both, labeled first: one draw over the whole batch); `strength`
    "weak" (the modality's light augmentation: small shifts and noise) or "strong" (images:
    RandAugment-style ops with Cutout; signals: shift, gain, noise, time masking); `draws` K > 1 gives K
    independent draws stacked as (K, B, *shape), else (B, *shape).
    """

    source: str
    strength: str
    draws: int = 1

    def __post_init__(self) -> None:
        if self.source not in ("x_lb", "x_ulb", "x"):
            raise ValueError(f"a view's source is x_lb, x_ulb or x, got {self.source!r}")
        if self.strength not in ("weak", "strong"):
            raise ValueError(f"a view's strength is weak or strong, got {self.strength!r}")
        if self.draws < 1:
            raise ValueError(f"a view's draws must be at least 1, got {self.draws}")


@dataclass(frozen=True)
class Progress:
    """Where training stands: `step` in [0, total_steps)."""

    step: int
    total_steps: int

    @property
    def fraction(self) -> float:
        """Training progress in [0, 1]: exactly 0 at the first step and 1 at the last (step / (steps − 1))."""
        return self.step / max(self.total_steps - 1, 1)


@dataclass(frozen=True)
class MethodContext:
    """What the harness tells a method about the run; the same for every method of a comparison."""

    modality: str  # "image" | "signal"
    num_classes: int
    generator: torch.Generator  # the method's own random stream, on the training device


@dataclass(frozen=True)
class NoConfig:
    """A method without hyperparameters."""


class SSLMethod:
    """Base class of every method.

    A subclass sets `Config` (a frozen dataclass whose fields are the method's hyperparameters, typed for
    ssl_bench.config's checks: `Annotated[float, Range(0, 1)]`, `Literal[…]`; `__post_init__` calls
    `config.check_fields` and checks what spans fields), `terms` (the names of the loss terms it logs, exactly) and
    `supervised_equivalent` (the config values under which its gradients equal `supervised`'s, used by
    the contract tests; `unlabeled_active` where a confidence threshold keeps the unlabeled term silent at
    first), and implements `loss`.
    """

    Config: ClassVar[type] = NoConfig
    terms: ClassVar[tuple[str, ...]] = ()
    supervised_equivalent: ClassVar[dict[str, object]] = {}
    # config values under which the unlabeled term acts even on an untrained model (a confidence threshold
    # of 0); the contract tests use them
    unlabeled_active: ClassVar[dict[str, object]] = {}

    def __init__(self, config: object, context: MethodContext):
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} expects a {self.Config.__name__}, got {config!r}")
        self.config = config
        self.context = context

    def loss(self, model: nn.Module, batch: Batch, progress: Progress) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the scalar loss to minimize and its named, detached terms (keys == `self.terms`)."""
        raise NotImplementedError

    def is_supervised(self) -> bool:
        """Whether the config is at its `supervised_equivalent` values (e.g. an unlabeled weight of 0): the
        step is then `supervised_step`, exactly `supervised`'s."""
        equivalent = self.supervised_equivalent
        return bool(equivalent) and all(getattr(self.config, k) == v for k, v in equivalent.items())

    def check_model(self, model: nn.Module) -> None:
        """Refuse (with a `UserError`) a model this configuration cannot use; called before training."""

    def views(self) -> dict[str, View]:
        """The augmented views this method needs in `batch.views`, by name (default none). The harness
        makes them for every step from the method's generator, batched on the device (ssl_bench.views)."""
        return {}

    def random_tensors(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The random tensors `loss` needs besides the views (e.g. VAT's start direction, MixMatch's
        permutation), drawn here from `self.context.generator`. The harness calls it every step after
        making the views, outside the (compiled) step, and passes them as `batch.random`: a step that draws
        nothing itself compiles (`--compile`), since Dynamo does not trace a `torch.Generator`. Default none."""
        return {}

    def setup(self, model: nn.Module) -> None:
        """Called once with the (initialized, on-device) model before the first step and before a resumed
        run's state is restored: create state that mirrors the model here (e.g. an EMA teacher)."""

    def after_step(self, model: nn.Module, progress: Progress) -> None:
        """Called by the loop after each optimizer step (never touches the optimizer): update the
        method's state from the new weights (e.g. the EMA teacher). Default: nothing."""

    def term_names(self) -> tuple[str, ...]:
        """The logged terms of this instance (a method whose terms depend on its config overrides this)."""
        return self.terms

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The method's own training state beyond its generator (e.g. an EMA of weights), saved with the
        run's state so that a resumed run goes on exactly (ssl_bench.run.runstate); tensors and plain values."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""


def supervised_step(
    model: nn.Module,
    batch: Batch,
    terms: tuple[str, ...],
    ce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step of a method whose unsupervised part is off (its weight 0): one clean pass over the labeled
    batch and its cross-entropy (`ce`, e.g. UDA's annealed one), exactly `supervised`'s step; of `terms`,
    `ce` is logged and the others as NaN (not computed)."""
    loss = ce(model(batch.x_lb), batch.y_lb)
    skipped = not_computed(loss.device)
    return loss, {name: loss.detach() if name == "ce" else skipped for name in terms}


# --------------------------------------------------------------------------------------------------
# Registry


@functools.cache
def _method_entry_points() -> dict[str, EntryPoint]:
    """All registered methods by name; two distributions registering one name is an error."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise UserError(
                f"method {ep.name!r} is registered twice: by {_dist_name(other)} ({other.value}) "
                f"and by {_dist_name(ep)} ({ep.value}); uninstall one of them"
            )
        found[ep.name] = ep
    return dict(sorted(found.items()))


def refresh_methods() -> None:
    """Forget the cached entry points (after installing a plugin in the running process)."""
    _method_entry_points.cache_clear()
    load_method.cache_clear()


def method_names() -> list[str]:
    return list(_method_entry_points())


def _dist_name(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "an unknown distribution"


def method_distribution(name: str) -> str:
    return _dist_name(_method_entry_points()[name])


@functools.cache
def load_method(name: str) -> type[SSLMethod]:
    """Import the method class registered as `name` (only that plugin is imported)."""
    eps = _method_entry_points()
    if name not in eps:
        raise UserError(f"unknown method {name!r}; known methods: {', '.join(eps) or '(none)'}")
    ep = eps[name]
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not break the others
        raise UserError(
            f"method {name!r} from distribution {_dist_name(ep)} failed to import "
            f"({ep.value}): {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, SSLMethod)):
        raise UserError(f"method {name!r} from {_dist_name(ep)} is not an SSLMethod subclass: {cls!r}")
    if not dataclasses.is_dataclass(cls.Config):
        raise UserError(f"method {name!r} from {_dist_name(ep)}: its Config is not a dataclass")
    return cls
