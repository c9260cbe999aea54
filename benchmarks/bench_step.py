"""Step time of `dninv` against `supervised` and an entropy-regularized step (`entmin`), per image model.

A step is what the training loop does per batch: the method's views (if it declares any), `method.loss`
→ `backward`, `method.after_step` (the optimizer update is the same for every method and left out). Every
method gets the same model, the same MNIST-shaped batch (1×28×28, 10 classes) and the same device. Run
explicitly (the project's pytest config disables benchmarks by default):

    .venv/bin/python -m pytest benchmarks/bench_step.py --benchmark-enable --benchmark-json=out.json

Environment: `BENCH_DEVICE` (cpu | cuda; default cuda when available), `BENCH_BATCH` ("8,24" = labeled,
unlabeled; default 8,24 on CPU and 80,80 on CUDA; several batches separated by `;`, e.g. "80,80;512,512"),
`BENCH_THREADS` (CPU threads; default 1, the least noisy on a shared machine), `BENCH_MODELS`
(comma-separated; default every image model), `BENCH_METHODS` (default supervised,entmin,dninv; also
`dninv_jvp`, dninv with `formulation=jvp`: the same gradient by a JVP instead of the double backward),
`BENCH_PRECISION` ("fp32", "bf16" or "fp32,bf16"; default fp32), `BENCH_MODE` ("eager", "compiled" or
both; default eager), `BENCH_CUDNN_BENCHMARK` (1: `torch.backends.cudnn.benchmark`, cuDNN times its
convolution algorithms on the first call of each shape instead of choosing by heuristics; default 0),
`BENCH_CHANNELS_LAST` (1: model and inputs in `torch.channels_last` memory format, the layout cuDNN's
tensor-core kernels use; default 0), `BENCH_SHAPE` (input C,H,W; default 1,28,28: MNIST's shape). A compiled
step is the training loop's (ssl_bench.run.compiled); its compile time
(first call) is in `extra_info`, not in the timing. `python benchmarks/bench_step.py summarize out.json`
prints the tables (mean step time and the ratios dninv/supervised and dninv/entmin, and with `dninv_jvp`
its ratios to entmin and to dninv) kept in benchmarks/results/. On CPU, e.g. (docs/dninv.md):

    BENCH_MODELS=tinycnn,smallcnn BENCH_METHODS=entmin,dninv,dninv_jvp .venv/bin/python -m pytest \
        benchmarks/bench_step.py --benchmark-enable --benchmark-json=out.json -q
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.method import Batch, MethodContext, Progress, load_method
from ssl_bench.models import create_model, get_model_entry, model_names
from ssl_bench.run import compiled
from ssl_bench.views import make_views

DEVICE = torch.device(os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
BATCHES = [
    tuple(map(int, b.split(",")))
    for b in os.environ.get("BENCH_BATCH", "8,24" if DEVICE.type == "cpu" else "80,80").split(";")
]
SHAPE, CLASSES = tuple(map(int, os.environ.get("BENCH_SHAPE", "1,28,28").split(","))), 10
METHODS = os.environ.get("BENCH_METHODS", "supervised,entmin,dninv").split(",")
VARIANTS = {
    "dninv_jvp": ("dninv", {"formulation": "jvp"})
}  # benchmark name -> (method, params); other names: the method at its defaults
MODELS = (
    os.environ.get("BENCH_MODELS", "").split(",")
    if os.environ.get("BENCH_MODELS")
    else [m for m in model_names() if "image" in get_model_entry(m).modalities]
)
PRECISIONS = os.environ.get("BENCH_PRECISION", "fp32").split(",")
MODES = os.environ.get("BENCH_MODE", "eager").split(",")
CUDNN_BENCHMARK = os.environ.get("BENCH_CUDNN_BENCHMARK", "0") == "1"
torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
CHANNELS_LAST = os.environ.get("BENCH_CHANNELS_LAST", "0") == "1"
MEMORY_FORMAT = torch.channels_last if CHANNELS_LAST else torch.contiguous_format
if DEVICE.type == "cpu":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))


def make_step(
    model_name: str,
    method_name: str,
    batch_size: tuple[int, int] = BATCHES[0],
    precision: str = "fp32",
    mode: str = "eager",
    info: dict | None = None,
):
    B_LB, B_ULB = batch_size
    torch.manual_seed(0)
    model = (
        create_model(model_name, num_classes=CLASSES, input_shape=SHAPE).to(DEVICE, memory_format=MEMORY_FORMAT).train()
    )
    method_name, params = VARIANTS.get(method_name, (method_name, {}))
    cls = load_method(method_name)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    method = cls(build_config(cls.Config, params, method_name), MethodContext("image", CLASSES, gen))
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        torch.randn(B_LB, *SHAPE, generator=g).to(DEVICE, memory_format=MEMORY_FORMAT),
        (torch.arange(B_LB) % CLASSES).to(DEVICE),
        torch.randn(B_ULB, *SHAPE, generator=g).to(DEVICE, memory_format=MEMORY_FORMAT),
    )

    method.setup(model)  # as the loop does: state that mirrors the model (an EMA teacher)
    warnings: list[str] = []
    gradients = compiled.gradients(
        model, method, precision, mode == "compiled", DEVICE, f"{model_name}/{method_name}", warnings.append
    )

    def step():
        model.zero_grad(set_to_none=True)
        gradients(
            make_views(method, batch, "image"), Progress(1, 10)
        )  # the method's views, method.loss → backward, as the training loop does it
        method.after_step(model, Progress(1, 10))  # e.g. the EMA teacher's update
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()  # sync point: time the work, not the launch

    start = time.perf_counter()
    step()  # warm-up: compilation, kernel selection, allocator
    if info is not None:
        info.update(first_call_s=round(time.perf_counter() - start, 2), fallback="; ".join(warnings) or None)
    step()  # a compiled step with CUDA graphs records its graph on a later call
    return step


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", BATCHES, ids=[f"{a}+{b}" for a, b in BATCHES])
def test_step(benchmark, model, method, precision, mode, batch):
    benchmark.group = f"{model} {batch[0]}+{batch[1]} {precision} {mode}"
    benchmark.extra_info.update(
        device=describe_device(),
        batch=f"{batch[0]}+{batch[1]}",
        precision=precision,
        mode=mode,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        cudnn_benchmark=CUDNN_BENCHMARK,
        channels_last=CHANNELS_LAST,
        shape="×".join(map(str, SHAPE)),
    )
    benchmark(make_step(model, method, batch, precision, mode, benchmark.extra_info))


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
    """Markdown tables from a `--benchmark-json` file: mean ms per step and dninv's ratios, one table per
    batch × precision × mode (files of the earlier layout, without those fields, give one table)."""
    doc = json.load(open(path))
    tables: dict[tuple, dict[str, dict[str, float]]] = {}
    compile_s: dict[tuple, float] = {}
    extra = {}
    for bench in doc["benchmarks"]:
        extra = bench["extra_info"]
        key = (extra.get("batch"), extra.get("precision", "fp32"), extra.get("mode", "eager"))
        params = bench["params"]
        tables.setdefault(key, {}).setdefault(params["model"], {})[params["method"]] = bench["stats"]["mean"] * 1e3
        if extra.get("mode") == "compiled":
            compile_s[(*key, params["model"], params["method"])] = extra.get("first_call_s")
    lines = [
        f"device: {extra.get('device')}; inputs {extra.get('shape', '1×28×28')}; threads {extra.get('threads')}; "
        f"cudnn.benchmark {extra.get('cudnn_benchmark', False)}; channels-last {extra.get('channels_last', False)}; "
        f"torch {extra.get('torch')}; {doc['datetime']}"
    ]
    fmt = lambda t, m: f"{t[m]:.2f}" if m in t else "–"
    ratio = lambda t, a, b: f"{t[a] / t[b]:.2f}" if a in t and b in t else "–"
    for (batch, precision, mode), times in tables.items():
        jvp = any("dninv_jvp" in t for t in times.values())  # its columns only when it was measured
        lines += [
            "",
            f"batch {batch} (labeled+unlabeled), {precision}, {mode}",
            "",
            "| model | supervised ms | entmin ms | dninv ms | dninv / supervised | dninv / entmin |"
            + (" dninv_jvp ms | dninv_jvp / entmin | dninv_jvp / dninv |" if jvp else "")
            + (f" compile s (entmin, dninv{', dninv_jvp' if jvp else ''}) |" if mode == "compiled" else ""),
            "|---|---:|---:|---:|---:|---:|"
            + ("---:|---:|---:|" if jvp else "")
            + ("---|" if mode == "compiled" else ""),
        ]
        for model, t in sorted(times.items()):
            row = (
                f"| {model} | {fmt(t, 'supervised')} | {fmt(t, 'entmin')} | {fmt(t, 'dninv')} | "
                f"{ratio(t, 'dninv', 'supervised')} | {ratio(t, 'dninv', 'entmin')} |"
            )
            if jvp:
                row += (
                    f" {fmt(t, 'dninv_jvp')} | {ratio(t, 'dninv_jvp', 'entmin')} | {ratio(t, 'dninv_jvp', 'dninv')} |"
                )
            if mode == "compiled":
                row += (
                    " "
                    + ", ".join(
                        str(compile_s.get((batch, precision, mode, model, m)))
                        for m in ("entmin", "dninv", *(["dninv_jvp"] if jvp else []))
                    )
                    + " |"
                )
            lines.append(row)
        others = sorted({m for t in times.values() for m in t} - {"supervised", "entmin", "dninv", "dninv_jvp"})
        if others and any("supervised" in t for t in times.values()):  # every method's step against supervised's
            names = ["entmin", "dninv", *(["dninv_jvp"] if jvp else []), *others]
            lines += [
                "",
                f"every method's step relative to supervised's (batch {batch}, {precision}, {mode}): ms (× supervised)",
                "",
                "| model | " + " | ".join(names) + " |",
                "|---|" + "---:|" * len(names),
            ]
            for model, t in sorted(times.items()):
                cell = lambda m: f"{t[m]:.1f} ({t[m] / t['supervised']:.1f}×)" if m in t and "supervised" in t else "–"
                lines.append(f"| {model} | " + " | ".join(cell(m) for m in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "summarize":
        sys.exit("usage: python benchmarks/bench_step.py summarize BENCHMARK.json")
    print(summarize(sys.argv[2]))
