"""Contract tests, parametrized over every registered method (docs/design.md §2; §7 "Tests").

Each method: one CPU step gives a finite loss and gradients on the parameters; the unlabeled batch
changes the gradient (its unlabeled term is live); under its `supervised_equivalent` config its
gradients equal `supervised`'s exactly; its logged terms are exactly its declared ones; its state
survives a save and load as the run state does it; `after_step` leaves the model's weights alone. A
method gets what the loop gives it: `setup(model)` first, then each batch with its declared views.
"""

from __future__ import annotations

import pytest
import torch

from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.method import Batch, Progress, load_method, method_names
from ssl_bench.models import create_model
from ssl_bench.views import make_views
from tests import method_checks

METHODS = method_names()
SEMI = [m for m in METHODS if load_method(m).supervised_equivalent]


def make_batch(seed: int = 0, ulb_seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x_lb = torch.randn(8, 1, 8, 8, generator=g)
    y_lb = torch.arange(8) % 10
    x_ulb = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(ulb_seed))
    return Batch(x_lb, y_lb, x_ulb)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))


def make_method(name: str, **params):
    return method_checks.make_method(name, **params)


def loop_loss(method, model, batch: Batch, progress: Progress):
    """`method.loss` as the training loop calls it: after `setup`, on the batch with the method's views."""
    method.setup(model)
    return method.loss(model, make_views(method, batch, "image"), progress)


def grads(name: str, batch: Batch, step: int = 3, **params) -> tuple[list[torch.Tensor], dict]:
    model = make_model()
    loss, terms = loop_loss(make_method(name, **params), model, batch, Progress(step, 10))
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()], terms | {
        "_loss": loss
    }


@pytest.mark.parametrize("name", METHODS)
def test_one_step_is_finite_and_reaches_every_parameter(name):
    g, terms = grads(name, make_batch())
    assert torch.isfinite(terms["_loss"]) and terms["_loss"].dim() == 0
    for grad in g:
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", METHODS)
def test_logged_terms_are_exactly_the_declared_ones(name):
    method = make_method(name)
    _, terms = loop_loss(method, make_model(), make_batch(), Progress(0, 10))
    assert tuple(terms) == method.term_names()
    for value in terms.values():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad


@pytest.mark.parametrize("name", SEMI)
def test_unlabeled_data_changes_the_gradient(name):
    active = load_method(name).unlabeled_active  # e.g. FixMatch's threshold at 0: an untrained net is never 95 % sure
    a, _ = grads(name, make_batch(ulb_seed=1), **active)
    b, _ = grads(name, make_batch(ulb_seed=2), **active)
    assert any(not torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", SEMI)
def test_zero_unlabeled_weight_gives_exactly_the_supervised_gradients(name):
    cls = load_method(name)
    batch = make_batch()
    sup, _ = grads("supervised", batch)
    own, _ = grads(name, batch, **cls.supervised_equivalent)
    for x, y in zip(sup, own):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", METHODS)
def test_state_survives_save_and_load_and_after_step_leaves_the_weights(name, tmp_path):
    model, method = make_model(), make_method(name)
    loss, _ = loop_loss(method, model, make_batch(), Progress(3, 10))
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad  # an optimizer step
    weights = [p.detach().clone() for p in model.parameters()]
    method.after_step(model, Progress(3, 10))
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters()))
    torch.save(method.state_dict(), tmp_path / "state.pt")
    fresh = make_method(name)
    fresh.setup(make_model())
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # as runstate reads it
    saved, loaded = method.state_dict(), fresh.state_dict()
    assert flatten(saved).keys() == flatten(loaded).keys()
    for key, value in flatten(saved).items():
        assert (
            torch.equal(value, flatten(loaded)[key])
            if isinstance(value, torch.Tensor)
            else value == flatten(loaded)[key]
        )


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix: tree}


def test_supervised_ignores_unlabeled_data():
    a, _ = grads("supervised", make_batch(ulb_seed=1))
    b, _ = grads("supervised", make_batch(ulb_seed=2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_pimodel_two_passes_really_differ():
    method = make_method("pimodel")
    model = make_model()  # no dropout: the difference comes from the augmentation
    _, terms = loop_loss(method, model, make_batch(), Progress(9, 10))
    assert terms["cons"] > 0  # its view's two draws (tests/test_pimodel.py) differ


def test_pimodel_rampup_weight():
    from ssl_bench.schedules import sigmoid_rampup

    assert sigmoid_rampup(0.0, 0.4) == pytest.approx(torch.exp(torch.tensor(-5.0)).item())
    assert sigmoid_rampup(0.2, 0.4) == pytest.approx(float(torch.exp(torch.tensor(-5 * 0.25))))
    assert sigmoid_rampup(0.4, 0.4) == 1.0 and sigmoid_rampup(0.9, 0.4) == 1.0
    assert sigmoid_rampup(0.0, 0.0) == 1.0


def test_entmin_loss_is_ce_plus_lambda_entropy():
    batch = make_batch()
    model = make_model()
    loss, terms = make_method("entmin", lambda_=0.5).loss(model, batch, Progress(0, 1))
    with torch.no_grad():
        logits_lb, logits_ulb = model(batch.x_lb), model(batch.x_ulb)
        p = logits_ulb.softmax(1)
        ent = -(p * p.log()).sum(1).mean()
        ce = -logits_lb.log_softmax(1)[torch.arange(8), batch.y_lb].mean()
    assert torch.allclose(terms["ent"], ent, atol=1e-6) and torch.allclose(terms["ce"], ce, atol=1e-6)
    assert torch.allclose(loss, ce + 0.5 * ent, atol=1e-6)


def test_pimodel_consistency_is_mse_of_softmaxes():
    batch = make_batch()
    model = make_model()
    method = make_method("pimodel", w_max=2.0, rampup=0.0)
    gen_state = method.context.generator.get_state()
    loss, terms = loop_loss(method, model, batch, Progress(5, 10))  # its two passes: the view's two draws
    gen = torch.Generator().set_state(gen_state)
    x = torch.cat([batch.x_lb, batch.x_ulb])
    with torch.no_grad():
        p1 = model(AUGMENTATIONS["image"](x, gen)).softmax(1)
        p2 = model(AUGMENTATIONS["image"](x, gen)).softmax(1)
    assert torch.allclose(terms["cons"], ((p1 - p2) ** 2).mean(), atol=1e-7)
    assert torch.allclose(loss, terms["ce"] + 2.0 * terms["cons"], atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_result(name, tmp_path):
    from ssl_bench.protocol import RunSpec, resolve
    from ssl_bench.run.training import train

    spec = RunSpec(method=name, dataset="digits", labels=50, steps=15, protocol={"eval_every": 5}, device="cpu")
    a = train(resolve(spec), tmp_path / "a", show_progress=False)
    b = train(resolve(spec), tmp_path / "b", show_progress=False)
    for key in ("test_acc", "test_acc_last", "val_acc_best", "val_acc_last", "protocol_fingerprint"):
        assert a[key] == b[key]
