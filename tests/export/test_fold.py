"""BatchNorm + sign folded into integer thresholds, checked against hand-derived decisions and
against PyTorch's own BatchNorm, including exact ties, negative and zero scales."""

import numpy as np
import pytest
import torch

from ddnn.config import DeviceConfig
from ddnn.export.fold import Tie, bn_affine, fold_convp, fold_device
from ddnn.models.sections import DeviceSection
from ddnn.nn.blocks import ConvP
from ddnn.nn.functional import sign


def decide(layer, channel, values):
    """The folded layer's output bit (+1 = True) for pooled sums ``values``."""
    t = layer.thresholds[channel]
    return values >= t if layer.rising[channel] else values < t


@torch.no_grad()
def crafted_block(in_channels, gammas, means, betas):
    block = ConvP(in_channels, len(gammas)).eval()
    block.bn.eps = 0.0  # with var = 1 the scale is exactly gamma: ties are exact zeros
    block.bn.running_var.fill_(1.0)
    block.bn.running_mean.copy_(torch.tensor(means))
    block.bn.weight.copy_(torch.tensor(gammas))
    block.bn.bias.copy_(torch.tensor(betas))
    return block


def test_binary_layer_thresholds_directions_constants_and_ties():
    gammas = [0.5, -0.5, 0.0, 0.0, 0.0, 0.5]
    means = [3.0, 3.0, 0.0, 0.0, 0.0, 2.5]
    betas = [0.0, 0.0, 0.25, -0.25, 0.0, 0.0]
    block = crafted_block(2, gammas, means, betas)
    layer = fold_convp(block, 1, (2, 4, 4))  # layer 1: ±1 inputs, sums in [-18, 18]
    v = np.arange(-18, 19)
    expected = [
        v >= 3,  # BN(3) = 0 exactly and sign(0) = +1
        v <= 3,  # negative scale: the step falls
        np.ones_like(v, bool),  # gamma 0, shift > 0
        np.zeros_like(v, bool),  # gamma 0, shift < 0
        np.ones_like(v, bool),  # gamma 0, shift 0: sign(0) = +1
        v >= 3,  # mean 2.5 between two integers
    ]
    pytorch = (
        sign(
            block.bn(
                torch.tensor(v, dtype=torch.float32)
                .view(1, 1, 1, -1)
                .expand(1, 6, 1, len(v))
                .contiguous()
            )
        )
        > 0
    )[0, :, 0].numpy()
    for o in range(6):
        assert np.array_equal(decide(layer, o, v), expected[o]), o
        assert np.array_equal(decide(layer, o, v), pytorch[o]), o
    assert list(layer.rising) == [True, False, True, True, True, True]
    assert layer.ties == ()


def test_first_layer_threshold_on_the_pixel_grid_and_its_tie():
    # BN zero exactly at the pixel-sum 100/255: PyTorch's own answer there depends on how its
    # float32 conv rounds, which the fold must report.
    mean = float(np.float32(100) / np.float32(255))
    block = crafted_block(3, [1.0, -1.0], [mean, 0.5], [0.0, 0.0])
    layer = fold_convp(block, 0, (3, 8, 8))
    s = np.arange(-27 * 255, 27 * 255 + 1)
    assert decide(layer, 0, s).tolist() == (s >= 100).tolist()
    assert decide(layer, 1, s).tolist() == (s / 255 <= 0.5).tolist()
    assert Tie(0, 0, 100, "float32 conv rounding") in layer.ties
    assert all(t.channel == 0 for t in layer.ties)  # 0.5 * 255 = 127.5 is far from the grid


@torch.no_grad()
def test_head_affine_reproduces_pytorch_batchnorm_exactly():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(5).eval()
    bn.running_mean.uniform_(-40, 40)
    bn.running_var.uniform_(0.1, 300)
    bn.weight.uniform_(-1, 1)
    bn.bias.uniform_(-1, 1)
    scale, shift = bn_affine(bn)
    d = np.arange(-512, 513, dtype=np.float32)[:, None]
    actual = bn(torch.from_numpy(np.repeat(d, 5, axis=1))).numpy()
    fused = (d.astype(np.float64) * scale + shift.astype(np.float64)).astype(np.float32)
    separate = (d * scale).astype(np.float32) + shift
    assert np.array_equal(fused, actual) or np.array_equal(separate, actual)


def test_fold_device_records_the_head_rounding_the_c_code_must_use():
    section = DeviceSection((3, 8, 8), 3, DeviceConfig(filters=(2,))).eval()
    folded = fold_device(section)
    assert folded.feature_shape == (2, 4, 4)
    assert folded.head.weight_signs.shape == (3, 32)
    assert isinstance(folded.head.fused, bool)


@pytest.mark.parametrize(
    ("shape", "config", "message"),
    [
        ((3, 8, 8), DeviceConfig(filters=(4,), binary=False), "non-binary"),
        ((3, 8, 8), DeviceConfig(filters=(4, 4), binary=(True, False, True)), "layer 1 is a float"),
        ((3, 8, 8), DeviceConfig(filters=(4,), binary=(True, False)), "exit head is a float"),
        ((3, 8, 8), DeviceConfig(filters=(4,), normalize_input=True), "normalizes its input"),
        ((3, 8, 8), DeviceConfig(filters=()), "raw offloading"),
        ((3, 20), DeviceConfig(filters=(4,)), "image devices"),
        ((12,), DeviceConfig(filters=(4,)), "image devices"),
    ],
)
def test_rejects_sections_it_cannot_run_exactly(shape, config, message):
    section = DeviceSection(shape, 3, config).eval()
    with pytest.raises(ValueError, match=message):
        fold_device(section)
