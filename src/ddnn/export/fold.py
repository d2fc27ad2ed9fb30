"""Folds a trained binary device section into integer arithmetic: sign bits and per-channel thresholds.

A ConvP block is conv 3×3 → max-pool → BatchNorm → sign. With ±1 weights the conv of 8-bit pixels
(first layer) or of ±1 activations (later layers) is an integer, max-pool keeps it one, and
``sign(BN(v))`` is a monotone step in ``v``: rising when the BN scale is positive, falling when it is
negative (max-pool still takes the max), constant when gamma is 0. So each channel becomes one
integer threshold and one direction bit.

The step is not computed from a formula but by running the block's own BatchNorm and sign on every
integer the pooled conv can reach, so the folded decision is PyTorch's float32 decision for that
value, rounding included:

- later layers see ±1 inputs, where PyTorch's float32 conv and max-pool are exact integers, so the
  folded layer is bit-exact with PyTorch by construction;
- the first layer's pixels are ``k / 255``; PyTorch's float32 conv returns ``S / 255`` for the exact
  integer sum ``S`` up to a rounding error ``< n² · 2⁻²⁴`` (``n`` = 27 terms for RGB). The fold uses
  PyTorch's decision at ``float32(S / 255)`` and reports, as a *tie*, any ``S`` whose decision would
  flip within that error, where PyTorch's own answer depends on its summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ddnn.models.sections import DeviceSection
from ddnn.nn.binary import BinaryConv2d, BinaryLinear
from ddnn.nn.blocks import ConvP
from ddnn.nn.functional import sign

PIXEL_LEVELS = 255  # an 8-bit pixel k is the value k / 255


@dataclass(frozen=True)
class Tie:
    """A pooled value whose PyTorch decision depends on float rounding, not on the model."""

    layer: int
    channel: int
    value: int
    reason: str


@dataclass(frozen=True)
class FoldedConvP:
    """One ConvP block in integer form.

    Attributes:
        in_shape: (C, H, W) of its input.
        out_shape: (F, ceil(H/2), ceil(W/2)) of its ±1 output.
        real_input: True for the first layer, whose input is 8-bit pixels (sums of ±u8).
        weight_signs: (F, C, 3, 3) bool, True where the binarized weight is +1.
        thresholds: (F,) int64; the output bit (+1) of channel ``o`` is ``pooled >= thresholds[o]``
            when ``rising[o]``, else ``pooled < thresholds[o]`` (pooled = max of the integer conv
            sums in the pooling window). Either way max-pool + threshold is an OR of per-position
            hits ``sum >= threshold``, which is how the C code pools, one bit per channel.
        rising: (F,) bool direction of each channel's step.
        value_range: (lo, hi), inclusive bounds of every reachable pooled sum and threshold.
        ties: pooled values where PyTorch's decision is at the mercy of float rounding.
    """

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    real_input: bool
    weight_signs: np.ndarray
    thresholds: np.ndarray
    rising: np.ndarray
    value_range: tuple[int, int]
    ties: tuple[Tie, ...]


@dataclass(frozen=True)
class FoldedHead:
    """The exit head: binary FC on the packed features, then BatchNorm as a float32 affine.

    ``scores[k] = d_k * scale[k] + shift[k]`` with ``d_k`` the exact ±1 dot product; scale and
    shift are computed as PyTorch's CPU BatchNorm folds them (float32). ``fused`` records whether
    this PyTorch build evaluates that multiply-add with one rounding (FMA) or two, so the C code
    rounds the same way.
    """

    weight_signs: np.ndarray  # (num_classes, F) bool, F in the wire (C-order) feature order
    scale: np.ndarray  # (num_classes,) float32
    shift: np.ndarray  # (num_classes,) float32
    fused: bool


@dataclass(frozen=True)
class FoldedDevice:
    """A whole device section in integer form, ready for code generation."""

    input_shape: tuple[int, int, int]
    feature_shape: tuple[int, int, int]
    num_classes: int
    layers: tuple[FoldedConvP, ...]
    head: FoldedHead

    @property
    def ties(self) -> tuple[Tie, ...]:
        return tuple(t for layer in self.layers for t in layer.ties)


def _check_binary_image_section(section: DeviceSection) -> None:
    if section.head is None:
        raise ValueError(
            "the device section has no layers (raw offloading, model.device.filters=[]); there is "
            "nothing to run on the device"
        )
    if section.input_norm is not None:
        raise ValueError(
            "the device normalizes its input (model.device.normalize_input=true); C export "
            "takes 8-bit pixels straight into a binary first layer (retrain without it)"
        )
    if len(section.input_shape) != 3:
        raise ValueError(
            f"C export supports image devices with (C, H, W) 8-bit inputs; this device's input has "
            f"shape {tuple(section.input_shape)} (time series and vector devices are not supported)"
        )
    for i, block in enumerate(section.features):
        if not isinstance(block, ConvP):
            raise ValueError(f"device layer {i} is a {type(block).__name__}, expected ConvP")
        if not isinstance(block.conv, BinaryConv2d) or block.conv.bias is not None:
            raise ValueError(
                f"device layer {i} is a float (non-binary) convolution; C export needs a binary "
                "device section (retrain with model.device.binary=true, or a list of true for "
                "every layer)"
            )
        if block.pool.stride not in (2, (2, 2)):
            raise ValueError(f"device layer {i} pools with stride {block.pool.stride}, expected 2")
        if block.bn.running_mean is None or block.bn.running_var is None:
            raise ValueError(f"device layer {i}: BatchNorm without running statistics")
    linear = section.head.linear
    if not isinstance(linear, BinaryLinear) or linear.bias is not None:
        raise ValueError(
            "the device exit head is a float layer; C export needs a binary device section "
            "(retrain with model.device.binary=true, or a list of true for every layer)"
        )


@torch.no_grad()
def _decisions(bn: nn.BatchNorm2d, values: torch.Tensor, channels_last: bool) -> np.ndarray:
    """PyTorch's sign(BN(v)) == +1 for every channel and value: (F, N) bool."""
    f, n = int(bn.num_features), int(values.shape[0])
    z = values.to(torch.float32).reshape(1, 1, 1, n).expand(1, f, 1, n).contiguous()
    if channels_last:  # the layout DeviceSection.forward runs BatchNorm in
        z = z.contiguous(memory_format=torch.channels_last)
    return (sign(bn(z)) > 0).reshape(f, n).numpy()


def _step(decide: np.ndarray, values: np.ndarray, where: str) -> tuple[int, bool]:
    """The (threshold, rising) that reproduces one channel's decisions over ``values``."""
    lo, hi = int(values[0]), int(values[-1])
    if decide.all():
        return lo, True
    if not decide.any():
        return hi + 1, True
    steps = np.diff(decide.astype(np.int8))
    if (steps >= 0).all():  # -1 ... -1 +1 ... +1: the first +1
        return int(values[np.argmax(decide)]), True
    if (steps <= 0).all():  # +1 ... +1 -1 ... -1: the first -1
        return int(values[np.argmax(~decide)]), False
    raise ValueError(f"{where}: sign(BatchNorm) is not monotone in its input; cannot fold it")


def fold_convp(block: ConvP, index: int, in_shape: tuple[int, int, int]) -> FoldedConvP:
    """Folds one binary ConvP block; ``index`` 0 takes 8-bit pixels, later ones ±1 maps."""
    bn = block.bn.eval()
    positive = (block.conv.weight.detach() >= 0).numpy()  # sign(0) = +1, as nn.functional.sign
    c, h, w = in_shape
    f = positive.shape[0]
    real = index == 0
    fan_in = c * 9
    if real:
        n_pos = positive.reshape(f, -1).sum(1)
        lo_ch, hi_ch = -PIXEL_LEVELS * (fan_in - n_pos), PIXEL_LEVELS * n_pos
    else:
        lo_ch, hi_ch = np.full(f, -fan_in), np.full(f, fan_in)
    lo, hi = int(lo_ch.min()), int(hi_ch.max())
    ints = torch.arange(lo, hi + 1, dtype=torch.float64)
    # The float value PyTorch's conv produces for each integer sum (exact for ±1 inputs).
    values = (ints.float() / PIXEL_LEVELS) if real else ints.float()
    decide = _decisions(bn, values, channels_last=f > 1)
    # The other BatchNorm kernel (contiguous layout) may fuse multiply-add differently.
    other = _decisions(bn, values, channels_last=f == 1)
    unstable = decide != other
    if real:
        err = fan_in * fan_in * 2.0**-24  # pixel rounding + float32 summation of fan_in terms
        for delta in (-err, err):
            unstable |= _decisions(bn, (ints / PIXEL_LEVELS + delta).float(), f > 1) != decide
    thresholds = np.zeros(f, dtype=np.int64)
    rising = np.zeros(f, dtype=bool)
    ties: list[Tie] = []
    all_values = ints.numpy().astype(np.int64)
    for o in range(f):
        keep = (all_values >= lo_ch[o]) & (all_values <= hi_ch[o])
        thresholds[o], rising[o] = _step(
            decide[o, keep], all_values[keep], f"device layer {index} channel {o}"
        )
        for v in all_values[keep & unstable[o]]:
            reason = "float32 conv rounding" if real else "BatchNorm kernel rounding"
            ties.append(Tie(index, o, int(v), reason))
    out_shape = (f, (h - 1) // 2 + 1, (w - 1) // 2 + 1)
    return FoldedConvP(
        in_shape=in_shape,
        out_shape=out_shape,
        real_input=real,
        weight_signs=positive,
        thresholds=thresholds,
        rising=rising,
        value_range=(lo, hi + 1),
        ties=tuple(ties),
    )


@torch.no_grad()
def bn_affine(bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) float32 of an eval-mode BatchNorm, exactly as PyTorch's CPU kernel has them.

    The scale ``gamma / sqrt(var + eps)`` has a single rounding per operation, so it is recomputed
    here; the shift ``beta - mean * scale`` may be computed with or without a fused multiply-add
    depending on the build, so it is read back from the module itself: ``BN(0) = shift`` exactly.
    """
    assert bn.running_mean is not None and bn.running_var is not None
    var = bn.running_var.detach().numpy().astype(np.float32)
    c = var.shape[0]
    gamma = bn.weight.detach().numpy() if bn.weight is not None else np.ones(c, np.float32)
    invstd = np.float32(1.0) / np.sqrt(var + np.float32(bn.eps))
    scale = (invstd * gamma.astype(np.float32)).astype(np.float32)
    shift = bn(torch.zeros(1, c)).numpy()[0].astype(np.float32)
    return scale, shift


@torch.no_grad()
def _head_is_fused(bn: nn.BatchNorm1d, scale: np.ndarray, shift: np.ndarray, fan_in: int) -> bool:
    """Whether PyTorch's BatchNorm matches ``fma(d, scale, shift)`` better than two roundings."""
    d = np.arange(-fan_in, fan_in + 1, dtype=np.float32)
    probe = torch.from_numpy(np.repeat(d[:, None], len(scale), axis=1))  # (2F+1, classes)
    actual = bn(probe).numpy()
    col = d[:, None]
    two = (col * scale).astype(np.float32) + shift  # float32: two roundings
    fused = (col.astype(np.float64) * scale + shift.astype(np.float64)).astype(np.float32)
    return int((fused == actual).sum()) >= int((two == actual).sum())


def fold_device(section: DeviceSection) -> FoldedDevice:
    """Folds a trained binary image device section (eval mode) into integer layers + head.

    Raises:
        ValueError: For raw, float (non-binary) or non-image device sections.
    """
    _check_binary_image_section(section)
    exit_head = section.head
    assert exit_head is not None
    section = section.eval()
    shape = tuple(int(s) for s in section.input_shape)
    assert len(shape) == 3
    in_shape: tuple[int, int, int] = (shape[0], shape[1], shape[2])
    layers = []
    for i, block in enumerate(section.features):
        assert isinstance(block, ConvP)
        layer = fold_convp(block, i, in_shape)
        layers.append(layer)
        in_shape = layer.out_shape
    head_linear = exit_head.linear
    num_classes = int(head_linear.weight.shape[0])
    assert head_linear.weight.shape[1] == math.prod(in_shape)
    scale, shift = bn_affine(exit_head.bn)
    if not (np.isfinite(scale).all() and np.isfinite(shift).all()):
        raise ValueError("the exit head's BatchNorm has non-finite parameters")
    head = FoldedHead(
        weight_signs=(head_linear.weight.detach() >= 0).numpy(),
        scale=scale,
        shift=shift,
        fused=_head_is_fused(exit_head.bn, scale, shift, int(head_linear.weight.shape[1])),
    )
    return FoldedDevice(
        input_shape=(shape[0], shape[1], shape[2]),
        feature_shape=in_shape,
        num_classes=num_classes,
        layers=tuple(layers),
        head=head,
    )
