"""dninv's late collapse, measured (issue 30): runs the training loop's own pieces with diagnostics.

One run = (model stand-in, seed, variant). Every `--diag-every` steps, on that step's batch, before the
optimizer step: each loss term, the gradient norm of each *weighted* term (α·CE, (1−α)β·R, (1−α)(1−β)·E)
taken separately, their cosines, the weight norm, the logits' norm and the batch's top-class share; on
the validation set: accuracy, top-class share, mean logit norm, the fraction of dead ReLU channels (no
positive output for any validation sample), the mean entropy; Adam's mean sqrt(v) and the mean relative
update |Δθ|/|θ|. A run is collapsed at an evaluation when one class takes ≥ 95 % of the validation set
(ssl_bench.run.health's rule) after the warm-up.

The loop is the harness's (`training.set_lr`, `next_batch`, `make_views`, `method.loss`, clip, Adam step,
`method.after_step`) on the harness's data, split, initial weights and batch streams: a variant's run at
its defaults is the same run `ssl-bench run` makes on that device, apart from the extra gradient passes
(which change no state).

    # one run (CPU or GPU):
    python benchmarks/dninv_stability.py run --model smallcnn --seed 0 --variant base --out runs/stability
    # the grid: stand-ins × seeds × variants, N processes at a time, then the summary:
    python benchmarks/dninv_stability.py grid --seeds 0-4 --jobs 16 --out runs/stability
    python benchmarks/dninv_stability.py summary runs/stability > benchmarks/results/dninv-stability.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

# The four image stand-ins of the paper-models report (digits made MNIST- or CIFAR-shaped), at twice
# the budget the committed report uses (issue 30): model -> (dataset options, protocol overrides).
STAND_INS = {
    "smallcnn": ({"size": 28}, {"steps": 1200}),
    "largecnn": ({"size": 32, "channels": 3}, {"steps": 300, "batch_lb": 8, "batch_ulb": 8}),
    "resnet2_32": ({"size": 28}, {"steps": 1200}),
    "resnet3_16": ({"size": 28}, {"steps": 1200}),
}

# Ablations: (method, method params, protocol overrides). "base" is dninv at its defaults.
VARIANTS = {
    "base": ("dninv", {}, {}),
    "no_ent": ("dninv", {"beta": 1.0}, {}),  # β = 1: CE + reconstruction, no entropy term
    "no_rec": ("dninv", {"beta": 0.0}, {}),  # β = 0: CE + entropy, no reconstruction
    "clip1": ("dninv", {}, {"clip_grad_norm": 1.0}),
    "cosine": ("dninv", {}, {"lr_schedule": "cosine"}),
    "lr_third": ("dninv", {}, {"lr_scale": 1 / 3}),
    "detach": ("dninv", {"detach_cotangent": True}, {}),
    "beta_ramp": (
        "dninv",
        {"beta": "linear:1:0.2"},
        {},
    ),  # the paper's eq. 13 idea: reconstruction first, entropy later
    "adam_b2_099": ("dninv", {}, {"adam_beta2": 0.99}),  # Adam's second moment tracks a gradient spike 10× faster
    "leaky": ("dninv", {}, {"model_act": "leaky_relu"}),  # leaky ReLU (slope 0.1): no unit can die
    "adam_eps_1e-5": (
        "dninv",
        {},
        {"adam_eps": 1e-5},
    ),  # Adam's ε 1e-8 -> 1e-5 (Thilak et al. 2022: a larger ε suppresses slingshots)
    "supervised": ("supervised", {}, {}),
    "entmin": ("entmin", {}, {}),
}


def build(model_name: str, seed: int, variant: str, device: str, extra_params: dict, extra_protocol: dict):
    from ssl_bench.protocol import RunSpec, resolve

    method, params, protocol = VARIANTS[variant]
    options, base_protocol = STAND_INS[model_name]
    protocol = {**base_protocol, **protocol, **extra_protocol}
    lr_scale = protocol.pop("lr_scale", 1.0)
    protocol.pop("adam_beta2", None)  # read by run_one
    protocol.pop("adam_eps", None)  # read by run_one
    act = protocol.pop("model_act", None)
    spec = RunSpec(
        method=method,
        dataset="digits",
        labels=50,
        model=model_name,
        seed=seed,
        params={**params, **extra_params},
        dataset_options=options,
        protocol={**protocol, "eval_every": 50},
        device=device,
        model_options={"act": act} if act else {},
    )
    resolved = resolve(spec)
    if lr_scale != 1.0:
        import dataclasses

        resolved = dataclasses.replace(
            resolved, protocol=dataclasses.replace(resolved.protocol, lr=resolved.protocol.lr * lr_scale)
        )
    return resolved


def weighted_terms(method, logged: dict, progress) -> dict[str, torch.Tensor]:
    """dninv's loss split into its weighted terms (each with its graph); other methods: the whole loss."""
    cfg = method.config
    t = progress.fraction
    alpha, beta = cfg.alpha.at(t), cfg.beta.at(t)
    return {
        "ce": alpha * logged["ce"],
        "rec": (1 - alpha) * beta * logged["rec"],
        "ent": (1 - alpha) * (1 - beta) * logged["ent"],
    }


def term_tensors(method, model, batch, progress):
    """Recompute dninv's terms with their graphs (the method's `logged` values are detached)."""
    import torch.nn.functional as F

    from ssl_bench.inversion import reconstruct_layers, squared_error
    from ssl_bench.losses import entropy

    n_lb = len(batch.x_lb)
    x = torch.cat([batch.x_lb, batch.x_ulb])
    logits, x_hat, _ = reconstruct_layers(
        model, x, (), input=True, create_graph=True, detach_cotangent=method.config.detach_cotangent
    )
    return logits, {
        "ce": F.cross_entropy(logits[:n_lb], batch.y_lb),
        "rec": squared_error(x_hat, x, method.config.reduction),
        "ent": entropy(logits[n_lb:]),
    }


def flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def relu_taps(model: nn.Module) -> tuple[list, dict]:
    """Forward hooks on every ReLU recording, per channel, whether any sample had a positive output."""
    alive: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_module, _inp, out):
            dims = [0] + list(range(2, out.dim()))
            a = (out > 0).amax(dim=dims) if out.dim() > 1 else (out > 0)
            alive[name] = a if name not in alive else (alive[name] | a)

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    return handles, alive


@torch.no_grad()
def validation_diagnostics(model, dd, p) -> dict:
    from ssl_bench.losses import entropy
    from ssl_bench.run.device_data import predict
    from ssl_bench.run.health import top_class_share

    handles, alive = relu_taps(model)
    try:
        logits = predict(model, dd.x_val, p.eval_batch, dd.inputs)
    finally:
        for h in handles:
            h.remove()
    top, share = top_class_share(logits)
    n_ch = sum(a.numel() for a in alive.values())
    dead = sum(int((~a).sum()) for a in alive.values())
    return {
        "val_acc": (logits.argmax(1) == dd.y_val).float().mean().item(),
        "val_top_class": top,
        "val_top_share": share,
        "val_logit_norm": logits.norm(dim=1).mean().item(),
        "val_entropy": entropy(logits).item(),
        "dead_channels": dead / max(n_ch, 1),
    }


def run_one(
    model_name: str,
    seed: int,
    variant: str,
    out: Path,
    device: str,
    diag_every: int,
    params: dict,
    protocol: dict,
    verbose: bool = False,
) -> dict:
    from ssl_bench.method import MethodContext, Progress
    from ssl_bench.run.device_data import accuracy, predict, to_device
    from ssl_bench.run.distributed import World
    from ssl_bench.run.health import COLLAPSE_SHARE
    from ssl_bench.run.preparation import init_model, prepare, torch_threads
    from ssl_bench.run.streams import next_batch, protocol_streams
    from ssl_bench.run.training import set_lr
    from ssl_bench.seeding import derive_seed, make_generator
    from ssl_bench.views import make_views

    resolved = build(model_name, seed, variant, device, params, protocol)
    p, info, dev = resolved.protocol, resolved.info, resolved.device
    torch.backends.cudnn.benchmark = (
        dev.type == "cuda"
    )  # faster double-backward convolutions; no effect on what is studied
    world = World()
    t0 = time.perf_counter()
    with torch_threads(p.cpu_threads):
        data, split = prepare(resolved)
        model = init_model(resolved, tuple(data.x_train.shape[1:]))
        dd = to_device(data, split, dev)
        model.to(dev).train()
        torch.manual_seed(derive_seed(p.seed, world.stream_purpose("global")))
        generator = make_generator(p.seed, world.stream_purpose("method"), dev)
        method = resolved.method_cls(resolved.method_config, MethodContext(info.modality, info.num_classes, generator))
        beta2 = VARIANTS[variant][2].get("adam_beta2", 0.999)
        eps = VARIANTS[variant][2].get("adam_eps", 1e-8)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=p.lr, betas=(0.9, beta2), eps=eps, weight_decay=p.weight_decay
        )
        streams = protocol_streams(dd, p, info.modality, dev)
        method.setup(model)
        params_list = [q for q in model.parameters() if q.requires_grad]
        rows, evals = [], []
        collapsed_at = None
        for step in range(p.steps):
            set_lr(optimizer, p, step)
            progress = Progress(step, p.steps)
            batch = make_views(method, next_batch(dd, streams, world), info.modality)
            row = None
            if step % diag_every == 0 and resolved.spec.method == "dninv":
                logits, terms = term_tensors(method, model, batch, progress)
                weighted = weighted_terms(method, terms, progress)
                grads = {k: flat_grad(v, params_list) for k, v in weighted.items()}
                norms = {k: g.norm().item() for k, g in grads.items()}
                cos = lambda a, b: (grads[a] @ grads[b] / (grads[a].norm() * grads[b].norm() + 1e-30)).item()
                row = {
                    "step": step,
                    **{k: v.item() for k, v in terms.items()},
                    **{f"g_{k}": v for k, v in norms.items()},
                    "cos_ce_rec": cos("ce", "rec"),
                    "cos_ce_ent": cos("ce", "ent"),
                    "cos_rec_ent": cos("rec", "ent"),
                    "batch_logit_norm": logits.detach().norm(dim=1).mean().item(),
                    "batch_top_share": (
                        torch.bincount(logits.argmax(1), minlength=info.num_classes).max() / len(logits)
                    ).item(),
                }
                del logits, terms, weighted, grads
            optimizer.zero_grad(set_to_none=True)
            before = [q.detach().clone() for q in params_list] if row is not None else None
            loss, logged = method.loss(model, batch, progress)
            loss.backward()
            if row is not None:
                row["g_total"] = torch.cat([q.grad.flatten() for q in params_list if q.grad is not None]).norm().item()
            if p.clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), p.clip_grad_norm)
            optimizer.step()
            method.after_step(model, progress)
            if row is not None:
                with torch.no_grad():
                    w = torch.cat([q.flatten() for q in params_list])
                    dw = torch.cat([(q - b).flatten() for q, b in zip(params_list, before)])
                    v = [optimizer.state[q]["exp_avg_sq"] for q in params_list if q in optimizer.state]
                row.update(
                    {
                        "loss": loss.item(),
                        "weight_norm": w.norm().item(),
                        "rel_update": (dw.norm() / w.norm()).item(),
                        "adam_sqrt_v": torch.cat([x.flatten() for x in v]).sqrt().mean().item() if v else float("nan"),
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                )
                rows.append(row)
            done = step + 1
            if done % p.eval_every == 0 or done == p.steps:
                model.eval()
                ev = {"step": done, **validation_diagnostics(model, dd, p)}
                model.train()
                evals.append(ev)
                if verbose:
                    d = rows[-1] if rows else {}
                    print(
                        json.dumps(
                            {
                                **ev,
                                **{
                                    k: d.get(k)
                                    for k in (
                                        "ce",
                                        "rec",
                                        "ent",
                                        "g_ce",
                                        "g_rec",
                                        "g_ent",
                                        "cos_ce_rec",
                                        "cos_ce_ent",
                                        "batch_logit_norm",
                                        "rel_update",
                                        "weight_norm",
                                    )
                                },
                            }
                        ),
                        flush=True,
                    )
                if collapsed_at is None and done > p.warmup_steps and ev["val_top_share"] >= COLLAPSE_SHARE:
                    collapsed_at = done
        model.eval()
        test_acc = accuracy(predict(model, dd.x_test, p.eval_batch, dd.inputs), dd.y_test)
    last = evals[-1]
    result = {
        "model": model_name,
        "seed": seed,
        "variant": variant,
        "method": resolved.spec.method,
        "params": params,
        "protocol_overrides": protocol,
        "lr": p.lr,
        "steps": p.steps,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "collapsed_at": collapsed_at,
        "collapsed_last": last["val_top_share"] >= COLLAPSE_SHARE,
        "best_val": max(e["val_acc"] for e in evals),
        "val_last": last["val_acc"],
        "test_last": test_acc,
        "wall_s": round(time.perf_counter() - t0, 1),
        "diag": rows,
        "evals": evals,
    }
    out.mkdir(parents=True, exist_ok=True)
    name = f"{model_name}-{variant}-s{seed}.json"
    tmp = out / f".{name}.tmp"
    tmp.write_text(json.dumps(result))
    tmp.replace(out / name)
    return result


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def plan_jobs(plan: str, seeds: list[int]) -> list[tuple[str, int, str]]:
    """`MODELS:VARIANTS;…` (`all` = every stand-in or variant) as (model, seed, variant) jobs in priority order."""
    jobs = []
    for part in plan.split(";"):
        models, _, variants = part.partition(":")
        models = list(STAND_INS) if models == "all" else models.split(",")
        variants = list(VARIANTS) if variants in ("", "all") else variants.split(",")
        jobs += [(m, s, v) for v in variants for s in seeds for m in models if (m, s, v) not in jobs]
    return jobs


def grid(args) -> None:
    jobs = plan_jobs(args.plan, parse_seeds(args.seeds))
    todo = [j for j in jobs if not (Path(args.out) / f"{j[0]}-{j[2]}-s{j[1]}.json").exists()]
    print(
        f"{len(todo)} of {len(jobs)} runs to do, {args.jobs} at a time on {args.device}; "
        f"no new run after {args.deadline} s",
        flush=True,
    )
    t0 = time.perf_counter()

    def launch(job):
        m, s, v = job
        if time.perf_counter() - t0 > args.deadline:
            return
        cmd = [
            sys.executable,
            __file__,
            "run",
            "--model",
            m,
            "--seed",
            str(s),
            "--variant",
            v,
            "--out",
            args.out,
            "--device",
            args.device,
            "--diag-every",
            str(args.diag_every),
        ] + (["--steps", str(args.steps)] if args.steps else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        status = (
            "ok"
            if r.returncode == 0
            else f"FAILED rc={r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}"
        )
        print(f"[{time.perf_counter() - t0:6.0f}s] {m} {v} s{s}: {status}", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(launch, todo))
    left = [j for j in todo if not (Path(args.out) / f"{j[0]}-{j[2]}-s{j[1]}.json").exists()]
    print(f"grid done in {time.perf_counter() - t0:.0f}s; {len(left)} not run (deadline or failure)", flush=True)


def mean_sd(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "–"
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def death_event(r: dict) -> bool:
    """The share of dead ReLU channels rose by at least 0.2 between two consecutive evaluations."""
    dead = [e["dead_channels"] for e in r["evals"]]
    return any(b - a >= 0.2 for a, b in zip(dead, dead[1:]))


def worst_drop(r: dict) -> float:
    """The largest fall of validation accuracy below its best so far."""
    best, drop = 0.0, 0.0
    for e in r["evals"]:
        best = max(best, e["val_acc"])
        drop = max(drop, best - e["val_acc"])
    return drop


def summary(args) -> None:
    runs = [json.loads(f.read_text()) for f in sorted(Path(args.folder).glob("*.json"))]
    if not runs:
        sys.exit(f"no results in {args.folder}")
    devices = sorted({r["device_name"] for r in runs})
    print(f"# dninv stability study ({len(runs)} runs; device: {', '.join(devices)})\n")
    print(
        "Digits stand-ins (MNIST-shaped 1×28×28 for smallcnn and the ResNets, "
        "CIFAR-shaped 3×32×32 for largecnn), 50 labels,"
    )
    print(
        "twice the committed report's budget; evaluations every 50 steps. "
        "Collapsed: ≥ 95 % of the validation set in one class"
    )
    print(
        "at some evaluation after the warm-up (`at last`: at the last one). Accuracies: mean ± sd over seeds, in %.\n"
    )
    print(
        "Death events: runs in which the share of dead ReLU channels (no positive output on any validation sample) rose"
    )
    print(
        "by ≥ 20 points between two evaluations 50 steps apart. "
        "Worst drop: the largest fall of validation accuracy below"
    )
    print("its best so far, the run's worst moment (mean over seeds, points).\n")
    print(
        "| model | variant | seeds | collapsed (ever / at last) | death events | worst drop "
        "| best val | val @ last | test @ last |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    order = list(VARIANTS)
    key = lambda r: (list(STAND_INS).index(r["model"]), order.index(r["variant"]), r["seed"])
    runs.sort(key=key)
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["model"], r["variant"]), []).append(r)
    for (m, v), rs in groups.items():
        ever = sum(r["collapsed_at"] is not None for r in rs)
        at_last = sum(r["collapsed_last"] for r in rs)
        deaths = sum(death_event(r) for r in rs)
        drop = sum(worst_drop(r) for r in rs) / len(rs)
        print(
            f"| {m} | {v} | {len(rs)} | {ever} / {at_last} | {deaths} | {100 * drop:.1f} | "
            f"{mean_sd([r['best_val'] for r in rs])} | {mean_sd([r['val_last'] for r in rs])} | "
            f"{mean_sd([r['test_last'] for r in rs])} |"
        )
    print(
        "\n## Before a collapse: diagnostics of collapsed dninv runs "
        "(last diagnostic before the collapse vs the first after warm-up)\n"
    )
    print(
        "| run | collapsed at | ce | rec | ent | ‖∇αCE‖ | ‖∇(1−α)βR‖ | ‖∇(1−α)(1−β)E‖ | cos(CE,R) | cos(CE,E) "
        "| logit norm (val) | dead channels | rel. update |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if r["collapsed_at"] is None or not r["diag"]:
            continue
        ev = {e["step"]: e for e in r["evals"]}
        for tag, d in (
            ("warm-up end", next((d for d in r["diag"] if d["step"] >= 100), r["diag"][0])),
            ("before", max((d for d in r["diag"] if d["step"] < r["collapsed_at"]), key=lambda d: d["step"])),
        ):
            e = ev.get(min(ev, key=lambda s: abs(s - d["step"])))
            print(
                f"| {r['model']} {r['variant']} s{r['seed']} ({tag}, step {d['step']}) | {r['collapsed_at']} | "
                f"{d['ce']:.3g} | {d['rec']:.3g} | {d['ent']:.3g} | "
                f"{d['g_ce']:.3g} | {d['g_rec']:.3g} | {d['g_ent']:.3g} | "
                f"{d['cos_ce_rec']:.2f} | {d['cos_ce_ent']:.2f} | "
                f"{e['val_logit_norm']:.3g} | {e['dead_channels']:.2f} | {d['rel_update']:.2g} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True, choices=list(STAND_INS))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--variant", default="base", choices=list(VARIANTS))
    r.add_argument("--out", default="runs/stability")
    r.add_argument("--device", default="cpu")
    r.add_argument("--diag-every", type=int, default=25)
    r.add_argument("--steps", type=int, help="override the budget (for a quick check)")
    r.add_argument("--verbose", action="store_true", help="print each evaluation's diagnostics")
    g = sub.add_parser("grid")
    g.add_argument("--plan", default="all:all", help="MODELS:VARIANTS;… in priority order (all = every one)")
    g.add_argument("--deadline", type=float, default=float("inf"), help="seconds after which no new run starts")
    g.add_argument("--seeds", default="0-4")
    g.add_argument("--jobs", type=int, default=2)
    g.add_argument("--out", default="runs/stability")
    g.add_argument("--device", default="cpu")
    g.add_argument("--diag-every", type=int, default=25)
    g.add_argument("--steps", type=int, help="override every run's budget (a dry run)")
    s = sub.add_parser("summary")
    s.add_argument("folder")
    args = ap.parse_args()
    if args.cmd == "run":
        res = run_one(
            args.model,
            args.seed,
            args.variant,
            Path(args.out),
            args.device,
            args.diag_every,
            {},
            {"steps": args.steps} if args.steps else {},
            verbose=args.verbose,
        )
        print(json.dumps({k: v for k, v in res.items() if k not in ("diag", "evals")}))
    elif args.cmd == "grid":
        grid(args)
    else:
        summary(args)


if __name__ == "__main__":
    main()
