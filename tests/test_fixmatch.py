"""FixMatch (ssl_bench_plugins/fixmatch.py) against independent computations.

The views are pinned (built here, not by the harness). The loss is recomputed by hand in float64 with the
method's own concatenated forward over [labeled, weak, strong] (what the paper does; it matters only with
BatchNorm, tested on its own below); gradients are checked against autograd of the by-hand loss and, for a
linear model whose logits are its inputs, against the analytic gradient. The threshold cases use such a
linear model so that exactly known samples pass τ.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ssl_bench.config import build_config
from ssl_bench.errors import UserError
from ssl_bench.method import Batch, Progress, View, load_method
from ssl_bench.models import create_model
from tests import method_checks
from tests.method_checks import ce, grads_of, identity_model

PROGRESS = Progress(3, 10)


def make_method(num_classes: int = 10, **params):
    return method_checks.make_method("fixmatch", num_classes, **params)


def logits_batch(lb, y, weak, strong) -> Batch:
    """A batch for `identity_model`: every row is the logits the model will give."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)
    x_ulb = torch.full_like(t(weak), float("nan"))  # FixMatch reads only the views: NaN here would show
    return Batch(t(lb), torch.tensor(y), x_ulb, views={"ulb_weak": t(weak), "ulb_strong": t(strong)})


def tiny_batch() -> tuple[torch.nn.Module, Batch]:
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))
    g = torch.Generator().manual_seed(1)
    x_lb, x_ulb = torch.randn(6, 1, 8, 8, generator=g), torch.randn(10, 1, 8, 8, generator=g)
    weak = x_ulb + 0.1 * torch.randn(x_ulb.shape, generator=g)
    strong = 2.0 * x_ulb.flip(-1) + 0.5 * torch.randn(x_ulb.shape, generator=g)
    return model, Batch(x_lb, torch.arange(6) % 10, x_ulb, views={"ulb_weak": weak, "ulb_strong": strong})


def test_declares_the_weak_and_strong_unlabeled_views():
    assert make_method().views() == {"ulb_weak": View("x_ulb", "weak"), "ulb_strong": View("x_ulb", "strong")}


def test_defaults_are_the_papers():
    assert load_method("fixmatch").Config() == load_method("fixmatch").Config(threshold=0.95, lambda_u=1.0)


def test_loss_and_gradient_match_a_by_hand_computation_on_tinycnn():
    model, batch = tiny_batch()
    x64 = lambda x: x.double()
    ref = copy.deepcopy(model).double()
    n_lb, n_ulb = len(batch.x_lb), len(batch.x_ulb)
    with torch.no_grad():  # τ between two confidences of the weak view: half of the batch passes, by a margin
        z = ref(torch.cat([x64(batch.x_lb), x64(batch.views["ulb_weak"]), x64(batch.views["ulb_strong"])]))[
            n_lb : n_lb + n_ulb
        ]
        conf = (z.exp() / z.exp().sum(1, keepdim=True)).max(1).values.sort().values
    tau = float(conf[n_ulb // 2 - 1] + conf[n_ulb // 2]) / 2
    method = make_method(threshold=tau, lambda_u=2.0)
    loss, terms = method.loss(model, batch, PROGRESS)

    # by hand, float64, the same concatenated forward; the weak branch gives targets only (no gradient)
    logits = ref(torch.cat([x64(batch.x_lb), x64(batch.views["ulb_weak"]), x64(batch.views["ulb_strong"])]))
    lb, weak, strong = logits[:n_lb], logits[n_lb : n_lb + n_ulb].detach(), logits[n_lb + n_ulb :]
    log_softmax = lambda v: v - v.exp().sum(1, keepdim=True).log()
    ce_ref = -log_softmax(lb)[torch.arange(n_lb), batch.y_lb].mean()
    q = weak.exp() / weak.exp().sum(1, keepdim=True)
    passed = q.max(1).values >= tau
    pseudo = q.argmax(1)
    unsup_ref = -(log_softmax(strong)[torch.arange(n_ulb), pseudo] * passed).sum() / n_ulb
    loss_ref = ce_ref + 2.0 * unsup_ref

    assert int(passed.sum()) == n_ulb // 2
    assert terms["mask"].item() == 0.5
    assert torch.allclose(terms["ce"].double(), ce_ref, atol=1e-6)
    assert torch.allclose(terms["unsup"].double(), unsup_ref, atol=1e-6) and unsup_ref > 0
    assert torch.allclose(loss.double(), loss_ref, atol=1e-6)
    for g, g_ref in zip(grads_of(model, loss), grads_of(ref, loss_ref)):
        assert torch.allclose(g.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_gradient_of_a_linear_model_is_the_analytic_one():
    """Logits = inputs: dL/dz is (softmax − onehot)/B_lb for the labeled rows, λ·mask·(softmax − onehot(pseudo))
    /B_ulb for the strong rows and 0 for the weak rows (detached), and dL/dW = Σ_rows (dL/dz) xᵀ."""
    g = torch.Generator().manual_seed(3)
    k, n_lb, n_ulb, lam = 5, 4, 6, 1.5
    z_lb, z_strong = (
        torch.randn(n_lb, k, generator=g, dtype=torch.float64),
        torch.randn(n_ulb, k, generator=g, dtype=torch.float64),
    )
    z_weak = 4 * torch.randn(n_ulb, k, generator=g, dtype=torch.float64)  # some confident, some not
    y = torch.tensor([0, 3, 1, 4])
    batch = logits_batch(z_lb.tolist(), y.tolist(), z_weak.tolist(), z_strong.tolist())
    model = identity_model(k)
    loss, terms = make_method(k, threshold=0.7, lambda_u=lam).loss(model, batch, PROGRESS)
    loss.backward()

    q = z_weak.softmax(1)
    mask = (q.max(1).values >= 0.7).double()
    assert 0 < mask.sum() < n_ulb
    d_lb = (z_lb.softmax(1) - torch.eye(k, dtype=torch.float64)[y]) / n_lb
    d_strong = lam * mask[:, None] * (z_strong.softmax(1) - torch.eye(k, dtype=torch.float64)[q.argmax(1)]) / n_ulb
    d = torch.cat([d_lb, torch.zeros(n_ulb, k, dtype=torch.float64), d_strong])  # (N, K)
    x = torch.cat([z_lb, z_weak, z_strong])  # (N, K)
    assert torch.allclose(model.weight.grad, d.T @ x, atol=1e-12)
    assert torch.allclose(model.bias.grad, d.sum(0), atol=1e-12)
    assert terms["mask"].item() == mask.mean().item()


def test_the_mask_passes_exactly_the_confident_weak_predictions():
    # weak max-probabilities e^4/(e^4+2) = 0.965, e^3/(e^3+2) = 0.909, e^5/(e^5+2) = 0.987, e^2.9/(e^2.9+2) = 0.901
    weak = [[4.0, 0, 0], [3.0, 0, 0], [0, 5.0, 0], [0, 0, 2.9]]
    strong = [[0, 2.0, 0], [1.0, 1.0, 1.0], [3.0, 0, 0], [0, 0, 0]]
    batch = logits_batch([[1.0, 0, 0]], [0], weak, strong)
    loss, terms = make_method(3).loss(identity_model(3), batch, PROGRESS)  # τ = 0.95
    assert terms["mask"].item() == 0.5
    expected = (ce(strong[0], 0) + ce(strong[2], 1)) / 4  # samples 0 and 2, mean over all 4
    assert terms["unsup"].item() == pytest.approx(expected, rel=1e-12)
    assert loss.item() == pytest.approx(ce([1.0, 0, 0], 0) + expected, rel=1e-12)

    # the strong views of samples that do not pass do not matter; those of samples that pass do
    other = [strong[0], [9.0, -9.0, 3.0], strong[2], [-5.0, 7.0, 0]]
    _, same = make_method(3).loss(identity_model(3), logits_batch([[1.0, 0, 0]], [0], weak, other), PROGRESS)
    assert same["unsup"].item() == pytest.approx(expected, rel=1e-12)
    other[2] = [0, 3.0, 0]
    _, changed = make_method(3).loss(identity_model(3), logits_batch([[1.0, 0, 0]], [0], weak, other), PROGRESS)
    assert changed["unsup"].item() != pytest.approx(expected, rel=1e-6)


def test_pseudo_labels_are_the_weak_views_argmax_not_the_strong_ones():
    weak, strong = [[6.0, 0, 0]], [[0, 0, 4.0]]  # weak says class 0 (confidently), strong says class 2
    _, terms = make_method(3).loss(identity_model(3), logits_batch([[0, 0, 0]], [0], weak, strong), PROGRESS)
    assert terms["mask"].item() == 1.0
    assert terms["unsup"].item() == pytest.approx(ce(strong[0], 0), rel=1e-12)  # 4 + log(2 + e^4) − 4 ≈ 4.04
    assert terms["unsup"].item() > 4  # against the strong view's own argmax it would be ≈ 0.04


def test_confidence_exactly_at_tau_passes():
    """`max q ≥ τ`, as in the paper's code: logits (0, 0) give q = (0.5, 0.5) exactly, which passes τ = 0.5."""
    _, terms = make_method(2, threshold=0.5).loss(
        identity_model(2), logits_batch([[0, 0]], [0], [[0.0, 0.0]], [[1.0, 0]]), PROGRESS
    )
    assert terms["mask"].item() == 1.0
    assert terms["unsup"].item() == pytest.approx(ce([1.0, 0], 0), rel=1e-12)  # argmax of a tie: the first class


def test_tau_one_leaves_no_unlabeled_term():
    model, batch = tiny_batch()
    loss, terms = make_method(threshold=1.0).loss(model, batch, PROGRESS)
    assert terms["mask"].item() == 0 and terms["unsup"].item() == 0
    sup = torch.nn.functional.cross_entropy(model(batch.x_lb), batch.y_lb)
    for g, g_sup in zip(grads_of(model, loss), grads_of(model, sup)):
        assert torch.allclose(g, g_sup, atol=1e-6)
    # only a prediction that rounds to exactly 1.0 passes τ = 1 (float32 softmax with a logit margin ≳ 17)
    saturated = torch.tensor([[30.0, 0.0, 0.0]]).softmax(1).max()
    assert saturated == 1.0


def test_zero_weight_is_exactly_supervised_and_never_looks_at_the_views():
    model, batch = tiny_batch()
    nan_views = {name: torch.full_like(v, float("nan")) for name, v in batch.views.items()}
    batch = Batch(batch.x_lb, batch.y_lb, torch.full_like(batch.x_ulb, float("nan")), views=nan_views)
    shapes = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    loss, terms = make_method(**load_method("fixmatch").supervised_equivalent).loss(model, batch, PROGRESS)
    assert shapes == [tuple(batch.x_lb.shape)]  # one clean pass over the labeled batch
    assert terms["unsup"].isnan() and terms["mask"].isnan()  # not computed
    sup = torch.nn.functional.cross_entropy(model(batch.x_lb), batch.y_lb)
    for g, g_sup in zip(grads_of(model, loss), grads_of(model, sup)):
        assert torch.equal(g, g_sup)


def test_one_forward_over_labeled_weak_and_strong_batchnorm_included():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    _, batch = tiny_batch()
    shapes = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    _, terms = make_method(threshold=0.0).loss(model, batch, PROGRESS)
    n_lb, n_ulb = len(batch.x_lb), len(batch.x_ulb)
    assert shapes == [(n_lb + 2 * n_ulb, 1, 8, 8)]
    with torch.no_grad():
        logits = model(torch.cat([batch.x_lb, batch.views["ulb_weak"], batch.views["ulb_strong"]]))
        lb, weak, strong = logits.split([n_lb, n_ulb, n_ulb])
        separate = model(batch.x_lb)  # BatchNorm over the labeled batch alone: another result
    ce_cat = torch.nn.functional.cross_entropy(lb, batch.y_lb)
    unsup_cat = torch.nn.functional.cross_entropy(strong, weak.argmax(1))  # τ = 0: every sample passes
    assert torch.allclose(terms["ce"], ce_cat, atol=1e-6) and torch.allclose(terms["unsup"], unsup_cat, atol=1e-6)
    assert not torch.allclose(terms["ce"], torch.nn.functional.cross_entropy(separate, batch.y_lb), atol=1e-3)


def test_the_unlabeled_batch_changes_the_gradient_once_predictions_pass_tau():
    model, batch = tiny_batch()
    a = grads_of(model, make_method(threshold=0.0).loss(model, batch, PROGRESS)[0])
    views = {name: v.flip(0) for name, v in batch.views.items()}
    b = grads_of(
        model, make_method(threshold=0.0).loss(model, Batch(batch.x_lb, batch.y_lb, batch.x_ulb, views), PROGRESS)[0]
    )
    assert any(not torch.allclose(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"threshold": -0.01}, "threshold"),
        ({"threshold": 1.01}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"lambda_u": -1.0}, "lambda_u"),
        ({"lambda_u": float("nan")}, "lambda_u"),
    ],
)
def test_bad_config_values_are_refused(params, message):
    cls = load_method("fixmatch").Config
    with pytest.raises(ValueError, match=message):
        cls(**params)
    with pytest.raises(UserError, match=f"fixmatch: .*{message}"):  # as the CLI reports it: one line, the field named
        build_config(cls, {k: str(v) for k, v in params.items()}, "fixmatch")
