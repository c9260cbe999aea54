"""bf16 against fp32 (issue 13): the error bf16 autocast adds to x̂, and the final accuracy of short runs.

    .venv/bin/python benchmarks/precision_study.py xhat                       # x̂ error per model
    .venv/bin/python benchmarks/precision_study.py runs --seeds 0,1,2 --steps 300 [--size 28 --model smallcnn]

`xhat`: one batch of 160 real digits (normalized like training batches) through each model at its
initial weights, `x̂ = (∂f/∂x)ᵀ f(x)` under fp32 and under bf16 autocast; the relative error
‖x̂_bf16 − x̂_fp32‖ / ‖x̂_fp32‖ (whole batch) and the relative error of the logits. `runs`: `ssl-bench`
runs (the harness, default protocol but `--steps`) of dninv and supervised at fp32 and bf16, test
accuracy at the best-validation checkpoint, mean ± std over seeds. `--device` (default cpu).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from ssl_bench.inversion import reconstruct
from ssl_bench.models import create_model
from ssl_bench.run.precision import autocast


def digits_batch(size: int, channels: int, n: int = 160) -> torch.Tensor:
    from ssl_bench.data import get_dataset

    data = get_dataset("digits").load(
        data_dir=None, download=False, **({"size": size, "channels": channels} if size != 8 else {})
    )
    x = data.x_train[:n].float()
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / std


def xhat_errors(device: torch.device) -> list[str]:
    rows = ["| model | input | x̂ rel. error bf16 vs fp32 | logits rel. error |", "|---|---|---:|---:|"]
    for model_name, size, channels in [
        ("tinycnn", 8, 1),
        ("smallcnn", 28, 1),
        ("resnet3_16", 28, 1),
        ("largecnn", 32, 3),
    ]:
        x = digits_batch(size, channels).to(device)
        torch.manual_seed(0)
        model = create_model(model_name, num_classes=10, input_shape=tuple(x.shape[1:])).to(device).train()
        logits, x_hat = reconstruct(model, x)
        with autocast("bf16", device):
            logits_bf, x_hat_bf = reconstruct(model, x)
        rel = lambda a, b: ((a.float() - b).norm() / b.norm()).item()
        rows.append(
            f"| {model_name} | {channels}×{size}×{size} | {rel(x_hat_bf, x_hat):.4f} | {rel(logits_bf, logits):.4f} |"
        )
    return rows


def runs(args) -> list[str]:
    from ssl_bench.protocol import RunSpec, resolve
    from ssl_bench.run.training import train

    out = Path(args.out or tempfile.mkdtemp(prefix="precision-study-"))
    options = {"size": args.size} if args.size != 8 else {}
    rows = [
        f"| method | precision | test % (best val), {len(args.seeds)} seeds | per seed | wall s per run |",
        "|---|---|---|---|---:|",
    ]
    for method in args.methods:
        for precision in ("fp32", "bf16"):
            accs, walls = [], []
            for seed in args.seeds:
                spec = RunSpec(
                    method=method,
                    dataset="digits",
                    labels=50,
                    model=args.model,
                    seed=seed,
                    steps=args.steps,
                    dataset_options=options,
                    protocol={"precision": precision},
                    device=args.device,
                )
                r = train(resolve(spec), out, show_progress=False, force=True)
                accs.append(100 * r["test_acc"])
                walls.append(r["wall_time_s"])
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append(
                f"| {method} | {precision} | {statistics.fmean(accs):.2f} ± {sd:.2f} | "
                f"{', '.join(f'{a:.2f}' for a in accs)} | {statistics.fmean(walls):.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["xhat", "runs"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--methods", default="dninv,supervised")
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = args.methods.split(",")
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print("\n".join(xhat_errors(device) if args.what == "xhat" else runs(args)))


if __name__ == "__main__":
    main()
