"""`dninv` and `ssl_bench.inversion` against independent computations (docs/design.md §1).

The references below never call the code under test: `x̂` and `ẑ` come from explicit per-sample
Jacobians (`torch.autograd.functional.jacobian`), analytic formulas, finite differences (`gradcheck`),
or the `supervised` plugin.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.autograd.functional import jacobian

from ssl_bench import records
from ssl_bench.cli import cli
from ssl_bench.config import build_config, to_jsonable
from ssl_bench.errors import UserError
from ssl_bench.functional import functional_transforms
from ssl_bench.inversion import reconstruct, reconstruct_layers
from ssl_bench.method import Batch, Progress, load_method
from ssl_bench.models import create_model
from ssl_bench.schedules import Schedule
from tests import method_checks

DNInv = load_method("dninv")


def make_method(name: str = "dninv", **params):
    return method_checks.make_method(name, **params)


def make_batch(shape=(1, 6, 6), n_lb=3, n_ulb=4, classes=3, dtype=torch.float64, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x_lb = torch.randn(n_lb, *shape, generator=g, dtype=dtype)
    y_lb = torch.randint(0, classes, (n_lb,), generator=g)
    x_ulb = torch.randn(n_ulb, *shape, generator=g, dtype=dtype)
    return Batch(x_lb, y_lb, x_ulb)


class TinyNet(nn.Module):
    """conv → ReLU → pool → conv → ReLU → flatten → dense; named layers `l1`, `l2` (after the pool)."""

    feature_layers = ("l1", "l2")

    def __init__(self, pool: str = "max", dims: int = 2, classes: int = 3, length: int = 6):
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv1d
        Pool = {
            ("max", 2): nn.MaxPool2d,
            ("mean", 2): nn.AvgPool2d,
            ("max", 1): nn.MaxPool1d,
            ("mean", 1): nn.AvgPool1d,
        }[(pool, dims)]
        self.l1 = nn.Sequential(Conv(1, 2, 3, padding=1), nn.ReLU(), Pool(2))
        self.l2 = nn.Sequential(Conv(2, 3, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(3 * (length // 2) ** dims, classes)

    def tail(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """The logits as a function of layer `name`'s output (what ∂f/∂z⁽ˡ⁾ differentiates)."""
        if name == "l1":
            z = self.l2(z)
        return self.head(z.flatten(1))

    def forward(self, x):
        return self.tail("l1", self.l1(x))


def tiny_net(**kw) -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(**kw).double()


def explicit_inverse(fn, x: torch.Tensor, *, create_graph: bool = False, detach: bool = False) -> torch.Tensor:
    """`J_iᵀ f_i` per sample, with `J_i` the explicit Jacobian of `fn` at the single sample `x[i]`."""
    out = []
    for xi in x:
        xi = xi.unsqueeze(0)
        f = fn(xi)[0]  # (K,)
        J = jacobian(lambda v: fn(v)[0], xi, create_graph=create_graph).reshape(len(f), -1)  # (K, D)
        out.append((J.T @ (f.detach() if detach else f)).reshape(xi.shape[1:]))
    return torch.stack(out)


def reference_loss(
    model,
    batch: Batch,
    alpha: float,
    beta: float,
    reduction: str = "mean",
    detach: bool = False,
    gamma: dict | None = None,
):
    """Eq. 10 (+ eq. 11's Σγ R⁽ˡ⁾), written out with explicit Jacobians, term by term."""
    x = torch.cat([batch.x_lb, batch.x_ulb])
    logits_lb, logits_ulb = model(batch.x_lb), model(batch.x_ulb)
    ce = -logits_lb.log_softmax(1)[torch.arange(len(batch.y_lb)), batch.y_lb].mean()
    p = logits_ulb.softmax(1)
    ent = -(p * p.log()).sum(1).mean()

    def err(a, b):
        e = (a - b) ** 2
        return e.mean() if reduction == "mean" else e.flatten(1).sum(1).mean()

    rec = err(explicit_inverse(model, x, create_graph=True, detach=detach), x)
    total = alpha * ce + (1 - alpha) * (beta * rec + (1 - beta) * ent)
    terms = {"ce": ce, "rec": rec, "ent": ent}
    for name, g in (gamma or {}).items():
        z = getattr(model, name)(x) if name == "l1" else model.l2(model.l1(x))
        z_hat = explicit_inverse(lambda v: model.tail(name, v), z, create_graph=True, detach=detach)
        terms[f"rec_{name}"] = err(z_hat, z)
        total = total + g * terms[f"rec_{name}"]
    return total, terms


def param_grads(model, loss) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


# --------------------------------------------------------------------------------------------------
# The inverse x̂ = (∂f/∂x)ᵀ f(x)


def test_linear_model_gives_A_transpose_times_Ax_plus_b():
    torch.manual_seed(0)
    lin = nn.Linear(7, 4).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    _, x_hat = reconstruct(lin, x)
    A, b = lin.weight.detach(), lin.bias.detach()
    expected = (x @ A.T + b) @ A  # row i: Aᵀ(A x_i + b)
    assert torch.allclose(x_hat, expected, rtol=1e-12, atol=1e-12)


def test_orthonormal_rows_without_bias_give_the_projection_WtWx():
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64))  # (9, 4) orthonormal columns
    W = q.T  # (4, 9) orthonormal rows
    lin = nn.Linear(9, 4, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(W)
    x = torch.randn(6, 9, dtype=torch.float64)
    _, x_hat = reconstruct(lin, x)
    assert torch.allclose(x_hat, x @ W.T @ W, atol=1e-12)
    _, twice = reconstruct(lin, x_hat)  # a projection: applying it again changes nothing
    assert torch.allclose(twice, x_hat, atol=1e-12)
    assert not torch.allclose(x_hat, x, atol=1e-3)  # and it is not the identity (rank 4 of 9)


@pytest.mark.parametrize("pool", ["max", "mean"])
@pytest.mark.parametrize("dims", [2, 1])
def test_relu_cnn_inverse_equals_explicit_jacobian_per_sample(pool, dims):
    model = tiny_net(pool=pool, dims=dims)
    x = torch.randn(5, 1, *(6,) * dims, dtype=torch.float64)
    logits, x_hat = reconstruct(model, x)
    assert torch.allclose(logits, model(x))
    assert torch.allclose(x_hat, explicit_inverse(model, x), atol=1e-12)


def test_tinycnn_inverse_equals_explicit_jacobian():
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8), width=4).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(reconstruct(model, x)[1], explicit_inverse(model, x), atol=1e-12)


def test_per_layer_inverse_equals_explicit_jacobians():
    model = tiny_net()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    logits, x_hat, inner = reconstruct_layers(model, x, ("l1", "l2"))
    z1 = model.l1(x)
    z2 = model.l2(z1)
    assert torch.allclose(x_hat, explicit_inverse(model, x), atol=1e-12)
    assert torch.allclose(inner["l1"][0], z1) and torch.allclose(inner["l2"][0], z2)
    assert torch.allclose(inner["l1"][1], explicit_inverse(lambda v: model.tail("l1", v), z1), atol=1e-12)
    assert torch.allclose(inner["l2"][1], explicit_inverse(lambda v: model.tail("l2", v), z2), atol=1e-12)
    _, none, _ = reconstruct_layers(model, x, ("l2",), input=False)
    assert none is None


def test_detach_cotangent_keeps_x_hat_and_changes_the_parameter_gradient():
    model = tiny_net()
    batch = make_batch()
    x = torch.cat([batch.x_lb, batch.x_ulb])
    _, a = reconstruct(model, x, create_graph=True)
    _, b = reconstruct(model, x, create_graph=True, detach_cotangent=True)
    assert torch.equal(a, b)
    grads = {}
    for detach in (False, True):
        loss, _ = make_method(alpha=0.5, beta=0.5, detach_cotangent=detach).loss(model, batch, Progress(0, 1))
        grads[detach] = param_grads(model, loss)
        ref, _ = reference_loss(model, batch, 0.5, 0.5, detach=detach)
        for g, r in zip(grads[detach], param_grads(model, ref)):
            assert torch.allclose(g, r, atol=1e-10)
    assert any(not torch.allclose(g, h, atol=1e-6) for g, h in zip(grads[False], grads[True]))


# --------------------------------------------------------------------------------------------------
# The loss (eq. 10–12)


@pytest.mark.parametrize(
    "params",
    [
        dict(alpha=0.7, beta=0.2),
        dict(alpha=0.4, beta=0.6, reduction="sum"),
        dict(alpha=0.5, beta=0.5, gamma="l1:0.3,l2:0.1"),
    ],
)
@pytest.mark.parametrize("form", ["autograd", "torch.func"])
def test_loss_terms_and_gradients_equal_the_explicit_formula(params, form):
    """Both forms of the loss: eager autograd (`create_graph=True`), and the `torch.func` one the compiled
    step traces (x̂ and ẑ⁽ˡ⁾ one `torch.func.vjp`, the layers through `LayerTaps` made in `setup`), here run
    untraced under `torch.func.grad`."""
    model = tiny_net()
    batch = make_batch()
    method = make_method(**params)
    method.setup(model)  # as the loop does (taps the γ layers)
    if form == "autograd":
        loss, terms = method.loss(model, batch, Progress(0, 1))
        grads = param_grads(model, loss)
    else:
        loss_of, names = LossOf(method, model, batch, logged=True), [f"net.{n}" for n, _ in model.named_parameters()]
        with functional_transforms():
            by_name, (loss, terms) = torch.func.grad_and_value(
                lambda ps: torch.func.functional_call(loss_of, ps, ()), has_aux=True
            )(dict(zip(names, model.parameters())))
        grads = [by_name[n] for n in names]
    gamma = {"l1": 0.3, "l2": 0.1} if "gamma" in params else None
    ref, ref_terms = reference_loss(
        model, batch, params["alpha"], params["beta"], params.get("reduction", "mean"), gamma=gamma
    )
    assert tuple(terms) == method.term_names() == ("ce", "rec", "ent") + tuple(f"rec_{n}" for n in (gamma or {}))
    for key, value in ref_terms.items():
        assert torch.allclose(terms[key], value.detach(), rtol=1e-10), key
    assert torch.allclose(loss, ref, rtol=1e-10)
    for g, r in zip(grads, param_grads(model, ref)):
        assert torch.allclose(g, r, atol=1e-10)


def test_sum_reduction_is_mean_times_elements_per_sample():
    model = tiny_net()
    batch = make_batch()
    _, mean_terms = make_method(reduction="mean").loss(model, batch, Progress(0, 1))
    _, sum_terms = make_method(reduction="sum").loss(model, batch, Progress(0, 1))
    assert torch.allclose(sum_terms["rec"], 36 * mean_terms["rec"], rtol=1e-12)  # 1×6×6 elements


class LossOf(nn.Module):
    """The method's loss as a module, so `functional_call` can swap the network's parameters for gradcheck."""

    def __init__(self, method, net: nn.Module, batch: Batch, logged: bool = False):
        super().__init__()
        self.method, self.net, self.batch, self.logged = method, net, batch, logged

    def forward(self):
        loss, terms = self.method.loss(self.net, self.batch, Progress(0, 1))
        return (loss, terms) if self.logged else loss


def gradcheck_loss(**params) -> bool:
    model = tiny_net()
    loss_of = LossOf(make_method(**params), model, make_batch(n_lb=2, n_ulb=2))
    names = [f"net.{n}" for n, _ in model.named_parameters()]
    inputs = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    fn = lambda *ps: torch.func.functional_call(loss_of, dict(zip(names, ps)), ())
    return torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True, raise_exception=False)


@pytest.mark.parametrize(
    "params",
    [
        dict(alpha=0.6, beta=0.3),
        dict(alpha=0.3, beta=0.7, reduction="sum"),
        dict(alpha=0.5, beta=0.5, gamma="l1:0.2,l2:0.5"),
    ],
)
def test_parameter_gradients_pass_gradcheck(params):
    """Finite differences of the full loss (float64) against its double-backprop gradient."""
    assert gradcheck_loss(**params)


def test_detached_cotangent_is_not_the_gradient_of_the_loss():
    """With `stopgrad(f)` as cotangent the update is, by design, not the loss's true gradient."""
    assert not gradcheck_loss(alpha=0.3, beta=0.7, detach_cotangent=True)


# --------------------------------------------------------------------------------------------------
# Special cases (docs/design.md §1)


def tinycnn_and_digit_batch():
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))
    g = torch.Generator().manual_seed(3)
    batch = Batch(torch.randn(8, 1, 8, 8, generator=g), torch.arange(8) % 10, torch.randn(24, 1, 8, 8, generator=g))
    return model, batch


def test_alpha_one_gives_bit_identical_supervised_gradients():
    model, batch = tinycnn_and_digit_batch()
    sup_loss, _ = make_method("supervised").loss(model, batch, Progress(3, 10))
    sup = param_grads(model, sup_loss)
    for alpha in (1.0, "1", DNInv.supervised_equivalent["alpha"]):
        loss, terms = make_method(alpha=alpha, beta=0.5).loss(model, batch, Progress(3, 10))
        assert torch.equal(loss, sup_loss)
        assert all(torch.equal(a, b) for a, b in zip(param_grads(model, loss), sup))
        assert terms["rec"].isnan() and terms["ent"].isnan()  # not computed, logged as NaN


def test_alpha_one_run_equals_supervised_run(tmp_path):
    from ssl_bench.protocol import RunSpec, resolve
    from ssl_bench.run.training import train

    common = dict(dataset="digits", labels=50, steps=6, protocol={"eval_every": 3}, device="cpu")
    sup = train(resolve(RunSpec(method="supervised", **common)), tmp_path, show_progress=False)
    dn = train(resolve(RunSpec(method="dninv", params={"alpha": "1"}, **common)), tmp_path, show_progress=False)
    a = torch.load(tmp_path / sup["run_id"] / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / dn["run_id"] / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sup["test_acc"] == dn["test_acc"] and sup["protocol_fingerprint"] == dn["protocol_fingerprint"]


def test_beta_one_has_no_entropy_term():
    model, batch = tiny_net(), make_batch()
    loss, terms = make_method(alpha=0.6, beta=1.0).loss(model, batch, Progress(0, 1))
    ref, ref_terms = reference_loss(model, batch, 0.6, 1.0)
    no_ent = 0.6 * ref_terms["ce"] + 0.4 * ref_terms["rec"]
    assert torch.allclose(loss, no_ent, rtol=1e-12)
    for g, r in zip(param_grads(model, loss), param_grads(model, no_ent)):
        assert torch.allclose(g, r, atol=1e-12)
    assert torch.allclose(terms["ent"], ref_terms["ent"])  # still logged: it comes free with the logits
    with_ent = 0.6 * ref_terms["ce"] + 0.4 * (0.5 * ref_terms["rec"] + 0.5 * ref_terms["ent"])
    assert not torch.allclose(loss, with_ent)


def test_beta_zero_skips_the_inverse_and_is_ce_plus_entropy():
    model, batch = tiny_net(), make_batch()
    loss, terms = make_method(alpha=0.7, beta=0.0).loss(model, batch, Progress(0, 1))
    _, ref_terms = reference_loss(model, batch, 0.7, 0.0)
    assert torch.allclose(loss, 0.7 * ref_terms["ce"] + 0.3 * ref_terms["ent"], rtol=1e-12)
    assert terms["rec"].isnan()


def test_alpha_zero_ignores_labels_and_trains():
    model, batch = tiny_net(), make_batch(n_lb=4, n_ulb=8)
    method = make_method(alpha=0.0)
    relabeled = Batch(batch.x_lb, (batch.y_lb + 1) % 3, batch.x_ulb)
    a = param_grads(model, method.loss(model, batch, Progress(0, 1))[0])
    b = param_grads(model, method.loss(model, relabeled, Progress(0, 1))[0])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    _, ref_terms = reference_loss(model, batch, 0.0, 0.2)
    loss0, _ = method.loss(model, batch, Progress(0, 1))
    assert torch.allclose(loss0, 0.2 * ref_terms["rec"] + 0.8 * ref_terms["ent"], rtol=1e-12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss, _ = method.loss(model, batch, Progress(0, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert method.loss(model, batch, Progress(0, 1))[0] < 0.5 * loss0


def test_alpha_zero_run_completes(tmp_path):
    from ssl_bench.protocol import RunSpec, resolve
    from ssl_bench.run.training import train

    spec = RunSpec(
        method="dninv",
        dataset="digits",
        labels=50,
        steps=4,
        params={"alpha": "0"},
        protocol={"eval_every": 2},
        device="cpu",
    )
    result = train(resolve(spec), tmp_path, show_progress=False)
    assert result["params"]["alpha"] == 0.0 and result["steps"] == 4
    # the logged loss is the unsupervised part alone: 0.2·rec + 0.8·ent, with no ce in it
    for row in records.read_jsonl(tmp_path / result["run_id"] / "metrics.jsonl"):
        assert row["loss"] == pytest.approx(0.2 * row["rec"] + 0.8 * row["ent"], rel=1e-5)
        assert row["loss"] != pytest.approx(row["ce"], rel=1e-3)


# --------------------------------------------------------------------------------------------------
# Schedules (eq. 13)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("start,end", [(1.0, 0.2), (0.3, 0.9), (0.7, 0.2), (0.2, 1.0), (0.0, 0.5)])
def test_schedules_hit_their_endpoints_exactly(kind, start, end):
    s = Schedule(kind, start, end)
    assert s.at(0.0) == start and s.at(1.0) == end
    lo, hi = s.bounds()
    assert all(lo <= s.at(i / 50) <= hi for i in range(51))
    expected_mid = (start + end) / 2
    assert s.at(0.5) == pytest.approx(expected_mid, abs=1e-15)


def test_weights_follow_the_schedules_from_first_to_last_step():
    """α linear 1→0, β linear 0.2→1: first step CE only, last step reconstruction only (t = step/(T−1))."""
    model, batch = tiny_net(), make_batch()
    method = make_method(alpha="linear:1:0", beta="linear:0.2:1")
    steps = 11
    first, t0 = method.loss(model, batch, Progress(0, steps))
    assert torch.equal(first, t0["ce"])
    last, t1 = method.loss(model, batch, Progress(steps - 1, steps))
    assert torch.allclose(last, t1["rec"], rtol=1e-12)
    mid, tm = method.loss(model, batch, Progress(5, steps))  # t = 0.5: α = 0.5, β = 0.6
    assert torch.allclose(mid, 0.5 * tm["ce"] + 0.5 * (0.6 * tm["rec"] + 0.4 * tm["ent"]), rtol=1e-12)


def test_gamma_schedule_per_layer():
    model, batch = tiny_net(), make_batch()
    method = make_method(alpha=0.5, beta=0.5, gamma="l1:0.3,l2:cosine:1:0")
    first, t0 = method.loss(model, batch, Progress(0, 5))
    base = 0.5 * t0["ce"] + 0.5 * (0.5 * t0["rec"] + 0.5 * t0["ent"])
    assert torch.allclose(first, base + 0.3 * t0["rec_l1"] + 1.0 * t0["rec_l2"], rtol=1e-12)
    last, t1 = method.loss(model, batch, Progress(4, 5))
    assert torch.allclose(last, base + 0.3 * t1["rec_l1"], rtol=1e-12)


def test_zero_gamma_layer_is_logged_as_nan():
    _, terms = make_method(gamma="l1:0,l2:0.1").loss(tiny_net(), make_batch(), Progress(0, 1))
    assert terms["rec_l1"].isnan() and terms["rec_l2"] > 0


def test_schedules_are_stored_resolved_and_round_trip():
    from ssl_bench.protocol import RunSpec, resolve

    params = {"beta": "linear:1.0:0.2", "gamma": "conv2:0.1,conv3:cosine:0.5:0"}
    stored = resolve(RunSpec(method="dninv", dataset="digits", labels=50, params=params)).as_json()["params"]
    assert stored == {
        "alpha": 0.7,
        "beta": {"kind": "linear", "start": 1.0, "end": 0.2},
        "reduction": "mean",
        "detach_cotangent": False,
        "gamma": {"conv2": 0.1, "conv3": {"kind": "cosine", "start": 0.5, "end": 0.0}},
    }
    again = build_config(DNInv.Config, stored, "dninv")  # a run record's params rebuild the same config
    assert again == build_config(DNInv.Config, params, "dninv")
    assert to_jsonable(again) == stored


# --------------------------------------------------------------------------------------------------
# Refusals and warnings


@pytest.mark.parametrize(
    "param,message",
    [
        ("alpha=1.5", "alpha must stay in [0, 1]"),
        ("beta=-0.1", "beta must stay in [0, 1]"),
        ("beta=linear:1:1.2", "beta must stay in [0, 1] over training, got linear:1:1.2"),
        ("alpha=fast", "bad value for alpha"),
        ("alpha=step:1:0", "bad value for alpha"),
        ("reduction=median", "reduction must be one of mean, sum"),
        ("detach_cotangent=maybe", "detach_cotangent expects bool"),
        ("gamma=conv2", "expected LAYER:WEIGHT"),
        ("gamma=conv2:-0.1", "gamma of layer 'conv2' must be a finite weight >= 0"),
        ("gamma=conv2:0.1,conv2:0.2", "distinct"),
        ("gamma=conv2:inf", "finite"),
        ("lambda=1", "unknown key 'lambda'"),
    ],
)
def test_bad_params_are_refused_in_one_line_before_training(tmp_path, param, message):
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--method",
            "dninv",
            "--dataset",
            "digits",
            "--labels",
            "50",
            "--out",
            str(tmp_path / "runs"),
            "-p",
            param,
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: method 'dninv': ")
    assert not (tmp_path / "runs").exists()  # refused before any data or run folder


def test_unknown_layer_is_refused_listing_the_models_layers():
    model, batch = tinycnn_and_digit_batch()
    with pytest.raises(UserError, match=r"unknown layer 'conv9' for TinyCNN; its layers: conv1, conv2, conv3$"):
        make_method(gamma="conv2:0.1,conv9:0.1").check_model(model)
    make_method(gamma="conv2:0.1").check_model(model)  # known layers pass


def test_unknown_layer_is_refused_before_a_run_folder_exists(tmp_path):
    args = [
        "run",
        "--method",
        "dninv",
        "--dataset",
        "digits",
        "--labels",
        "50",
        "--out",
        str(tmp_path / "runs"),
        "-p",
        "gamma=conv9:0.1",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "its layers: conv1, conv2, conv3" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_batchnorm_in_training_mode_warns_once_and_goes_on():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    model.feature_layers = ("0", "2")
    _, batch = tinycnn_and_digit_batch()
    method = make_method()
    with pytest.warns(UserWarning, match="BatchNorm in training mode.*couples the samples"):
        loss, _ = method.loss(model, batch, Progress(0, 2))
    assert torch.isfinite(loss)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.loss(model, batch, Progress(1, 2))  # once per method instance
        make_method().loss(model.eval(), batch, Progress(0, 1))  # eval mode: running statistics, no coupling
    # why it matters: in training mode one sample's inverse depends on the other samples
    x = torch.cat([batch.x_lb, batch.x_ulb])
    model.train()
    _, mixed = reconstruct(model, x)
    _, alone = reconstruct(model, torch.cat([x[:1], torch.randn_like(x[1:])]))
    assert not torch.allclose(mixed[0], alone[0], atol=1e-4)
