"""Named things found by name without importing them first: the datasets (ssl_bench.data.registry) and the
models (ssl_bench.models.registry), like the methods (ssl_bench.method).

Each kind has a table of its built-ins, names -> "module:attribute" strings, and an entry-point group in which
another installed distribution adds its own. Nothing is imported until its name is asked for, and then only its
module (importlib, through `EntryPoint.load`): a registry never imports the modules that define what it lists.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from ssl_bench.errors import UserError

BUILTIN = "ssl-bench"  # the distribution named for a built-in


def origin(ep: EntryPoint) -> str:
    """The distribution that registered `ep` (the built-ins' table has none: ssl-bench itself)."""
    return ep.dist.name if ep.dist is not None else BUILTIN


def find(kind: str, group: str, builtins: dict[str, str]) -> dict[str, EntryPoint]:
    """The built-ins and the entry points of `group`, by name; one name registered twice is a `UserError`."""
    found = {name: EntryPoint(name, value, group) for name, value in builtins.items()}
    for ep in entry_points(group=group):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise UserError(
                f"{kind} {ep.name!r} is registered twice: by {origin(other)} ({other.value}) "
                f"and by {origin(ep)} ({ep.value}); uninstall one of them"
            )
        found[ep.name] = ep
    return found


def load(kind: str, ep: EntryPoint) -> object:
    """What `ep` names, imported. A third-party module that fails to import is a `UserError` naming its
    distribution; a built-in's error propagates as it is (a bug here, not a user's input)."""
    if ep.dist is None:
        return ep.load()
    try:
        return ep.load()
    except Exception as exc:  # a broken plugin must not look like a bug of ssl-bench
        what = f"{kind} {ep.name!r} from distribution {origin(ep)}"
        raise UserError(f"{what} failed to import ({ep.value}): {type(exc).__name__}: {exc}") from exc
