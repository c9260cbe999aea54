"""Compiled against eager training steps on the paper's models: does every step compile, and how far are
its gradients from eager's?

For each model (at its datasets' shape: LargeCNN/LargeUCNN 3×32×32, the others 1×28×28, bird10net 1×1000
with its 4 kHz kernel and no dropout, whose masks a compiled graph draws differently) × method, three
steps (progress 3, 4, 5 of 20; batch 4 + 4, random inputs) eager and compiled (`ssl_bench.run.compiled`,
Dynamo's recompile limit 2), and prints one Markdown row each: compiled or the fallback, the largest
relative gradient difference of the last step, whether every buffer (BatchNorm's running statistics, the
model's and those of the method's own modules, e.g. Mean Teacher's teacher) ends equal, both losses, the
compiled side's wall time.

    .venv/bin/python benchmarks/compile_models_check.py [MODELS] [--methods a,b,…] [--precision fp32|bf16] \\
        [--float64] [--backend aot_eager|inductor]

`timm:<name>` models (BatchNorm) run at 3×32×32.

aot_eager (default) traces exactly as inductor does, without code generation (minutes per function on
2 CPU cores). tests/test_compile.py holds the same check for a subset.
"""

from __future__ import annotations

import argparse
import time

import torch

from ssl_bench.config import build_config
from ssl_bench.method import Batch, MethodContext, Progress, load_method
from ssl_bench.models import create_model, layer_names
from ssl_bench.run import compiled
from ssl_bench.views import make_views

CPU = torch.device("cpu")
MODELS = "smallcnn,largecnn,resnet2_32,resnet3_16,smallucnn,largeucnn,uresnet2_32,uresnet3_16,bird10net"
CASES = [
    ("supervised", {}),
    ("entmin", {}),
    ("pimodel", {}),
    ("dninv", {}),
    ("dninv", {"formulation": "jvp"}),
    ("vat", {}),
    ("mixmatch", {}),
]


def net(model: str) -> tuple[tuple[int, ...], dict, str]:
    """(input shape, model options, modality)."""
    if model == "bird10net":
        return (1, 1000), {"kernel": 96, "stride": 48, "dropout": 0.0}, "signal"
    return (
        ((3, 32, 32) if model in ("largecnn", "largeucnn") or model.startswith("timm:") else (1, 28, 28)),
        {},
        "image",
    )


def three_steps(
    model_name: str, name: str, params: dict, compile: bool, precision: str = "fp32", dtype: torch.dtype = torch.float32
):
    shape, options, modality = net(model_name)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, input_shape=shape, **options).to(dtype)
    if params.get("gamma") == "auto":  # per-layer terms on the model's second and last named layers
        names = layer_names(model)
        params = {**params, "gamma": {names[min(1, len(names) - 1)]: 0.1, names[-1]: 0.05}}
    cls = load_method(name)
    method = cls(build_config(cls.Config, params, name), MethodContext(modality, 10, torch.Generator().manual_seed(5)))
    method.setup(model)
    warnings: list[str] = []
    step = (
        compiled.CompiledGradients(model, method, precision, CPU, f"{model_name}/{name}", warnings.append)
        if compile
        else compiled.eager_gradients(model, method, precision, CPU)
    )
    start = time.perf_counter()
    with torch._dynamo.config.patch(recompile_limit=2):
        for s in (3, 4, 5):
            for p in model.parameters():
                p.grad = None
            g = torch.Generator().manual_seed(0)
            batch = Batch(
                torch.randn(4, *shape, generator=g, dtype=dtype),
                torch.arange(4) % 10,
                torch.randn(4, *shape, generator=g, dtype=dtype),
            )
            loss, _ = step(make_views(method, batch, modality), Progress(s, 20))
    modules = {"model": model} | compiled.method_modules(method)
    buffers = {f"{m}.{n}": b.clone() for m, module in modules.items() for n, b in module.named_buffers()}
    return (
        [p.grad.clone() for p in model.parameters()],
        buffers,
        loss.item(),
        time.perf_counter() - start,
        (step.fallback if compile else None),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default=MODELS)
    ap.add_argument(
        "--methods",
        help="comma-separated method names (default: the cases above); dninv_jvp is dninv formulation=jvp, "
        "dninv_gamma dninv with per-layer terms on the model's second and last named layers (γ 0.1, 0.05)",
    )
    ap.add_argument("--backend", default="aot_eager")
    ap.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="the step's autocast, eager and compiled alike"
    )
    ap.add_argument(
        "--float64",
        action="store_true",
        help="model and inputs in float64 (with --precision fp32): what is left is no longer float32 rounding",
    )
    args = ap.parse_args()
    dtype = torch.float64 if args.float64 else torch.float32
    compiled.BACKEND = args.backend
    torch.set_num_threads(2)
    print(
        f"torch {torch.__version__}, backend {args.backend}, "
        f"{args.precision}{', float64 model and inputs' if args.float64 else ''}, CPU\n"
    )
    variants = {"dninv_jvp": ("dninv", {"formulation": "jvp"}), "dninv_gamma": ("dninv", {"gamma": "auto"})}
    cases = CASES if args.methods is None else [variants.get(m, (m, {})) for m in args.methods.split(",")]
    print(
        "| model | method | compiled | max rel. gradient difference | gradient cosine | buffers equal "
        "| loss eager / compiled | compiled s |"
    )
    print("|---|---|---|---:|---:|---|---|---:|")
    for model_name in args.models.split(","):
        for name, params in cases:
            label = name + "".join(f" {k}={v}" for k, v in params.items())
            try:
                ge, be, le, _, _ = three_steps(
                    model_name, name, params, compile=False, precision=args.precision, dtype=dtype
                )
            except ValueError as exc:  # refused by the method (dninv's JVP form on BatchNorm)
                print(f"| {model_name} | {label} | refused: {str(exc)[:80]}… | | | | | |", flush=True)
                continue
            gc, bc, lc, seconds, fallback = three_steps(
                model_name, name, params, compile=True, precision=args.precision, dtype=dtype
            )
            rel = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(gc, ge))
            cos = torch.nn.functional.cosine_similarity(
                torch.cat([g.flatten() for g in gc]).double(), torch.cat([g.flatten() for g in ge]).double(), dim=0
            ).item()  # float64: a float32 cosine can read 1.00001
            same = bc.keys() == be.keys() and all(torch.equal(bc[k], be[k]) for k in bc)
            print(
                f"| {model_name} | {label} | {'yes' if fallback is None else 'no: ' + fallback} | {rel:.1e} | "
                f"{cos:.6f} | {'yes' if same else 'NO'} ({len(bc)}) | {le:.5f} / {lc:.5f} | {seconds:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
