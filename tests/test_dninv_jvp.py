"""dninv's `formulation=jvp` (ssl_bench.inversion.reconstruction_by_jvp): R's parameter gradient by
"reverse over forward" instead of a double backward (docs/design.md §1).

With r = stopgrad(x̂ − x), ⟨x̂, r⟩ = ⟨Jᵀf, r⟩ = ⟨f, J·r⟩, so the two formulations give the same loss and
the same gradient. Checked in float64 against the double-backward form on every paper model family and
against an explicit-Jacobian formula (tests/test_dninv.py's `reference_loss`, which never calls the code
under test); the layers where PyTorch's forward-mode derivative is not exact in reverse are measured and
refused; compiled (aot_eager) equals eager; bf16 points where fp32 does; the method contract holds.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from ssl_bench import inversion
from ssl_bench.cli import cli
from ssl_bench.config import build_config, to_jsonable
from ssl_bench.errors import UserError
from ssl_bench.inversion import (
    forward_mode_inexact,
    reconstruction_by_jvp,
    squared_error,
)
from ssl_bench.method import Batch, Progress
from ssl_bench.models import create_model
from ssl_bench.protocol import RunSpec, resolve
from ssl_bench.run import compiled
from tests.method_checks import make_method
from tests.test_dninv import explicit_inverse, reference_loss, tiny_net

CPU = torch.device("cpu")
JVP = {"formulation": "jvp"}


def batch_of(shape, n_lb=2, n_ulb=3, dtype=torch.float64, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(n_lb, *shape, generator=g, dtype=dtype),
        torch.arange(n_lb) % 3,
        torch.randn(n_ulb, *shape, generator=g, dtype=dtype),
    )


def step(model, batch: Batch, **params):
    """One `loss` and its parameter gradients, from a fixed random state (dropout); the state after it."""
    torch.manual_seed(1)
    loss, terms = make_method("dninv", **params).loss(model, batch, Progress(0, 1))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), terms, grads, torch.get_rng_state()


def assert_same_gradients(a, b, rtol=1e-10):
    scale = float(max(g.abs().max() for g in a))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=rtol * scale)


# --------------------------------------------------------------------------------------------------
# The same loss and gradients as the double backward, on every paper model family (float64)

MODELS = [
    ("tinycnn", (1, 8, 8), {}),
    ("tinycnn", (1, 8, 8), {"dropout": 0.5}),  # the x̂ pass and the dual pass draw the same masks
    ("smallcnn", (1, 8, 8), {}),
    ("smallcnn", (1, 8, 8), {"pool": "max", "act": "sigmoid"}),
    ("largecnn", (1, 14, 14), {"act": "leaky_relu"}),
    ("resnet2_32", (1, 8, 8), {}),
    ("resnet3_16", (1, 8, 8), {"pool": "max"}),
    ("smallucnn", (1, 8, 8), {}),  # the "U" activation concat[relu(z), −relu(−z)]
    ("bird10net", (1, 4608), {}),  # 1-D, dropout 0.5 by default
]


@pytest.mark.parametrize(
    "name,shape,options",
    MODELS,
    ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'defaults'}" for n, _, o in MODELS],
)
def test_jvp_equals_double_backward_on_paper_models(name, shape, options):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_shape=shape, **options).double()
    batch = batch_of(shape)
    for reduction in ("mean", "sum"):
        for detach in (False, True):
            params = {
                "alpha": 0.4,
                "beta": 0.6,
                "reduction": reduction,
                "detach_cotangent": detach,
            }  # all three terms active
            loss, terms, grads, rng = step(model, batch, **params)
            loss_jvp, terms_jvp, grads_jvp, rng_jvp = step(model, batch, **params, **JVP)
            torch.testing.assert_close(loss_jvp, loss, rtol=1e-10, atol=0)
            for key in ("ce", "rec", "ent"):
                torch.testing.assert_close(terms_jvp[key], terms[key], rtol=1e-12, atol=0)
            assert_same_gradients(grads_jvp, grads)
            assert torch.equal(rng_jvp, rng)  # the step consumed the random stream as one forward does


@pytest.mark.parametrize(
    "params",
    [
        {"alpha": 0.7, "beta": 0.2},
        {"alpha": 0.3, "beta": 0.8, "reduction": "sum"},
        {"alpha": 0.5, "beta": 0.5, "detach_cotangent": True},
    ],
)
def test_jvp_loss_equals_the_explicit_jacobian_formula(params):
    """Against eq. 10 written with per-sample Jacobians (`torch.autograd.functional.jacobian`,
    create_graph) and differentiated by a double backward — not the code's other path."""
    model, batch = tiny_net(), batch_of((1, 6, 6), n_lb=3, n_ulb=4)
    loss, terms = make_method("dninv", **params, **JVP).loss(model, batch, Progress(0, 1))
    ref, ref_terms = reference_loss(
        model,
        batch,
        params["alpha"],
        params["beta"],
        params.get("reduction", "mean"),
        detach=params.get("detach_cotangent", False),
    )
    for key, value in ref_terms.items():
        torch.testing.assert_close(terms[key], value.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    assert_same_gradients(
        torch.autograd.grad(loss, list(model.parameters())), torch.autograd.grad(ref, list(model.parameters()))
    )


def test_reconstruction_by_jvp_gives_x_hat_and_the_value_of_R():
    model = tiny_net()
    x = batch_of((1, 6, 6)).x_ulb
    logits, x_hat, rec = reconstruction_by_jvp(model, x, reduction="sum")
    torch.testing.assert_close(x_hat, explicit_inverse(model, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, model(x), rtol=1e-12, atol=0)
    assert torch.equal(rec, squared_error(x_hat, x, "sum"))  # the value exactly: the surrogate adds 0
    assert not x_hat.requires_grad and rec.requires_grad


# --------------------------------------------------------------------------------------------------
# Layers where PyTorch's forward-mode derivative is not exact in reverse: measured, refused


NORMS = {
    "batchnorm-train": lambda: nn.BatchNorm2d(2),
    "batchnorm-eval": lambda: nn.BatchNorm2d(2).eval(),
    "layernorm": lambda: nn.LayerNorm([2, 4, 4]),
    "instancenorm": lambda: nn.InstanceNorm2d(2, affine=True),
    "groupnorm": lambda: nn.GroupNorm(1, 2),
    "rmsnorm": lambda: nn.RMSNorm([2, 4, 4]),
}


@pytest.mark.parametrize("norm", NORMS)
def test_refused_layers_are_exactly_those_measured_inexact(norm, monkeypatch):
    """`forward_mode_inexact` lists a norm layer iff the JVP gradient through it is off (float64). If a
    torch release fixes a formula, this fails: the refusal can then be lifted."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), NORMS[norm](), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).double()
    refused = bool(forward_mode_inexact(model))
    monkeypatch.setattr(inversion, "forward_mode_inexact", lambda m: [])
    batch = batch_of((1, 6, 6), n_lb=3, n_ulb=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _, _, grads, _ = step(model, batch, alpha=0.5, beta=0.5)
    model.load_state_dict(state)  # the same running statistics for the second step
    _, _, grads_jvp, _ = step(model, batch, alpha=0.5, beta=0.5, **JVP)
    error = max((a - b).norm() / a.norm().clamp_min(1e-300) for a, b in zip(grads_jvp, grads))
    assert (error > 1e-6) == refused, (norm, float(error))
    assert (error < 1e-10) == (not refused)


def test_a_batchnorm_model_is_refused_in_one_line():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 3))
    with pytest.raises(UserError) as err:
        make_method("dninv", **JVP).check_model(model)
    assert str(err.value) == (
        "dninv formulation=jvp: its gradient is not exact through 1 (BatchNorm2d) of Sequential; "
        "use formulation=double_backward"
    )
    make_method("dninv").check_model(
        model
    )  # the double backward takes it (with its BatchNorm warning at the first step)
    make_method("dninv", beta=0.0, **JVP).check_model(model)  # no reconstruction, nothing to refuse
    with pytest.raises(ValueError, match="x̂ by JVP is not exact for Sequential: 1 \\(BatchNorm2d\\)"):
        make_method("dninv", **JVP).loss(model, batch_of((1, 6, 6), dtype=torch.float32), Progress(0, 1))


# --------------------------------------------------------------------------------------------------
# Config: the parameter, its refusals, what is recorded


@pytest.mark.parametrize(
    "params,message",
    [
        (["formulation=forward"], "formulation must be one of double_backward, jvp, got 'forward'"),
        (
            ["formulation=jvp", "gamma=conv2:0.1"],
            "formulation=jvp has no per-layer terms; drop gamma (conv2:0.1) or use formulation=double_backward",
        ),
    ],
)
def test_bad_formulations_are_refused_in_one_line(tmp_path, params, message):
    args = ["run", "--method", "dninv", "--dataset", "digits", "--labels", "50", "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(cli, args + [a for p in params for a in ("-p", p)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: method 'dninv': {message}\n"
    assert not (tmp_path / "runs").exists()


def test_default_is_not_recorded_so_earlier_run_ids_stay():
    spec = lambda **params: resolve(RunSpec(method="dninv", dataset="digits", labels=50, params=params))
    assert "formulation" not in spec().as_json()["params"]
    assert spec().run_id() == spec(formulation="double_backward").run_id()
    assert spec(**JVP).as_json()["params"]["formulation"] == "jvp" and spec(**JVP).run_id() != spec().run_id()
    config = make_method("dninv", **JVP).config
    assert build_config(type(config), to_jsonable(config), "dninv") == config  # a run record rebuilds it


# --------------------------------------------------------------------------------------------------
# Compiled, bf16, the method contract (tinycnn, float32, as tests/test_compile.py and test_precision.py)


def tinycnn_step(params, precision="fp32", compile=False, dropout=0.0, warnings=None):
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8), dropout=dropout)
    method = make_method("dninv", **params)
    fn = compiled.gradients(
        model, method, precision, compile, CPU, "tinycnn/dninv", (warnings if warnings is not None else []).append
    )
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(6, 1, 8, 8, generator=g), torch.arange(6) % 10, torch.randn(10, 1, 8, 8, generator=g))
    for s in (3, 4):  # a compiled step's first call and a cached one
        model.zero_grad(set_to_none=True)
        torch.manual_seed(s)
        loss, logged = fn(batch, Progress(s, 10))
    return loss.detach(), logged, [p.grad.clone() for p in model.parameters()], fn


def test_compiled_jvp_equals_eager(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    params = {**JVP, "alpha": 0.5, "beta": 0.5}
    loss, logged, grads, _ = tinycnn_step(params)
    warnings: list[str] = []
    loss_c, logged_c, grads_c, fn = tinycnn_step(params, compile=True, warnings=warnings)
    assert warnings == [] and fn.fallback is None  # x̂ by torch.func.vjp, J·r by torch.func.jvp
    torch.testing.assert_close(loss_c, loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(logged_c["rec"], logged["rec"], rtol=1e-6, atol=0)
    assert_same_gradients(grads_c, grads, rtol=1e-5)
    _, _, grads_db, _ = tinycnn_step({"alpha": 0.5, "beta": 0.5})
    assert_same_gradients(grads_c, grads_db, rtol=1e-5)  # and the double backward's (float32)


def test_compiled_jvp_with_dropout_runs_eager(monkeypatch):
    """torch.func cannot put the random state back between the two passes: one warning line, then eager."""
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    _, _, grads, _ = tinycnn_step(JVP, dropout=0.3)
    warnings: list[str] = []
    _, _, grads_c, fn = tinycnn_step(JVP, compile=True, dropout=0.3, warnings=warnings)
    assert (
        fn.fallback is not None
        and len(warnings) == 1
        and warnings[0].startswith("--compile: tinycnn/dninv runs eager (")
    )
    assert warnings[0].endswith(
        "(NotImplementedError raised in the traced code))"
    )  # Dynamo's own line says only "Observed exception"
    assert all(torch.equal(a, b) for a, b in zip(grads_c, grads))


def test_bf16_jvp_points_where_fp32_does():
    _, _, fp32, _ = tinycnn_step({})  # the double backward in fp32
    loss, _, bf16, _ = tinycnn_step(JVP, precision="bf16")
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in bf16)
    flat = lambda gs: torch.cat([g.flatten() for g in gs])
    cos = torch.nn.functional.cosine_similarity(flat(fp32), flat(bf16), dim=0)
    assert cos > 0.99, cos


def test_method_contract_with_jvp():
    """As tests/test_methods_contract.py checks every method at its defaults: a finite step reaching every
    parameter, exactly the declared terms, determinism, a live unlabeled term, α = 1 → `supervised`."""
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))
    batch = lambda ulb_seed: Batch(
        torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
        torch.arange(8) % 10,
        torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(ulb_seed)),
    )
    method = make_method("dninv", **JVP)
    loss, terms = method.loss(model, batch(1), Progress(3, 10))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert (
        torch.isfinite(loss) and loss.dim() == 0 and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    )
    assert tuple(terms) == method.term_names() == ("ce", "rec", "ent")
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in terms.values())
    again = torch.autograd.grad(
        make_method("dninv", **JVP).loss(model, batch(1), Progress(3, 10))[0], list(model.parameters())
    )
    assert all(torch.equal(a, b) for a, b in zip(grads, again))
    other = torch.autograd.grad(method.loss(model, batch(2), Progress(3, 10))[0], list(model.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(grads, other))
    sup = torch.autograd.grad(
        make_method("supervised").loss(model, batch(1), Progress(3, 10))[0], list(model.parameters())
    )
    own = torch.autograd.grad(
        make_method("dninv", alpha=1.0, **JVP).loss(model, batch(1), Progress(3, 10))[0], list(model.parameters())
    )
    assert all(torch.equal(a, b) for a, b in zip(sup, own))
