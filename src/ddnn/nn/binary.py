"""Binary-weight layers: the torch layers with weights replaced by sign(w) in the forward pass."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ddnn.nn.functional import sign_weight


class BinaryConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weights are binarized to ±1 (straight-through); same arguments.

    Bias defaults to ``False`` because a BatchNorm always follows in DDNN blocks.
    """

    def __init__(self, *args, bias: bool = False, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, bias=bias, **kwargs)  # type: ignore[misc]

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, sign_weight(self.weight), self.bias)


class BinaryConv1d(nn.Conv1d):
    """``nn.Conv1d`` with ±1 weights, for time-series devices."""

    def __init__(self, *args, bias: bool = False, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, bias=bias, **kwargs)  # type: ignore[misc]

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, sign_weight(self.weight), self.bias)


class BinaryLinear(nn.Linear):
    """``nn.Linear`` whose weights are binarized to ±1 (straight-through); same arguments."""

    def __init__(self, *args, bias: bool = False, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, bias=bias, **kwargs)  # type: ignore[misc]

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, sign_weight(self.weight), self.bias)


BINARY_LAYERS = (BinaryConv2d, BinaryConv1d, BinaryLinear)


@torch.no_grad()
def clip_latent_weights(module: nn.Module, bound: float = 1.0) -> None:
    """Clip every binary layer's latent float weights to [-bound, bound] (call after each step).

    Without clipping, latent weights drift far from 0 and the sign stops responding to gradients.
    """
    weights = [m.weight for m in module.modules() if isinstance(m, BINARY_LAYERS)]
    if weights:  # two fused calls instead of one clamp per layer
        torch._foreach_clamp_min_(weights, -bound)
        torch._foreach_clamp_max_(weights, bound)


def is_binary(module: nn.Module) -> bool:
    """True when ``module`` is one of the binary-weight layers."""
    return isinstance(module, BINARY_LAYERS)
