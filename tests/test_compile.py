"""Compiled training steps (`--compile`, ssl_bench.run.compiled) and the speed options of the CLI.

Compiled and eager gradients agree for every registered method on `tinycnn` (a method that does not
trace runs eager with exactly one warning line and then equals eager bit for bit). Most cases compile
with the `aot_eager` backend — the same Dynamo + torch.func + AOTAutograd tracing as `inductor`, without
code generation, which costs 20–70 s per function on this project's 2-core machine; one test compiles
dninv with inductor (slow-marked, opt-in: SSL_BENCH_INDUCTOR=1) and prints its compile time. Eager steps
are untouched: a run without `--compile` keeps its run id and gives the same numbers as before the option
existed.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters

from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.method import Batch, Progress, SSLMethod, method_names
from ssl_bench.models import create_model
from ssl_bench.protocol import ProtocolConfig, RunSpec, protocol_fields, resolve
from ssl_bench.run import compiled
from ssl_bench.run.training import train
from ssl_bench.views import make_views
from tests import method_checks

CPU = torch.device("cpu")


TINY = ("tinycnn", (1, 8, 8))  # (model, input shape)


def make_batch(shape: tuple[int, ...] = TINY[1]) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(6, *shape, generator=g), torch.arange(6) % 10, torch.randn(10, *shape, generator=g))


def make(name: str, net: tuple[str, tuple[int, ...]] = TINY, **params):
    torch.manual_seed(0)
    model = create_model(net[0], num_classes=10, input_shape=net[1])
    method = method_checks.make_method(name, **params)
    method.setup(model)  # as the loop does
    return model, method


STEPS = range(3, 8)  # of 20: progress 0.16 … 0.37, inside every default ramp-up (Π-model, Mean Teacher, Pseudo-Label)


def steps(step_fn, model, method, shape: tuple[int, ...] = TINY[1]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The gradients of the last of five calls at successive steps (a compiled step's first call, then cached
    ones: a weight that specialized on the step would recompile at each), and its loss; each batch with the
    method's views, as the loop makes them."""
    for step in STEPS:
        for p in model.parameters():
            p.grad = None
        loss, logged = step_fn(make_views(method, make_batch(shape), "image"), Progress(step, 20))
    assert set(logged) >= {"ce"}
    return [p.grad.clone() for p in model.parameters()], loss.detach()


def eager_and_compiled(name: str, net: tuple[str, tuple[int, ...]] = TINY, **params):
    model, method = make(name, net, **params)
    ref = steps(compiled.eager_gradients(model, method, "fp32", CPU), model, method, net[1])
    model, method = make(name, net, **params)
    warnings: list[str] = []
    step = compiled.CompiledGradients(model, method, "fp32", CPU, f"{net[0]}/{name}", warnings.append)
    return ref, steps(step, model, method, net[1]), step, warnings


def assert_close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-5) -> None:
    for x, y in zip(a, b):
        assert (x - y).abs().max() <= tol * y.abs().max().clamp_min(1e-12)


CASES = [(name, {}) for name in method_names()] + [
    ("dninv", {"detach_cotangent": True}),
    ("dninv", {"beta": "linear:1:0.2", "alpha": "cosine:0.5:0.9"}),
    ("dninv", {"gamma": "conv1:0.2,conv3:linear:0.5:0"}),  # per-layer terms (eq. 11), through LayerTaps
    ("dninv", {"beta": "0", "gamma": "conv2:0.3"}),  # per-layer terms without x̂
]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{'-'.join(p) or 'defaults'}" for n, p in CASES])
def test_compiled_gradients_equal_eager_for_every_method(name, params, monkeypatch):
    """...and every method compiles once for the whole run: `Progress.step` is symbolic, so the five
    steps must be served by at most two graphs (Dynamo's limit, lowered from 8; with 8 a step-specialized
    weight would still fall back, after 8 compilations — Π-model's and Mean Teacher's ramp-up did until
    2026-11-28)."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    with torch._dynamo.config.patch(recompile_limit=2):
        (g_ref, loss_ref), (g, loss), step, warnings = eager_and_compiled(name, **params)
    assert torch.allclose(loss, loss_ref, rtol=1e-6)
    assert_close(g, g_ref)
    assert step.fallback is None, step.fallback
    assert warnings == [] and step.record()["compiled"] and step.record()["first_call_s"] > 0


def test_per_layer_terms_add_no_forward_pass_to_the_compiled_graph(monkeypatch):
    """The probes' shapes come from an extra forward pass (LayerTaps.zeros); its outputs are unused, so the
    traced graph drops it: dninv with two γ layers has exactly the convolutions of dninv without them."""
    graphs: list[list[str]] = []

    def record(gm, example_inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return gm

    monkeypatch.setattr(compiled, "BACKEND", aot_autograd(fw_compiler=record))
    convolutions = []
    for params in ({}, {"gamma": "conv2:0.1,conv3:0.05"}):
        graphs.clear()
        *_, step, _ = eager_and_compiled("dninv", **params)
        assert step.fallback is None and len(graphs) == 1
        convolutions.append(sum("convolution" in op for op in graphs[0]))
    assert convolutions[0] == convolutions[1] > 0  # 15 on tinycnn (forward, x̂'s VJP, the double backward)


class SharedBlock(nn.Module):
    """One block applied twice: a per-layer term on it has no single output to probe in a compiled step
    (eager differentiates with respect to its last output)."""

    feature_layers = ("block",)

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.block(self.block(x)).flatten(1))


def test_a_step_that_does_not_compile_runs_eager_with_one_warning(monkeypatch):
    """Every method compiles at its defaults (above), dninv's per-layer terms too (since 2026-11-28); a case
    the compiled form refuses (a γ layer that runs twice in a forward) falls back — one line naming model,
    method and reason, then exactly eager."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")

    def run(compile: bool):
        torch.manual_seed(0)
        model = SharedBlock()
        method = method_checks.make_method("dninv", gamma="block:0.1")
        method.setup(model)
        warnings: list[str] = []
        step = (
            compiled.CompiledGradients(model, method, "fp32", CPU, "shared/dninv", warnings.append)
            if compile
            else compiled.eager_gradients(model, method, "fp32", CPU)
        )
        return steps(step, model, method)[0], step, warnings

    g_ref, _, _ = run(compile=False)
    g, step, warnings = run(compile=True)
    assert (
        step.fallback is not None and not step.record()["compiled"] and "NotImplementedError" in step.fallback
    )  # LayerTaps: "runs more than once" (Dynamo keeps the type only)
    assert warnings == [f"--compile: shared/dninv runs eager ({step.fallback})"]
    assert all(torch.equal(a, b) for a, b in zip(g, g_ref))


# The paper's models (no BatchNorm; docs/models.md) at their datasets' shapes. In CI: SmallCNN with dninv's two
# formulations (≈ 5 s); the rest (≈ 2 min on 2 cores) with `make test-heavy`.
PAPER_NETS = [("smallcnn", (1, 28, 28)), ("largecnn", (3, 32, 32)),
              ("resnet2_32", (1, 28, 28)), ("resnet3_16", (1, 28, 28)),
              ("smallucnn", (1, 28, 28)), ("largeucnn", (3, 32, 32)),
              ("uresnet2_32", (1, 28, 28)), ("uresnet3_16", (1, 28, 28))]  # fmt: skip
PAPER_METHODS = [("dninv", {}), ("dninv", {"formulation": "jvp"}), ("entmin", {}), ("pimodel", {})]
PAPER_CASES = [
    pytest.param(
        net,
        name,
        params,
        marks=() if net[0] == "smallcnn" and name == "dninv" else pytest.mark.heavy,
        id=f"{net[0]}-{name}-{'-'.join(params.values()) or 'defaults'}",
    )
    for net in PAPER_NETS
    for name, params in PAPER_METHODS
]


@pytest.mark.parametrize("net,name,params", PAPER_CASES)
def test_compiled_gradients_equal_eager_on_the_paper_models(net, name, params, monkeypatch):
    """Not only tinycnn: the paper's CNNs, ResNets and U nets compile for a whole run and give eager's
    gradients (equal bit for bit with aot_eager on CPU, 2026-11-28; the check allows 1e-5)."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    with torch._dynamo.config.patch(recompile_limit=2):
        (g_ref, loss_ref), (g, loss), step, warnings = eager_and_compiled(name, net, **params)
    assert step.fallback is None and warnings == [], step.fallback
    assert torch.allclose(loss, loss_ref, rtol=1e-6)
    assert_close(g, g_ref)


def bn_net() -> nn.Module:
    """A small CNN with BatchNorm (as timm's ResNets and USB's WRN have): training mode normalizes with the
    batch's statistics and updates the running ones in place."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def buffers_of(model: nn.Module, method: SSLMethod) -> dict[str, torch.Tensor]:
    """The model's buffers and those of the method's own modules (Mean Teacher's teacher), found here
    without `compiled.method_modules`, so that a module it missed would show."""
    modules = {"model": model} | {k: v for k, v in vars(method).items() if isinstance(v, nn.Module)}
    return {f"{m}.{n}": b.clone() for m, module in modules.items() for n, b in module.named_buffers()}


def bn_steps(name: str, compile: bool, **params):
    torch.manual_seed(0)
    model = bn_net()
    method = method_checks.make_method(name, **params)
    method.setup(model)
    warnings: list[str] = []
    step = (
        compiled.CompiledGradients(model, method, "fp32", CPU, f"bn/{name}", warnings.append)
        if compile
        else compiled.eager_gradients(model, method, "fp32", CPU)
    )
    grads, _ = steps(step, model, method)
    return grads, buffers_of(model, method), step, warnings


BN_METHODS = [
    pytest.param(n, {}, marks=() if n in ("supervised", "meanteacher", "vat", "dninv") else pytest.mark.heavy, id=n)
    for n in method_names()
]
BN_METHODS.append(
    pytest.param("dninv", {"gamma": "1:0.2,3:0.1"}, id="dninv-gamma")
)  # per-layer terms on BatchNorm's output and after it


@pytest.mark.parametrize("name,params", BN_METHODS)
def test_batchnorm_models_compile_and_update_their_running_statistics_as_eager(name, params, monkeypatch):
    """BatchNorm's in-place updates of its running statistics are inputs of the compiled step (a captured
    tensor cannot be mutated inside torch.func.grad: before 2026-11-28 every BatchNorm model ran eager);
    dninv's x̂ forward inside torch.func.vjp updates copies that are copied back. After five steps: the
    same gradients, and the same buffers, the model's and the method's (Mean Teacher's teacher, in
    training mode, updates its own); VAT's adversarial passes leave them alone."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    g_ref, b_ref, _, _ = bn_steps(name, compile=False, **params)
    with torch._dynamo.config.patch(recompile_limit=2):
        g, b, step, warnings = bn_steps(name, compile=True, **params)
    assert step.fallback is None and warnings == [], step.fallback
    assert_close(g, g_ref)
    assert b.keys() == b_ref.keys() and all(torch.equal(b[k], b_ref[k]) for k in b)
    assert b["model.1.num_batches_tracked"] > 0 and b["model.1.running_mean"].abs().sum() > 0  # they did move


def test_the_compiled_step_reads_the_buffers_the_model_holds_now(monkeypatch):
    """The step finds its inputs once (`compiled._slots`) but reads the tensors every step: a buffer that is
    reassigned during a run (not only updated in place) is the one the next step updates."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    torch.manual_seed(0)
    model, method = bn_net(), method_checks.make_method("supervised", seed=None)
    step = compiled.CompiledGradients(model, method, "fp32", CPU, "bn/supervised", print)
    step(make_batch(), Progress(0, 2))
    model[1].running_mean = torch.zeros(8)
    step(make_batch(), Progress(1, 2))
    assert step.fallback is None and model[1].running_mean.abs().sum() > 0 and int(model[1].num_batches_tracked) == 2


def test_dninv_warns_about_batchnorm_at_setup_once_compiled_or_not(monkeypatch):
    """`warnings.warn` does not trace: dninv says that BatchNorm in training mode couples the samples of a
    batch at setup, before the first (compiled) step, and not again."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    with pytest.warns(UserWarning, match="BatchNorm in training mode"):  # from setup itself
        method_checks.make_method("dninv", seed=None).setup(bn_net())
    for compile in (False, True):
        with pytest.warns(UserWarning, match="BatchNorm in training mode") as caught:
            bn_steps("dninv", compile=compile)
        assert len([w for w in caught if "BatchNorm" in str(w.message)]) == 1


def test_the_compiled_optimizer_step_follows_the_eager_one(monkeypatch):
    """`--compile` compiles Adam's step too (`compiled.optimizer_step`): over 12 steps whose learning rate
    changes every step, as in the warm-up, the weights follow eager Adam's up to float rounding, from at most
    two graphs (the first step, which creates Adam's state, runs eager; the learning rate, a Python float,
    is a constant in the first graph and symbolic in the second: not a recompilation per step). Adam's step
    counts are float64, so its bias corrections are eager's: with the float32 counts a compiled Adam makes,
    the weights were 1.4e-5 of the largest apart after 12 steps (2026-11-28), a 40-step dninv run on
    MNIST-shaped digits ended at 72.03 % test accuracy against eager's 62.98 %; now 1.8e-6 and the same
    62.98 % (benchmarks/compiled_runs_check.py)."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")

    def weights_after_12_steps(compile: bool) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
        model, method = make("supervised")
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        update = compiled.optimizer_step(optimizer, compile)
        for i in range(12):
            for group in optimizer.param_groups:
                group["lr"] = 0.01 * (i + 1) / 12
            optimizer.zero_grad(set_to_none=True)
            method.loss(model, make_batch(), Progress(i, 12))[0].backward()
            update()
        return [p.detach().clone() for p in model.parameters()], optimizer

    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=2, fail_on_recompile_limit_hit=True):
        (eager, _), (compiled_, optimizer) = weights_after_12_steps(False), weights_after_12_steps(True)
    assert 1 <= counters["stats"]["unique_graphs"] <= 2  # it was traced (not silently eager), and not per step
    assert all(s["step"].dtype == torch.float64 and s["step"].item() == 12 for s in optimizer.state.values())
    assert_close(
        compiled_, eager, tol=1e-5
    )  # measured: 1.8e-6 of the largest weight (fused vs foreach rounding, 12 Adam steps)
    assert any(
        not torch.equal(a, b) for a, b in zip(eager, [p.detach() for p in make("supervised")[0].parameters()])
    )  # it did train


def test_the_compiled_optimizer_step_resumes_from_float32_step_counts(monkeypatch):
    """A run resumed from an eager run's state (float32 step counts) gets float64 counts at its first
    compiled step, with their values; so does a state loaded later."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    model, method = make("supervised")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        method.loss(model, make_batch(), Progress(0, 3))[0].backward()
        optimizer.step()
    saved = optimizer.state_dict()
    assert all(s["step"].dtype == torch.float32 for s in saved["state"].values())
    resumed = torch.optim.Adam(model.parameters(), lr=0.01)
    resumed.load_state_dict(saved)
    update = compiled.optimizer_step(resumed, True)
    update()
    assert all(s["step"].dtype == torch.float64 and s["step"].item() == 3 for s in resumed.state.values())
    resumed.load_state_dict(
        saved
    )  # a state loaded while the step exists (it checks the counts only when the state changed)
    update()
    assert all(s["step"].dtype == torch.float64 and s["step"].item() == 3 for s in resumed.state.values())


def test_an_optimizer_step_that_does_not_compile_runs_eager_with_one_warning(monkeypatch):
    """Adam's compiled step has the gradient step's fallback: one warning line, then eager Adam (here a
    backend that fails); `compiled.record` puts the reason in result.json."""

    def failing_backend(gm, example_inputs):
        raise RuntimeError("no code generation here")

    monkeypatch.setattr(compiled, "BACKEND", failing_backend)
    weights = []
    for compile in (False, True):
        model, method = make("supervised")
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        warnings: list[str] = []
        update = compiled.optimizer_step(optimizer, compile, "tinycnn/supervised", warnings.append)
        for i in range(3):
            optimizer.zero_grad(set_to_none=True)
            method.loss(model, make_batch(), Progress(i, 3))[0].backward()
            update()
        weights.append([p.detach().clone() for p in model.parameters()])
    assert update.fallback is not None and "no code generation here" in update.fallback
    assert warnings == [f"--compile: tinycnn/supervised's optimizer step runs eager ({update.fallback})"]
    assert all(
        torch.equal(a, b) for a, b in zip(*weights)
    )  # eager Adam from the failed step on (float64 counts give eager's numbers)


class NoisySupervised(SSLMethod):
    """A plugin's loss that draws from its generator itself (instead of in `random_tensors`)."""

    terms = ("ce",)

    def loss(self, model, batch, progress):
        noise = torch.randn(batch.x_lb.shape, generator=self.context.generator)
        ce = torch.nn.functional.cross_entropy(model(batch.x_lb + 0.1 * noise), batch.y_lb)
        return ce, {"ce": ce.detach()}


def test_a_loss_that_draws_from_a_generator_runs_eager_with_one_warning(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    model, _ = make("supervised")
    method = method_checks.make_method(NoisySupervised)
    warnings: list[str] = []
    step = compiled.CompiledGradients(model, method, "fp32", CPU, "tinycnn/noisy", warnings.append)
    loss, _ = step(make_batch(), Progress(3, 20))
    assert torch.isfinite(loss) and step.fallback is not None
    assert warnings == [f"--compile: tinycnn/noisy runs eager ({step.fallback})"] and "Unsupported" in step.fallback


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SSL_BENCH_INDUCTOR"),
    reason="inductor's code generation takes 20-70 s on 2 CPU cores, too much for the suite's 10 minutes; "
    "SSL_BENCH_INDUCTOR=1 runs it (benchmarks/gpu_session.sh does, on the device)",
)
def test_inductor_compiled_dninv_equals_eager(capsys):
    """The real backend: generated code gives dninv's double-backward gradient to 1e-5 (compile time printed)."""
    start = time.perf_counter()
    (g_ref, loss_ref), (g, loss), step, warnings = eager_and_compiled("dninv")
    assert warnings == [] and step.fallback is None
    assert_close(g, g_ref)
    assert torch.allclose(loss, loss_ref, rtol=1e-5)
    with capsys.disabled():
        print(
            f"\ninductor: dninv on tinycnn compiled in {step.first_call_s:.1f} s "
            f"(test {time.perf_counter() - start:.1f} s)"
        )


def spec(**protocol) -> RunSpec:
    return RunSpec(
        method="dninv", dataset="digits", labels=50, steps=20, protocol={"eval_every": 10, **protocol}, device="cpu"
    )


def test_a_compiled_run_records_its_step_and_keeps_state_dict_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    eager = train(resolve(spec()), tmp_path / "eager", show_progress=False)
    result = train(resolve(spec(compile=True)), tmp_path / "compiled", show_progress=False)
    assert (
        result["compiled_step"]["compiled"]
        and result["compiled_step"]["fallback"] is None
        and result["compiled_step"]["optimizer_fallback"] is None
    )
    assert result["peak_memory_mb"] is None and eager["peak_memory_mb"] is None  # CPU: no GPU memory to count
    assert "compiled_step" not in eager
    assert abs(result["test_acc"] - eager["test_acc"]) <= 0.02  # same training up to float rounding
    assert result["protocol_fingerprint"] != eager["protocol_fingerprint"]
    keys = lambda run: set(
        torch.load(tmp_path / run / result_dir(tmp_path / run) / "last.pt", weights_only=True)["model"]
    )
    assert keys("compiled") == keys(
        "eager"
    )  # no `_orig_mod.` prefix: checkpoints and resumable state are interchangeable


def result_dir(root):
    (folder,) = [p.name for p in root.iterdir()]
    return folder


def test_defaults_keep_earlier_run_ids_and_fingerprints():
    """precision and compile at their defaults are not recorded, so runs made before they existed keep
    their folders (sweeps resume) and protocol fingerprints; other values change both."""
    r = resolve(spec())
    assert "precision" not in r.as_json()["protocol"] and "compile" not in r.as_json()["protocol"]
    assert "precision" not in protocol_fields(r.protocol, CPU)
    ids = {resolve(spec(**p)).run_id() for p in ({}, {"compile": True}, {"precision": "bf16"})}
    assert len(ids) == 3
    assert protocol_fields(ProtocolConfig(steps=1, lr=1.0, precision="bf16", compile=True), CPU) | {} == {
        **protocol_fields(ProtocolConfig(steps=1, lr=1.0), CPU),
        "precision": "bf16",
        "compile": True,
    }


def test_protocol_refuses_bad_values():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        ProtocolConfig(steps=1, lr=1.0, precision="fp16")
    with pytest.raises(ValueError, match="compile must be true or false"):
        ProtocolConfig(steps=1, lr=1.0, compile="yes")


def test_cli_speed_options(tmp_path):
    runner = CliRunner()
    out = tmp_path / "runs"
    res = runner.invoke(
        cli,
        [
            "run",
            "--method",
            "supervised",
            "--dataset",
            "digits",
            "--labels",
            "50",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--precision",
            "bf16",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    (folder,) = out.iterdir()
    assert json.loads((folder / "config.json").read_text())["protocol"]["precision"] == "bf16"
    res = runner.invoke(
        cli, ["run", "--method", "supervised", "--dataset", "digits", "--labels", "50", "--precision", "fp16"]
    )
    assert res.exit_code == 2 and "fp16" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_runs_per_gpu_needs_cuda_and_excludes_workers(tmp_path):
    runner = CliRunner()
    base = ["sweep", "--dataset", "digits", "--labels", "50", "--out", str(tmp_path / "runs"), "--runs-per-gpu", "2"]
    res = runner.invoke(cli, base)
    assert res.exit_code == 2 and res.output.strip().endswith(
        "--runs-per-gpu needs CUDA GPUs and torch sees none; use --workers N on CPU"
    )
    res = runner.invoke(cli, base + ["--workers", "2"])
    assert res.exit_code == 2 and "give --workers or --runs-per-gpu, not both" in res.output


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["meanteacher", "dninv"])
def test_a_compiled_run_that_crashed_resumes_as_the_uninterrupted_one(method, tmp_path, monkeypatch):
    """A compiled run (Mean Teacher: the teacher's state; dninv: x̂ in the compiled step) that dies after the
    metrics row of step 20 resumes from its state of step 10 and ends as the run that never died: the same
    metrics rows and `last.pt` bit for bit (aot_eager; ≈ 40 s, so `make test-heavy`)."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    args = [
        "run",
        "--method",
        method,
        "--dataset",
        "digits",
        "--labels",
        "50",
        "--steps",
        "40",
        "--eval-every",
        "10",
        "--state-every",
        "10",
        "--compile",
        "--quiet",
    ]
    ok = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    append = records.append_jsonl

    def dies_after_step_20(path, row):
        append(path, row)
        if row.get("step") == 20:
            raise RuntimeError("crash after the metrics row of step 20")

    monkeypatch.setattr(records, "append_jsonl", dies_after_step_20)
    crashed = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b")])
    assert crashed.exit_code != 0 and "crash after" in str(crashed.exception)
    monkeypatch.setattr(records, "append_jsonl", append)
    again = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0 and "resumed from step 10" in again.stderr, again.output
    (a,), (b,) = (list((tmp_path / d).iterdir()) for d in "ab")
    rows = [
        [{k: v for k, v in r.items() if k != "time_s"} for r in records.read_jsonl(d / records.METRICS)] for d in (a, b)
    ]
    assert [r["step"] for r in rows[1]] == [10, 20, 30, 40] and rows[0] == rows[1]
    got, want = (torch.load(d / records.LAST_CKPT, weights_only=True)["model"] for d in (b, a))
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert records.read_json(b / records.RESULT)["compiled_step"]["compiled"]
