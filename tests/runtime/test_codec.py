"""Tests for the frame codec: hand-computed bytes, round trips, sizes and corruption detection."""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ddnn.runtime.codec import (
    HEADER_BYTES,
    Frame,
    FrameDecodeError,
    FrameKind,
    decode_frame,
    encode_features,
    encode_frame,
    encode_scores,
    pack_bits,
    pack_bits_batch,
    payload_bytes,
    unpack_bits,
    unpack_bits_batch,
)

IDS = {"sender_id": 5, "sample_id": 123_456_789_012, "model_version": 0xDEADBEEF}
CRC_AT = 29  # offset of the CRC field, per the documented layout

feature_shapes = st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple)


def signs_of(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def reseal(frame: bytes | bytearray) -> bytes:
    """Recomputes the CRC after a deliberate header edit, so later checks are reached."""
    buf = bytearray(frame)
    crc = zlib.crc32(bytes(buf[:CRC_AT]) + bytes(buf[HEADER_BYTES:]))
    buf[CRC_AT : CRC_AT + 4] = struct.pack("<I", crc)
    return bytes(buf)


# --- bit packing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, -1, -1, 1, 1, 1, 1, 1, -1], b"\x9f\x00"),
        ([1], b"\x80"),
        ([-1] * 7 + [1], b"\x01"),
        ([1] * 8 + [1, 1, -1, 1], b"\xff\xd0"),
        ([-1] * 16, b"\x00\x00"),
    ],
)
def test_pack_bits_hand_computed(values: list[int], expected: bytes) -> None:
    assert pack_bits(np.array(values, dtype=np.float32)) == expected
    assert pack_bits(np.array(values, dtype=np.int8)) == expected


def test_sign_of_zero_packs_as_one() -> None:
    assert pack_bits(np.array([0.0, -1.0, -0.0, -0.5, 0.25, 0, 0, 0])) == bytes([0b10101111])
    assert pack_bits(np.zeros(3, dtype=np.int32)) == b"\xe0"
    np.testing.assert_array_equal(unpack_bits(b"\xe0", (3,)), [1.0, 1.0, 1.0])


def test_pack_bits_is_channel_major_c_order() -> None:
    c, h, w = 3, 2, 5
    for idx in [(0, 0, 0), (1, 0, 3), (2, 1, 4), (0, 1, 0)]:
        x = -np.ones((c, h, w), dtype=np.float32)
        x[idx] = 1.0
        flat = (idx[0] * h + idx[1]) * w + idx[2]
        expected = bytearray(math.ceil(c * h * w / 8))
        expected[flat // 8] = 1 << (7 - flat % 8)
        assert pack_bits(x) == bytes(expected)


def test_unpack_bits_hand_computed() -> None:
    out = unpack_bits(b"\x9f\x00", (9,))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1, -1, -1, 1, 1, 1, 1, 1, -1])
    np.testing.assert_array_equal(unpack_bits(b"\xf0", (2, 1, 2)), [[[1, 1]], [[1, 1]]])


@given(shape=feature_shapes, seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(shape: tuple[int, ...], seed: int) -> None:
    x = signs_of(shape, seed)
    data = pack_bits(x)
    assert len(data) == math.ceil(x.size / 8)
    np.testing.assert_array_equal(unpack_bits(data, shape), x)


@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=9), elements=st.floats(-3, 3))
)
def test_pack_binarizes_real_values_with_sign_zero_plus_one(x: np.ndarray) -> None:
    expected = np.where(x >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(unpack_bits(pack_bits(x), x.shape), expected)


def test_unpack_rejects_wrong_length_and_set_padding() -> None:
    with pytest.raises(ValueError, match="uint8"):
        unpack_bits(b"\x00", (9,))
    with pytest.raises(ValueError, match="padding"):
        unpack_bits(b"\x9f\x01", (9,))


@pytest.mark.parametrize(
    "bad", [np.array([True, False]), np.array([1.0, np.nan]), np.array([1 + 1j])]
)
def test_pack_rejects_non_sign_inputs(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        pack_bits(bad)


# --- batch helpers ----------------------------------------------------------------------------


@settings(max_examples=50)
@given(batch=st.integers(0, 5), shape=feature_shapes, seed=st.integers(0, 2**32 - 1))
def test_batch_helpers_equal_per_sample(batch: int, shape: tuple[int, ...], seed: int) -> None:
    x = signs_of((batch, *shape), seed)
    packed = pack_bits_batch(x)
    assert packed.dtype == np.uint8
    assert packed.shape == (batch, math.ceil(math.prod(shape) / 8))
    for b in range(batch):
        assert packed[b].tobytes() == pack_bits(x[b])
    out = unpack_bits_batch(packed, shape)
    assert out.shape == (batch, *shape) and out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_batch_helpers_accept_torch_and_validate() -> None:
    x = torch.tensor([[[1.0, -1.0, 0.0]], [[-1.0, -1.0, 1.0]]], requires_grad=True)
    np.testing.assert_array_equal(pack_bits_batch(x), [[0b10100000], [0b00100000]])
    assert pack_bits(x[0]) == b"\xa0"
    with pytest.raises(ValueError, match=r"\(B, 2\) uint8"):
        unpack_bits_batch(np.zeros((2, 1), dtype=np.uint8), (3, 3))
    with pytest.raises(ValueError, match="padding"):
        unpack_bits_batch(np.array([[0x00], [0x01]], dtype=np.uint8), (7,))
    with pytest.raises(ValueError, match="batch"):
        pack_bits_batch(np.float32(1.0))  # type: ignore[arg-type]


# --- frame sizes and layout -------------------------------------------------------------------


def test_header_size_is_small() -> None:
    assert HEADER_BYTES == 33


def test_paper_payload_sizes() -> None:
    scores = encode_scores(np.array([0.1, -2.0, 3.5], dtype=np.float32), **IDS)
    feats = encode_features(signs_of((4, 16, 16), 0), **IDS)
    assert len(scores) - HEADER_BYTES == 12
    assert len(feats) - HEADER_BYTES == 128
    # SPEC §6: 140 B per device per sample with no local exit (f = 4, o = 256, |C| = 3)
    assert (len(scores) - HEADER_BYTES) + (len(feats) - HEADER_BYTES) == 140
    assert payload_bytes(FrameKind.SCORES, (3,)) == 12
    assert payload_bytes(FrameKind.FEATURES, (4, 16, 16)) == 128


@pytest.mark.parametrize(
    ("kind", "shape", "expected"),
    [
        (FrameKind.SCORES, (1,), 4),
        (FrameKind.SCORES, (10,), 40),
        (FrameKind.FEATURES, (1,), 1),
        (FrameKind.FEATURES, (8,), 1),
        (FrameKind.FEATURES, (9,), 2),
        (FrameKind.FEATURES, (2, 8, 8), 16),
        (FrameKind.FEATURES, (3, 5), 2),
        (FrameKind.FEATURES, (1, 8, 8), 8),
    ],
)
def test_payload_bytes(kind: FrameKind, shape: tuple[int, ...], expected: int) -> None:
    assert payload_bytes(kind, shape) == expected


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        (FrameKind.SCORES, (3, 1)),
        (FrameKind.SCORES, (0,)),
        (FrameKind.FEATURES, ()),
        (FrameKind.FEATURES, (1, 2, 3, 4)),
        (FrameKind.FEATURES, (4, 0, 2)),
        (FrameKind.FEATURES, (65536,)),
    ],
)
def test_payload_bytes_rejects_unframeable_shapes(kind: FrameKind, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        payload_bytes(kind, shape)


@given(shape=feature_shapes, seed=st.integers(0, 2**32 - 1))
def test_frame_size_matches_analytical(shape: tuple[int, ...], seed: int) -> None:
    frame = encode_features(signs_of(shape, seed), **IDS)
    assert len(frame) == HEADER_BYTES + math.ceil(math.prod(shape) / 8)
    assert len(frame) == HEADER_BYTES + payload_bytes(FrameKind.FEATURES, shape)


def test_header_fields_at_documented_offsets() -> None:
    frame = encode_features(
        signs_of((2, 3, 5), 1), sender_id=513, sample_id=2**40 + 7, model_version=77
    )

    def le(a: int, b: int) -> int:
        return int.from_bytes(frame[a:b], "little")

    assert frame[0:2] == b"DN"
    assert frame[2] == 1  # format version
    assert frame[3] == 2  # FEATURES
    assert le(4, 6) == 513
    assert le(6, 14) == 2**40 + 7
    assert le(14, 18) == 77
    assert frame[18] == 3  # ndim
    assert (le(19, 21), le(21, 23), le(23, 25)) == (2, 3, 5)
    assert le(25, 29) == 4  # ceil(30 / 8)
    assert le(29, 33) == zlib.crc32(frame[:29] + frame[33:])

    scores = encode_scores(np.array([1.0, -0.5], dtype=np.float64), **IDS)
    assert scores[3] == 1 and scores[18] == 1
    assert scores[19:25] == b"\x02\x00\x00\x00\x00\x00"
    assert scores[HEADER_BYTES:] == struct.pack("<2f", 1.0, -0.5)


# --- round trips ------------------------------------------------------------------------------


@given(
    scores=hnp.arrays(np.float32, st.integers(1, 20), elements=st.floats(-1e6, 1e6, width=32)),
    sender=st.integers(0, 2**16 - 1),
    sample=st.integers(0, 2**64 - 1),
    model=st.integers(0, 2**32 - 1),
)
def test_scores_round_trip(scores: np.ndarray, sender: int, sample: int, model: int) -> None:
    frame = decode_frame(
        encode_scores(scores, sender_id=sender, sample_id=sample, model_version=model)
    )
    assert frame.kind is FrameKind.SCORES
    assert (frame.sender_id, frame.sample_id, frame.model_version) == (sender, sample, model)
    assert frame.payload.dtype == np.float32
    np.testing.assert_array_equal(frame.payload, scores)


@given(shape=feature_shapes, seed=st.integers(0, 2**32 - 1), sender=st.integers(0, 2**16 - 1))
def test_features_round_trip(shape: tuple[int, ...], seed: int, sender: int) -> None:
    x = signs_of(shape, seed)
    frame = decode_frame(encode_features(x, sender_id=sender, sample_id=9, model_version=1))
    assert frame.kind is FrameKind.FEATURES and frame.sender_id == sender
    assert frame.payload.shape == shape and frame.payload.dtype == np.float32
    np.testing.assert_array_equal(frame.payload, x)


def test_encode_accepts_torch_and_frame_round_trips() -> None:
    logits = torch.tensor([0.25, -1.0, 2.0], requires_grad=True)
    feats = torch.tensor(signs_of((2, 4), 3))
    s = decode_frame(encode_scores(logits, **IDS))
    f = decode_frame(encode_features(feats, **IDS))
    np.testing.assert_array_equal(s.payload, [0.25, -1.0, 2.0])
    np.testing.assert_array_equal(f.payload, feats.numpy())
    assert decode_frame(encode_frame(s)) == s
    assert decode_frame(encode_frame(f)) == f
    assert s != f
    assert not s.payload.flags.writeable
    direct = Frame(
        FrameKind.FEATURES, IDS["sender_id"], IDS["sample_id"], IDS["model_version"], feats.numpy()
    )
    assert direct == f


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode_scores(np.ones(3), **IDS)
    assert decode_frame(bytearray(data)) == decode_frame(memoryview(data)) == decode_frame(data)


# --- corruption -------------------------------------------------------------------------------


def sample_frames() -> list[bytes]:
    return [
        encode_scores(np.array([0.5, -1.5, 2.0]), **IDS),
        encode_features(signs_of((4, 16, 16), 7), **IDS),
        encode_features(signs_of((3, 3), 8), **IDS),  # 9 bits: exercises padding
    ]


@pytest.mark.parametrize("frame", sample_frames())
def test_every_single_bit_flip_is_detected(frame: bytes) -> None:
    for i in range(len(frame)):
        for bit in range(8):
            bad = bytearray(frame)
            bad[i] ^= 1 << bit
            with pytest.raises(FrameDecodeError):
                decode_frame(bytes(bad))


def test_payload_flip_reports_crc() -> None:
    bad = bytearray(sample_frames()[1])
    bad[HEADER_BYTES + 10] ^= 0xFF
    with pytest.raises(FrameDecodeError, match="CRC mismatch"):
        decode_frame(bytes(bad))


@pytest.mark.parametrize("frame", sample_frames())
def test_truncation_and_trailing_bytes_are_detected(frame: bytes) -> None:
    for n in range(len(frame)):
        with pytest.raises(FrameDecodeError, match="too short" if n < HEADER_BYTES else "length"):
            decode_frame(frame[:n])
    with pytest.raises(FrameDecodeError, match="length mismatch"):
        decode_frame(frame + b"\x00")


def edit(frame: bytes, offset: int, value: bytes) -> bytes:
    buf = bytearray(frame)
    buf[offset : offset + len(value)] = value
    return reseal(buf)


@pytest.mark.parametrize(
    ("which", "offset", "value", "message"),
    [
        (0, 0, b"XN", "bad magic"),
        (0, 2, b"\x02", "unsupported codec version 2"),
        (0, 3, b"\x07", "unknown frame kind 7"),
        (0, 3, b"\x00", "unknown frame kind 0"),
        (0, 18, b"\x02", "bad shape"),  # scores need ndim 1
        (0, 19, b"\x04\x00", "length mismatch"),  # 4 classes need 16 bytes
        (1, 18, b"\x04", "bad shape"),  # ndim 4
        (1, 18, b"\x00", "bad shape"),  # ndim 0
        (2, 18, b"\x01", "bad shape"),  # dims (3, 3, 0) with ndim 1: unused dim set
        (1, 21, b"\x00\x00", "bad shape"),  # a zero dim
        (1, 0, b"DN\x01\x01", "bad shape for SCORES"),  # (4, 16, 16) relabelled as scores
        (2, HEADER_BYTES + 1, b"\x7f", "padding"),  # a padding bit set
    ],
)
def test_invalid_frames_with_valid_crc(which: int, offset: int, value: bytes, message: str) -> None:
    bad = edit(sample_frames()[which], offset, value)
    with pytest.raises(FrameDecodeError, match=message):
        decode_frame(bad)


def test_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_frame(b"DN")


# --- input validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ({"sender_id": 2**16}, "sender_id"),
        ({"sender_id": -1}, "sender_id"),
        ({"sample_id": 2**64}, "sample_id"),
        ({"model_version": 2**32}, "model_version"),
        ({"model_version": 1.5}, "model_version"),
        ({"sender_id": True}, "sender_id"),
    ],
)
def test_ids_out_of_range_are_rejected(ids: dict[str, object], message: str) -> None:
    kw = {**IDS, **ids}
    with pytest.raises(ValueError, match=message):
        encode_scores(np.ones(3), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        encode_features(np.ones(8), **kw)  # type: ignore[arg-type]


def test_numpy_integer_ids_are_accepted() -> None:
    ids: dict[str, Any] = {
        "sender_id": np.uint16(3),
        "sample_id": np.int64(4),
        "model_version": np.uint32(5),
    }
    frame = decode_frame(encode_scores(np.ones(2), **ids))
    assert (frame.sender_id, frame.sample_id, frame.model_version) == (3, 4, 5)


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.ones((1, 3)), r"shape \(C,\)"),
        (np.ones(0), r"shape \(C,\)"),
        (np.array([1.0, np.nan]), "finite"),
        (np.array([1.0, np.inf]), "finite"),
        (np.array([1e300]), "finite"),  # overflows float32
        (np.array([True, False]), "dtype"),
        (np.array(["a"]), "dtype"),
    ],
)
def test_bad_scores_are_rejected(scores: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_scores(scores, **IDS)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.ones((0, 4)), "empty"),
        (np.float32(1.0), "1 to 3 dims"),
        (np.ones((1, 1, 1, 8)), "1 to 3 dims"),
        (np.ones(65536, dtype=np.int8), "65535"),
        (np.array([1.0, np.nan]), "NaN"),
        (np.array([True]), "dtype"),
        ([1.0, -1.0], "numpy array or torch tensor"),
    ],
)
def test_bad_features_are_rejected(features: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_features(features, **IDS)
