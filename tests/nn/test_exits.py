"""Exit decisions: T = 0 exits nothing, T = 1 everything, monotone in T."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ddnn.nn.exits import exit_mask


def test_extremes():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert exit_mask(logits, 0.0).tolist() == [False, False, False]
    assert exit_mask(logits, 1.0).tolist() == [True, True, True]  # uniform (η = 1) too
    assert exit_mask(logits, 0.5).tolist() == [True, False, False]


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, (20, 3), elements=st.floats(-8, 8, width=32)))
def test_exit_fraction_monotone_in_threshold(logits):
    t = torch.from_numpy(logits)
    fractions = [float(exit_mask(t, th).float().mean()) for th in np.linspace(0, 1, 11)]
    assert fractions == sorted(fractions)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_threshold_out_of_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        exit_mask(torch.zeros(1, 3), bad)
