"""`pseudolabel` against independent computations: the loss and its gradient recomputed by hand from the
model's logits (explicit log-softmax, argmax targets as constants), the paper's α(t) written out, and
the config's validation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.method import Batch, Progress, load_method
from ssl_bench.models import create_model
from tests import method_checks

PseudoLabel = load_method("pseudolabel")


def make_method(**params):
    return method_checks.make_method("pseudolabel", **params)


def make_model(dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8)).to(dtype)


def make_batch(dtype=torch.float64) -> Batch:
    g = torch.Generator().manual_seed(0)
    x_lb = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype)
    x_ulb = torch.randn(12, 1, 8, 8, generator=g, dtype=dtype)
    return Batch(x_lb, torch.tensor([0, 1, 2, 3, 4, 5]), x_ulb)


def hand_loss(model, batch, weight, threshold):
    """CE(labeled) + weight·mean_i m_i·(−log p_i[ŷ_i]) with ŷ, m computed beforehand as constants."""
    logp_lb = torch.log_softmax(model(batch.x_lb), 1)
    ce = -logp_lb[torch.arange(len(batch.y_lb)), batch.y_lb].mean()
    logits = model(batch.x_ulb)
    probs = logits.detach().exp() / logits.detach().exp().sum(1, keepdim=True)
    targets = [int(max(range(10), key=lambda c: float(row[c]))) for row in probs]  # argmax, by hand
    mask = torch.tensor([float(row.max() >= threshold) for row in probs], dtype=logits.dtype)
    logp = torch.log_softmax(logits, 1)
    pl = -(logp[torch.arange(len(targets)), torch.tensor(targets)] * mask).sum() / len(targets)
    return ce + weight * pl, ce, pl


def grads_of(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


def test_defaults_are_the_documented_ones():
    cfg = PseudoLabel.Config()
    assert (cfg.alpha_f, cfg.t1, cfg.t2, cfg.threshold) == (3.0, 0.1, 0.6, 0.95)
    assert PseudoLabel.supervised_equivalent == {"alpha_f": 0.0}


@pytest.mark.parametrize("threshold", [0.0, 0.19])  # 0.19: 6 of the 12 unlabeled samples pass
def test_loss_and_gradient_match_the_hand_computation(threshold):
    batch = make_batch()
    model = make_model()
    method = make_method(alpha_f=2.0, t1=0.0, t2=0.0, threshold=threshold)  # constant weight 2
    loss, terms = method.loss(model, batch, Progress(4, 10))
    ref, ce, pl = hand_loss(model, batch, 2.0, threshold)
    assert torch.allclose(terms["ce"], ce, atol=1e-12) and torch.allclose(terms["pl"], pl, atol=1e-12)
    assert torch.allclose(loss, ref, atol=1e-12)
    for a, b in zip(grads_of(model, loss), grads_of(model, ref)):
        assert torch.allclose(a, b, atol=1e-12)


def test_threshold_keeps_only_confident_samples_in_the_mean():
    batch = make_batch()
    model = make_model()
    with torch.no_grad():
        conf = model(batch.x_ulb).softmax(1).max(1).values
    s = conf.sort().values
    tau = float(s[5] + s[6]) / 2  # half the samples pass, none at the boundary
    _, _, pl = hand_loss(model, batch, 1.0, tau)
    _, terms = make_method(threshold=tau, t1=0.0, t2=0.0).loss(model, batch, Progress(0, 10))
    assert 0 < int((conf >= tau).sum()) < len(conf)
    assert torch.allclose(terms["pl"], pl.detach(), atol=1e-12)
    # τ = 1 masks every (unsaturated) sample: only the labeled term is left
    loss, terms = make_method(threshold=1.0, t1=0.0, t2=0.0).loss(model, batch, Progress(0, 10))
    assert terms["pl"] == 0 and torch.allclose(loss, terms["ce"])


def test_pseudo_labels_follow_the_current_prediction_not_a_fixed_label():
    """Changing the model changes the targets: the term is the CE against the model's own argmax."""
    batch = make_batch()
    model = make_model()
    method = make_method(t1=0.0, t2=0.0, threshold=0.0)
    _, before = method.loss(model, batch, Progress(0, 10))
    with torch.no_grad():
        model.head.bias.copy_(
            torch.tensor([50.0] + [0.0] * 9, dtype=torch.float64)
        )  # everything → class 0, confidently
    _, after = method.loss(model, batch, Progress(0, 10))
    assert before["pl"] > 0.1 and after["pl"] < 1e-10  # CE against its own (now certain) argmax


def paper_alpha(t, t1, t2, alpha_f):
    """Lee 2013: α(t) = 0 (t < T1); (t − T1)/(T2 − T1)·α_f (T1 ≤ t < T2); α_f (t ≥ T2)."""
    if t < t1:
        return 0.0
    if t < t2:
        return (t - t1) / (t2 - t1) * alpha_f
    return alpha_f


@pytest.mark.parametrize("step", range(11))
def test_weight_follows_the_papers_ramp(step):
    batch = make_batch()
    model = make_model()
    progress = Progress(step, 11)  # fraction = step / 10
    loss, terms = make_method(threshold=0.0).loss(
        model, batch, progress
    )  # defaults α_f = 3, t1 = 0.1, t2 = 0.6; the paper's τ = 0
    w = paper_alpha(step / 10, 0.1, 0.6, 3.0)
    assert torch.allclose(loss, terms["ce"] + w * terms["pl"], atol=1e-12)
    assert math.isfinite(float(terms["pl"])) and terms["pl"] > 0  # logged before T1 too


def test_pseudo_labels_are_the_argmax_of_the_logits_under_bf16():
    """Under bf16 autocast softmax comes out in bf16 and ties near-equal classes: the targets must still be
    the argmax of the logits (in this batch one sample would get another label from the probabilities)."""
    batch, model = make_batch(torch.float32), make_model(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, terms = make_method(t1=0.0, t2=0.0, threshold=0.0).loss(model, batch, Progress(0, 10))
        logits = model(batch.x_ulb)
        assert (logits.softmax(1).argmax(1) != logits.argmax(1)).sum() == 1  # the case this guards against
        pl = F.cross_entropy(logits.float(), logits.argmax(1))
        tied = F.cross_entropy(logits.float(), logits.softmax(1).argmax(1))
    assert torch.allclose(terms["pl"], pl, atol=1e-6) and not torch.allclose(terms["pl"], tied, atol=1e-5)


def test_zero_weight_is_exactly_supervised():
    batch = make_batch(torch.float32)
    model = make_model(torch.float32)
    loss, terms = make_method(alpha_f=0.0).loss(model, batch, Progress(9, 10))
    ce = F.cross_entropy(make_model(torch.float32)(batch.x_lb), batch.y_lb)
    assert torch.equal(loss, ce) and math.isnan(float(terms["pl"]))


def test_loss_draws_no_randomness():
    method = make_method()
    gen_state, rng_state = method.context.generator.get_state(), torch.get_rng_state()
    method.loss(make_model(), make_batch(), Progress(5, 10))
    assert torch.equal(method.context.generator.get_state(), gen_state)
    assert torch.equal(torch.get_rng_state(), rng_state)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"alpha_f": -1.0}, "alpha_f"),
        ({"alpha_f": math.inf}, "alpha_f"),
        ({"alpha_f": math.nan}, "alpha_f"),
        ({"t1": -0.1}, "t1"),
        ({"t1": 1.5, "t2": 1.5}, "t1"),
        ({"t1": 0.5, "t2": 0.4}, "t2"),
        ({"t2": 1.2}, "t2"),
        ({"threshold": -0.01}, "threshold"),
        ({"threshold": 1.01}, "threshold"),
    ],
)
def test_config_refuses_bad_values(params, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        PseudoLabel.Config(**params)
