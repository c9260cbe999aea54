"""Why the paper's models died at the paper's learning rates, and what fixes it (issue 10, docs/models.md).

A bare supervised loop (no harness) over `create_model`, on digits enlarged to an MNIST-shaped 1×28×28
(or, with `--chans 3 --size 32`, an SVHN/CIFAR-shaped 3×32×32), 50 labels, Adam at the model's paper
learning rate, batches of 32. It compares initializations (`torch`: PyTorch's default; `glorot`: Lasagne's
default, Glorot-uniform weights and zero biases; `he`: the models' own, ssl_bench.models.init) with and
without a linear learning-rate warm-up, and reports the test accuracy and whether the network died
(one predicted class). `--trace` prints, for one run, the fraction of dead channels per layer (a channel
that is zero for every sample of a probe batch) over the first steps.

    python benchmarks/init_study.py --models smallcnn --inits torch,he --warmups 0,100 --seeds 0,1,2
    python benchmarks/init_study.py --models smallcnn --inits he --warmups 0 --seeds 0 --trace 40
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.data.digits import load_digits
from ssl_bench.models import create_model, forward_intermediates, get_model_entry, layer_names
from ssl_bench.models.init import LINEAR_LAYERS


def reinit(model: nn.Module, init: str) -> None:
    """`he` keeps the model's own initialization; `torch` and `glorot` replace it."""
    for m in model.modules():
        if isinstance(m, LINEAR_LAYERS):
            if init == "torch":
                m.reset_parameters()
            elif init == "glorot":
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)


def stand_in(size: int, chans: int):
    d = load_digits(size=size)
    x, xt = d.x_train.float().repeat(1, chans, 1, 1), d.x_test.float().repeat(1, chans, 1, 1)
    mean, std = x.mean(), x.std()
    return (x - mean) / std, d.y_train, (xt - mean) / std, d.y_test


def dead_channels(model: nn.Module, probe: torch.Tensor) -> list[float]:
    with torch.no_grad():
        _, z = forward_intermediates(model, probe, layer_names(model))
    return [float((v.flatten(2).amax(2).amax(0) <= 0).float().mean()) for v in z.values()]


def run(args, model_name: str, init: str, warmup: int, seed: int, data) -> str:
    x, y, xt, yt = data
    g = torch.Generator().manual_seed(seed)
    per_class = args.labels // 10
    idx = torch.cat(
        [
            torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:per_class]]
            for c in range(10)
        ]
    )
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10, input_shape=tuple(x.shape[1:]))
    reinit(model, init)
    lr = get_model_entry(model_name).lr
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for step in range(args.steps):
        opt.param_groups[0]["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        if args.trace and step < args.trace and (step < 8 or step % 5 == 0):
            shown = " ".join(f"{v:.2f}" for v in dead_channels(model, x[:256]))
            print(f"  step {step:3d}  dead channels per layer: {shown}", flush=True)
        b = idx[torch.randint(len(idx), (args.batch,), generator=g)]
        loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 256]) for i in range(0, len(xt), 256)]).argmax(1)
    acc = 100 * (pred == yt).float().mean().item()
    classes = len(pred.unique())
    return (
        f"| {model_name} | {init} | {warmup} | {seed} | {acc:.1f} | {classes} | "
        f"{'**one class**' if classes == 1 else ''} | {time.perf_counter() - start:.0f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smallcnn")
    ap.add_argument("--inits", default="torch,he")
    ap.add_argument("--warmups", default="0,100")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--chans", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trace", type=int, default=0, help="print dead channels over the first N steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = stand_in(args.size, args.chans)
    print(
        f"digits at {args.chans}×{args.size}×{args.size}, {args.labels} labels, {args.steps} steps, "
        f"batch {args.batch}, torch {torch.__version__}"
    )
    print(
        "| model | init | warm-up | seed | test % | classes predicted | | s |\n|---|---|---:|---:|---:|---:|---|---:|"
    )
    for model_name in args.models.split(","):
        for init in args.inits.split(","):
            for warmup in map(int, args.warmups.split(",")):
                for seed in map(int, args.seeds.split(",")):
                    print(run(args, model_name, init, warmup, seed, data), flush=True)


if __name__ == "__main__":
    main()
