"""A run's full training state in `state.pt`: what a killed run needs to go on exactly where it was.

Saved atomically (ssl_bench.records) every `state_every` steps, at each evaluation and when a stop is
requested (Ctrl-C, SIGTERM); deleted once `result.json` is written. It holds the model, the optimizer,
the batch index streams (generator states and pending indices), the method's generator and own state,
the global RNG state (dropout), the running loss sums, the health monitor, the best checkpoint's
weights and bookkeeping, and the length of `metrics.jsonl` at that point (rows past it are from steps
the resumed run will redo, and are cut off). Resuming on CPU gives bit-for-bit the run that was never
interrupted (tests/test_resume.py); on CUDA, kernels are not deterministic, so only to float tolerance.

It also holds the run it belongs to (`identity`: the split, init and protocol fingerprints, the protocol
they cover, the method and its config). `check` compares that with the run about to resume, before
anything is loaded or written, and refuses another run's state (or an unreadable one) in one line that
names what differs (tests/test_resume_guard.py).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssl_bench import records
from ssl_bench.errors import UserError
from ssl_bench.protocol import LATER_FIELDS

STATE = "state.pt"
FORMAT = 3  # bump when the layout changes: an older state is then refused with --restart as the way out
RESTART = "use --restart to start the run over"
FINGERPRINTS = (
    "split_fingerprint",
    "init_fingerprint",
    "protocol_fingerprint",
)  # in `identity`, as result.json records them


@dataclass
class LoopState:
    """The loop's bookkeeping (the tensors' owners — model, optimizer, streams, method — hold the rest)."""

    step: int = 0  # steps done
    best_val: float = -1.0  # best validation accuracy so far
    best_step: int = 0
    best_model: dict[str, torch.Tensor] | None = None  # its weights (best.pt holds the same)
    last_row: dict[str, Any] | None = None  # the last metrics.jsonl row
    metrics_bytes: int = 0  # length of metrics.jsonl after `last_row`
    elapsed_s: float = 0.0  # training wall time before this process
    stopped: bool = False  # the health check stopped the run
    tracker: dict[str, torch.Tensor] = field(default_factory=dict)  # running loss sums (loss_tracker.LossTracker)
    health: dict[str, Any] = field(default_factory=dict)  # the HealthMonitor's fields


def exists(run_dir: Path) -> bool:
    """Whether the run folder has anything named `state.pt` (a directory or a broken link too: `check`
    refuses those, rather than the run silently starting over)."""
    return os.path.lexists(Path(run_dir) / STATE)


def rank_state(model, method) -> dict[str, Any]:
    """What differs between the ranks of a data-parallel run: their own random streams."""
    device = next(model.parameters()).device
    return {
        "method": method.state_dict(),
        "method_generator": method.context.generator.get_state(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def save(
    run_dir: Path, loop: LoopState, *, identity: dict[str, Any], model, optimizer, streams: dict, method, world
) -> None:
    """Write `state.pt` (atomically: a kill during the write leaves the previous state whole). Every
    rank calls it (their random streams are gathered); rank 0 writes. `identity` is the run's (`check`)."""
    ranks = world.gather(rank_state(model, method))
    if not world.main:
        return
    state = {
        "format": FORMAT,
        "identity": identity,
        "loop": vars(loop),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "streams": {name: s.state_dict() for name, s in streams.items()},
        "ranks": ranks,  # one entry per process
    }
    records.save_checkpoint(Path(run_dir) / STATE, state)


def restore(run_dir: Path, *, model, optimizer, streams: dict, method, world) -> LoopState:
    """Load `state.pt` into the run's objects and return the loop's bookkeeping; cut `metrics.jsonl`
    back to the rows the state has seen. A damaged or foreign state is refused in one line."""
    path = Path(run_dir) / STATE
    device = next(model.parameters()).device
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
        if state.get("format") != FORMAT:
            raise ValueError(f"format {state.get('format')!r}, expected {FORMAT}")
        if len(state["ranks"]) != world.size:
            raise ValueError(f"it was saved by {len(state['ranks'])} processes and this run has {world.size}")
        loop = LoopState(**state["loop"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for name, s in streams.items():
            s.load_state_dict(state["streams"][name])
        mine = state["ranks"][world.rank]
        method.load_state_dict(mine["method"])
        method.context.generator.set_state(mine["method_generator"])
        torch.set_rng_state(mine["rng_cpu"])
        if device.type == "cuda" and mine["rng_cuda"] is not None:
            torch.cuda.set_rng_state(mine["rng_cuda"], device)
    except Exception as exc:  # any damage: a truncated file, a foreign pickle, missing or mismatched keys
        raise UserError(
            f"cannot resume from {path}: {type(exc).__name__}: {exc}; use --restart to start the run over"
        ) from None
    if loop.best_model is not None:
        loop.best_model = {k: v.to(device) for k, v in loop.best_model.items()}
    if world.main:
        cut_metrics(Path(run_dir) / records.METRICS, loop.metrics_bytes)
    return loop


def check(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume from `state.pt` unless it is a state of this very run: same format, method, method
    config, protocol, split and initial weights. One line naming what differs (or why it cannot be read),
    with `--restart` as the way out. Reads only the state's small `identity` (tensors are memory-mapped,
    not read) and writes nothing, so a refusal loses nothing."""
    path = Path(run_dir) / STATE
    saved = read_identity(path)
    problem = differences(saved, identity)
    if problem:
        raise UserError(f"cannot resume from {path}: {problem}; {RESTART}")


def read_identity(path: Path) -> dict[str, Any]:
    """The `identity` that `state.pt` was saved with; a one-line `UserError` if it has none that can be read."""
    refuse = lambda why: UserError(f"cannot resume from {path}: {why}; {RESTART}")
    if path.is_dir():
        raise refuse("it is a directory, not a saved state")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # never unpickles code
    except OSError as exc:
        raise refuse(f"cannot read it ({exc.strerror or exc})") from None
    except pickle.UnpicklingError as exc:  # weights_only refused an object: the file is never run
        found = re.search(r"GLOBAL (\S+)", str(exc))
        raise refuse(
            "it holds objects other than tensors and plain values "
            f"({found.group(1) if found else first_sentence(exc)}), which are never loaded"
        ) from None
    except Exception as exc:  # truncated or not a torch.save file at all
        raise refuse(f"it is damaged or not a saved state ({first_sentence(exc)})") from None
    if not isinstance(state, dict) or "format" not in state:
        held = (
            f"a dict with keys {', '.join(map(str, state))}" if isinstance(state, dict) else f"a {type(state).__name__}"
        )
        raise refuse(f"it is not a run state (it holds {held})")
    if type(state["format"]) is not int or state["format"] != FORMAT:
        older = type(state["format"]) is int and state["format"] < FORMAT
        raise refuse(
            f"it was saved in state format {state['format']!r} by {'an older' if older else 'another'} ssl-bench, "
            f"and this version resumes format {FORMAT} only"
        )
    saved = state.get("identity")
    if not isinstance(saved, dict) or not all(k in saved for k in (*FINGERPRINTS, "protocol", "method", "params")):
        raise refuse("it does not say which run it belongs to (no complete identity)")
    return saved


def differences(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What differs between the run a state was saved by and this one, in words (None: nothing).
    Settings are named key by key (`lr=0.001`); the fingerprints that differ follow in parentheses."""
    same_method = saved["method"] == current["method"]  # else only the method is named, not its config
    was, now = settings(saved, same_method), settings(current, same_method)
    keys = [k for k in {**was, **now} if was.get(k, MISSING) != now.get(k, MISSING)]
    fingerprints = [
        f"{k.split('_')[0]} fingerprint {short(saved[k])} ≠ {short(current[k])}"
        for k in FINGERPRINTS
        if saved[k] != current[k]
    ]
    shown = f" ({', '.join(fingerprints)})" if fingerprints else ""
    if keys:
        side = lambda values: ", ".join(f"{k}={show(values.get(k, MISSING))}" for k in keys)
        return f"it was saved with {side(was)}, this run has {side(now)}{shown}"
    if fingerprints:  # same settings, yet another split (the data changed) or init (the model's code changed)
        what = [
            w
            for k, w in (
                ("split_fingerprint", "a different split of the data"),
                ("init_fingerprint", "different initial weights"),
            )
            if saved[k] != current[k]
        ]
        return f"it was saved with {' and '.join(what) or 'another protocol'}{shown}"
    return None


MISSING = object()  # a setting one side does not record (e.g. a later protocol field at its default)


def settings(identity: dict[str, Any], params: bool = True) -> dict[str, Any]:
    """The run's settings as flat `key: value` pairs: the method, its config as `<method>.<field>`, the
    protocol's fields by name (`lr`, `seed`), and the rest of what the protocol fingerprint covers
    (`model`, `dataset`, `model_options.width`, `device_type`); not the split and init fingerprints."""
    flat = {"method": identity["method"]}
    if params:
        flat.update(flatten(identity["params"], f"{identity['method']}."))
    for key, value in identity["protocol"].items():
        if key == "protocol":
            flat.update(flatten({**LATER_FIELDS, **value}))  # recorded only when not at their defaults
        elif key not in ("split", "init"):
            flat.update(flatten({key: value}))
    return {"world_size": 1, **flat}  # recorded only for several processes


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: `{"model_options": {"width": 8}}` -> `{"model_options.width": 8}`."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def show(value: Any) -> str:
    if value is MISSING:
        return "(not set)"
    return value if isinstance(value, str) else repr(list(value) if isinstance(value, tuple) else value)


def short(fp: Any) -> str:
    return f"{str(fp)[:8]}…"


def first_sentence(exc: Exception) -> str:
    """The start of an exception's message (torch's are paragraphs), as one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.split(". ")[0].rstrip(".")


def cut_metrics(path: Path, length: int) -> None:
    """Drop rows written after the state was saved (the resumed run writes them again)."""
    if path.exists() and path.stat().st_size > length:
        os.truncate(path, length)


def remove(run_dir: Path) -> None:
    path = Path(run_dir) / STATE
    if not path.is_dir() or path.is_symlink():  # a directory of that name is not ours to delete (`check` refuses it)
        path.unlink(missing_ok=True)


def remove_temporaries(run_dir: Path) -> None:
    """Temporary files of atomic writes cut short by a kill (`.<name>.<random>.tmp`)."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def as_dict(obj) -> dict[str, Any]:
    """A dataclass's fields (shallow: tensors are not copied)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
