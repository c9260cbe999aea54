"""Mean Teacher (ssl_bench_plugins/meanteacher.py) against independent computations.

The regression guarded here (docs/design.md §2): a Mean Teacher whose consistency loss is identically zero
because the teacher is the student and both see the same input (USB). Here the term is non-zero as soon
as the teacher's weights or its view differ from the student's, the teacher is an EMA of the student
computed by hand, and the loss is recomputed by hand on a batch whose views are pinned.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from ssl_bench.method import Batch, Progress, View, load_method
from ssl_bench.models import create_model
from ssl_bench.views import make_views
from tests import method_checks


def make_method(**params):
    return method_checks.make_method("meanteacher", **params)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))


def bn_model() -> nn.Module:
    """A small net with BatchNorm: buffers that the teacher averages too (use_buffers=True)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))


def make_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(8, 1, 8, 8, generator=g), torch.arange(8) % 10, torch.randn(16, 1, 8, 8, generator=g))


def pinned(batch: Batch, student: torch.Tensor, teacher: torch.Tensor) -> Batch:
    return Batch(batch.x_lb, batch.y_lb, batch.x_ulb, views={"student": student, "teacher": teacher})


def floats(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and floating buffers by name (num_batches_tracked, an int, is left out)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def train_steps(model: nn.Module, method, steps: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """`steps` SGD steps of plain CE on random data, each followed by `after_step`, as the loop does;
    returns the student's weights after each step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g, history = torch.Generator().manual_seed(seed), []
    for step in range(steps):
        x, y = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        method.after_step(model, Progress(step, steps))
        history.append(floats(model))
    return history


def hand_ema(history: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """θ ← d_k·θ + (1 − d_k)·s_k at update k = 1, 2, …, d_k = min(1 − 1/k, decay) (d_1 = 0: a copy)."""
    ema = {}
    for k, student in enumerate(history, start=1):
        d = min(1 - 1 / k, decay)
        ema = {n: d * ema[n] + (1 - d) * s if ema else s.clone() for n, s in student.items()}
    return ema


def test_views_are_two_weak_draws_of_the_unlabeled_batch():
    method = make_method()
    assert method.views() == {"student": View("x_ulb", "weak"), "teacher": View("x_ulb", "weak")}
    batch = make_views(method, make_batch(), "image")
    assert batch.views["student"].shape == batch.views["teacher"].shape == batch.x_ulb.shape
    assert not torch.equal(batch.views["student"], batch.views["teacher"])
    assert make_method(w_max=0.0).views() == {}  # supervised-equivalent: nothing drawn


def test_consistency_is_nonzero_when_only_the_views_differ():
    model, method = make_model(), make_method(w_max=1.0, rampup=0.0)
    method.setup(model)
    for a, b in zip(method.teacher.module.parameters(), model.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # same weights, a separate copy
    batch = make_views(method, make_batch(), "image")
    _, terms = method.loss(model, batch, Progress(5, 10))
    assert terms["cons"] > 1e-6


def test_consistency_is_nonzero_when_only_the_weights_differ():
    model, method = make_model(), make_method(w_max=1.0, rampup=0.0)
    method.setup(model)
    batch, view = make_batch(), make_batch(seed=1).x_ulb
    _, same = method.loss(model, pinned(batch, view, view), Progress(5, 10))
    assert same["cons"] < 1e-12  # same weights, same input, no dropout: the comparison has teeth
    train_steps(model, method, 3)
    _, terms = method.loss(model, pinned(batch, view, view), Progress(5, 10))
    assert terms["cons"] > 1e-6


def test_consistency_is_nonzero_at_every_step_of_a_loop():
    """The loop's order: make_views → loss → backward → step → after_step; the term never vanishes."""
    model, method = make_model(), make_method(rampup=0.0)
    method.setup(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(4):
        batch = make_views(method, make_batch(seed=step), "image")
        loss, terms = method.loss(model, batch, Progress(step, 4))
        assert terms["cons"] > 1e-6
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(model, Progress(step, 4))


@pytest.mark.parametrize("decay", [0.6, 0.999])
def test_teacher_is_the_ema_of_the_student(decay):
    """Against a hand-written EMA, parameters and BatchNorm buffers: with 0.6 the warm-up's plain mean
    (d = 0, 1/2) gives way to the fixed decay at update 3; with 0.999 it is the plain mean throughout."""
    model, method = bn_model(), make_method(decay=decay)
    method.setup(model)
    history = train_steps(model, method, 5)
    teacher = floats(method.teacher.module)
    for name, value in hand_ema(history, decay).items():
        assert torch.allclose(teacher[name], value, atol=1e-6), name
    if decay == 0.999:
        for name, value in teacher.items():
            assert torch.allclose(value, torch.stack([h[name] for h in history]).mean(0), atol=1e-6)
    assert method.teacher.n_averaged.item() == 5
    assert not torch.allclose(teacher["1.weight"], history[-1]["1.weight"])  # it lags the student


def test_loss_equals_a_by_hand_recomputation():
    model, method = make_model(), make_method(w_max=2.0, rampup=0.5)
    method.setup(model)
    history = train_steps(model, method, 3)
    batch = make_batch()
    student_view, teacher_view = make_batch(seed=1).x_ulb, make_batch(seed=2).x_ulb
    loss, terms = method.loss(model, pinned(batch, student_view, teacher_view), Progress(3, 10))
    with torch.no_grad():
        teacher_logits = torch.func.functional_call(model, hand_ema(history, 0.999), (teacher_view,))
        logits_lb, logits_ulb = model(batch.x_lb), model(student_view)
        ce = -logits_lb.log_softmax(1)[torch.arange(8), batch.y_lb].mean()
        cons = ((logits_ulb.softmax(1) - teacher_logits.softmax(1)) ** 2).mean()
        w = 2.0 * math.exp(-5 * (1 - (3 / 9) / 0.5) ** 2)
    assert torch.allclose(terms["ce"], ce, atol=1e-6) and torch.allclose(terms["cons"], cons, atol=1e-7)
    assert cons > 1e-6
    assert torch.allclose(loss, ce + w * cons, atol=1e-6)


def test_gradient_reaches_only_the_student():
    model, method = make_model(), make_method(w_max=3.0, rampup=0.0)
    method.setup(model)
    train_steps(model, method, 2)
    batch = pinned(make_batch(), make_batch(seed=1).x_ulb, make_batch(seed=2).x_ulb)
    teacher_before = floats(method.teacher)
    model.zero_grad()
    loss, _ = method.loss(model, batch, Progress(9, 10))
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in got)
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())

    # the same loss by hand with the teacher's softmax as a constant target: the same gradient
    model.zero_grad()
    with torch.no_grad():
        target = method.teacher.module(batch.views["teacher"]).softmax(1)
    logits = model(torch.cat([batch.x_lb, batch.views["student"]]))
    by_hand = nn.functional.cross_entropy(logits[:8], batch.y_lb) + 3.0 * ((logits[8:].softmax(1) - target) ** 2).mean()
    by_hand.backward()
    for g, p in zip(got, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)

    # an optimizer over the student leaves the teacher alone; only after_step moves it
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    assert not {id(p) for p in method.teacher.parameters()} & {id(p) for g in opt.param_groups for p in g["params"]}
    opt.step()
    assert all(torch.equal(v, teacher_before[k]) for k, v in floats(method.teacher).items())


def test_state_dict_restores_the_teacher_exactly():
    model, method = bn_model(), make_method(decay=0.6)
    method.setup(model)
    train_steps(model, method, 3)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as ssl_bench.run.runstate reads it

    fresh = make_method(decay=0.6)
    other = bn_model()
    nn.init.normal_(other[1].weight)  # a different initialization: everything must come from the state
    fresh.setup(other)
    fresh.load_state_dict(state)
    a, b = method.teacher.state_dict(), fresh.teacher.state_dict()
    assert a.keys() == b.keys() and "n_averaged" in a
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the next update continues identically (the warm-up's count came back too)
    method.after_step(model, Progress(3, 10))
    fresh.after_step(model, Progress(3, 10))
    a, b = method.teacher.state_dict(), fresh.teacher.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_setup_is_required_for_the_consistency_term():
    method = make_method()
    batch = pinned(make_batch(), make_batch(seed=1).x_ulb, make_batch(seed=2).x_ulb)
    with pytest.raises(RuntimeError, match="setup"):
        method.loss(make_model(), batch, Progress(0, 10))
    with pytest.raises(RuntimeError, match="setup"):
        method.state_dict()


@pytest.mark.parametrize("params", [{"w_max": -1.0}, {"rampup": 1.5}, {"decay": 1.01}, {"decay": -0.1}])
def test_config_refuses_bad_values(params):
    with pytest.raises(ValueError):
        load_method("meanteacher").Config(**params)
