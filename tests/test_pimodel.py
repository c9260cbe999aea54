"""Π-model (ssl_bench_plugins/pimodel.py) against independent computations.

Its two stochastic passes read the declared view `x`: two weak draws of labeled + unlabeled inputs, made by
the harness (ssl_bench.views) from the method's generator, so that the step itself draws nothing and
compiles. The loss is recomputed in plain Python on a linear model whose logits are its inputs.
"""

from __future__ import annotations

import math

import torch

from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.method import Batch, Progress, View
from ssl_bench.views import make_views
from tests import method_checks
from tests.method_checks import ce, grads_of, identity_model


def make_method(**params):
    return method_checks.make_method("pimodel", 3, **params)


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_view_is_two_weak_draws_of_the_whole_batch_labeled_first():
    method = make_method()
    assert method.views() == {"x": View("x", "weak", draws=2)}
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(4, 1, 8, 8, generator=g), torch.arange(4) % 3, torch.randn(6, 1, 8, 8, generator=g))
    views = make_views(method, batch, "image").views["x"]
    assert views.shape == (2, 10, 1, 8, 8)
    replay = torch.Generator().manual_seed(5)  # the method's generator, as make_method seeds it
    x = torch.cat([batch.x_lb, batch.x_ulb])
    first, second = AUGMENTATIONS["image"](x, replay), AUGMENTATIONS["image"](x, replay)
    assert torch.equal(views[0], first) and torch.equal(
        views[1], second
    )  # one draw over the whole batch, then the other
    assert not torch.equal(views[0], views[1])
    assert make_method(w_max=0.0).views() == {}  # no consistency term: nothing to draw


def test_loss_is_ce_of_the_first_pass_plus_ramped_mse_of_the_two_softmaxes():
    lb, y = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], [0, 2]
    ulb = [[0.0, 0.0, 3.0]]
    pass1 = lb + ulb
    pass2 = [[1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 1.0]]
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)
    nan = torch.full((1, 3), float("nan"), dtype=torch.float64)  # Π-model reads only the view: NaN here would show
    batch = Batch(t(lb), torch.tensor(y), nan, views={"x": torch.stack([t(pass1), t(pass2)])})
    model, method = identity_model(3), make_method(w_max=10.0, rampup=0.4)
    progress = Progress(1, 11)  # t = 0.1: w = 10·exp(−5·(1 − 0.25)²)
    loss, terms = method.loss(model, batch, progress)

    ce_hand = (ce(pass1[0], y[0]) + ce(pass1[1], y[1])) / 2
    mse_hand = sum((a - b) ** 2 for r1, r2 in zip(pass1, pass2) for a, b in zip(softmax(r1), softmax(r2))) / 9
    w = 10.0 * math.exp(-5 * (1 - 0.25) ** 2)
    assert math.isclose(terms["ce"].item(), ce_hand, rel_tol=1e-12)
    assert math.isclose(terms["cons"].item(), mse_hand, rel_tol=1e-12)
    assert math.isclose(loss.item(), ce_hand + w * mse_hand, rel_tol=1e-12)
    assert all(torch.isfinite(g).all() for g in grads_of(model, loss))


def test_without_consistency_it_is_one_clean_supervised_pass():
    model, method = identity_model(3), make_method(w_max=0.0)
    x_lb = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    loss, terms = method.loss(model, Batch(x_lb, torch.tensor([1]), x_lb), Progress(5, 10))
    assert math.isclose(loss.item(), ce([2.0, 0.0, -1.0], 1), rel_tol=1e-12) and terms["cons"].isnan()  # not computed
