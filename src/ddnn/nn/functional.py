"""Pure numerics of binarized networks: sign, straight-through estimators, normalized entropy."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def sign(x: Tensor) -> Tensor:
    """Sign with ``sign(0) = +1``, so every output is exactly ±1 (``torch.sign`` gives 0 at 0).

    ``-0.0`` gives +1 too; NaN gives ±1 by its sign bit.
    """
    if not x.is_floating_point():
        return (x >= 0).to(x.dtype).mul_(2).sub_(1)
    # x + 0.0 turns -0.0 into +0.0 and leaves every other value as it is; copysign then takes
    # the sign bit. Two passes over x where compare, cast, multiply and subtract take four.
    return torch.copysign(torch.ones((), dtype=x.dtype, device=x.device), x + 0.0)


@functools.cache
def _just_outside_unit(dtype: torch.dtype) -> tuple[float, float]:
    """The floats of ``dtype`` next to -1 and +1 outside [-1, 1]: lo < x < hi <=> |x| <= 1."""
    one = torch.ones((), dtype=dtype)
    return float(torch.nextafter(-one, -2 * one)), float(torch.nextafter(one, 2 * one))


class _SignActivationSTE(torch.autograd.Function):
    """sign(x) forward; gradient passed through only where |x| <= 1 (hard-tanh STE)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)  # the mask is computed in the backward pass, fused with its use
        return sign(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        if not x.is_floating_point() or torch.is_grad_enabled():  # double backward: plain ops
            return grad_output * ((x >= -1) & (x <= 1))
        # hardtanh's backward passes the gradient where lo < x < hi, i.e. where |x| <= 1, in one
        # fused pass; written into x's layout (channels-last) whatever grad_output's layout is,
        # because BatchNorm's backward is ~5x slower on mixed layouts. NaN x passes the gradient.
        lo, hi = _just_outside_unit(x.dtype)
        return torch.ops.aten.hardtanh_backward.grad_input(
            grad_output, x, lo, hi, grad_input=torch.empty_like(x)
        )


class _SignWeightSTE(torch.autograd.Function):
    """sign(w) forward; identity gradient to the latent float weight (clipped elsewhere)."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:  # type: ignore[override]
        return sign(w)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        return grad_output


def _records_gradient(x: Tensor) -> bool:
    return x.requires_grad and torch.is_grad_enabled()


def sign_activation(x: Tensor) -> Tensor:
    """Binarize activations to ±1 with the straight-through estimator of eBNN/BinaryNet.

    Where no gradient is recorded (inference) the estimator is skipped: the same values, without
    an autograd function's overhead on every call."""
    return _SignActivationSTE.apply(x) if _records_gradient(x) else sign(x)


def sign_weight(w: Tensor) -> Tensor:
    """Binarize weights to ±1; the gradient reaches the latent weight unchanged (inference
    skips the estimator, as :func:`sign_activation` does)."""
    return _SignWeightSTE.apply(w) if _records_gradient(w) else sign(w)


def normalized_entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """η(x) = −Σ xᵢ log xᵢ / log |C|, in [0, 1] (0 = certain), with 0·log 0 taken as 0.

    Args:
        probs: probability vectors (non-negative, summing to 1 along ``dim``).
        dim: the class dimension.
    """
    num_classes = probs.shape[dim]
    if num_classes < 2:
        raise ValueError(f"normalized entropy needs at least 2 classes, got {num_classes}")
    terms = torch.where(
        probs > 0, probs * torch.log(probs.clamp_min(1e-45)), torch.zeros_like(probs)
    )
    eta = -terms.sum(dim=dim) / math.log(num_classes)
    return eta.clamp(0.0, 1.0)


def entropy_from_logits(logits: Tensor, dim: int = -1) -> Tensor:
    """Normalized entropy of ``softmax(logits)``, computed stably in log space."""
    log_p = torch.log_softmax(logits, dim=dim)
    p = log_p.exp()
    eta = -(p * log_p).sum(dim=dim) / math.log(logits.shape[dim])
    return eta.clamp(0.0, 1.0)
