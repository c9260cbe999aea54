"""Training precision (`--precision`, a protocol field): `fp32`, or `bf16` autocast of the step.

`bf16` runs `method.loss` (forward, and dninv's VJP and double backward) under
`torch.autocast(dtype=torch.bfloat16)` on CUDA and on CPU alike: matrix products and convolutions in
bfloat16, reductions and the parameters (hence Adam's update) in float32. No loss scaling: bfloat16 has
float32's exponent range. Evaluation stays in float32. The error it adds to x̂ and to final accuracies is
measured in docs/speed.md.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device):
    """The context a training step's loss runs in: nothing for `fp32`, bfloat16 autocast for `bf16`."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
