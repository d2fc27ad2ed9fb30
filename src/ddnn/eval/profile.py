"""Model profile: parameters, binary vs float, and the memory a section needs on a device.

Device memory counts what a deployed section really stores: binary weights bit-packed (1 bit each);
a BatchNorm followed by sign folded into one int32 threshold per channel plus one direction bit;
a BatchNorm at an exit head as two float32 per class (scale, shift); float parameters at 4 bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ddnn.models.ddnn import DDNN
from ddnn.nn.binary import is_binary
from ddnn.nn.blocks import ExitHead
from ddnn.train.checkpoint import section_modules


@dataclass
class SectionProfile:
    """Counts for one section."""

    name: str
    parameters: int
    binary_parameters: int
    float_parameters: int
    memory_bytes: int


def _memory_bytes(module: nn.Module) -> tuple[int, int, int]:
    binary = floats = memory = 0
    heads_bn = {id(m.bn) for m in module.modules() if isinstance(m, ExitHead)}
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
            memory += 8 * c if id(layer) in heads_bn else 4 * c + math.ceil(c / 8)
        elif isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d):
            n = sum(p.numel() for p in layer.parameters(recurse=False))
            floats += n
            memory += 4 * n
    return binary, floats, memory


def profile_model(model: DDNN) -> list[SectionProfile]:
    """One profile per section (devices sharing weights are listed once per device)."""
    rows = []
    for name, module in section_modules(model).items():
        binary, floats, memory = _memory_bytes(module)
        rows.append(
            SectionProfile(
                name=name,
                parameters=sum(p.numel() for p in module.parameters()),
                binary_parameters=binary,
                float_parameters=floats,
                memory_bytes=memory,
            )
        )
    return rows
