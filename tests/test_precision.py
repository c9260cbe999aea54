"""`--precision bf16` (ssl_bench.run.precision): autocast of the training step, on CPU here.

fp32 is exactly the step without autocast. Under bf16 every method's step runs, its parameter gradients
stay float32 and point where fp32's do, and dninv's x̂ is within a few percent of fp32's (measured in
docs/speed.md: 3–10 % relative error at initialization on digits-shaped batches, against an
independent fp32 computation of the same VJP).
"""

from __future__ import annotations

import pytest
import torch

from ssl_bench.inversion import reconstruct
from ssl_bench.method import Batch, Progress, method_names
from ssl_bench.models import create_model
from ssl_bench.run import compiled
from ssl_bench.run.precision import autocast
from ssl_bench.views import make_views
from tests import method_checks

CPU = torch.device("cpu")


def batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(8, 1, 8, 8, generator=g), torch.arange(8) % 10, torch.randn(16, 1, 8, 8, generator=g))


def step_grads(name: str, precision: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8))
    method = method_checks.make_method(name)
    method.setup(model)
    loss, _ = compiled.eager_gradients(model, method, precision, CPU)(
        make_views(method, batch(), "image"), Progress(3, 10)
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    return [p.grad for p in model.parameters()]


def test_fp32_is_no_autocast():
    with autocast("fp32", CPU):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", CPU):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        autocast("fp16", CPU)


@pytest.mark.parametrize("name", method_names())
def test_bf16_step_gives_float32_gradients_close_to_fp32(name):
    g32, g16 = step_grads(name, "fp32"), step_grads(name, "bf16")
    for a, b in zip(g32, g16):
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
    flat = lambda gs: torch.cat([g.flatten() for g in gs])
    cos = torch.nn.functional.cosine_similarity(flat(g32), flat(g16), dim=0)
    assert cos > 0.99, cos


def test_bf16_xhat_is_within_a_few_percent_of_an_fp32_jacobian():
    """x̂ under bf16 autocast against Jᵀf computed in float64 with an explicit Jacobian."""
    torch.manual_seed(0)
    model = create_model("tinycnn", num_classes=10, input_shape=(1, 8, 8)).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: model(v).sum(0), x)  # (K, B, 1, 8, 8): samples are independent
    expected = torch.einsum("bk,kbchw->bchw", model(x), jac)
    model = model.float()
    with autocast("bf16", CPU):
        _, x_hat = reconstruct(model, x.float())
    rel = (x_hat.double() - expected).norm() / expected.norm()
    assert 1e-4 < rel < 0.1, rel  # bf16 is visibly coarser than fp32 (≈1e-7), and still close
