"""The top kernels of a training step (torch.profiler), e.g. dninv's double backward on a paper model.

    python benchmarks/profile_step.py --model smallcnn --method dninv --batch 80,80 --precision fp32 --mode eager

Builds the step as bench_step.py does (ssl_bench.run.compiled: eager or compiled), runs it `--warmup` times,
then profiles `--steps` steps and prints the `--top` operators and kernels by self time on the device
(CUDA time on a GPU, CPU time otherwise), as a markdown-friendly table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--method", default="dninv")
    ap.add_argument("--batch", default="80,80")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--mode", default="eager", choices=["eager", "compiled"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    if args.device:
        os.environ["BENCH_DEVICE"] = args.device
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_step  # the benchmark's step, on BENCH_DEVICE
    from torch.profiler import ProfilerActivity, profile

    device = bench_step.DEVICE
    batch = tuple(map(int, args.batch.split(",")))
    info: dict = {}
    step = bench_step.make_step(args.model, args.method, batch, args.precision, args.mode, info)
    for _ in range(args.warmup):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(
        f"{args.model} {args.method} batch {args.batch} {args.precision} {args.mode} "
        f"on {bench_step.describe_device()}; "
        f"{args.steps} steps profiled; first call {info.get('first_call_s')} s; fallback: {info.get('fallback')}"
    )
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
