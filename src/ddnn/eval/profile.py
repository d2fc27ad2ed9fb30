"""Model profile: parameters, binary vs float, and the memory a section needs on a device.

Device memory counts what a deployed section really stores: binary weights bit-packed (1 bit each);
a BatchNorm followed by sign folded into one int32 threshold per channel plus one direction bit;
any other BatchNorm (an exit head, an input normalization, a block ending in ReLU) as two float32
per channel (scale, shift); float parameters at 4 bytes. Precision is per layer
(``model.device.binary`` may list one flag per layer), so a section may mix both kinds.

What a device or edge sends per sample comes from :mod:`ddnn.wire`: a score row always, and a
bit-packed feature map for samples that go up. A device's last block always ends in sign, so its
feature map is bits whatever the precision of its weights.

Compute is counted as the multiply-adds one sample costs in a section's feature blocks and exit
head, apart for layers with ±1 weights (on a device: sign flips and additions, or XNOR and
popcount once the inputs are bits too) and with float weights. Max-pooling, BatchNorm, the sign
and the aggregators (maxima, means, concatenation) are not multiply-adds and are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ddnn.models.ddnn import DDNN
from ddnn.models.sections import DeviceSection, EdgeSection, UpperSection
from ddnn.nn.binary import is_binary
from ddnn.nn.blocks import ConvP, ConvP1d, ExitHead, FCBlock, SignActivation, block_output_shape
from ddnn.train.checkpoint import section_modules
from ddnn.wire import feature_payload_bytes, score_payload_bytes


@dataclass
class SectionProfile:
    """Counts for one section."""

    name: str
    parameters: int
    binary_parameters: int
    float_parameters: int
    memory_bytes: int
    score_bytes: int = 0  # payload of the score row it sends per sample (devices, edges)
    feature_bytes: int = 0  # payload of the bit-packed feature map it sends up per sample
    binary_macs: int = 0  # multiply-adds per sample in layers with ±1 weights
    float_macs: int = 0  # multiply-adds per sample in layers with float weights


def _memory_bytes(module: nn.Module) -> tuple[int, int, int]:
    binary = floats = memory = 0
    # BatchNorms that sign follows fold into thresholds; the rest stay a float affine.
    thresholded = {
        id(m.bn)
        for m in module.modules()
        if isinstance(getattr(m, "bn", None), nn.modules.batchnorm._BatchNorm)
        and isinstance(getattr(m, "act", None), SignActivation)
    }
    for layer in module.modules():
        if is_binary(layer):
            weight: Tensor = layer.weight  # type: ignore[assignment]
            bias: Tensor | None = layer.bias  # type: ignore[assignment]
            binary += weight.numel()
            memory += math.ceil(weight.numel() / 8)
            if bias is not None:
                floats += bias.numel()
                memory += 4 * bias.numel()
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            c = layer.num_features
            floats += 2 * c
            memory += 4 * c + math.ceil(c / 8) if id(layer) in thresholded else 8 * c
        elif isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d):
            n = sum(p.numel() for p in layer.parameters(recurse=False))
            floats += n
            memory += 4 * n
    return binary, floats, memory


def _pool_stride(block: ConvP | ConvP1d) -> int:
    stride = block.pool.stride
    return int(stride if isinstance(stride, int) else stride[0])


def multiply_adds(section: nn.Module) -> tuple[int, int]:
    """Multiply-adds of one sample in ``section``'s feature blocks and exit head: (in layers with
    ±1 weights, in layers with float weights). Sections without feature blocks (a raw device, the
    local aggregator) cost none.

    ConvP convolutions are 3 × 3 (1-D: 3) with stride 1 and padding 1, so each output position of
    the block's input size costs ``out_channels × in_channels × kernel``.
    """
    if not isinstance(section, DeviceSection | UpperSection):
        return 0, 0
    binary = floats = 0
    shape = section.input_shape
    layers: list[tuple[nn.Module, int]] = []
    for block in section.features:
        if isinstance(block, ConvP | ConvP1d):
            conv = block.conv
            positions = math.prod(shape[1:])  # the convolution keeps the input's size
            kernel = math.prod(conv.kernel_size)
            layers.append((conv, conv.out_channels * conv.in_channels * kernel * positions))
            shape = block_output_shape(shape, conv.out_channels, _pool_stride(block))
        elif isinstance(block, FCBlock):
            linear = block.linear
            layers.append((linear, linear.in_features * linear.out_features))
            shape = (linear.out_features,)
        else:  # _feature_stack builds only these blocks
            raise TypeError(f"cannot count the multiply-adds of a {type(block).__name__}")
    head = section.head
    if isinstance(head, ExitHead):
        layers.append((head.linear, head.linear.in_features * head.linear.out_features))
    for layer, macs in layers:
        if is_binary(layer):
            binary += macs
        else:
            floats += macs
    return binary, floats


def profile_model(model: DDNN) -> list[SectionProfile]:
    """One profile per section (devices sharing weights are listed once per device)."""
    rows = []
    encoding = model.config.wire.scores
    for name, module in section_modules(model).items():
        binary, floats, memory = _memory_bytes(module)
        scores = features = 0
        if isinstance(module, DeviceSection) and not module.raw:
            scores = score_payload_bytes(model.config.num_classes, encoding)
            features = feature_payload_bytes(module.feature_shape)
        elif isinstance(module, EdgeSection):
            scores = score_payload_bytes(model.config.num_classes, encoding)
            features = feature_payload_bytes(module.feature_shape) if model.cloud else 0
        binary_macs, float_macs = multiply_adds(module)
        rows.append(
            SectionProfile(
                name=name,
                parameters=sum(p.numel() for p in module.parameters()),
                binary_parameters=binary,
                float_parameters=floats,
                memory_bytes=memory,
                score_bytes=scores,
                feature_bytes=features,
                binary_macs=binary_macs,
                float_macs=float_macs,
            )
        )
    return rows
