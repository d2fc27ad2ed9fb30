"""The communication formula on the paper's examples and the raw-offloading baseline."""

import pytest

from ddnn.eval.communication import formula_bytes_per_device, raw_bytes_per_device


@pytest.mark.parametrize(
    "local_fraction, expected",
    [(0.0, 140.0), (0.6082, 62.15), (1.0, 12.0)],  # SPEC §6: f = 4, o = 256, |C| = 3
)
def test_paper_examples(local_fraction, expected):
    assert formula_bytes_per_device(3, local_fraction, 4, 256) == pytest.approx(expected, abs=0.01)


def test_raw_offloading_is_3072_bytes_and_49x():
    raw = raw_bytes_per_device((3, 32, 32))
    assert raw == 3072
    assert raw / formula_bytes_per_device(3, 0.6082, 4, 256) == pytest.approx(49.4, abs=0.1)


def test_fraction_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        formula_bytes_per_device(3, 1.2, 4, 256)
