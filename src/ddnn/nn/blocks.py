"""DDNN building blocks: the ConvP feature block (2-D, 1-D, vector) and the FC exit head."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from ddnn.nn.binary import BinaryConv1d, BinaryConv2d, BinaryLinear
from ddnn.nn.functional import sign_activation

Activation = Literal["sign", "relu"]


class SignActivation(nn.Module):
    """sign(x) with the straight-through estimator, as a module."""

    def forward(self, x: Tensor) -> Tensor:
        return sign_activation(x)


def _activation(name: Activation) -> nn.Module:
    if name == "sign":
        return SignActivation()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}; accepted: 'sign', 'relu'")


class ConvP(nn.Module):
    """conv 3×3 (stride 1, pad 1) → max-pool 3×3 pad 1 → BatchNorm → activation (SPEC §3).

    Args:
        in_channels: input channels.
        out_channels: filters.
        pool_stride: 2 on devices (halves the map), 1 in edge/cloud sections.
        binary: ±1 weights (eBNN); ``False`` gives a float convolution.
        activation: ``"sign"`` emits ±1 features (what goes on the wire); ``"relu"`` for float nets.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool_stride: int = 2,
        binary: bool = True,
        activation: Activation = "sign",
    ) -> None:
        super().__init__()
        if pool_stride not in (1, 2):
            raise ValueError(f"pool_stride must be 1 or 2, got {pool_stride}")
        conv_cls = BinaryConv2d if binary else nn.Conv2d
        self.conv = conv_cls(in_channels, out_channels, 3, stride=1, padding=1, bias=not binary)
        self.pool = nn.MaxPool2d(3, stride=pool_stride, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = _activation(activation)
        self.binary = binary

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, H, W) -> (B, Cout, H/s, W/s)
        return self.act(self.bn(self.pool(self.conv(x))))


class ConvP1d(nn.Module):
    """The 1-D ConvP block for short multi-channel time series: conv 3 → max-pool 3 → BN → sign."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool_stride: int = 2,
        binary: bool = True,
        activation: Activation = "sign",
    ) -> None:
        super().__init__()
        if pool_stride not in (1, 2):
            raise ValueError(f"pool_stride must be 1 or 2, got {pool_stride}")
        conv_cls = BinaryConv1d if binary else nn.Conv1d
        self.conv = conv_cls(in_channels, out_channels, 3, stride=1, padding=1, bias=not binary)
        self.pool = nn.MaxPool1d(3, stride=pool_stride, padding=1)
        self.bn = nn.BatchNorm1d(out_channels)
        self.act = _activation(activation)
        self.binary = binary

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, L) -> (B, Cout, L/s)
        return self.act(self.bn(self.pool(self.conv(x))))


class FCBlock(nn.Module):
    """Linear → BatchNorm → activation: the feature block for vector (tabular) inputs."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        binary: bool = True,
        activation: Activation = "sign",
    ) -> None:
        super().__init__()
        linear_cls = BinaryLinear if binary else nn.Linear
        self.linear = linear_cls(in_features, out_features, bias=not binary)
        self.bn = nn.BatchNorm1d(out_features)
        self.act = _activation(activation)
        self.binary = binary

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, out)
        return self.act(self.bn(self.linear(x)))


class ExitHead(nn.Module):
    """Flatten → linear (binary or float) → BatchNorm: class scores for one exit."""

    def __init__(self, in_features: int, num_classes: int, binary: bool = True) -> None:
        super().__init__()
        linear_cls = BinaryLinear if binary else nn.Linear
        self.linear = linear_cls(in_features, num_classes, bias=not binary)
        self.bn = nn.BatchNorm1d(num_classes)
        self.binary = binary

    def forward(self, x: Tensor) -> Tensor:  # (B, ...) -> (B, num_classes)
        return self.bn(self.linear(x.flatten(1)))


def make_feature_block(
    input_ndim: int,
    in_size: int,
    out_size: int,
    pool_stride: int,
    binary: bool,
    activation: Activation,
) -> nn.Module:
    """The feature block that fits an input of ``input_ndim`` dims (C,H,W) / (C,L) / (F,)."""
    if input_ndim == 3:
        return ConvP(in_size, out_size, pool_stride, binary, activation)
    if input_ndim == 2:
        return ConvP1d(in_size, out_size, pool_stride, binary, activation)
    if input_ndim == 1:
        return FCBlock(in_size, out_size, binary, activation)
    raise ValueError(
        f"unsupported per-device input with {input_ndim} dims; accepted: (C, H, W) images, "
        "(C, L) time series, (F,) feature vectors"
    )


def block_output_shape(
    input_shape: tuple[int, ...], out_size: int, pool_stride: int
) -> tuple[int, ...]:
    """Shape after a feature block (no batch dim): pooling 3/pad 1 maps n to ceil(n / stride)."""
    if len(input_shape) == 1:
        return (out_size,)
    spatial = tuple((n - 1) // pool_stride + 1 for n in input_shape[1:])
    return (out_size, *spatial)
