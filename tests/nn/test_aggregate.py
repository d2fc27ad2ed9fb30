"""Aggregators with presence masks against NumPy references."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ddnn.nn.aggregate import create_feature_aggregator, create_score_aggregator, zero_absent

X = np.array(
    [[[1.0, 5.0], [3.0, -2.0], [-1.0, 9.0]], [[0.0, 0.0], [2.0, 2.0], [4.0, -4.0]]],
    dtype=np.float32,
)  # (B=2, D=3, C=2)
MASK = np.array([[True, True, False], [False, True, True]])


def test_max_over_present_only():
    out = create_feature_aggregator("mp", 3)(torch.from_numpy(X), torch.from_numpy(MASK))
    assert out.tolist() == [[3.0, 5.0], [4.0, 2.0]]


def test_average_over_present_only():
    out = create_feature_aggregator("AP", 3)(torch.from_numpy(X), torch.from_numpy(MASK))
    assert out.tolist() == [[2.0, 1.5], [3.0, -1.0]]


def test_concat_zeros_absent_slots():
    out = create_feature_aggregator("cc", 3)(torch.from_numpy(X), torch.from_numpy(MASK))
    assert out.tolist() == [[1, 5, 3, -2, 0, 0], [0, 0, 2, 2, 4, -4]]


def test_no_input_present_fuses_to_zeros():
    none = torch.zeros(2, 3, dtype=torch.bool)
    for name in ("mp", "ap"):
        out = create_feature_aggregator(name, 3)(torch.from_numpy(X), none)
        assert out.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_score_cc_projects_back_to_classes():
    agg = create_score_aggregator("cc", 3, 2)
    assert agg(torch.from_numpy(X), torch.from_numpy(MASK)).shape == (2, 2)


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="accepted: ap, cc, mp"):
        create_feature_aggregator("sum", 3)


def test_mask_shape_checked():
    with pytest.raises(ValueError, match="presence mask"):
        create_feature_aggregator("mp", 3)(torch.from_numpy(X), torch.ones(2, 2, dtype=torch.bool))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, (3, 4, 2, 2, 2), elements=st.floats(-10, 10, width=32)),
    arrays(np.bool_, (3, 4)),
    st.permutations(list(range(4))),
    st.sampled_from(["mp", "ap"]),
)
def test_mp_ap_permutation_invariant_and_match_numpy(x, mask, perm, name):
    agg = create_feature_aggregator(name, 4)
    out = agg(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
    permuted = agg(torch.from_numpy(x[:, perm]), torch.from_numpy(mask[:, perm])).numpy()
    np.testing.assert_allclose(out, permuted, atol=1e-5)
    for b in range(3):
        present = x[b][mask[b]]
        if len(present) == 0:
            ref = np.zeros(x.shape[2:])
        else:
            ref = present.max(axis=0) if name == "mp" else present.mean(axis=0)
        np.testing.assert_allclose(out[b], ref, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(5, 3, 2, 4, 6), (5, 3, 4, 7), (5, 3, 2)])
def test_zero_absent_matches_numpy_and_keeps_the_layout(shape, channels_last):
    """Absent inputs become zeros, present ones are untouched, in any memory layout (the stacked
    devices' channels-last layout included), and the gradient reaches present inputs only."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    if channels_last and len(shape) == 5:  # (B, D, C, H, W) stored as channels-last (B, D*C, H, W)
        b, d, c = shape[:3]
        x = x.reshape(b, d * c, *shape[3:]).contiguous(memory_format=torch.channels_last)
        x = x.unflatten(1, (d, c))
    mask = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)
    x.requires_grad_()
    out = zero_absent(x, mask)
    expected = x.detach().numpy() * mask.numpy().reshape(5, 3, *([1] * (len(shape) - 2)))
    np.testing.assert_array_equal(out.detach().numpy(), expected)
    assert out.stride() == x.stride()
    out.sum().backward()
    assert x.grad is not None
    grad = mask.numpy().reshape(5, 3, *([1] * (len(shape) - 2))) * np.ones(shape)
    np.testing.assert_array_equal(x.grad.numpy(), grad)
    assert zero_absent(x, torch.ones(5, 3, dtype=torch.bool)) is x  # all present: x itself
