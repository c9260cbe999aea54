"""Do compiled training runs stay compiled to their last step? One `--compile` run per method on digits.

A step that compiles on its first call can still fall back later (a value that Dynamo specializes, such
as a ramp-up weight of the step, recompiles each step until the recompile limit). This trains whole runs
(`ssl_bench.run.training.train`, digits, 50 labels, warm-up 5 steps) and prints each run's `compiled_step`
record from result.json: compiled to the end or the fallback, and the first call's time (compilation).

    .venv/bin/python benchmarks/compiled_runs_check.py [--steps 150] [--methods a,b] [--backend aot_eager|inductor]
        [--model smallcnn --size 28]   (digits upscaled to 1×size×size: the MNIST-shaped stand-in)
        [-p gamma=conv2:0.1,conv3:linear:0.5:0]   (method parameters, as `ssl-bench run -p`)
        [--eager]   (the same runs uncompiled too)   [--eager-adam]   (only the gradient step compiled)

aot_eager traces as inductor does without code generation (fast on CPU); inductor is the real backend.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from ssl_bench.method import method_names
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run import compiled
from ssl_bench.run.training import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--methods", default=",".join(method_names()))
    ap.add_argument("--backend", default="aot_eager")
    ap.add_argument("--model", default=None, help="default: digits' own (tinycnn)")
    ap.add_argument("--size", type=int, default=None, help="digits upscaled to size×size")
    ap.add_argument("-p", dest="params", action="append", default=[], help="KEY=VALUE method parameter (repeatable)")
    ap.add_argument("--eager", action="store_true", help="also train each run without --compile, for its test accuracy")
    ap.add_argument(
        "--eager-adam",
        action="store_true",
        help="compile the gradient step only, Adam's step eager (tells the two apart)",
    )
    args = ap.parse_args()
    if args.eager_adam:
        compiled.optimizer_step = lambda optimizer, compile: optimizer.step
    params = dict(kv.split("=", 1) for kv in args.params)
    compiled.BACKEND = args.backend
    print(
        f"backend {args.backend}, {args.steps} steps, "
        f"digits{f' {args.size}×{args.size}' if args.size else ''} 50 labels, model {args.model or 'tinycnn'}, "
        f"params {params or 'defaults'}{', Adam eager' if args.eager_adam else ''}, CPU\n"
    )
    print("| method | compiled to the end | first call s | run s | test % | eager test % |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.methods.split(","):
        start = time.perf_counter()
        spec = lambda compile: RunSpec(
            method=name,
            dataset="digits",
            labels=50,
            model=args.model,
            dataset_options={"size": args.size} if args.size else {},
            params=params,
            steps=args.steps,
            protocol={"eval_every": max(args.steps // 3, 1), "compile": compile, "warmup_steps": 5},
            device="cpu",
        )
        with tempfile.TemporaryDirectory() as out:
            result = train(resolve(spec(True)), out, show_progress=False)
        seconds = time.perf_counter() - start
        eager = "–"
        if args.eager:
            with tempfile.TemporaryDirectory() as out:
                eager = f"{100 * train(resolve(spec(False)), out, show_progress=False)['test_acc']:.2f}"
        record = result["compiled_step"]
        status = ("yes" if record["compiled"] else f"no: {record['fallback']}") + (
            f"; Adam eager: {record['optimizer_fallback']}" if record.get("optimizer_fallback") else ""
        )
        print(
            f"| {name} | {status} | {record['first_call_s']} | {seconds:.0f} | "
            f"{100 * result['test_acc']:.2f} | {eager} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
