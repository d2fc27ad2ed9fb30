"""The sections of a DDNN, each an ``nn.Module`` that can be checkpointed and served alone."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ddnn.config import CloudConfig, DeviceConfig, EdgeConfig
from ddnn.nn.aggregate import Aggregator, create_feature_aggregator, create_score_aggregator
from ddnn.nn.blocks import Activation, ExitHead, block_output_shape, make_feature_block


def _feature_stack(
    input_shape: tuple[int, ...],
    filters: tuple[int, ...],
    pool_stride: int,
    binary: tuple[bool, ...],
    emits_features: bool,
) -> tuple[nn.Sequential, tuple[int, ...]]:
    """Feature blocks for an input shape; returns the stack and its output shape.

    ``binary`` has one flag per block and one for the exit head after them. A block ends in sign
    when the layer after it is binary (it then sees ±1 inputs) or when it is the last block of a
    section that sends its features up (they travel as bits); otherwise in ReLU.
    """
    assert len(binary) == len(filters) + 1, "validate_model_config checks the flags' length"
    blocks: list[nn.Module] = []
    shape = input_shape
    for i, f in enumerate(filters):
        is_last = i == len(filters) - 1
        act: Activation = "sign" if binary[i + 1] or (is_last and emits_features) else "relu"
        blocks.append(make_feature_block(len(shape), shape[0], f, pool_stride, binary[i], act))
        shape = block_output_shape(shape, f, pool_stride)
    return nn.Sequential(*blocks), shape


def stack_output_shape(
    input_shape: tuple[int, ...], filters: tuple[int, ...], pool_stride: int
) -> tuple[int, ...]:
    """Output shape of a feature stack, computed without building it (no weights, no RNG)."""
    shape = tuple(input_shape)
    for f in filters:
        shape = block_output_shape(shape, f, pool_stride)
    return shape


def device_feature_shape(input_shape: tuple[int, ...], config: DeviceConfig) -> tuple[int, ...]:
    """Shape of the feature map a device section with ``config`` emits for ``input_shape``."""
    return stack_output_shape(input_shape, config.filters, 2)


def input_norm(input_shape: tuple[int, ...]) -> nn.Module:
    """BatchNorm over a device's raw input: per feature (F,) or per channel (C, L) / (C, H, W)."""
    if len(input_shape) == 3:
        return nn.BatchNorm2d(input_shape[0])
    return nn.BatchNorm1d(input_shape[0])


def _fast_layout(x: Tensor) -> Tensor:
    """Channels-last for image batches: oneDNN's conv and max-pool are ~4x faster with few channels."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class DeviceSection(nn.Module):
    """End device: feature blocks (pool stride 2) → binary feature map, and an exit head → scores.

    With no filters the device is a raw sensor (configuration a): it forwards its input as is.
    """

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, config: DeviceConfig
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.raw = len(config.filters) == 0
        binary = config.layer_binary() or (True,)  # a raw device: no blocks, no head
        self.input_norm: nn.Module | None = (
            input_norm(self.input_shape) if config.normalize_input and not self.raw else None
        )
        self.features, self.feature_shape = _feature_stack(
            self.input_shape, config.filters, 2, binary, True
        )
        self.head: ExitHead | None = (
            None if self.raw else ExitHead(math.prod(self.feature_shape), num_classes, binary[-1])
        )

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """(B, *input_shape) -> (scores (B, C) or None for raw devices, features (B, *feature_shape))."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        feats = self.features(_fast_layout(x))
        scores = self.head(feats) if self.head is not None else None
        return scores, feats


class LocalAggregatorSection(nn.Module):
    """Fuses the devices' (or edges') class-score vectors into one exit's scores."""

    def __init__(self, scheme: str, num_inputs: int, num_classes: int) -> None:
        super().__init__()
        self.aggregate: Aggregator = create_score_aggregator(scheme, num_inputs, num_classes)

    def forward(self, scores: Tensor, presence: Tensor | None = None) -> Tensor:
        """(B, D, C) scores, (B, D) presence -> (B, C)."""
        return self.aggregate(scores, presence)


class UpperSection(nn.Module):
    """An edge or the cloud: aggregate incoming features → feature blocks → exit head."""

    def __init__(
        self,
        num_inputs: int,
        input_feature_shape: tuple[int, ...],
        num_classes: int,
        config: EdgeConfig | CloudConfig,
        emits_features: bool,
    ) -> None:
        super().__init__()
        self.aggregate = create_feature_aggregator(config.aggregation, num_inputs)
        fused_shape = self.aggregate.output_shape(tuple(input_feature_shape))
        self.input_shape = fused_shape  # what the feature blocks see, after the aggregation
        # A section that forwards features upward ends in sign so what it sends is bits.
        binary = config.layer_binary()
        self.features, self.feature_shape = _feature_stack(
            fused_shape, config.filters, config.pool_stride, binary, emits_features
        )
        self.head = ExitHead(math.prod(self.feature_shape), num_classes, binary[-1])
        self.num_inputs = num_inputs

    def forward(self, inputs: Tensor, presence: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, N, *shape) inputs, (B, N) presence -> (scores (B, C), features (B, *feature_shape))."""
        feats = self.features(_fast_layout(self.aggregate(inputs, presence)))
        return self.head(feats), feats


class EdgeSection(UpperSection):
    """Edge node: fuses its device group's features, has the edge exit, forwards bits upward."""


class CloudSection(UpperSection):
    """Cloud: fuses what reaches it and runs the last layers; its exit always answers."""
