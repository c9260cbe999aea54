"""Eager against compiled steps side by side in one process (alternating, so that both see the same load).

    python benchmarks/compare_modes.py --models smallcnn,tinycnn --method dninv --batch 8,24 --device cpu

For each model × precision (fp32, bf16) the benchmark's eager and compiled steps (bench_step.make_step)
run `--rounds` times alternately; prints the median ms of each and eager / compiled (> 1: compiling pays).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smallcnn,tinycnn")
    ap.add_argument("--method", default="dninv")
    ap.add_argument("--batch", default="8,24")
    ap.add_argument("--device", default=None)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if args.device:
        os.environ["BENCH_DEVICE"] = args.device
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_step

    batch = tuple(map(int, args.batch.split(",")))
    print(f"{args.method}, batch {args.batch}, on {bench_step.describe_device()}\n")
    print("| model | precision | eager ms | compiled ms | eager / compiled |\n|---|---|---:|---:|---:|")
    for model in args.models.split(","):
        for precision in ("fp32", "bf16"):
            steps = {
                mode: bench_step.make_step(model, args.method, batch, precision, mode, {})
                for mode in ("eager", "compiled")
            }
            times: dict[str, list[float]] = {mode: [] for mode in steps}
            for _ in range(args.rounds):
                for mode, step in steps.items():
                    start = time.perf_counter()
                    step()
                    times[mode].append(time.perf_counter() - start)
            med = {mode: statistics.median(t) * 1e3 for mode, t in times.items()}
            print(
                f"| {model} | {precision} | {med['eager']:.1f} | {med['compiled']:.1f} | "
                f"{med['eager'] / med['compiled']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
