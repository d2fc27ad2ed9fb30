"""Tests for LEB128 varints: hand-written encodings, round trips and every malformed form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddnn.wire import FrameDecodeError, decode_varint, encode_varint, varint_len

HAND = [
    (0, b"\x00"),
    (1, b"\x01"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (300, b"\xac\x02"),  # 300 = 2*128 + 44; 44 | 0x80 = 0xac
    (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"),
    (65535, b"\xff\xff\x03"),
    (2**53 - 1, b"\xff" * 7 + b"\x0f"),  # 49 bits in seven bytes, the last 4 in the eighth
]


@pytest.mark.parametrize(("value", "encoded"), HAND)
def test_hand_encodings(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert varint_len(value) == len(encoded)
    assert decode_varint(encoded) == (value, len(encoded))


@given(st.integers(0, 2**56 - 1), st.binary(max_size=4), st.binary(max_size=4))
def test_round_trip_at_an_offset(value: int, prefix: bytes, suffix: bytes) -> None:
    data = prefix + encode_varint(value) + suffix
    assert decode_varint(data, len(prefix)) == (value, len(data) - len(suffix))
    assert varint_len(value) == len(data) - len(prefix) - len(suffix)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\x01\x80"])
def test_truncated(data: bytes) -> None:
    offset = 1 if data == b"\x01\x80" else 0
    with pytest.raises(FrameDecodeError) as e:
        decode_varint(data, offset)
    assert e.value.reason == "truncated"


@pytest.mark.parametrize("data", [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00"])
def test_non_minimal_forms_are_refused(data: bytes) -> None:
    with pytest.raises(FrameDecodeError) as e:
        decode_varint(data)
    assert e.value.reason == "varint"


def test_too_many_bytes() -> None:
    with pytest.raises(FrameDecodeError) as e:
        decode_varint(b"\x80" * 8 + b"\x01")  # 9 bytes, 2**56
    assert e.value.reason == "varint"
    with pytest.raises(FrameDecodeError) as e:
        decode_varint(b"\x80\x80\x01", max_bytes=2)
    assert e.value.reason == "varint"
    assert decode_varint(b"\x80\x80\x01", max_bytes=3) == (16384, 3)


@pytest.mark.parametrize("bad", [-1, True, 1.0, "1"])
def test_encode_rejects_non_naturals(bad: object) -> None:
    with pytest.raises(ValueError):
        encode_varint(bad)  # type: ignore[arg-type]
