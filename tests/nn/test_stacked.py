"""D devices' feature stacks run as one grouped stack against running each device's own modules."""

import copy

import pytest
import torch
from torch import nn

from ddnn.nn.blocks import ConvP, ConvP1d, FCBlock
from ddnn.nn.functional import sign_activation
from ddnn.nn.stacked import stackable, stacked_features, worth_stacking

D = 3


def _stacks(kind: str) -> list[nn.Sequential]:
    """D independently initialised stacks of one shape (what D unshared devices own)."""
    torch.manual_seed(0)

    def one() -> nn.Sequential:
        if kind == "binary":
            return nn.Sequential(ConvP(2, 4), ConvP(4, 5))
        if kind == "float":
            return nn.Sequential(ConvP(2, 4, binary=False, activation="relu"), ConvP(4, 5, 1))
        if kind == "mixed":  # a binary first layer feeding a float one, as per-layer precision does
            return nn.Sequential(ConvP(2, 4), ConvP(4, 5, binary=False, activation="relu"))
        if kind == "1d":
            return nn.Sequential(ConvP1d(2, 4), ConvP1d(4, 3))
        raise AssertionError(kind)

    stacks = [one() for _ in range(D)]
    for s in stacks:  # non-trivial BatchNorm affine parameters and running statistics
        for m in s.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.3, 0.3)
    return stacks


def _input(kind: str, batch: int = 5) -> torch.Tensor:
    torch.manual_seed(1)
    shape = (batch, D, 2, 12) if kind == "1d" else (batch, D, 2, 9, 7)
    return torch.randn(shape) * 2


def _reference(stacks: list[nn.Sequential], x: torch.Tensor) -> torch.Tensor:
    """Each device's own modules on its own slice, concatenated along channels."""
    return torch.cat([s(x[:, k]) for k, s in enumerate(stacks)], dim=1)


def _buffers(stacks: list[nn.Sequential]) -> list[torch.Tensor]:
    return [b for s in stacks for b in s.buffers()]


@pytest.mark.parametrize("kind", ["binary", "float", "mixed", "1d"])
@pytest.mark.parametrize("training", [True, False])
def test_stacked_features_equal_device_by_device(kind, training):
    ref_stacks = _stacks(kind)
    for s in ref_stacks:
        s.train(training)
        if not training:  # evaluation uses running statistics: make them non-trivial
            for m in s.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    fast_stacks = copy.deepcopy(ref_stacks)
    x = _input(kind)
    assert stackable(fast_stacks)
    expected = _reference(ref_stacks, x)
    got = stacked_features(fast_stacks, x.flatten(1, 2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    weights = torch.randn_like(expected)  # a loss that weighs every output differently
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    for (name, p_ref), p_fast in zip(
        [(n, p) for s in ref_stacks for n, p in s.named_parameters()],
        [p for s in fast_stacks for p in s.parameters()],
        strict=True,
    ):
        assert p_fast.grad is not None, name
        torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=1e-4, rtol=1e-5, msg=name)
    for b_ref, b_fast in zip(_buffers(ref_stacks), _buffers(fast_stacks), strict=True):
        torch.testing.assert_close(b_fast, b_ref, atol=1e-5, rtol=1e-6)


def test_cumulative_batchnorm_averages_like_each_device():
    """momentum=None (exact average, as BatchNorm recalibration uses) over two batches."""
    ref_stacks = _stacks("binary")
    for m in (m for s in ref_stacks for m in s.modules()):
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    fast_stacks = copy.deepcopy(ref_stacks)
    with torch.no_grad():
        for batch in (4, 6):
            x = _input("binary", batch)
            _reference(ref_stacks, x)
            stacked_features(fast_stacks, x.flatten(1, 2))
    for b_ref, b_fast in zip(_buffers(ref_stacks), _buffers(fast_stacks), strict=True):
        torch.testing.assert_close(b_fast, b_ref, atol=1e-5, rtol=1e-6)
    assert all(int(s[0].bn.num_batches_tracked) == 2 for s in fast_stacks)


def test_cumulative_batchnorm_out_of_step_uses_each_modules_count():
    """A device that has seen one more batch than the others still averages over its own count."""
    ref_stacks = _stacks("binary")
    for m in (m for s in ref_stacks for m in s.modules()):
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        ref_stacks[1](_input("binary", 4)[:, 1])  # device 1 alone: its count is now 1
    fast_stacks = copy.deepcopy(ref_stacks)
    x = _input("binary", 6)
    with torch.no_grad():
        expected = _reference(ref_stacks, x)
        got = stacked_features(fast_stacks, x.flatten(1, 2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    for b_ref, b_fast in zip(_buffers(ref_stacks), _buffers(fast_stacks), strict=True):
        torch.testing.assert_close(b_fast, b_ref, atol=1e-5, rtol=1e-6)
    assert [int(s[0].bn.num_batches_tracked) for s in fast_stacks] == [1, 2, 1]


def test_not_stackable_when_devices_differ():
    assert not stackable(_stacks("binary")[:1])  # one device: nothing to stack
    wider = _stacks("binary")
    wider[2][1] = ConvP(4, 6)
    assert not stackable(wider)
    mixed = _stacks("binary")
    mixed[0][1] = ConvP(4, 5, binary=False, activation="relu")
    assert not stackable(mixed)
    strides = _stacks("binary")
    strides[1][0] = ConvP(2, 4, pool_stride=1)
    assert not stackable(strides)
    assert not stackable([nn.Sequential(FCBlock(3, 4)) for _ in range(D)])
    one_eval = _stacks("binary")
    one_eval[0].eval()
    assert not stackable(one_eval)


def test_only_narrow_stacks_are_worth_stacking():
    assert worth_stacking(_stacks("binary"))  # 4 and 5 channels
    wide = [nn.Sequential(ConvP(2, 4), ConvP(4, 16)) for _ in range(D)]
    assert stackable(wide) and not worth_stacking(wide)


def test_sign_activation_gradient_keeps_the_inputs_layout():
    """The STE's gradient comes back in the input's memory layout (channels-last here) even when
    the incoming gradient is contiguous, and passes exactly where |x| <= 1."""
    torch.manual_seed(2)
    x = (torch.randn(2, 3, 4, 5) * 2).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, :3] = torch.tensor([-1.0, 1.0, 0.0])
    x.requires_grad_()
    grad = torch.randn(2, 3, 4, 5)
    sign_activation(x).backward(grad)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.grad, grad * (x.detach().abs() <= 1), atol=0, rtol=0)


def test_sign_activation_bounds_are_exact_in_float64():
    just_out = torch.nextafter(
        torch.tensor([1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    )
    x = torch.tensor([1.0, -1.0, just_out[0].item(), -just_out[0].item()], dtype=torch.float64)
    x.requires_grad_()
    sign_activation(x).backward(torch.ones(4, dtype=torch.float64))
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
