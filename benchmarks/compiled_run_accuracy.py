"""The 20-step compiled dninv run of docs/speed.md: test accuracy eager, aot_eager and inductor (CPU).

    .venv/bin/python benchmarks/compiled_run_accuracy.py [--backends eager,aot_eager,inductor]

`RunSpec(method="dninv", dataset="digits", labels=50, steps=20, protocol={"eval_every": 10})`, with
`compile` off ("eager") or on with the given torch.compile backend (the compiled Adam step included).
"""

from __future__ import annotations

import argparse
import tempfile

from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run import compiled
from ssl_bench.run.training import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="eager,aot_eager,inductor")
    args = ap.parse_args()
    print("| backend | test % | compiled to the end | first call s |\n|---|---:|---|---:|")
    for backend in args.backends.split(","):
        if backend != "eager":
            compiled.BACKEND = backend
        spec = RunSpec(
            method="dninv",
            dataset="digits",
            labels=50,
            steps=20,
            protocol={"eval_every": 10, "compile": backend != "eager"},
            device="cpu",
        )
        with tempfile.TemporaryDirectory() as out:
            result = train(resolve(spec), out, show_progress=False)
        record = result.get("compiled_step") or {}
        print(
            f"| {backend} | {100 * result['test_acc']:.2f} | {record.get('compiled', '–')} | "
            f"{record.get('first_call_s', '–')} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
