"""Weight initialization of the harness's own networks (the paper's, `bird10net`, `tinycnn`).

He initialization (He et al. 2015, arXiv 1502.01852): every conv and dense weight is drawn from
`N(0, gain² / fan_in)` with the gain of the activation that follows it (`torch.nn.init.calculate_gain`:
√2 for ReLU — and for the U activation `concat[relu(z), −relu(−z)]`, which passes half of each
pre-activation's energy to each of its two channels —, √(2/(1+0.1²)) for leaky ReLU with slope 0.1,
1 for sigmoid), gain 1 for the layer that produces the logits, and every bias is zero. PyTorch's default
(uniform ±1/√fan_in, also for the biases) gives deep ReLU layers a third of the variance they need.

Initialization alone does not keep the paper's learning rates from killing these networks: Adam's first
step moves every weight by exactly ±lr, whatever its gradient, so that is handled by the protocol's
learning-rate warm-up (`ssl_bench.protocol.ProtocolConfig.warmup_steps`). The evidence for both is in
docs/models.md ("Initialization and warm-up").
"""

from __future__ import annotations

from torch import nn

LINEAR_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def he_init(
    model: nn.Module, nonlinearity: str = "relu", negative_slope: float = 0.0, *, output: nn.Module | None = None
) -> nn.Module:
    """Re-initialize every conv / dense layer of `model` in place (see the module docstring) and return it.

    `nonlinearity` is the activation after the hidden layers (`relu`, `leaky_relu`, `sigmoid`; the U
    activation counts as `relu`); `output` is the layer that produces the logits (gain 1).
    """
    hidden_gain = nn.init.calculate_gain(nonlinearity, negative_slope if nonlinearity == "leaky_relu" else None)
    for module in model.modules():
        if isinstance(module, LINEAR_LAYERS):
            gain = 1.0 if module is output else hidden_gain
            fan_in = nn.init._calculate_correct_fan(module.weight, "fan_in")
            nn.init.normal_(module.weight, 0.0, gain / fan_in**0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
