"""UDA (ssl_bench_plugins/uda.py) against independent computations.

The strong view is pinned (built here, not by the harness); the "original" is `batch.x_ulb`. The loss is
recomputed by hand in float64 with the method's own concatenated forward over [labeled, original, strong]
(what the paper's code does; it matters only with BatchNorm, tested on its own below), with sharpening
written out as p^(1/T)/Σp^(1/T); gradients are checked against autograd of the by-hand loss and, for a
linear model whose logits are its inputs, against the analytic gradient (d KL(q‖softmax z)/dz = softmax z − q).
Masks and TSA thresholds are checked on constructed logits where exactly known samples pass.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from ssl_bench.config import build_config
from ssl_bench.errors import UserError
from ssl_bench.method import Batch, Progress, View, load_method
from ssl_bench.models import create_model
from ssl_bench_plugins.uda import tsa_threshold
from tests import method_checks
from tests.method_checks import ce, grads_of, identity_model

PROGRESS = Progress(3, 10)


def make_method(num_classes: int = 10, **params):
    return method_checks.make_method("uda", num_classes, **params)


def logits_batch(lb, y, original, strong) -> Batch:
    """A batch for `identity_model`: every row is the logits the model will give."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)
    return Batch(t(lb), torch.tensor(y), t(original), views={"ulb_strong": t(strong)})


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def kl_sharpened(original: list[float], strong: list[float], temperature: float) -> float:
    """KL(sharpen(softmax(original), T) ‖ softmax(strong)), in plain Python."""
    p = [v ** (1 / temperature) for v in softmax(original)]
    q = [v / sum(p) for v in p]
    return sum(qi * (math.log(qi) - math.log(si)) for qi, si in zip(q, softmax(strong)))


def tiny_batch() -> tuple[torch.nn.Module, Batch]:
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))
    g = torch.Generator().manual_seed(1)
    x_lb, x_ulb = torch.randn(6, 1, 8, 8, generator=g), torch.randn(10, 1, 8, 8, generator=g)
    strong = 2.0 * x_ulb.flip(-1) + 0.5 * torch.randn(x_ulb.shape, generator=g)
    return model, Batch(x_lb, torch.arange(6) % 10, x_ulb, views={"ulb_strong": strong})


def test_declares_only_the_strong_view_the_original_is_the_batch():
    assert make_method().views() == {"ulb_strong": View("x_ulb", "strong")}


def test_defaults():
    cls = load_method("uda").Config
    assert cls() == cls(lambda_=1.0, temperature=0.4, threshold=0.8, tsa="none")


def test_loss_and_gradient_match_a_by_hand_computation_on_tinycnn():
    model, batch = tiny_batch()
    ref = copy.deepcopy(model).double()
    n_lb, n_ulb = len(batch.x_lb), len(batch.x_ulb)
    x = torch.cat([batch.x_lb, batch.x_ulb, batch.views["ulb_strong"]]).double()
    with torch.no_grad():  # β between two confidences of the original: half of the batch passes, by a margin
        z = ref(x)[n_lb : n_lb + n_ulb]
        conf = (z.exp() / z.exp().sum(1, keepdim=True)).max(1).values.sort().values
    beta = float(conf[n_ulb // 2 - 1] + conf[n_ulb // 2]) / 2
    method = make_method(threshold=beta, temperature=0.5, lambda_=2.0)
    loss, terms = method.loss(model, batch, PROGRESS)

    # by hand, float64, the same concatenated forward; the original gives the target only (no gradient)
    logits = ref(x)
    lb, ori, strong = logits[:n_lb], logits[n_lb : n_lb + n_ulb].detach(), logits[n_lb + n_ulb :]
    log_softmax = lambda v: v - v.exp().sum(1, keepdim=True).log()
    ce_ref = -log_softmax(lb)[torch.arange(n_lb), batch.y_lb].mean()
    p = ori.exp() / ori.exp().sum(1, keepdim=True)
    passed = p.max(1).values > beta
    q = p**2 / (p**2).sum(1, keepdim=True)  # sharpened with T = 0.5
    kl = (q * (q.log() - log_softmax(strong))).sum(1)
    unsup_ref = (kl * passed).sum() / n_ulb
    loss_ref = ce_ref + 2.0 * unsup_ref

    assert int(passed.sum()) == n_ulb // 2
    assert terms["mask"].item() == 0.5
    assert torch.allclose(terms["ce"].double(), ce_ref, atol=1e-6)
    assert torch.allclose(terms["unsup"].double(), unsup_ref, atol=1e-6) and unsup_ref > 0
    assert torch.allclose(loss.double(), loss_ref, atol=1e-6)
    for g, g_ref in zip(grads_of(model, loss), grads_of(ref, loss_ref)):
        assert torch.allclose(g.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_gradient_of_a_linear_model_is_the_analytic_one():
    """Logits = inputs: dL/dz is (softmax − onehot)/B_lb for the labeled rows, λ·mask·(softmax − q)/B_ulb for
    the strong rows (q the sharpened target) and 0 for the original rows (the target is detached)."""
    g = torch.Generator().manual_seed(3)
    k, n_lb, n_ulb, lam, t = 5, 4, 6, 1.5, 0.4
    z_lb, z_strong = (
        torch.randn(n_lb, k, generator=g, dtype=torch.float64),
        torch.randn(n_ulb, k, generator=g, dtype=torch.float64),
    )
    z_ori = 3 * torch.randn(n_ulb, k, generator=g, dtype=torch.float64)  # some confident, some not
    y = torch.tensor([0, 3, 1, 4])
    model = identity_model(k)
    loss, terms = make_method(k, threshold=0.7, temperature=t, lambda_=lam).loss(
        model, logits_batch(z_lb.tolist(), y.tolist(), z_ori.tolist(), z_strong.tolist()), PROGRESS
    )
    loss.backward()

    p = z_ori.softmax(1)
    mask = (p.max(1).values > 0.7).double()
    assert 0 < mask.sum() < n_ulb
    q = (z_ori / t).softmax(1)  # the sharpened target, written as the paper's code does
    d_lb = (z_lb.softmax(1) - torch.eye(k, dtype=torch.float64)[y]) / n_lb
    d_strong = lam * mask[:, None] * (z_strong.softmax(1) - q) / n_ulb
    d = torch.cat([d_lb, torch.zeros(n_ulb, k, dtype=torch.float64), d_strong])  # (N, K)
    x = torch.cat([z_lb, z_ori, z_strong])  # (N, K)
    assert torch.allclose(model.weight.grad, d.T @ x, atol=1e-12)
    assert torch.allclose(model.bias.grad, d.sum(0), atol=1e-12)
    assert terms["mask"].item() == mask.mean().item()


def test_sharpening_and_kl_by_hand():
    original = [[math.log(0.5), math.log(0.3), math.log(0.2)]]  # p = (0.5, 0.3, 0.2)
    strong = [[0.3, -0.2, 0.1]]
    for t in (1.0, 0.5, 0.4, 0.1):
        _, terms = make_method(3, threshold=0.0, temperature=t).loss(
            identity_model(3), logits_batch([[0, 0, 0]], [0], original, strong), PROGRESS
        )
        assert terms["unsup"].item() == pytest.approx(kl_sharpened(original[0], strong[0], t), rel=1e-10)
    # T = 0.5: q = p² / Σp² = (0.25, 0.09, 0.04) / 0.38
    q = [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]
    by_hand = sum(qi * (math.log(qi) - math.log(si)) for qi, si in zip(q, softmax(strong[0])))
    assert kl_sharpened(original[0], strong[0], 0.5) == pytest.approx(by_hand, rel=1e-12)
    # a strong view that predicts what the original does: KL 0 without sharpening, > 0 with it
    _, plain = make_method(3, threshold=0.0, temperature=1.0).loss(
        identity_model(3), logits_batch([[0, 0, 0]], [0], original, original), PROGRESS
    )
    _, sharp = make_method(3, threshold=0.0, temperature=0.4).loss(
        identity_model(3), logits_batch([[0, 0, 0]], [0], original, original), PROGRESS
    )
    assert abs(plain["unsup"].item()) < 1e-12 and sharp["unsup"].item() > 0.1


def test_the_mask_passes_exactly_the_confident_original_predictions():
    # max-probabilities of the original: e^3/(e^3+2) = 0.909, e/(e+2) = 0.576, e^4/(e^4+2) = 0.965, 1/3
    original = [[3.0, 0, 0], [1.0, 0, 0], [0, 0, 4.0], [0, 0, 0]]
    strong = [[0, 2.0, 0], [1.0, 1.0, 1.0], [3.0, 0, 0], [0, 0, 5.0]]
    loss, terms = make_method(3).loss(
        identity_model(3), logits_batch([[1.0, 0, 0]], [0], original, strong), PROGRESS
    )  # β = 0.8, T = 0.4
    assert terms["mask"].item() == 0.5
    expected = (
        kl_sharpened(original[0], strong[0], 0.4) + kl_sharpened(original[2], strong[2], 0.4)
    ) / 4  # mean over all 4
    assert terms["unsup"].item() == pytest.approx(expected, rel=1e-10)
    assert loss.item() == pytest.approx(ce([1.0, 0, 0], 0) + expected, rel=1e-10)
    # confident strong views do not make a sample pass: the confidence is the original's
    _, confident = make_method(3).loss(
        identity_model(3), logits_batch([[1.0, 0, 0]], [0], original, [[9.0, 0, 0]] * 4), PROGRESS
    )
    assert confident["mask"].item() == 0.5


def test_confidence_exactly_at_beta_does_not_pass():
    """`max p > β` (strictly), as in the paper's code: logits (0, 0) give p = 0.5 exactly, which fails β = 0.5."""
    batch = logits_batch([[0, 0]], [0], [[0.0, 0.0], [2.0, 0.0]], [[1.0, 0], [0, 1.0]])
    _, terms = make_method(2, threshold=0.5).loss(identity_model(2), batch, PROGRESS)
    assert terms["mask"].item() == 0.5
    assert terms["unsup"].item() == pytest.approx(kl_sharpened([2.0, 0.0], [0, 1.0], 0.4) / 2, rel=1e-10)


@pytest.mark.parametrize(
    ("schedule", "fraction", "expected"),
    [
        ("none", 0.0, 1.0),
        ("none", 0.5, 1.0),
        ("linear", 0.0, 0.1),
        ("linear", 0.5, 0.55),  # 0.5·0.9 + 0.1
        ("linear", 1.0, 1.0),
        ("log", 0.0, 0.1),
        ("log", 0.5, 0.9261235013),  # (1 − e^−2.5)·0.9 + 0.1, e^−2.5 = 0.0820849986
        ("log", 1.0, 0.9939358477),  # (1 − e^−5)·0.9 + 0.1, e^−5 = 0.0067379470
        ("exp", 0.0, 0.1060641523),  # e^−5·0.9 + 0.1
        ("exp", 0.5, 0.1738764987),  # e^−2.5·0.9 + 0.1
        ("exp", 1.0, 1.0),
    ],
)
def test_tsa_thresholds_by_hand(schedule, fraction, expected):
    assert tsa_threshold(schedule, fraction, 10) == pytest.approx(expected, abs=1e-9)


def test_tsa_leaves_out_the_labeled_samples_above_the_threshold():
    """K = 4, linear TSA at progress 2/4: η = 0.5·0.75 + 0.25 = 0.625. Correct-class probabilities:
    e²/(e²+3) = 0.711 (left out), 0.25 (kept), e/(e+3) = 0.475 (kept), e³/(e³+3) = 0.870 (left out)."""
    lb = [[2.0, 0, 0, 0], [0, 0, 0, 0], [1.0, 0, 0, 0], [0, 3.0, 0, 0]]
    y = [0, 1, 0, 1]
    model = identity_model(4)
    batch = logits_batch(lb, y, [[0, 0, 0, 0]], [[0, 0, 0, 0]])
    loss, terms = make_method(4, lambda_=0.0, tsa="linear").loss(model, batch, Progress(2, 5))
    assert terms["ce"].item() == pytest.approx((ce(lb[1], 1) + ce(lb[2], 0)) / 2, rel=1e-12)  # over the samples kept
    loss.backward()
    z, onehot = torch.tensor(lb, dtype=torch.float64), torch.eye(4, dtype=torch.float64)[y]
    d = (z.softmax(1) - onehot) * torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)[:, None] / 2
    assert torch.allclose(model.weight.grad, d.T @ z, atol=1e-12) and torch.allclose(
        model.bias.grad, d.sum(0), atol=1e-12
    )
    # at the start η = 1/K = 0.25: only sample 1 (exactly 0.25, not above η) is kept
    _, start = make_method(4, lambda_=0.0, tsa="linear").loss(identity_model(4), batch, Progress(0, 5))
    assert start["ce"].item() == pytest.approx(ce(lb[1], 1), rel=1e-12)
    # every sample above η: no supervised signal, and no division by zero
    confident = logits_batch([[9.0, 0, 0, 0]], [0], [[0, 0, 0, 0]], [[0, 0, 0, 0]])
    loss, none_kept = make_method(4, lambda_=0.0, tsa="exp").loss(identity_model(4), confident, Progress(0, 5))
    assert none_kept["ce"].item() == 0 and torch.isfinite(loss)


def test_tsa_applies_with_the_consistency_term_too():
    lb, y = [[2.0, 0, 0, 0], [0, 0, 0, 0]], [0, 1]
    batch = logits_batch(lb, y, [[3.0, 0, 0, 0]], [[0, 1.0, 0, 0]])
    _, terms = make_method(4, tsa="linear", threshold=0.0).loss(identity_model(4), batch, Progress(2, 5))
    assert terms["ce"].item() == pytest.approx(ce(lb[1], 1), rel=1e-12)
    assert terms["unsup"].item() == pytest.approx(kl_sharpened([3.0, 0, 0, 0], [0, 1.0, 0, 0], 0.4), rel=1e-10)


def test_supervised_equivalent_is_exactly_supervised_and_never_looks_at_the_unlabeled_batch():
    model, batch = tiny_batch()
    nan = lambda v: torch.full_like(v, float("nan"))
    batch = Batch(batch.x_lb, batch.y_lb, nan(batch.x_ulb), views={"ulb_strong": nan(batch.views["ulb_strong"])})
    shapes = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    loss, terms = make_method(**load_method("uda").supervised_equivalent).loss(model, batch, PROGRESS)
    assert shapes == [tuple(batch.x_lb.shape)]  # one clean pass over the labeled batch
    assert terms["unsup"].isnan() and terms["mask"].isnan()  # not computed
    sup = torch.nn.functional.cross_entropy(model(batch.x_lb), batch.y_lb)
    for g, g_sup in zip(grads_of(model, loss), grads_of(model, sup)):
        assert torch.equal(g, g_sup)
    # λ = 0 alone is not enough when TSA is on: TSA changes the supervised term
    _, annealed = make_method(lambda_=0.0, tsa="linear").loss(model, batch, Progress(0, 10))  # η = 0.1 < some p
    assert annealed["ce"].item() != pytest.approx(sup.item(), rel=1e-6)


def test_one_forward_over_labeled_original_and_strong_batchnorm_included():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    _, batch = tiny_batch()
    shapes = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    _, terms = make_method(threshold=0.0, temperature=1.0).loss(model, batch, PROGRESS)
    n_lb, n_ulb = len(batch.x_lb), len(batch.x_ulb)
    assert shapes == [(n_lb + 2 * n_ulb, 1, 8, 8)]
    with torch.no_grad():
        logits = model(torch.cat([batch.x_lb, batch.x_ulb, batch.views["ulb_strong"]]))
        lb, ori, strong = logits.split([n_lb, n_ulb, n_ulb])
        separate = model(batch.x_lb)  # BatchNorm over the labeled batch alone: another result
    ce_cat = torch.nn.functional.cross_entropy(lb, batch.y_lb)
    kl_cat = (ori.softmax(1) * (ori.log_softmax(1) - strong.log_softmax(1))).sum(1).mean()  # β = 0, T = 1
    assert torch.allclose(terms["ce"], ce_cat, atol=1e-6) and torch.allclose(terms["unsup"], kl_cat, atol=1e-6)
    assert not torch.allclose(terms["ce"], torch.nn.functional.cross_entropy(separate, batch.y_lb), atol=1e-3)


def test_the_unlabeled_batch_changes_the_gradient_once_predictions_pass_beta():
    model, batch = tiny_batch()
    a = grads_of(model, make_method(threshold=0.0).loss(model, batch, PROGRESS)[0])
    flipped = Batch(batch.x_lb, batch.y_lb, batch.x_ulb, {"ulb_strong": batch.views["ulb_strong"].flip(0)})
    b = grads_of(model, make_method(threshold=0.0).loss(model, flipped, PROGRESS)[0])
    assert any(not torch.allclose(x, y) for x, y in zip(a, b))


def test_tsa_compiles_once_for_the_whole_run(monkeypatch):
    """Compiled (`--compile`), Progress.step is symbolic: TSA's threshold must stay a symbolic expression of it
    (math.exp would specialize it, recompile at every step and fail the run at Dynamo's limit of 8)."""
    from ssl_bench.run import compiled

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")  # the same tracing as inductor, without code generation
    model, batch = tiny_batch()
    eager_model = copy.deepcopy(model)
    method, eager_method = make_method(tsa="exp", threshold=0.0), make_method(tsa="exp", threshold=0.0)
    step = compiled.CompiledGradients(model, method, "fp32", torch.device("cpu"), "tinycnn/uda", pytest.fail)
    eager = compiled.eager_gradients(eager_model, eager_method, "fp32", torch.device("cpu"))
    for i in range(12):
        for p in [*model.parameters(), *eager_model.parameters()]:
            p.grad = None
        loss, _ = step(batch, Progress(i, 12))
        loss_ref, _ = eager(batch, Progress(i, 12))
        assert torch.allclose(loss, loss_ref, rtol=1e-6)
    assert step.record()["compiled"]
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lambda_": -1.0}, "lambda_"),
        ({"lambda_": float("nan")}, "lambda_"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.4}, "temperature"),
        ({"threshold": -0.01}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"tsa": "cosine"}, "tsa"),
    ],
)
def test_bad_config_values_are_refused(params, message):
    cls = load_method("uda").Config
    with pytest.raises(ValueError, match=message):
        cls(**params)
    with pytest.raises(UserError, match=f"uda: .*{message}"):  # as the CLI reports it: one line, the field named
        build_config(cls, {k: str(v) for k, v in params.items()}, "uda")
