"""Run records: one folder per run, written atomically so a killed run never leaves half a file.

A run folder holds `config.json` (the resolved run), `split.json` (the split indices), `metrics.jsonl`
(one line per evaluation), `best.pt` / `last.pt` (checkpoints) and, only once the run is complete,
`result.json`. A run that diverged (non-finite loss) ends with `failed.json` instead; a folder with
neither is an interrupted run. The JSON files are strict JSON (RFC 8259): a value that is not a finite
number (a loss term a method skipped, logged as NaN) is written as `null`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import UserError

CONFIG, SPLIT, METRICS, RESULT, FAILED = "config.json", "split.json", "metrics.jsonl", "result.json", "failed.json"
BEST_CKPT, LAST_CKPT = "best.pt", "last.pt"


def _file_mode() -> int:
    """The mode the umask gives a new file (`mkstemp` alone would give 0600: records are for the team)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_replace(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over `path`.

    An OS error (disk full, no permission) becomes a one-line `UserError` naming the file; `path` is then
    untouched (the previous version, if any, stays whole)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _file_mode())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink(missing_ok=True)


def finite_or_null(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±inf) replaced by None, in nested dicts and lists: JSON has no
    such numbers, and `json.dumps` would write the tokens NaN / Infinity, which strict parsers (jq,
    JavaScript's JSON.parse, most JSON libraries) refuse."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def dumps(obj: Any, **options) -> str:
    """Strict JSON: non-finite numbers as null (`finite_or_null`)."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **options)


def write_json(path: Path, obj: Any) -> None:
    _atomic_replace(path, lambda fh: fh.write((dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


class _Writes:
    """`fh` as `torch.save` writes to it, keeping the `OSError` of a failing write: torch's C++ zip writer
    turns it into a `RuntimeError` ("[enforce fail at inline_container.cc…] unexpected pos …"), which
    would hide a full disk behind a traceback."""

    def __init__(self, fh) -> None:
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checkpoint(path: Path, obj: Any) -> None:
    """`torch.save(obj)` to `path`, atomically; a full disk is `cannot write <path>: No space left on device`."""

    def write(fh) -> None:
        sink = _Writes(fh)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is None:
                raise
            raise sink.error from None

    _atomic_replace(path, write)


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one line with a single write; `read_jsonl` ignores a torn last line."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(dumps(obj) + "\n")
            fh.flush()
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill: everything before it is intact
            break
    return rows


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / RESULT).is_file()


def read_object(path: Path) -> dict:
    """A JSON object from `path`; `ValueError` saying why it is not one (not UTF-8, not JSON, not an object)."""
    try:
        doc = read_json(path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{Path(path).name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{Path(path).name}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(doc, dict):
        raise ValueError(f"{Path(path).name}: expected a JSON object, got {type(doc).__name__}")
    return doc


def read_result(run_dir: Path) -> dict:
    """A complete run's `result.json`; a damaged one (torn, not UTF-8, not an object) is refused in one line."""
    path = Path(run_dir) / RESULT
    try:
        return read_object(path)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path} is damaged ({exc}); delete it, or run that run again with `ssl-bench run … --force`"
        ) from None


def failure(run_dir: Path) -> str | None:
    """The error of a run that failed (its `failed.json`), or None; a damaged one is refused in one line."""
    path = Path(run_dir) / FAILED
    if not path.is_file():
        return None
    try:
        return str(read_json(path)["error"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {exc}); delete it to run that run again") from None


def fingerprint(obj: Any) -> str:
    """A short, stable hash of JSON-able data (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights (names, shapes and exact values)."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    """The commit of the ssl-bench source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    import ssl_bench

    return {"ssl_bench": ssl_bench.__version__, "torch": torch.__version__, "python": platform.python_version()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
