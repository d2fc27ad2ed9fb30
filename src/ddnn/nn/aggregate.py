"""Aggregators that fuse several inputs (SPEC §2): max (MP), average (AP), concatenation (CC).

Every aggregator takes a presence mask, so any subset of inputs may be missing: MP/AP reduce over
present inputs only, CC writes zeros in the absent slots. A sample with no input present fuses to
zeros (uniform class scores downstream), never to NaN or -inf.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def _expand_mask(mask: Tensor, like: Tensor) -> Tensor:
    """(B, D) bool -> (B, D, 1, 1, ...) broadcastable against ``like`` (B, D, ...)."""
    return mask.view(*mask.shape, *([1] * (like.dim() - 2)))


def zero_absent(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` (B, D, ...) with the inputs absent in ``mask`` (B, D) set to zero.

    With every input present (every full-batch training step without device dropout) it returns
    ``x`` itself: the multiply by ones would cost a pass over ``x``, and another in the backward.
    """
    if bool(mask.all()):
        return x
    if x.dim() < 3:
        return x * mask.to(x.dtype)
    # One weight per (input, channel) against the (B, D*C, ...) view of x. Against channels-last
    # data (the stacked devices' layout, ``DDNN.input_layout``) a (B, D, 1, ...) mask leaves the
    # elementwise kernel on its slow strided path: ~10x slower for a batch of 64 camera inputs.
    # The same products either way; the result keeps x's layout.
    flat = x.flatten(1, 2)
    weights = mask.to(x.dtype).repeat_interleave(x.shape[2], dim=1)
    return (flat * weights.view(*weights.shape, *([1] * (flat.dim() - 2)))).unflatten(
        1, x.shape[1:3]
    )


class Aggregator(nn.Module):
    """Fuses (B, D, *shape) inputs into one tensor per sample, ignoring absent inputs."""

    name: str = ""

    def __init__(self, num_inputs: int) -> None:
        super().__init__()
        self.num_inputs = num_inputs

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape for per-input shape ``input_shape``."""
        return input_shape

    def _check(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if x.dim() < 3 or x.shape[1] != self.num_inputs:
            raise ValueError(
                f"{self.name} aggregator expects (batch, {self.num_inputs}, ...) inputs, "
                f"got shape {tuple(x.shape)}"
            )
        if mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"presence mask must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}"
            )
        return mask.to(torch.bool)


class MaxAggregator(Aggregator):
    """MP: element-wise max over present inputs."""

    name = "mp"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._check(x, mask)
        filled = x.masked_fill(~_expand_mask(m, x), float("-inf"))
        out = filled.max(dim=1).values
        none_present = (~m.any(dim=1)).view(-1, *([1] * (out.dim() - 1)))
        return torch.where(none_present, torch.zeros_like(out), out)


class AverageAggregator(Aggregator):
    """AP: element-wise mean over present inputs."""

    name = "ap"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._check(x, mask)
        weights = _expand_mask(m, x).to(x.dtype)
        count = weights.sum(dim=1).clamp_min(1.0)
        return (x * weights).sum(dim=1) / count


class ConcatAggregator(Aggregator):
    """CC: concatenation along the first per-input dim (channels), zeros for absent inputs."""

    name = "cc"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0] * self.num_inputs, *input_shape[1:])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._check(x, mask)
        return zero_absent(x, m).flatten(1, 2)  # (B, D, C, ...) -> (B, D*C, ...)


class ScoreConcatAggregator(ConcatAggregator):
    """CC for class-score vectors: concatenation then a learned linear layer back to |C| scores."""

    def __init__(self, num_inputs: int, num_classes: int) -> None:
        super().__init__(num_inputs)
        self.project = nn.Linear(num_inputs * num_classes, num_classes)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # (B, D, C) -> (B, C)
        return self.project(super().forward(x, mask))


AGGREGATORS: dict[str, Callable[[int], Aggregator]] = {
    "mp": MaxAggregator,
    "ap": AverageAggregator,
    "cc": ConcatAggregator,
}


def check_aggregator_name(name: str) -> str:
    """Normalise an aggregator name, or raise listing the valid ones."""
    key = name.lower()
    if key not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; accepted: {', '.join(sorted(AGGREGATORS))}")
    return key


def create_feature_aggregator(name: str, num_inputs: int) -> Aggregator:
    """Aggregator for feature maps (edge/cloud input)."""
    return AGGREGATORS[check_aggregator_name(name)](num_inputs)


def create_score_aggregator(name: str, num_inputs: int, num_classes: int) -> Aggregator:
    """Aggregator for class-score vectors (local / edge exit); CC gets its linear projection."""
    key = check_aggregator_name(name)
    if key == "cc":
        return ScoreConcatAggregator(num_inputs, num_classes)
    return AGGREGATORS[key](num_inputs)
