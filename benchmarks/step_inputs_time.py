"""Host time a compiled step spends collecting its inputs: walking the modules every step (as until
2026-11-28) against reading the (module, attribute) pairs found once per run (`ssl_bench.run.compiled`).

    .venv/bin/python benchmarks/step_inputs_time.py [MODELS]

Prints one Markdown row per model × method (entmin: the model alone; meanteacher: with its teacher's
buffers), in µs per step, the mean of 2,000 collections on one thread.
"""

from __future__ import annotations

import sys
import time

import torch

from ssl_bench.method import MethodContext, load_method
from ssl_bench.models import create_model
from ssl_bench.run import compiled

MODELS = "smallcnn,largecnn,resnet2_32,resnet3_16,timm:resnet18"
REPEATS = 2000


def per_step_us(collect) -> float:
    start = time.perf_counter()
    for _ in range(REPEATS):
        collect()
    return (time.perf_counter() - start) / REPEATS * 1e6


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU, µs per step\n")
    print("| model | method | tensors | walking the modules | reading the pairs |")
    print("|---|---|---:|---:|---:|")
    for name in (sys.argv[1] if len(sys.argv) > 1 else MODELS).split(","):
        shape = (3, 32, 32) if name in ("largecnn",) or name.startswith("timm:") else (1, 28, 28)
        for method_name in ("entmin", "meanteacher"):
            model, cls = create_model(name, num_classes=10, input_shape=shape), load_method(method_name)
            method = cls(cls.Config(), MethodContext("image", 10, torch.Generator()))
            method.setup(model)
            step = compiled.CompiledGradients(model, method, "fp32", torch.device("cpu"), name, print)

            def walk():
                params = {f"model.{n}": p for n, p in model.named_parameters() if p.requires_grad}
                buffers = {f"model.{n}": b for n, b in model.named_buffers()}
                buffers |= {
                    f"method_modules.{k}.{n}": b
                    for k, m in compiled.method_modules(method).items()
                    for n, b in m.named_buffers()
                }
                return params, buffers

            params, buffers = walk()
            for mine, slots in ((params, step.params), (buffers, step.buffers)):  # the same tensors, in the same order
                read_once = compiled._read(slots)
                assert list(mine) == list(read_once) and all(mine[k] is read_once[k] for k in mine)
            read = lambda: (compiled._read(step.params), compiled._read(step.buffers))
            print(
                f"| {name} | {method_name} | {len(params) + len(buffers)} | {per_step_us(walk):.0f} | "
                f"{per_step_us(read):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
