"""Binary layers: same arguments as torch's, sign(w) in the forward pass, latent clipping."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ddnn.nn.binary import BinaryConv2d, BinaryLinear, clip_latent_weights
from ddnn.nn.blocks import ConvP, ExitHead


def _numpy_conv2d(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """Direct cross-correlation, an independent reference for F.conv2d."""
    b, c, h, width = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((b, o, h + 2 * pad - k + 1, width + 2 * pad - k + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            patch = xp[:, :, i : i + k, j : j + k]
            out[:, :, i, j] = np.einsum("bckl,ockl->bo", patch, w)
    return out


def test_binary_conv_uses_sign_of_weights():
    torch.manual_seed(0)
    layer = BinaryConv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = 0.0  # sign(0) = +1
    x = torch.randn(2, 3, 5, 5)
    w_sign = np.where(layer.weight.detach().numpy() >= 0, 1.0, -1.0)
    expected = _numpy_conv2d(x.double().numpy(), w_sign, pad=1)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, atol=1e-4)


def test_binary_linear_matches_numpy():
    torch.manual_seed(1)
    layer = BinaryLinear(6, 3)
    x = torch.randn(4, 6)
    w_sign = np.where(layer.weight.detach().numpy() >= 0, 1.0, -1.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), x.numpy() @ w_sign.T, atol=1e-5)


def test_binary_layers_accept_torch_arguments():
    conv = BinaryConv2d(
        in_channels=2, out_channels=5, kernel_size=3, stride=2, padding=1, dilation=1
    )
    ref = nn.Conv2d(2, 5, 3, stride=2, padding=1, bias=False)
    assert conv(torch.randn(1, 2, 9, 9)).shape == ref(torch.randn(1, 2, 9, 9)).shape
    assert BinaryLinear(in_features=4, out_features=2, bias=True).bias is not None


def test_latent_weights_clipped_after_step():
    layer = BinaryLinear(3, 2)
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    layer(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert layer.weight.abs().max() > 1  # the huge step left [-1, 1]
    clip_latent_weights(layer)
    assert layer.weight.abs().max() <= 1


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.sampled_from([1, 2]), st.integers(3, 9))
def test_convp_outputs_are_binary_with_expected_shape(cin, cout, stride, size):
    block = ConvP(cin, cout, pool_stride=stride)
    out = block(torch.randn(3, cin, size, size))
    expected = (size - 1) // stride + 1
    assert out.shape == (3, cout, expected, expected)
    assert set(out.unique().tolist()) <= {-1.0, 1.0}


def test_exit_head_flattens_and_normalizes():
    head = ExitHead(2 * 4 * 4, 3)
    out = head(torch.randn(8, 2, 4, 4))
    assert out.shape == (8, 3)
    # BatchNorm in training mode: each class score has ~zero mean over the batch.
    np.testing.assert_allclose(out.mean(dim=0).detach().numpy(), 0.0, atol=1e-5)
