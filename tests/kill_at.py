"""`python tests/kill_at.py POINT STEP ssl-bench-args…`: run `ssl-bench` and SIGKILL itself at POINT.

The kill-and-resume tests use it to die at exact points that a kill from outside hits only by chance:

- `state-write`: halfway through writing `state.pt` of step STEP (the temporary file holds half of it);
- `best-write`: halfway through writing `best.pt` of step STEP;
- `after-metrics`: right after the metrics row of step STEP, before that step's state is saved;
- `before-cleanup`: after `result.json` was written, before `state.pt` is removed (STEP unused).
"""

from __future__ import annotations

import io
import os
import signal
import sys

import torch

from ssl_bench import records
from ssl_bench.run import runstate


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def half_written(path, obj) -> None:
    data = io.BytesIO()
    torch.save(obj, data)

    def write(fh):
        fh.write(data.getvalue()[: len(data.getvalue()) // 2])
        fh.flush()
        os.fsync(fh.fileno())
        die()

    records._atomic_replace(path, write)


def main() -> None:
    point, step, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    save_checkpoint, append_jsonl, remove = records.save_checkpoint, records.append_jsonl, runstate.remove

    def patched_save(path, obj):
        if point == "state-write" and path.name == runstate.STATE and obj["loop"]["step"] == step:
            half_written(path, obj)
        if point == "best-write" and path.name == records.BEST_CKPT and obj["step"] == step:
            half_written(path, obj)
        save_checkpoint(path, obj)

    def patched_append(path, obj):
        append_jsonl(path, obj)
        if point == "after-metrics" and obj["step"] == step:
            die()

    def patched_remove(run_dir):
        if point == "before-cleanup":
            die()
        remove(run_dir)

    records.save_checkpoint, records.append_jsonl, runstate.remove = patched_save, patched_append, patched_remove
    from ssl_bench.cli import main as cli_main

    sys.argv = ["ssl-bench", *args]
    cli_main()


if __name__ == "__main__":
    main()
