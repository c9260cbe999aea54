"""Why the 1-D Bird10 net barely learns the synthetic chirps, and what makes it learn (issue 30, item 2).

One run = (footing, variant, seed): a harness run (`ssl_bench.run.training.train`, the same run `ssl-bench run`
makes, with its run folder under `<out>/runs/`), then, from its checkpoints, the accuracy on the labeled
windows (to tell under-fitting from over-fitting) at the best-validation and at the last step. One JSON
per run in `<out>/results/`; `summary` prints the table.

A footing is the common ground of a grid (dataset, labels, model, options, budget); a variant is a
change to it: method and method params (`params`), model options (`model`), dataset options (`data`),
protocol fields (`protocol`, e.g. lr, steps, augment, warmup_steps) and `lr_scale` (× the lr in force).
Footings: `report` is what reports/chirps-bird10net was made with (bird10net, kernel 96, stride 48,
chirps in 250 ms windows with 50 % overlap, SNR 10 dB, 2000 steps, lr 0.01/3, no augmentation);
`defaults` passes only the model, the report's SNR and budget (`ssl-bench run --dataset chirps --model
bird10net -d snr_db=10 --steps 2000` at this commit: since issue 30, 500 ms windows with 90 % overlap and
the kernel/stride derived from the window). `--diag-every K` adds, for dninv runs, a diagnostic pass every K
steps on that step's batch:
each loss term, the gradient norm of each weighted term and their cosines (as benchmarks/dninv_stability.py
in the issue-30 work); the harness's own run is left untouched (the diagnostics run in a second,
identical loop only when asked for, see `diagnose`).

    # one run:
    python benchmarks/audio_study.py one --footing report --variant base --seed 0 --out runs/audio-study
    # a grid, N processes at a time (each OMP_NUM_THREADS=1, cpu_threads 1), then the table:
    python benchmarks/audio_study.py grid --footing report --variants base,lr_1e-3,no_dropout --seeds 0,1,2 \\
        --jobs 16 --device cuda --out runs/audio-study
    python benchmarks/audio_study.py summary runs/audio-study
    python benchmarks/audio_study.py list   # the footings and variants
    # an independent check of learnability: logistic regression on log-spectrograms of the same windows
    python benchmarks/audio_study.py probe --footing report --seeds 0,1,2
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

# footing -> RunSpec fields (method comes from the variant)
FOOTINGS = {
    # the committed report's runs, with chirps' windowing of that time (250 ms, 50 % overlap) spelled out
    "report": dict(
        dataset="chirps",
        labels=50,
        model="bird10net",
        dataset_options={"snr_db": 10, "window_ms": 250.0, "overlap": 0.5},
        model_options={"kernel": 96, "stride": 48},
        protocol={"steps": 2000},
    ),
    "defaults": dict(
        dataset="chirps",
        labels=50,
        model="bird10net",
        dataset_options={"snr_db": 10},
        model_options={},
        protocol={"steps": 2000},
    ),
}

# variant -> changes to the footing: method, params, model (options), data (options), protocol, lr_scale
VARIANTS: dict[str, dict] = {
    "base": {},
    # learning rate and budget
    "lr_x3": {"lr_scale": 3.0},
    "lr_x0.3": {"lr_scale": 0.3},
    "lr_1e-3": {"protocol": {"lr": 1e-3}},
    "steps_x3": {"protocol_scale": {"steps": 3}},
    # capacity / regularisation
    "no_dropout": {"model": {"dropout": 0.0}},
    "hidden_128": {"model": {"hidden": 128}},
    # the first layer: filterbank resolution and time resolution
    "k48_s24": {"model": {"kernel": 48, "stride": 24}},
    "k192_s96": {"model": {"kernel": 192, "stride": 96}},
    "k96_s24": {"model": {"kernel": 96, "stride": 24}},
    "k96_s12": {"model": {"kernel": 96, "stride": 12}},
    "k96_s48": {"model": {"kernel": 96, "stride": 48}},  # the committed report's (24 ms / 12 ms at 4 kHz)
    # windowing (dataset options)
    "win_500": {"data": {"window_ms": 500.0}},
    "win_500_ov_0.9": {"data": {"window_ms": 500.0, "overlap": 0.9}},
    "ov_0.9": {"data": {"overlap": 0.9}},
    "ov_0.5": {"data": {"overlap": 0.5}},
    "win_250": {"data": {"window_ms": 250.0}},
    # the paper's net exactly (1024/512) on chirps resampled to 44.1 kHz, 500 ms windows (slow on CPU)
    "sr_44100": {"data": {"sample_rate": 44100, "window_ms": 500.0}, "model": {"kernel": 1024, "stride": 512}},
    # the protocol's augmentation (every method alike), and its two parts alone (`augment_fn` swaps the
    # signal augmentation of `--augment weak` in this process; those runs get their own run folder)
    "augment": {"protocol": {"augment": "weak"}},
    "augment_shift_only": {"protocol": {"augment": "weak"}, "augment_fn": "shift"},
    "augment_noise_only": {"protocol": {"augment": "weak"}, "augment_fn": "noise"},
    # all labels (the paper's Bird10 setting: dninv as a regularizer of a supervised model)
    "all_labels": {"labels": None},
    "all_labels_dninv": {"labels": None, "method": "dninv"},
    # another net on the same data: tinycnn (3×3 convs, global mean pool: shift-invariant), chirps' default model
    "tinycnn": {"net": "tinycnn"},
    # the semi-supervised methods on the same footing
    "dninv": {"method": "dninv"},
    "entmin": {"method": "entmin"},
    "pimodel": {"method": "pimodel"},
    "dninv_augment": {"method": "dninv", "protocol": {"augment": "weak"}},
    "entmin_augment": {"method": "entmin", "protocol": {"augment": "weak"}},
    "pimodel_augment": {"method": "pimodel", "protocol": {"augment": "weak"}},
    "dninv_no_ent": {"method": "dninv", "params": {"beta": 1.0}},  # CE + reconstruction only
    "dninv_no_rec": {"method": "dninv", "params": {"beta": 0.0}},  # CE + entropy only
}


def _shift_only(x, gen):
    from ssl_bench.augment import shift_signals

    return shift_signals(x, gen)


def _noise_only(x, gen):
    from ssl_bench.augment import add_noise

    return add_noise(x, gen)


AUGMENT_FNS = {"shift": _shift_only, "noise": _noise_only}  # the two parts of the weak signal augmentation


def merged(footing: str, variant: str, extra: dict) -> dict:
    """The run's RunSpec fields (plus `lr_scale`) for a footing and a variant (and `--set` extras)."""
    f, v = FOOTINGS[footing], dict(VARIANTS[variant])
    for (
        k,
        val,
    ) in extra.items():  # one level deep: {"protocol": {"steps": 500}} keeps the variant's other protocol fields
        v[k] = {**v.get(k, {}), **val} if isinstance(val, dict) else val
    protocol = {**f["protocol"], **v.get("protocol", {})}
    return dict(
        method=v.get("method", "supervised"),
        params=v.get("params", {}),
        dataset=f["dataset"],
        labels=v.get("labels", f["labels"]),
        model=v.get("net", f["model"]),
        dataset_options={**f["dataset_options"], **v.get("data", {})},
        model_options={**(f["model_options"] if "net" not in v else {}), **v.get("model", {})},
        protocol=protocol,
        protocol_scale=v.get("protocol_scale", {}),
        lr_scale=v.get("lr_scale", 1.0),
        augment_fn=v.get("augment_fn"),
    )


def build(footing: str, variant: str, seed: int, device: str, extra: dict):
    import dataclasses

    from ssl_bench.protocol import RunSpec, resolve

    fields = merged(footing, variant, extra)
    lr_scale, scale, _ = fields.pop("lr_scale"), fields.pop("protocol_scale"), fields.pop("augment_fn")
    resolved = resolve(RunSpec(seed=seed, device=device, **fields))
    p = resolved.protocol
    changes = {k: type(getattr(p, k))(getattr(p, k) * s) for k, s in scale.items()}
    if lr_scale != 1.0:
        changes["lr"] = p.lr * lr_scale
    if changes:  # scaled fields go through RunSpec again, so the run id and fingerprint show them
        spec = resolved.spec
        steps = changes.pop("steps", spec.steps or p.steps)
        lr = changes.pop("lr", spec.lr or p.lr)
        resolved = resolve(dataclasses.replace(spec, steps=steps, lr=lr, protocol={**spec.protocol, **changes}))
    return resolved


def labeled_accuracy(run_dir: Path) -> dict:
    """Accuracy on the labeled windows (what the network was fit to) at the best and the last checkpoint."""
    from ssl_bench.reporting.reconstruct import load_checkpoint, load_run
    from ssl_bench.run.device_data import accuracy, predict

    model, dd, _config, _step = load_run(run_dir)
    out = {}
    for name, ckpt in (("best", "best.pt"), ("last", "last.pt")):
        model.load_state_dict(load_checkpoint(run_dir / ckpt)["model"])
        out[f"train_acc_{name}"] = accuracy(predict(model, dd.x_lb, 1024, dd.inputs), dd.y_lb)
    return out


def run_one(footing: str, variant: str, seed: int, out: Path, device: str, extra: dict, diag_every: int = 0) -> dict:
    from ssl_bench import augment
    from ssl_bench.run.runfolder import AlreadyComplete
    from ssl_bench.run.training import train

    resolved = build(footing, variant, seed, device, extra)
    fn = merged(footing, variant, extra)["augment_fn"]
    runs = out / ("runs" if fn is None else f"runs-augment_fn-{fn}")  # the run id does not show the swap
    if fn is not None:
        augment.AUGMENTATIONS["signal"] = AUGMENT_FNS[fn]
    t0 = time.perf_counter()
    try:
        result = train(resolved, runs, show_progress=False, echo=lambda line: None)
    except AlreadyComplete as done:
        result = done.result
    run_dir = runs / result["run_id"]
    row = {
        "footing": footing,
        "variant": variant,
        "seed": seed,
        "extra": extra,
        "method": resolved.spec.method,
        "labels": resolved.spec.labels,
        "augment_fn": fn,
        "model_options": resolved.spec.model_options,
        "dataset_options": resolved.spec.dataset_options,
        "protocol": {k: v for k, v in vars(resolved.protocol).items() if k != "seed"},
        "test_acc": result["test_acc"],
        "test_acc_last": result["test_acc_last"],
        "test_acc_recording": result.get("test_acc_recording"),
        "test_acc_recording_last": result.get("test_acc_recording_last"),
        "val_acc_best": result["val_acc_best"],
        "best_step": result["best_step"],
        "health": result["health"]["status"],
        "n_labeled": result["n_labeled"],
        "wall_time_s": result["wall_time_s"],
        "device": result["device"],
        "run_id": result["run_id"],
        "git_commit": result.get("git_commit"),
        **labeled_accuracy(run_dir),
    }
    if diag_every and resolved.spec.method == "dninv":
        row["diag"] = diagnose(resolved, diag_every)
    row["study_wall_s"] = round(time.perf_counter() - t0, 1)
    dest = out / "results" / f"{footing}-{variant}-s{seed}{tag(extra)}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(dest)
    return row


def diagnose(resolved, every: int) -> list[dict]:
    """dninv's terms along a second run of the harness's loop (same data, split, init, batches): every
    `every` steps, on that step's batch before the update, each term (ce, rec, ent), the gradient norm of
    each weighted term (α·CE, (1−α)β·R, (1−α)(1−β)·E) and their cosines; the update itself is the method's."""
    import torch
    import torch.nn.functional as F

    from ssl_bench.inversion import reconstruct_layers, squared_error
    from ssl_bench.losses import entropy
    from ssl_bench.method import MethodContext, Progress
    from ssl_bench.run.device_data import to_device
    from ssl_bench.run.distributed import World
    from ssl_bench.run.preparation import init_model, prepare, torch_threads
    from ssl_bench.run.streams import next_batch, protocol_streams
    from ssl_bench.run.training import set_lr
    from ssl_bench.seeding import derive_seed, make_generator
    from ssl_bench.views import make_views

    p, info, dev, world = resolved.protocol, resolved.info, resolved.device, World()
    rows = []
    with torch_threads(p.cpu_threads):
        data, split = prepare(resolved)
        model = init_model(resolved, tuple(data.x_train.shape[1:])).to(dev).train()
        dd = to_device(data, split, dev)
        torch.manual_seed(derive_seed(p.seed, world.stream_purpose("global")))
        method = resolved.method_cls(
            resolved.method_config,
            MethodContext(info.modality, info.num_classes, make_generator(p.seed, world.stream_purpose("method"), dev)),
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        streams = protocol_streams(dd, p, info.modality, dev)
        method.setup(model)
        params = [q for q in model.parameters() if q.requires_grad]
        cfg = method.config
        for step in range(p.steps):
            set_lr(optimizer, p, step)
            progress = Progress(step, p.steps)
            batch = make_views(method, next_batch(dd, streams, world), info.modality)
            if step % every == 0 or step == p.steps - 1:
                n_lb = len(batch.x_lb)
                x = torch.cat([batch.x_lb, batch.x_ulb])
                logits, x_hat, _ = reconstruct_layers(
                    model, x, (), input=True, create_graph=True, detach_cotangent=cfg.detach_cotangent
                )
                terms = {
                    "ce": F.cross_entropy(logits[:n_lb], batch.y_lb),
                    "rec": squared_error(x_hat, x, cfg.reduction),
                    "ent": entropy(logits[n_lb:]),
                }
                a, b = cfg.alpha.at(progress.fraction), cfg.beta.at(progress.fraction)
                weighted = {
                    "ce": a * terms["ce"],
                    "rec": (1 - a) * b * terms["rec"],
                    "ent": (1 - a) * (1 - b) * terms["ent"],
                }
                grads = {}
                for k, v in weighted.items():
                    g = torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
                    grads[k] = torch.cat(
                        [(gi if gi is not None else torch.zeros_like(q)).flatten() for gi, q in zip(g, params)]
                    )
                cos = lambda u, w: (grads[u] @ grads[w] / (grads[u].norm() * grads[w].norm() + 1e-30)).item()
                rows.append(
                    {
                        "step": step,
                        **{k: v.item() for k, v in terms.items()},
                        **{f"g_{k}": g.norm().item() for k, g in grads.items()},
                        "cos_ce_rec": cos("ce", "rec"),
                        "cos_ce_ent": cos("ce", "ent"),
                        "alpha": float(a),
                        "beta": float(b),
                    }
                )
                del logits, x_hat, terms, weighted, grads
            optimizer.zero_grad(set_to_none=True)
            loss, _logged = method.loss(model, batch, progress)
            loss.backward()
            if p.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), p.clip_grad_norm)
            optimizer.step()
            method.after_step(model, progress)
    return rows


def call_ceiling(dataset_options: dict) -> float:
    """Share of chirps' test windows that hold at least half a call (the rest carry their recording's
    label without evidence of it: a per-window accuracy much above this share plus chance on the rest is
    out of reach)."""
    from ssl_bench.data.synthetic import ChirpOptions, call_shares

    return float((call_shares(ChirpOptions(**dataset_options)) >= 0.5).mean())


def probe(args) -> None:
    """An independent check of learnability: logistic regression on log-spectrogram features of the same
    windows, the same labeled recordings (the harness's split of that seed) and the same test windows.
    Features: the log power spectrum (STFT 128/32, Hann) flattened over time (`flat`, keeps where in the
    window), or its mean and max over time (`pooled`, shift-invariant)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from ssl_bench.run.preparation import prepare

    for seed in parse_seeds(args.seeds):
        resolved = build(args.footing, args.variant, seed, "cpu", json.loads(args.set))
        data, split = prepare(resolved)
        spec = lambda x: torch.log(
            torch.stft(x[:, 0].float(), 128, 32, window=torch.hann_window(128), return_complex=True).abs() ** 2 + 1e-3
        )  # (N, F, T)
        s_tr, s_te = spec(data.x_train), spec(data.x_test)
        feats = {
            "flat": (s_tr.flatten(1), s_te.flatten(1)),
            "pooled": (torch.cat([s_tr.mean(2), s_tr.amax(2)], 1), torch.cat([s_te.mean(2), s_te.amax(2)], 1)),
        }
        y_te, g_te = data.y_test.numpy(), data.groups_test.numpy()
        for name, (a, b) in feats.items():
            a_lb, y_lb = a[split.labeled].numpy(), data.y_train[split.labeled].numpy()
            mu, sd = a_lb.mean(0), a_lb.std(0) + 1e-6
            clf = LogisticRegression(C=args.C, max_iter=3000).fit((a_lb - mu) / sd, y_lb)
            logits = clf.decision_function((b.numpy() - mu) / sd)
            per_rec = np.mean([logits[g_te == g].mean(0).argmax() == y_te[g_te == g][0] for g in np.unique(g_te)])
            print(
                f"| {args.footing} | {args.variant} | {seed} | {name} | {len(y_lb)} | "
                f"{100 * clf.score((a_lb - mu) / sd, y_lb):.1f} | "
                f"{100 * (logits.argmax(1) == y_te).mean():.1f} | {100 * per_rec:.1f} |",
                flush=True,
            )


def tag(extra: dict) -> str:
    """A file-name suffix for `--set` extras: their JSON, with what a file name should not hold replaced."""
    if not extra:
        return ""
    text = json.dumps(extra, sort_keys=True, separators=(",", ":"))
    return "-" + "".join(c if c.isalnum() or c in "._=-" else "_" for c in text.replace(":", "=")).strip("_")


def parse_seeds(text: str) -> list[int]:
    if "-" in text and "," not in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def grid(args) -> None:
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    jobs = [(v, s) for v in variants for s in parse_seeds(args.seeds)]
    out = Path(args.out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.time()

    def one(job):
        variant, seed = job
        dest = out / "results" / f"{args.footing}-{variant}-s{seed}{tag(json.loads(args.set))}.json"
        if dest.is_file():
            return f"{dest.name}: done before"
        if time.time() - start > args.deadline:
            return f"{dest.name}: skipped (deadline)"
        cmd = [
            sys.executable,
            __file__,
            "one",
            "--footing",
            args.footing,
            "--variant",
            variant,
            "--seed",
            str(seed),
            "--out",
            args.out,
            "--device",
            args.device,
            "--diag-every",
            str(args.diag_every),
            "--set",
            args.set,
        ]
        t = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        status = (
            proc.stdout.strip().splitlines()[-1]
            if proc.returncode == 0 and proc.stdout.strip()
            else f"FAILED rc={proc.returncode}: {proc.stderr.strip()[-600:]}"
        )
        return f"{dest.name} ({time.time() - t:.0f} s): {status}"

    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(one, jobs):
            print(line, flush=True)


def mean_sd(xs: list[float], scale: float = 100.0) -> str:
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "–"
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return f"{m:.1f} ± {sd:.1f}" if len(xs) > 1 else f"{m:.1f}"


def baseline(variant: str) -> str | None:
    """The supervised variant a method variant is compared with: the same protocol without the method."""
    v = VARIANTS.get(variant, {})
    if v.get("method", "supervised") == "supervised":
        return None
    rest = {k: val for k, val in v.items() if k not in ("method", "params")}
    same = [name for name, w in VARIANTS.items() if w.get("method", "supervised") == "supervised" and w == rest]
    return same[0] if same else None


def ceiling(options: dict, cache: dict) -> str:
    key = json.dumps(options, sort_keys=True)
    if key not in cache:
        cache[key] = call_ceiling(options)
    return f"{100 * cache[key]:.1f}"


def summary(args) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(Path(args.folder, "results").glob("*.json"))]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["footing"], r["variant"], tag(r.get("extra", {}))), []).append(r)
    order, footings = {v: i for i, v in enumerate(VARIANTS)}, {f: i for i, f in enumerate(FOOTINGS)}
    groups = dict(
        sorted(
            groups.items(),
            key=lambda kv: (footings.get(kv[0][0], len(footings)), kv[0][2], order.get(kv[0][1], len(order))),
        )
    )
    ceilings: dict[str, float] = {}
    print(
        "| footing | variant | n | test/window @best val | test/window @last | per recording @best val "
        "| labeled-window acc @best val | @last | val best | best step | wall s/run | windows with ≥ ½ call |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (footing, variant, extra), rs in groups.items():
        rs.sort(key=lambda r: r["seed"])
        col = lambda k: [r.get(k) for r in rs]
        print(
            f"| {footing} | {variant}{extra} | {len(rs)} | {mean_sd(col('test_acc'))} | "
            f"{mean_sd(col('test_acc_last'))} | {mean_sd(col('test_acc_recording'))} | "
            f"{mean_sd(col('train_acc_best'))} | {mean_sd(col('train_acc_last'))} | {mean_sd(col('val_acc_best'))} | "
            f"{mean_sd(col('best_step'), 1.0)} | {mean_sd(col('wall_time_s'), 1.0)} | "
            f"{ceiling(rs[0]['dataset_options'], ceilings)} |"
        )
    paired = [(k, rs) for k, rs in groups.items() if baseline(k[1]) and (k[0], baseline(k[1]), k[2]) in groups]
    if paired:
        from ssl_bench.reporting.stats import paired_difference

        print("\nPaired differences to the same protocol's supervised run, same seeds (pp, mean [95 % t interval]):\n")
        print("| footing | variant | vs | Δ test/window @best val | Δ @last | Δ per recording @best val |")
        print("|---|---|---|---|---|---|")
        for (footing, variant, extra), rs in paired:
            base_rs = groups[(footing, baseline(variant), extra)]
            d = lambda k: paired_difference(
                {r["seed"]: 100 * r[k] for r in rs}, {r["seed"]: 100 * r[k] for r in base_rs}
            )
            print(
                f"| {footing} | {variant}{extra} | {baseline(variant)} | {d('test_acc')} | {d('test_acc_last')} | "
                f"{d('test_acc_recording')} |"
            )
    diag = [r for r in rows if r.get("diag")]
    if diag:
        print("\ndninv's terms and the gradient norms of its weighted terms (mean over seeds, at the steps shown):\n")
        print(
            "| footing | variant | step | CE | rec | ent | ‖∇ α·CE‖ | ‖∇ (1−α)β·R‖ | ‖∇ (1−α)(1−β)·E‖ "
            "| ratio rec/ce | cos(ce, rec) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        by: dict[tuple, list[dict]] = {}
        for r in diag:
            by.setdefault((r["footing"], r["variant"]), []).append(r)
        for (footing, variant), rs in by.items():
            steps = [d["step"] for d in rs[0]["diag"]]
            shown = sorted({steps[0], steps[len(steps) // 4], steps[len(steps) // 2], steps[-1]})
            for s in shown:
                ds = [d for r in rs for d in r["diag"] if d["step"] == s]
                m = lambda k: sum(d[k] for d in ds) / len(ds)
                print(
                    f"| {footing} | {variant} | {s} | {m('ce'):.3f} | {m('rec'):.3f} | {m('ent'):.3f} | "
                    f"{m('g_ce'):.3g} | {m('g_rec'):.3g} | {m('g_ent'):.3g} | "
                    f"{sum(d['g_rec'] / max(d['g_ce'], 1e-30) for d in ds) / len(ds):.3g} | {m('cos_ce_rec'):+.2f} |"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("one", "grid"):
        p = sub.add_parser(name)
        p.add_argument("--footing", default="report", choices=list(FOOTINGS))
        p.add_argument("--out", default="runs/audio-study")
        p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
        p.add_argument(
            "--diag-every",
            type=int,
            default=0,
            help="dninv runs: diagnostics every K steps (0 = none; a second loop, about doubles the time)",
        )
        p.add_argument(
            "--set",
            default="{}",
            help='JSON merged into every variant, e.g. \'{"protocol": {"steps": 500}}\' for a quick check',
        )
        if name == "one":
            p.add_argument("--variant", default="base", choices=list(VARIANTS))
            p.add_argument("--seed", type=int, default=0)
        else:
            p.add_argument("--variants", default="base", help="comma-separated, or all")
            p.add_argument("--seeds", default="0,1,2", help="0,1,2 or 0-4")
            p.add_argument("--jobs", type=int, default=1, help="processes at a time (each single-threaded)")
            p.add_argument("--deadline", type=float, default=float("inf"), help="seconds after which no new run starts")
    s = sub.add_parser("summary")
    s.add_argument("folder")
    pr = sub.add_parser(
        "probe", help="logistic regression on log-spectrogram features of the same windows and labeled recordings"
    )
    pr.add_argument("--footing", default="report", choices=list(FOOTINGS))
    pr.add_argument("--variant", default="base", choices=list(VARIANTS))
    pr.add_argument("--seeds", default="0,1,2")
    pr.add_argument("--set", default="{}")
    pr.add_argument("--C", type=float, default=0.1, help="inverse L2 strength")
    sub.add_parser("list")
    args = ap.parse_args()
    if args.cmd == "one":
        extra = json.loads(args.set)
        r = run_one(args.footing, args.variant, args.seed, Path(args.out), args.device, extra, args.diag_every)
        print(
            f"{r['method']} test/window {100 * r['test_acc']:.1f} %, "
            f"per recording {100 * (r['test_acc_recording'] or 0):.1f} %, "
            f"labeled windows {100 * r['train_acc_best']:.1f} % (best val) / {100 * r['train_acc_last']:.1f} % (last), "
            f"{r['wall_time_s']:.0f} s on {r['device']}"
        )
    elif args.cmd == "grid":
        grid(args)
    elif args.cmd == "summary":
        summary(args)
    elif args.cmd == "probe":
        print(
            "| footing | variant | seed | features | labeled windows | labeled acc | test/window | per recording |\n"
            "|---|---|---|---|---|---|---|---|"
        )
        probe(args)
    else:
        for k, v in FOOTINGS.items():
            print(f"footing {k}: {json.dumps(v)}")
        for k, v in VARIANTS.items():
            print(f"variant {k}: {json.dumps(v)}")


if __name__ == "__main__":
    main()
