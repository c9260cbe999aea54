"""End-to-end wall time and accuracy of an MNIST-50-shaped grid (4 methods × seeds), per configuration.

    python benchmarks/grid_wall.py --out DIR --steps 1000 --seeds 0,1,2,3,4 \\
        --config eager-fp32: --config compiled-bf16:"--compile --precision bf16" [--parallel "--runs-per-gpu 4"]

Each configuration is one `ssl-bench sweep --dataset digits -d size=28 --labels 50 --model smallcnn`
(digits enlarged to 1×28×28: an offline stand-in of MNIST's shape) over `--methods` (default the paper's
four: supervised, entmin, pimodel, dninv), timed
from the command's start to its end (process start, data, compilation, training, evaluation). On CUDA,
`nvidia-smi` is sampled every 0.5 s during each sweep: the mean and median GPU utilization are reported
(the share of time a kernel was running). Prints a markdown table: wall time, speed-up over the first
configuration, mean test accuracy (best validation) per method, GPU utilization.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def sample_gpu(path: Path):
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(
        ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "500"],
        stdout=open(path, "w"),
        stderr=subprocess.DEVNULL,
    )


def utilization(path: Path) -> str:
    try:
        values = [float(line.split(",")[0]) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return "–"
    return (
        f"{statistics.fmean(values):.0f} % mean, {statistics.median(values):.0f} % median ({len(values)} samples)"
        if values
        else "–"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--methods", default="supervised,entmin,pimodel,dninv")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--parallel", default="--workers 1", help="sweep options for parallel runs, e.g. '--runs-per-gpu 4'"
    )
    ap.add_argument("--extra", default="", help="more sweep options for every configuration, e.g. '--batch-lb 8'")
    ap.add_argument(
        "--config",
        action="append",
        required=True,
        help="NAME:SWEEP OPTIONS, e.g. compiled-bf16:'--compile --precision bf16'",
    )
    args = ap.parse_args()
    out = Path(args.out)
    rows, base = [], None
    for config in args.config:
        name, _, options = config.partition(":")
        runs = out / f"grid-{name}"
        shutil.rmtree(runs, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "ssl_bench.cli",
            "sweep",
            "--dataset",
            "digits",
            "-d",
            "size=28",
            "--labels",
            "50",
            "--model",
            "smallcnn",
            "--methods",
            args.methods,
            "--seeds",
            args.seeds,
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            "--out",
            str(runs),
            "--quiet",
            *shlex.split(args.parallel),
            *shlex.split(args.extra),
            *shlex.split(options),
        ]
        print("$", " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
        util_path = out / f"gpu-util-{name}.csv"
        sampler = sample_gpu(util_path)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if sampler is not None:
            sampler.terminate()
        (out / f"grid-{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode not in (0, 2):
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"sweep {name} failed with exit code {proc.returncode}")
        results = [json.loads(p.read_text()) for p in runs.glob("*/result.json")]
        by_method: dict[str, list[float]] = {}
        for r in results:
            by_method.setdefault(r["method"], []).append(100 * r["test_acc"])
        base = base or wall
        accs = ", ".join(f"{m} {statistics.fmean(a):.1f}" for m, a in sorted(by_method.items()))
        peaks = [r["peak_memory_mb"] for r in results if r.get("peak_memory_mb") is not None]
        peak = f"{max(peaks):.0f}" if peaks else "–"  # None on CPU
        fallbacks = sorted(
            {
                r["compiled_step"][key].split(":")[0]
                + f" ({r['method']}{', Adam' if key == 'optimizer_fallback' else ''})"
                for r in results
                for key in ("fallback", "optimizer_fallback")
                if (r.get("compiled_step") or {}).get(key)
            }
        )
        rows.append(
            f"| {name} | `{options.strip() or '(defaults)'}` | {wall:.0f} | {base / wall:.2f}× | {len(results)} | "
            f"{accs} | {utilization(util_path) if sampler else '–'} | {peak} | {'; '.join(fallbacks) or '–'} |"
        )
        print(rows[-1], flush=True)
    print(
        f"\nMNIST-50-shaped grid: digits 1×28×28, 50 labels, smallcnn, seeds {args.seeds}, {args.steps} steps, "
        f"`{args.parallel} {args.extra}`\n"
    )
    print(
        "| config | options | wall s | speed-up | runs | test % (best val) per method | GPU utilization "
        "| peak MB per run | fallbacks |"
    )
    print("|---|---|---:|---:|---:|---|---|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
