"""D devices' feature stacks run as one: grouped convolution, one pool, one BatchNorm, one activation.

Devices that do not share weights each own a stack of ConvP blocks with identical shapes. Run one
by one they cost D times the kernel launches on small tensors; stacked along the channel axis
(device-major: device ``d`` owns channels ``d*C .. (d+1)*C - 1``), a convolution with
``groups=D`` over the concatenated weights computes every device's convolution at once. Pooling,
BatchNorm (per channel, so per device) and the activation are channel-wise and need nothing
more. Parameters and buffers stay in each device's own modules: state dicts, checkpoints, export
and serving are unchanged, and the result equals running the devices one by one up to float
rounding (the summation order of a grouped convolution's kernel may differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ddnn.nn.binary import BinaryConv1d, BinaryConv2d
from ddnn.nn.blocks import ConvP, ConvP1d, SignActivation
from ddnn.nn.functional import sign_activation, sign_weight

Block = ConvP | ConvP1d
Norm = nn.modules.batchnorm._BatchNorm

_CONVS: dict[type, tuple[type, ...]] = {
    ConvP: (nn.Conv2d, BinaryConv2d),
    ConvP1d: (nn.Conv1d, BinaryConv1d),
}
_CONV_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation")
_POOL_KEYS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_NORM_KEYS = ("num_features", "eps", "momentum", "affine", "track_running_stats", "training")
# Channels-last kernels vectorize over channels: one device's 4-channel map fills a quarter of a
# 16-float (AVX-512) register, the D devices' maps stacked fill it. Measured on 2 CPUs, training
# steps with 6 ConvP(4) devices (the paper's) ran 1.1-1.5x faster stacked; with 6 ConvP(64, 32)
# devices (benchmarks/fashion_benchmark.py), which vectorize alone, ~1.2x slower (one thread).
NARROW_CHANNELS = 16


def _same(modules: Sequence[nn.Module], keys: tuple[str, ...]) -> bool:
    first = modules[0]
    return all(
        type(m) is type(first) and all(getattr(m, k) == getattr(first, k) for k in keys)
        for m in modules[1:]
    )


def _stackable_block(modules: Sequence[nn.Module]) -> bool:
    """Whether D blocks are ConvP (or ConvP1d) of one kind and shape, as ``stacked_block`` needs."""
    kind = type(modules[0])
    if kind not in _CONVS or any(type(b) is not kind for b in modules):
        return False
    blocks = cast(Sequence[Block], modules)
    convs = [b.conv for b in blocks]
    conv = convs[0]
    if type(conv) not in _CONVS[kind] or conv.groups != 1 or conv.padding_mode != "zeros":
        return False
    if any((c.bias is None) != (conv.bias is None) for c in convs):
        return False
    acts = [b.act for b in blocks]
    return (
        _same(convs, _CONV_KEYS)
        and _same([b.pool for b in blocks], _POOL_KEYS)
        and _same([b.bn for b in blocks], _NORM_KEYS)
        and type(acts[0]) in (SignActivation, nn.ReLU)
        and _same(acts, ())
    )


def stackable(stacks: Sequence[nn.Sequential]) -> bool:
    """Whether D feature stacks (one per device) can run as one with ``stacked_features``.

    They can when every layer is a ConvP or ConvP1d block of one kind and one shape on every
    device; anything else (other blocks, a single device) runs device by device.
    """
    if len(stacks) < 2 or len(stacks[0]) == 0 or any(len(s) != len(stacks[0]) for s in stacks):
        return False
    return all(_stackable_block([s[i] for s in stacks]) for i in range(len(stacks[0])))


def worth_stacking(stacks: Sequence[nn.Sequential]) -> bool:
    """Whether stacking ``stackable`` stacks should pay: every layer narrower than 16 channels."""
    return all(cast(Block, b).conv.out_channels < NARROW_CHANNELS for s in stacks for b in s)


def stacked_batch_norm(norms: Sequence[Norm], x: Tensor) -> Tensor:
    """``norms[d]`` applied to channels ``d*C .. (d+1)*C - 1`` of ``x`` (B, D*C, ...), in one call.

    Training updates each module's running statistics and batch count exactly as its own forward
    would (BatchNorm is per channel); the norms must agree on eps, momentum, affine and mode.
    """
    first = norms[0]
    momentum = first.momentum
    if first.training and first.track_running_stats:
        counts = [cast(Tensor, m.num_batches_tracked) for m in norms]
        if momentum is None and len({int(c) for c in counts}) > 1:
            # Cumulative averages out of step (a device was run alone): each its own factor.
            chunks = x.chunk(len(norms), dim=1)
            return torch.cat([m(c) for m, c in zip(norms, chunks, strict=True)], dim=1)
        torch._foreach_add_(counts, 1)
        if momentum is None:  # cumulative moving average: 1 / batches seen
            momentum = 1.0 / float(counts[0])
    use_stats = first.track_running_stats and first.running_mean is not None
    training = first.training or not use_stats
    mean = torch.cat([cast(Tensor, m.running_mean) for m in norms]) if use_stats else None
    var = torch.cat([cast(Tensor, m.running_var) for m in norms]) if use_stats else None
    weight = torch.cat([m.weight for m in norms]) if first.affine else None
    bias = torch.cat([m.bias for m in norms]) if first.affine else None
    out = F.batch_norm(
        x, mean, var, weight, bias, training, 0.0 if momentum is None else momentum, first.eps
    )
    if training and mean is not None and var is not None:  # F.batch_norm updated the copies
        with torch.no_grad():
            n = first.num_features
            for m, mu, v in zip(norms, mean.split(n), var.split(n), strict=True):
                cast(Tensor, m.running_mean).copy_(mu)
                cast(Tensor, m.running_var).copy_(v)
    return out


def stacked_block(blocks: Sequence[Block], x: Tensor) -> Tensor:
    """D ConvP (or ConvP1d) blocks at once: (B, D*Cin, *spatial) -> (B, D*Cout, *spatial')."""
    first = blocks[0]
    conv = first.conv
    weight = torch.cat([b.conv.weight for b in blocks])
    if isinstance(conv, BinaryConv2d | BinaryConv1d):
        weight = sign_weight(weight)
    bias = torch.cat([cast(Tensor, b.conv.bias) for b in blocks]) if conv.bias is not None else None
    two_d = isinstance(first, ConvP)
    run = F.conv2d if two_d else F.conv1d
    y = run(x, weight, bias, conv.stride, conv.padding, conv.dilation, len(blocks))
    pool = first.pool
    pooling = F.max_pool2d if two_d else F.max_pool1d
    y = pooling(y, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    y = stacked_batch_norm([b.bn for b in blocks], y)
    return sign_activation(y) if isinstance(first.act, SignActivation) else F.relu(y)


def stacked_features(stacks: Sequence[nn.Sequential], x: Tensor) -> Tensor:
    """Every device's feature stack on its slice of ``x`` (B, D*Cin, ...) -> (B, D*Cout, ...).

    Check ``stackable(stacks)`` first.
    """
    for i in range(len(stacks[0])):
        x = stacked_block([cast(Block, s[i]) for s in stacks], x)
    return x
