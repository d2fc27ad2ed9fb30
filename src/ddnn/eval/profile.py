"""Model profile: parameters, binary vs float, and the memory a section needs on a device.

Device memory counts what a deployed section really stores: binary weights bit-packed (1 bit each);
a BatchNorm followed by sign folded into one int32 threshold per channel plus one direction bit;
any other BatchNorm (an exit head, an input normalization, a block ending in ReLU) as two float32
per channel (scale, shift); float parameters at 4 bytes. Precision is per layer
(``model.device.binary`` may list one flag per layer), so a section may mix both kinds.

What a device or edge sends per sample comes from :mod:`ddnn.wire`: a score row always, and a
bit-packed feature map for samples that go up. A device's last block always ends in sign, so its
feature map is bits whatever the precision of its weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ddnn.models.ddnn import DDNN
from ddnn.models.sections import DeviceSection, EdgeSection
from ddnn.nn.binary import is_binary
from ddnn.nn.blocks import SignActivation
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
        rows.append(
            SectionProfile(
                name=name,
                parameters=sum(p.numel() for p in module.parameters()),
                binary_parameters=binary,
                float_parameters=floats,
                memory_bytes=memory,
                score_bytes=scores,
                feature_bytes=features,
            )
        )
    return rows
