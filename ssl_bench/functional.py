"""Whether a method's loss runs inside the compiled step's `torch.func` transforms (ssl_bench.run.compiled).

There, the derivatives a loss takes itself (dninv's x̂ = (∂f/∂x)ᵀ f(x), VAT's power iteration) are written
with `torch.func` (`vjp`, `jvp`, `grad`): `torch.autograd.grad` does not run inside `torch.func.grad` and
does not compile. Eager steps never enter the block, so their code and numbers are untouched.
"""

from __future__ import annotations

from contextlib import contextmanager

_inside = False


@contextmanager
def functional_transforms():
    """Within the block, `inside_transforms()` is True (the compiled step calls the loss in it)."""
    global _inside
    previous, _inside = _inside, True
    try:
        yield
    finally:
        _inside = previous


def inside_transforms() -> bool:
    """True while a loss runs inside the compiled step's `torch.func` transforms."""
    return _inside
