"""sign, straight-through estimators and normalized entropy against hand-computed values."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ddnn.nn.functional import (
    entropy_from_logits,
    normalized_entropy,
    sign,
    sign_activation,
    sign_weight,
)


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]


@given(arrays(np.float32, st.integers(1, 50), elements=st.floats(-1e6, 1e6, width=32)))
def test_sign_outputs_are_plus_minus_one(values):
    out = sign(torch.from_numpy(values)).numpy()
    assert set(np.unique(out)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(out, np.where(values >= 0, 1.0, -1.0))


def test_activation_ste_passes_gradient_only_inside_unit_interval():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = sign_activation(x)
    y.backward(torch.arange(1.0, 8.0))
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]


def test_weight_ste_is_identity_gradient():
    w = torch.tensor([-3.0, -0.2, 0.0, 0.7, 5.0], requires_grad=True)
    out = sign_weight(w)
    out.backward(torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0]))
    assert out.tolist() == [-1, -1, 1, 1, 1]
    assert w.grad.tolist() == [1.0, -2.0, 3.0, -4.0, 5.0]


def test_entropy_known_values():
    p = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    eta = normalized_entropy(p)
    assert eta[0].item() == pytest.approx(1.0, abs=1e-6)
    assert eta[1].item() == pytest.approx(0.0, abs=1e-7)
    assert eta[2].item() == pytest.approx(math.log(2) / math.log(3), abs=1e-6)


@given(arrays(np.float32, (4, 5), elements=st.floats(-30, 30, width=32)))
def test_entropy_bounds_and_log_space_agreement(logits):
    t = torch.from_numpy(logits)
    eta = entropy_from_logits(t)
    assert bool(((eta >= 0) & (eta <= 1)).all())
    ref = normalized_entropy(torch.softmax(t.double(), dim=1)).float()
    torch.testing.assert_close(eta, ref, atol=1e-4, rtol=0)


def test_entropy_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        normalized_entropy(torch.ones(3, 1))


@pytest.mark.parametrize("binarize", [sign_activation, sign_weight])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_inference_binarizes_to_the_same_values_without_recording_a_gradient(binarize, context):
    values = [-2.0, -1.0, -0.0, 0.0, 1e-30, -1e-30, 0.5, 3.0]
    w = torch.tensor(values, requires_grad=True)
    with context():
        out = binarize(w)
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0]
    assert out.grad_fn is None and not out.requires_grad
    # a tensor that needs no gradient takes the same path with gradients on
    assert binarize(torch.tensor(values)).tolist() == out.tolist()
