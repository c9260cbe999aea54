"""`vat` against independent computations.

The perturbation the loss really used is read off the model's input in its last forward pass (a forward
pre-hook: x_ulb + r_adv). Its direction is checked against a power iteration whose Hessian-vector
products `H·d` of `r ↦ KL(p(x) ‖ p(x + r))` at r = 0 come from forward passes only (central finite
differences, float64); the loss and its gradient against `CE + α·F.kl_div(…)` written out by hand.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.method import Batch, Progress, load_method
from ssl_bench.models import create_model
from ssl_bench.views import make_views
from tests import method_checks

VAT = load_method("vat")
PROGRESS = Progress(3, 10)


def make_method(seed: int = 5, **params):
    return method_checks.make_method("vat", seed=seed, **params)


def make_model(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8)).to(dtype)


def make_batch(dtype=torch.float64) -> Batch:
    g = torch.Generator().manual_seed(0)
    x_lb = torch.randn(6, 1, 8, 8, generator=g)
    x_ulb = torch.randn(8, 1, 8, 8, generator=g)
    return Batch(x_lb.to(dtype), torch.tensor([0, 1, 2, 3, 4, 5]), x_ulb.to(dtype))


def loss_of(method, model, batch):
    """`method.loss` as the loop calls it: with its random tensors (`d`) drawn first, by the harness."""
    return method.loss(model, make_views(method, batch, "image"), PROGRESS)


def run(method, model, batch):
    """`method.loss` plus the inputs of every forward pass it made, and the generator state it started from."""
    seen, state = [], method.context.generator.get_state()
    hook = model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    try:
        loss, terms = loss_of(method, model, batch)
    finally:
        hook.remove()
    return loss, terms, seen, state


def per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), dim=1)  # (B,)


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)  # (B,)


def hessian_vector_fd(model: nn.Module, x: torch.Tensor, d: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    """(H·d) per sample for H = ∇²_r KL(p(x) ‖ p(x + r)) at r = 0, by forward passes only:
    (H·d)_i = [KL(h(eᵢ + d)) − KL(h(eᵢ − d)) − KL(h(−eᵢ + d)) + KL(−h(eᵢ + d))] / 4h², d of unit norm."""
    n, shape = x.shape[0], x.shape[1:]
    dim = x[0].numel()
    d = d / per_sample_norm(d).view(-1, *[1] * len(shape))
    eye = torch.eye(dim, dtype=x.dtype).view(dim, 1, *shape)  # (D, 1, *shape)
    with torch.no_grad():
        logp = F.log_softmax(model(x), 1)  # (B, K)

        def kl(s1: float, s2: float) -> torch.Tensor:  # (D, B)
            r = h * (s1 * eye + s2 * d.unsqueeze(0))  # (D, B, *shape)
            logq = F.log_softmax(model((x.unsqueeze(0) + r).reshape(dim * n, *shape)), 1)
            return F.kl_div(logq, logp.repeat(dim, 1), log_target=True, reduction="none").sum(1).view(dim, n)

        hd = (kl(1, 1) - kl(1, -1) - kl(-1, 1) + kl(-1, -1)) / (4 * h * h)  # (D, B)
    return hd.T.reshape(x.shape)


def reference_direction(model, x, state, iterations: int, draw_dtype=torch.float64) -> torch.Tensor:
    """The power iteration d ← H·d from the method's first normal draw (made in the method's dtype),
    with H·d by finite differences in float64."""
    d = torch.randn(x.shape, generator=torch.Generator().set_state(state), dtype=draw_dtype).double()
    for _ in range(iterations):
        d = hessian_vector_fd(model, x, d)
    return d


def hand_loss(model, batch, r_adv, alpha, entmin=0.0):
    """CE(labeled) + α·KL(p(x) ‖ p(x + r_adv)) (+ entmin·entropy), with PyTorch's own kl_div; r_adv constant."""
    ce = -F.log_softmax(model(batch.x_lb), 1)[torch.arange(len(batch.y_lb)), batch.y_lb].mean()
    logits = model(batch.x_ulb)
    p = logits.softmax(1)
    lds = F.kl_div(F.log_softmax(model(batch.x_ulb + r_adv), 1), p.detach(), reduction="batchmean")
    ent = -(p * p.log()).sum(1).mean()
    return ce + alpha * lds + entmin * ent, ce, lds, ent


def grads(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


# --------------------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    cfg = VAT.Config()
    assert (cfg.alpha, cfg.eps, cfg.xi, cfg.power_iterations, cfg.entmin) == (1.0, 6.0, 1e-2, 1, 0.0)
    assert VAT.supervised_equivalent == {"alpha": 0.0, "entmin": 0.0}


@pytest.mark.parametrize("iterations", [1, 2])
def test_adversarial_direction_is_the_finite_difference_power_iteration(iterations):
    batch, model = make_batch(), make_model()
    method = make_method(xi=1e-6, eps=2.0, power_iterations=iterations)  # the paper's ξ: fine in float64
    _, _, seen, state = run(method, model, batch)
    assert len(seen) == 3 + iterations  # labeled, clean, K power-iteration passes, adversarial
    r_adv = seen[-1] - batch.x_ulb
    assert torch.allclose(per_sample_norm(r_adv), torch.full((8,), 2.0, dtype=torch.float64), atol=1e-9)
    cos = cosines(r_adv, reference_direction(model, batch.x_ulb, state, iterations))
    assert (cos > 0.99).all(), cos


def test_loss_and_gradient_match_the_hand_computation():
    batch, model = make_batch(), make_model()
    method = make_method(alpha=0.7, eps=2.0)
    assert method.term_names() == ("ce", "lds")  # pure VAT: no entropy term
    loss, terms, seen, _ = run(method, model, batch)
    ref, ce, lds, _ = hand_loss(model, batch, seen[-1] - batch.x_ulb, 0.7)
    assert set(terms) == {"ce", "lds"}
    assert torch.allclose(terms["ce"], ce, atol=1e-12) and torch.allclose(terms["lds"], lds, atol=1e-12)
    assert torch.allclose(loss, ref, atol=1e-12)
    for a, b in zip(grads(model, loss), grads(model, ref)):  # nothing else (power iteration, entropy) in it
        assert torch.allclose(a, b, atol=1e-12)
    with torch.no_grad():  # the KL direction matters: the reversed one is a different number here
        r_adv = seen[-1] - batch.x_ulb
        reverse = F.kl_div(
            F.log_softmax(model(batch.x_ulb), 1), model(batch.x_ulb + r_adv).softmax(1), reduction="batchmean"
        )
    assert not torch.allclose(reverse, lds, rtol=1e-3)


def test_entmin_option_adds_the_entropy_of_the_clean_pass():
    batch, model = make_batch(), make_model()
    method = make_method(alpha=0.7, eps=2.0, entmin=0.5)
    loss, terms, seen, _ = run(method, model, batch)
    ref, ce, lds, ent = hand_loss(model, batch, seen[-1] - batch.x_ulb, 0.7, entmin=0.5)
    assert tuple(terms) == method.term_names() == ("ce", "lds", "ent")
    for name, value in (("ce", ce), ("lds", lds), ("ent", ent)):
        assert torch.allclose(terms[name], value, atol=1e-12)
    assert torch.allclose(loss, ref, atol=1e-12)
    for a, b in zip(grads(model, loss), grads(model, ref)):
        assert torch.allclose(a, b, atol=1e-12)


def test_entmin_without_lds():
    batch, model = make_batch(), make_model()
    loss, terms, seen, _ = run(make_method(alpha=0.0, entmin=0.5), model, batch)
    assert len(seen) == 2 and math.isnan(float(terms["lds"]))  # no power iteration, no adversarial pass
    assert torch.allclose(loss, terms["ce"] + 0.5 * terms["ent"], atol=1e-12)


def test_zero_weights_are_exactly_supervised():
    batch, model = make_batch(torch.float32), make_model(torch.float32)
    loss, terms, seen, _ = run(make_method(alpha=0.0), model, batch)
    assert len(seen) == 1 and math.isnan(float(terms["lds"]))
    sup = F.cross_entropy(make_model(torch.float32)(batch.x_lb), batch.y_lb)
    assert torch.equal(loss, sup)


def test_power_iteration_puts_no_gradient_on_the_parameters():
    from ssl_bench_plugins.vat import adversarial_direction

    batch, model = make_batch(), make_model()
    with torch.no_grad():
        target = model(batch.x_ulb)
    d = torch.randn(batch.x_ulb.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = adversarial_direction(model, batch.x_ulb, target, 1e-6, 2, d)
    assert all(p.grad is None for p in model.parameters())
    assert torch.allclose(per_sample_norm(r), torch.ones(8, dtype=torch.float64))


def test_randomness_comes_from_the_methods_generator_only():
    batch, model = make_batch(), make_model()
    method = make_method()
    rng, gen = torch.get_rng_state(), method.context.generator.get_state()
    _, terms = loss_of(method, model, batch)
    assert torch.equal(torch.get_rng_state(), rng)  # the global stream is untouched
    assert not torch.equal(method.context.generator.get_state(), gen)  # d was drawn from the method's own
    _, same = loss_of(make_method(seed=5), model, batch)
    _, other = loss_of(make_method(seed=6), model, batch)
    assert torch.equal(same["lds"], terms["lds"]) and not torch.equal(other["lds"], terms["lds"])


def test_default_xi_resolves_the_direction_in_float32():
    """Why ξ = 1e-2: in float32 the paper's 1e-6 drowns in rounding, 1e-2 gives the exact direction."""
    batch, model, x64 = make_batch(torch.float32), make_model(torch.float32), make_batch().x_ulb

    def float32_cosines(**params):
        _, _, seen, state = run(make_method(**params), model, batch)
        return cosines(seen[-1] - batch.x_ulb, reference_direction(make_model(), x64, state, 1, torch.float32))

    default = float32_cosines()
    assert (default > 0.97).all() and default.median() > 0.99, default  # (min 0.983: tinycnn's curvature over 1e-2)
    paper = float32_cosines(xi=1e-6)
    assert paper.median() < 0.5, paper  # the paper's ξ in float32: rounding noise


def test_bf16_autocast_keeps_the_direction():
    batch, model = make_batch(torch.float32), make_model(torch.float32)
    _, _, seen, _ = run(make_method(), model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, seen_bf16, _ = run(make_method(), model, batch)
    assert loss.isfinite()
    assert torch.allclose(seen_bf16[-1], seen[-1], atol=1e-6)  # the same r_adv as in float32


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_only_the_labeled_pass_updates_batchnorm_running_stats():
    torch.manual_seed(0)
    model, batch = BNNet().double(), make_batch()
    reference = copy.deepcopy(model)
    loss_of(make_method(), model, batch)
    reference(batch.x_lb)  # what the labeled pass alone does
    bn, ref_bn = model.body[1], reference.body[1]
    assert bn.track_running_stats  # restored
    assert torch.equal(bn.running_mean, ref_bn.running_mean) and torch.equal(bn.running_var, ref_bn.running_var)
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize(
    "params, field",
    [
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": math.inf}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -2.0}, "eps"),
        ({"eps": math.inf}, "eps"),
        ({"xi": 0.0}, "xi"),
        ({"xi": -1e-6}, "xi"),
        ({"power_iterations": 0}, "power_iterations"),
        ({"power_iterations": 1.5}, "power_iterations"),
        ({"power_iterations": True}, "power_iterations"),
        ({"entmin": -0.1}, "entmin"),
        ({"entmin": math.nan}, "entmin"),
    ],
)
def test_config_refuses_bad_values(params, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        VAT.Config(**params)
