"""Tests for bit packing: hand bytes, sign(0) = +1, padding, and bit-exactness with the v1 layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ddnn.wire import (
    FrameDecodeError,
    pack_bits,
    pack_bits_batch,
    packed_bytes,
    unpack_bits,
    unpack_bits_batch,
)

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, -1, -1, 1, 1, 1, 1, 1, -1], b"\x9f\x00"),
        ([1], b"\x80"),
        ([-1] * 7 + [1], b"\x01"),
        ([0, 0, -1], b"\xc0"),  # sign(0) = +1
        ([-0.0, -1e-9, 3.5], b"\xa0"),  # -0.0 >= 0; any positive value is +1
    ],
)
def test_hand_packing(values: list[float], expected: bytes) -> None:
    assert pack_bits(np.array(values, dtype=np.float32)) == expected


@pytest.mark.parametrize(
    ("numel", "nbytes"), [(0, 0), (1, 1), (8, 1), (9, 2), (13, 2), (1024, 128)]
)
def test_packed_bytes(numel: int, nbytes: int) -> None:
    assert packed_bytes(numel) == nbytes


def test_c_order_msb_first() -> None:
    signs = -np.ones((2, 2, 3), dtype=np.int8)
    signs[0, 1, 2] = 1  # flat index (0 * 2 + 1) * 3 + 2 = 5 -> bit 2 of byte 0
    signs[1, 1, 1] = 1  # flat index 10 -> bit 5 of byte 1
    assert pack_bits(signs) == bytes([0b0000_0100, 0b0010_0000])


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 4), st.integers(0, 2**32 - 1), st.sampled_from(["f4", "f8", "i1"]))
def test_bit_exact_with_the_v1_layout(
    shape: tuple[int, ...], batch: int, seed: int, dtype: str
) -> None:
    # v1's layout, straight from NumPy: C order, MSB first, value >= 0 -> 1, zero padding
    rng = np.random.default_rng(seed)
    signs = rng.integers(-1, 2, size=(batch, *shape)).astype(dtype)  # -1, 0, +1
    reference = np.packbits(signs.reshape(batch, -1) >= 0, axis=1)
    rows = pack_bits_batch(signs)
    assert np.array_equal(rows, reference)
    assert pack_bits(signs[0]) == reference[0].tobytes()
    expected = np.where(signs >= 0, 1.0, -1.0).astype(np.float32)
    assert np.array_equal(unpack_bits_batch(rows, shape), expected)
    assert np.array_equal(unpack_bits(rows[0].tobytes(), shape), expected[0])


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 3), st.integers(1, 20)),
        elements=st.sampled_from([-1.0, 1.0]),
    )
)
def test_round_trip(signs: np.ndarray) -> None:
    out = unpack_bits_batch(pack_bits_batch(signs), signs.shape[1:])
    assert out.dtype == np.float32
    assert np.array_equal(out, signs)


def test_torch_input_packs_like_numpy() -> None:
    t = torch.tensor([[1.0, -1.0, 0.0], [-1.0, -1.0, 1.0]])
    assert np.array_equal(pack_bits_batch(t), pack_bits_batch(t.numpy()))
    assert np.array_equal(pack_bits_batch(t), np.array([[0b1010_0000], [0b0010_0000]], np.uint8))


def test_nonzero_padding_is_refused() -> None:
    with pytest.raises(FrameDecodeError) as e:
        unpack_bits(b"\x81", (7,))  # 7 values: the lowest bit is padding
    assert e.value.reason == "padding"
    assert np.array_equal(unpack_bits(b"\x81", (8,)), [1, -1, -1, -1, -1, -1, -1, 1])


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pack_bits(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="dtype"):
        pack_bits(np.array([True, False]))
    with pytest.raises(ValueError, match="uint8"):
        unpack_bits_batch(np.zeros((1, 2), np.int8), (9,))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        unpack_bits(b"\x00", (9,))
    with pytest.raises(ValueError):
        pack_bits([1, -1])  # type: ignore[arg-type]
