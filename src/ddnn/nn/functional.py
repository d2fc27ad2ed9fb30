"""Pure numerics of binarized networks: sign, straight-through estimators, normalized entropy."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sign(x: Tensor) -> Tensor:
    """Sign with ``sign(0) = +1``, so every output is exactly ±1 (``torch.sign`` gives 0 at 0)."""
    return (x >= 0).to(x.dtype).mul_(2).sub_(1)


class _SignActivationSTE(torch.autograd.Function):
    """sign(x) forward; gradient passed through only where |x| <= 1 (hard-tanh STE)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward((x >= -1) & (x <= 1))  # a bool mask is 4x smaller than x
        return sign(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        (passes,) = ctx.saved_tensors
        return grad_output * passes


class _SignWeightSTE(torch.autograd.Function):
    """sign(w) forward; identity gradient to the latent float weight (clipped elsewhere)."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:  # type: ignore[override]
        return sign(w)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        return grad_output


def sign_activation(x: Tensor) -> Tensor:
    """Binarize activations to ±1 with the straight-through estimator of eBNN/BinaryNet."""
    return _SignActivationSTE.apply(x)


def sign_weight(w: Tensor) -> Tensor:
    """Binarize weights to ±1; the gradient reaches the latent weight unchanged."""
    return _SignWeightSTE.apply(w)


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
