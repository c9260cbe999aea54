"""Step time of `dninv` against `supervised` and an entropy-regularized step (`entmin`), per image model.

A step is what the training loop does per batch: `method.loss` → `backward` (the optimizer update is the
same for every method and left out). Every method gets the same model, the same MNIST-shaped batch
(1×28×28, 10 classes) and the same device. Run explicitly (the project's pytest config disables
benchmarks by default):

    .venv/bin/python -m pytest benchmarks/bench_step.py --benchmark-enable --benchmark-json=out.json

Environment: `BENCH_DEVICE` (cpu | cuda; default cuda when available), `BENCH_BATCH` ("8,24" = labeled,
unlabeled; default 8,24 on CPU and 80,80 on CUDA), `BENCH_THREADS` (CPU threads; default 1, the least
noisy on a shared machine). `python benchmarks/bench_step.py summarize out.json` prints the table
(mean step time and the ratios dninv/supervised and dninv/entmin) kept in benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.config import build_config
from ssl_bench.method import Batch, MethodContext, Progress, load_method
from ssl_bench.models import create_model, get_model_entry, model_names

DEVICE = torch.device(os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
B_LB, B_ULB = map(int, os.environ.get("BENCH_BATCH", "8,24" if DEVICE.type == "cpu" else "80,80").split(","))
SHAPE, CLASSES = (1, 28, 28), 10
METHODS = ("supervised", "entmin", "dninv")
MODELS = [m for m in model_names() if "image" in get_model_entry(m).modalities]
if DEVICE.type == "cpu":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))


def make_step(model_name: str, method_name: str):
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=CLASSES, input_shape=SHAPE).to(DEVICE).train()
    cls = load_method(method_name)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    method = cls(build_config(cls.Config, {}, method_name), MethodContext("image", CLASSES, gen, AUGMENTATIONS["image"]))
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        torch.randn(B_LB, *SHAPE, generator=g).to(DEVICE),
        (torch.arange(B_LB) % CLASSES).to(DEVICE),
        torch.randn(B_ULB, *SHAPE, generator=g).to(DEVICE),
    )

    def step():
        model.zero_grad(set_to_none=True)
        loss, _ = method.loss(model, batch, Progress(1, 10))
        loss.backward()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()  # sync point: time the work, not the launch

    step()  # warm-up: kernel selection, allocator
    return step


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_step(benchmark, model, method):
    benchmark.group = model
    benchmark.extra_info.update(device=describe_device(), batch=f"{B_LB}+{B_ULB}", threads=torch.get_num_threads(), torch=torch.__version__)
    benchmark(make_step(model, method))


def describe_device() -> str:
    if DEVICE.type == "cuda":
        return torch.cuda.get_device_name(DEVICE)
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        return f"{names[0]} ({len(names)} logical CPUs)"
    except (OSError, IndexError):
        import platform

        return platform.processor() or "cpu"


def summarize(path: str) -> str:
    """A markdown table from a `--benchmark-json` file: mean ms per step and dninv's ratios."""
    doc = json.load(open(path))
    times: dict[str, dict[str, float]] = {}
    extra = {}
    for bench in doc["benchmarks"]:
        times.setdefault(bench["params"]["model"], {})[bench["params"]["method"]] = bench["stats"]["mean"] * 1e3
        extra = bench["extra_info"]
    lines = [
        f"device: {extra.get('device')}; batch {extra.get('batch')} (labeled+unlabeled) of 1×28×28; "
        f"threads {extra.get('threads')}; torch {extra.get('torch')}; {doc['datetime']}",
        "",
        "| model | supervised ms | entmin ms | dninv ms | dninv / supervised | dninv / entmin |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, t in sorted(times.items()):
        lines.append(
            f"| {model} | {t['supervised']:.1f} | {t['entmin']:.1f} | {t['dninv']:.1f} | "
            f"{t['dninv'] / t['supervised']:.2f} | {t['dninv'] / t['entmin']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "summarize":
        sys.exit("usage: python benchmarks/bench_step.py summarize BENCHMARK.json")
    print(summarize(sys.argv[2]))
