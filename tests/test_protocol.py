"""The training protocol: it learns, it is reproducible, it is identical across methods, and it fails
and stops cleanly (non-finite loss, interruption) without losing what was written."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ssl_bench import records
from ssl_bench.errors import UserError
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run.streams import IndexStream
from ssl_bench.run.training import NonFiniteLoss, train


def spec(**kw) -> RunSpec:
    args = dict(method="supervised", dataset="digits", labels=50, steps=40, protocol={"eval_every": 10}, device="cpu")
    args.update(kw)
    return RunSpec(**args)


def run(tmp_path, **kw) -> dict:
    return train(resolve(spec(**kw)), tmp_path, show_progress=False)


def test_a_short_digits_run_learns(tmp_path):
    result = run(tmp_path, steps=200, protocol={"eval_every": 50})
    assert result["test_acc"] > 0.5  # chance is 0.1
    assert result["n_labeled"] == 50 and result["n_val"] == 300 and result["n_test"] == 497


def test_same_seed_twice_gives_identical_results_on_cpu(tmp_path):
    a = run(tmp_path / "a", method="pimodel", seed=3)
    b = run(tmp_path / "b", method="pimodel", seed=3)
    for key in (
        "test_acc",
        "test_acc_last",
        "val_acc_best",
        "val_acc_last",
        "best_step",
        "split_fingerprint",
        "protocol_fingerprint",
        "init_fingerprint",
        "run_id",
    ):
        assert a[key] == b[key], key
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]
    assert strip(records.read_jsonl(tmp_path / "a" / a["run_id"] / "metrics.jsonl")) == strip(
        records.read_jsonl(tmp_path / "b" / b["run_id"] / "metrics.jsonl")
    )
    c = run(tmp_path / "c", method="pimodel", seed=4)
    assert c["split_fingerprint"] != a["split_fingerprint"] and c["init_fingerprint"] != a["init_fingerprint"]


def test_the_thread_count_is_the_protocols_not_the_callers(tmp_path):
    """The same command gives the same numbers whatever threads the calling process uses (a sweep worker,
    a 2-core or 64-core machine): the run uses `cpu_threads`, records it, and fingerprints it."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = run(tmp_path / "a", method="entmin", steps=60)
        torch.set_num_threads(2)
        b = run(tmp_path / "b", method="entmin", steps=60)
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(previous)
    assert a["cpu_threads"] == b["cpu_threads"] == 1
    for key in ("test_acc", "test_acc_last", "val_acc_best", "protocol_fingerprint", "run_id"):
        assert a[key] == b[key], key
    last = lambda r, d: torch.load(tmp_path / d / r["run_id"] / records.LAST_CKPT)["model"]
    assert all(torch.equal(v, last(b, "b")[k]) for k, v in last(a, "a").items())
    two = run(tmp_path / "c", method="entmin", steps=60, protocol={"eval_every": 10, "cpu_threads": 2})
    assert two["cpu_threads"] == 2 and two["protocol_fingerprint"] != a["protocol_fingerprint"]


def test_warmup_rises_linearly_then_holds():
    from ssl_bench.protocol import ProtocolConfig, lr_factor

    p = ProtocolConfig(steps=1000, lr=0.01, warmup_steps=100, lr_schedule="constant")
    assert [lr_factor(p, i) for i in (0, 49, 99, 100, 999)] == [0.01, 0.5, 1.0, 1.0, 1.0]
    cosine = dataclasses.replace(p, lr_schedule="cosine")
    assert ProtocolConfig(steps=1000, lr=0.01).lr_schedule == "cosine"  # the default since issue 30 (docs/dninv.md)
    for i in (49, 100, 500, 999):
        assert lr_factor(cosine, i) == pytest.approx(min(1, (i + 1) / 100) * 0.5 * (1 + np.cos(np.pi * i / 1000)))
    assert lr_factor(cosine, 500) == pytest.approx(0.5) and lr_factor(cosine, 999) < 1e-5
    assert lr_factor(dataclasses.replace(p, warmup_steps=0), 0) == 1.0


def test_protocol_is_identical_across_methods(tmp_path, monkeypatch):
    """Split, initial weights and the labeled/unlabeled batch indices depend on the seed only."""
    seen: dict[tuple[str, int], list[list[int]]] = {}
    original = IndexStream.next
    current: list[tuple[str, int]] = []

    def spy(self):
        idx = original(self)
        seen.setdefault(current[0], []).append(idx.tolist())
        return idx

    monkeypatch.setattr(IndexStream, "next", spy)
    results = {}
    for seed in (0, 1):
        for method in ("supervised", "entmin", "pimodel", "dninv"):
            current[:] = [(method, seed)]
            results[method, seed] = run(tmp_path, method=method, seed=seed, steps=12)
    for seed in (0, 1):
        ref = results["supervised", seed]
        for method in ("entmin", "pimodel", "dninv"):
            r = results[method, seed]
            assert r["split_fingerprint"] == ref["split_fingerprint"]
            assert r["init_fingerprint"] == ref["init_fingerprint"]
            assert r["protocol_fingerprint"] == ref["protocol_fingerprint"]
            assert seen[method, seed] == seen["supervised", seed]
            split_a = json.loads((tmp_path / r["run_id"] / "split.json").read_text())
            split_b = json.loads((tmp_path / ref["run_id"] / "split.json").read_text())
            assert split_a == split_b
    assert seen["supervised", 0] != seen["supervised", 1]
    assert results["supervised", 0]["protocol_fingerprint"] != results["supervised", 1]["protocol_fingerprint"]
    assert results["supervised", 0]["init_fingerprint"] != results["supervised", 1]["init_fingerprint"]


def test_protocol_fingerprint_covers_the_protocol_not_the_method(tmp_path):
    base = run(tmp_path, method="entmin", steps=10)
    other_params = run(tmp_path, method="entmin", steps=10, params={"lambda_": "0.9"})
    other_batch = run(tmp_path, method="entmin", steps=10, protocol={"eval_every": 10, "batch_ulb": 64})
    other_steps = run(tmp_path, method="entmin", steps=20)
    assert other_params["protocol_fingerprint"] == base["protocol_fingerprint"]
    assert other_params["run_id"] != base["run_id"]
    assert other_batch["protocol_fingerprint"] != base["protocol_fingerprint"]
    assert other_steps["protocol_fingerprint"] != base["protocol_fingerprint"]


def test_index_stream_covers_every_index_once_per_epoch():
    gen = torch.Generator().manual_seed(0)
    stream = IndexStream(10, 4, gen, torch.device("cpu"))
    drawn = torch.cat([stream.next() for _ in range(5)]).tolist()  # 20 indices = 2 epochs
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    small = IndexStream(3, 8, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert len(small.next()) == 8  # a batch larger than the set spans several permutations


def failing_method(base, step_to_fail, exc):
    class Failing(base):
        def loss(self, model, batch, progress):
            loss, terms = super().loss(model, batch, progress)
            if progress.step == step_to_fail:
                if exc is None:
                    return loss * float("nan"), {k: v * float("nan") for k, v in terms.items()}
                raise exc
            return loss, terms

    return Failing


def test_non_finite_loss_stops_with_step_and_terms(tmp_path):
    resolved = resolve(spec(method="entmin"))
    resolved = dataclasses.replace(resolved, method_cls=failing_method(resolved.method_cls, 7, None))
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 7 of entmin: loss=nan, ce=nan, ent=nan"):
        train(resolved, tmp_path, show_progress=False)
    assert isinstance(NonFiniteLoss("x"), UserError)
    run_dir = tmp_path / resolved.run_id()
    assert records.failure(run_dir).startswith("non-finite loss at step 7 of entmin") and not records.is_complete(
        run_dir
    )


def test_interrupted_run_keeps_what_was_written(tmp_path):
    resolved = resolve(spec(steps=40))
    resolved = dataclasses.replace(resolved, method_cls=failing_method(resolved.method_cls, 25, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train(resolved, tmp_path, show_progress=False)
    run_dir = tmp_path / resolved.run_id()
    assert not records.is_complete(run_dir)
    assert json.loads((run_dir / "config.json").read_text())["method"] == "supervised"
    assert [r["step"] for r in records.read_jsonl(run_dir / "metrics.jsonl")] == [10, 20]
    best = torch.load(run_dir / "best.pt")
    assert best["step"] in (10, 20)
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    # running it again starts over and completes
    result = train(resolve(spec(steps=40)), tmp_path, show_progress=False)
    assert records.is_complete(run_dir) and result["steps"] == 40


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    records.write_json(path, {"a": 1})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(records.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        records.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_torn_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records.append_jsonl(path, {"step": 1})
    with open(path, "a") as fh:
        fh.write('{"step": 2, "val')
    assert records.read_jsonl(path) == [{"step": 1}]


def test_normalization_uses_training_split_only():
    from ssl_bench.data import get_dataset, make_split
    from ssl_bench.run.device_data import to_device

    data = get_dataset("digits").load()
    split = make_split(data.y_train, labels=50, val_size=300, num_classes=10, seed=0)
    dd = to_device(data, split, torch.device("cpu"))
    train_x = data.x_train[np.union1d(split.labeled, split.unlabeled)].float()
    assert torch.allclose(dd.mean, train_x.mean().reshape(1), atol=1e-4)
    assert torch.allclose(dd.std, train_x.std().reshape(1), atol=1e-4)
    assert not torch.allclose(dd.mean, data.x_train.float().mean().reshape(1), atol=1e-4)
    # stored as loaded (uint8: 4x less device memory), normalized per batch
    assert dd.x_ulb.dtype == torch.uint8 and dd.x_test.dtype == torch.uint8
    expected = (data.x_test.float() - train_x.mean()) / train_x.std()
    assert torch.allclose(dd.inputs(dd.x_test), expected, atol=1e-5)
    assert torch.equal(dd.x_val, data.x_train[split.val])


def test_a_run_is_rebuilt_from_its_config_json(tmp_path):
    from ssl_bench.protocol import spec_from_config

    original = resolve(
        spec(
            method="entmin",
            params={"lambda_": "0.9"},
            model_options={"width": 8},
            protocol={"eval_every": 5, "batch_ulb": 64},
            seed=2,
            steps=10,
        )
    )
    result = train(original, tmp_path, show_progress=False)
    config = json.loads((tmp_path / result["run_id"] / "config.json").read_text())
    rebuilt = resolve(spec_from_config(config))
    assert rebuilt.run_id() == original.run_id() and rebuilt.as_json() == original.as_json()
    assert resolve(spec_from_config(config, seed=3)).run_id() != original.run_id()
