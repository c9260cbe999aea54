"""MixMatch (ssl_bench_plugins/mixmatch.py) against independent computations: sharpening and MixUp by hand, the
Beta sampler's distribution, the label guess over K draws, the whole loss with its views pinned and its
generator replayed, and where its gradient flows."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from scipy import stats
from torch import nn

from ssl_bench.losses import sharpen
from ssl_bench.method import Batch, Progress, View, load_method
from ssl_bench.models import create_model
from ssl_bench.views import make_views
from ssl_bench_plugins.mixmatch import mixup, mixup_draws, sample_beta
from tests import method_checks


def make_method(**params):
    return method_checks.make_method("mixmatch", **params)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))


def make_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(8, 1, 8, 8, generator=g), torch.arange(8) % 10, torch.randn(16, 1, 8, 8, generator=g))


def pinned(batch: Batch, draws: int = 2, ulb_seed: int = 2) -> Batch:
    """The batch with arbitrary, clearly different views: `lb` (8, …) and `ulb` (K, 16, …)."""
    lb = torch.randn(batch.x_lb.shape, generator=torch.Generator().manual_seed(1))
    ulb = torch.randn((draws, *batch.x_ulb.shape), generator=torch.Generator().manual_seed(ulb_seed))
    return Batch(batch.x_lb, batch.y_lb, batch.x_ulb, views={"lb": lb, "ulb": ulb})


def loss_of(method, model, batch: Batch, progress: Progress):
    """`method.loss` on the pinned views, with its random tensors (MixUp's permutation and λ) drawn first from
    its generator, as the harness does after the views."""
    return method.loss(model, dataclasses.replace(batch, random=method.random_tensors(batch)), progress)


def replayed(method) -> torch.Generator:
    return torch.Generator().set_state(method.context.generator.get_state())


def by_hand(model, batch, gen, *, lambda_u, ramp, temperature=0.5, alpha=0.75, detach_guess=True):
    """MixMatch's loss written out: guess = sharpen(mean_k softmax(model(u_k))), one-hot labels, MixUp
    (permutation, then λ ~ Beta(α, α) per sample, λ' = max(λ, 1 − λ)), soft CE + λ_u·ramp·MSE."""
    x, u = batch.views["lb"], batch.views["ulb"]  # (B, …), (K, B_u, …)
    k, n_u = u.shape[:2]
    u = u.reshape(k * n_u, *u.shape[2:])
    p = model(u).softmax(1).reshape(k, n_u, -1).mean(0)
    q = p ** (1 / temperature) / (p ** (1 / temperature)).sum(1, keepdim=True)
    q = q.detach() if detach_guess else q
    inputs = torch.cat([x, u])
    targets = torch.cat([nn.functional.one_hot(batch.y_lb, 10).float(), q.repeat(k, 1)])
    if alpha > 0:
        perm = torch.randperm(len(inputs), generator=gen)
        lam = sample_beta(alpha, len(inputs), gen)
        lam = torch.where(lam > 0.5, lam, 1 - lam)
        inputs = lam[:, None, None, None] * inputs + (1 - lam[:, None, None, None]) * inputs[perm]
        targets = lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]
    logits = model(inputs)
    n = len(x)
    ce = -(targets[:n] * logits[:n].log_softmax(1)).sum(1).mean()
    l2u = ((logits[n:].softmax(1) - targets[n:]) ** 2).sum() / (targets[n:].numel())
    return ce + lambda_u * ramp * l2u, ce, l2u


def test_sharpen_by_hand():
    p = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    assert torch.allclose(sharpen(p, 0.5), torch.tensor([[0.1, 0.9], [0.5, 0.5]]))  # (1/16, 9/16) / (10/16)
    q = torch.rand(6, 10, generator=torch.Generator().manual_seed(0)).softmax(1)
    assert torch.allclose(sharpen(q, 1.0), q, atol=1e-6)
    assert torch.allclose(sharpen(q, 1e-6), nn.functional.one_hot(q.argmax(1), 10).float(), atol=1e-6)
    assert torch.allclose(sharpen(q, 0.5).sum(1), torch.ones(6))


def test_beta_sampler_has_the_beta_distribution():
    alpha, n = 0.75, 200_000
    lam = sample_beta(alpha, n, torch.Generator().manual_seed(0))
    assert lam.shape == (n,) and ((lam >= 0) & (lam <= 1)).all()
    assert abs(lam.mean().item() - 0.5) < 0.005
    assert abs(lam.var().item() - alpha**2 / ((2 * alpha) ** 2 * (2 * alpha + 1))) < 0.002  # 0.1
    assert stats.kstest(lam.double().numpy(), stats.beta(alpha, alpha).cdf).statistic < 0.01
    assert torch.equal(lam[:100], sample_beta(alpha, 100, torch.Generator().manual_seed(0)))  # the generator decides
    tiny = sample_beta(0.01, 10_000, torch.Generator().manual_seed(1))
    assert torch.isfinite(tiny).all() and ((tiny >= 0) & (tiny <= 1)).all()


def test_mixup_by_hand():
    gen = torch.Generator().manual_seed(3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, 4, generator=g), torch.rand(12, 5, generator=g)
    replay = torch.Generator().set_state(gen.get_state())
    mx, my = mixup(x, y, **mixup_draws(12, 0.75, gen))
    perm = torch.randperm(12, generator=replay)  # the permutation first, then λ
    lam = sample_beta(0.75, 12, replay)
    lam = torch.where(lam > 0.5, lam, 1 - lam)
    assert (lam >= 0.5).all()
    assert torch.allclose(mx, lam[:, None, None] * x + (1 - lam[:, None, None]) * x[perm], atol=1e-6)
    assert torch.allclose(my, lam[:, None] * y + (1 - lam[:, None]) * y[perm], atol=1e-6)
    assert torch.equal(gen.get_state(), replay.get_state())  # nothing else was drawn

    # one-hot inputs show the pairing directly: each row keeps λ' >= 1/2 of itself, the rest goes to
    # its partner, and the partners are a permutation
    eye = torch.eye(12)
    mixed, _ = mixup(eye, eye, **mixup_draws(12, 0.75, torch.Generator().manual_seed(4)))
    assert (mixed.diagonal() >= 0.5).all() and torch.allclose(mixed.sum(1), torch.ones(12))
    partners = (mixed - torch.diag(mixed.diagonal())).argmax(1)
    moved = mixed.diagonal() < 1
    assert torch.allclose(mixed[moved, partners[moved]], 1 - mixed.diagonal()[moved])


def test_views_are_one_weak_labeled_view_and_k_weak_unlabeled_draws():
    method = make_method(draws=3)
    assert method.views() == {"lb": View("x_lb", "weak"), "ulb": View("x_ulb", "weak", draws=3)}
    batch = make_views(method, make_batch(), "image")
    assert batch.views["lb"].shape == (8, 1, 8, 8) and batch.views["ulb"].shape == (3, 16, 1, 8, 8)
    assert make_method(lambda_u=0.0, alpha=0.0).views() == {}


@pytest.mark.parametrize("draws", [2, 3])
def test_guess_is_the_sharpened_mean_over_the_k_draws(draws):
    """Without MixUp the unlabeled targets are the guesses themselves, so l2u shows which guess was used."""
    model, method = make_model(), make_method(alpha=0.0, lambda_u=1.0, rampup=0.0, draws=draws)
    batch = pinned(make_batch(), draws=draws)
    _, terms = loss_of(method, model, batch, Progress(5, 10))
    with torch.no_grad():
        probs = torch.stack([model(u).softmax(1) for u in batch.views["ulb"]])  # (K, B_u, C)
        preds = probs.reshape(-1, 10)
        for guess, right in ((sharpen(probs.mean(0), 0.5), True), (sharpen(probs[0], 0.5), False)):
            l2u = ((preds - guess.repeat(draws, 1)) ** 2).mean()
            assert torch.allclose(terms["l2u"], l2u, atol=1e-7) == right


def test_loss_equals_a_by_hand_recomputation():
    model, method = make_model(), make_method(rampup=0.5)
    batch = pinned(make_batch())
    gen = replayed(method)
    loss, terms = loss_of(method, model, batch, Progress(3, 10))  # ramp = (3/9) / 0.5 = 2/3
    with torch.no_grad():
        want, ce, l2u = by_hand(model, batch, gen, lambda_u=10.0, ramp=2 / 3)
    assert torch.allclose(terms["ce"], ce, atol=1e-6) and torch.allclose(terms["l2u"], l2u, atol=1e-7)
    assert torch.allclose(loss, want, rtol=1e-5)
    assert torch.equal(method.context.generator.get_state(), gen.get_state())
    assert l2u > 0


def test_lambda_u_ramps_up_linearly():
    model, batch = make_model(), pinned(make_batch())
    for step, ramp in ((0, 0.0), (1, 0.5), (2, 1.0), (9, 1.0)):
        method = make_method(rampup=2 / 9)  # full weight from step 2 of 10 (progress 2/9)
        loss, terms = loss_of(method, model, batch, Progress(step, 10))
        assert torch.allclose(loss, terms["ce"] + 10.0 * ramp * terms["l2u"], rtol=1e-6)


def test_gradient_flows_through_the_mixed_batch_only():
    model, method = make_model(), make_method(rampup=0.0)
    batch = pinned(make_batch())
    gen = replayed(method)
    loss, _ = loss_of(method, model, batch, Progress(5, 10))
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in got)

    state = gen.get_state()
    for detach, same in ((True, True), (False, False)):
        model.zero_grad()
        by_hand(model, batch, torch.Generator().set_state(state), lambda_u=10.0, ramp=1.0, detach_guess=detach)[
            0
        ].backward()
        assert all(torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(got, model.parameters())) == same


def test_supervised_equivalent_is_one_clean_pass_and_draws_nothing():
    model, method = make_model(), make_method(lambda_u=0.0, alpha=0.0)
    state = method.context.generator.get_state()
    batch = make_batch()
    loss, terms = loss_of(method, model, batch, Progress(5, 10))
    assert torch.equal(loss, nn.functional.cross_entropy(model(batch.x_lb), batch.y_lb))
    assert terms["l2u"].isnan() and torch.equal(method.context.generator.get_state(), state)


def test_ablations_are_valid_configs():
    model, batch = make_model(), pinned(make_batch())
    no_mixup = make_method(alpha=0.0)
    state = no_mixup.context.generator.get_state()
    loss, _ = loss_of(no_mixup, model, batch, Progress(5, 10))
    assert torch.isfinite(loss) and torch.equal(no_mixup.context.generator.get_state(), state)

    # no unlabeled term but MixUp: the unlabeled samples still reach the labeled loss as partners
    def grad(ulb_seed):
        model.zero_grad()
        method = make_method(lambda_u=0.0)
        loss_of(method, model, pinned(make_batch(), ulb_seed=ulb_seed), Progress(5, 10))[0].backward()
        return [p.grad.clone() for p in model.parameters()]

    assert any(not torch.equal(a, b) for a, b in zip(grad(2), grad(3)))


@pytest.mark.parametrize(
    "params", [{"lambda_u": -1.0}, {"rampup": 1.5}, {"temperature": 0.0}, {"alpha": -0.5}, {"draws": 0}]
)
def test_config_refuses_bad_values(params):
    with pytest.raises(ValueError):
        load_method("mixmatch").Config(**params)
