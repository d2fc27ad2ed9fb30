"""Tests for frame format v2: hand-written frames, round trips and every decode check's reason."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddnn.wire import (
    REASONS,
    Expect,
    FrameDecodeError,
    FrameKind,
    ScoreEncoding,
    capture_field,
    decode_frame,
    encode_features_frame,
    encode_features_frame_ids,
    encode_scores_frame,
    frame_bytes,
    model_tag,
    pack_bits_batch,
    read_header,
    unwrap_capture,
    wire_roundtrip,
)

MODEL = 0xDEADBEEF
SHAPES = {0: (5,), 1: (13,), 5: (2, 3), 128: (2, 5)}
ALL = Expect(MODEL, frozenset(FrameKind), num_classes=3, feature_shapes=SHAPES)

# SCORES_F32, sender 5, first sample 300, 2 samples x 3 classes, captured at t = 1.5 s:
# head 0x21 | sender 05 | first ac 02 | count 02 | tag ef be | time 1500 ms = dc 05 00 | 24 B.
F32 = bytes.fromhex(
    "21 05 ac02 02 efbe dc0500"
    "00000000 0000803f 00000040"  # 0.0 1.0 2.0
    "00004040 00008040 0000a040"  # 3.0 4.0 5.0
)
# SCORES_F16, sender 0, first 0, 1 x [1.0, -2.0], model 1, captured at 1 ms: 9 + 4 bytes.
F16 = bytes.fromhex("22 00 00 01 0100 010000 003c 00c0")
# SCORES_I8, sender 127, first 127, 1 x [0, 0] (log 1/2 -> 11), model 0x10000 (tag 0),
# captured at 2**24 ms (time field 0): 9 + 2 bytes.
I8 = bytes.fromhex("23 7f 7f 01 0000 000000 0b 0b")
# FEATURES, sender 128 (80 01), first 0, 2 maps of shape (2, 5) = 10 bits -> 2 B each, model
# 0x1234: 1010111110 -> af 80; 0000000001 -> 00 40 (the 0 packs as +1).
FEAT_SIGNS = np.array(
    [[[1, -1, 1, -1, 1], [1, 1, 1, 1, -1]], [[-1, -1, -1, -1, -1], [-1, -1, -1, -1, 0]]]
)
FEAT = bytes.fromhex("24 8001 00 02 3412 af80 0040")


def reason(data: bytes, expect: Expect = ALL) -> str:
    with pytest.raises(FrameDecodeError) as e:
        decode_frame(data, expect, now=10.0)
    return e.value.reason


def test_hand_frames_encode() -> None:
    scores = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = {"sender": 5, "first_sample": 300, "model_version": MODEL}
    assert len(F32) == 34
    assert encode_scores_frame(scores, **ids, encoding="float32", captured=1.5) == F32
    f16 = encode_scores_frame(
        np.array([[1.0, -2.0]]),
        sender=0,
        first_sample=0,
        model_version=1,
        encoding=ScoreEncoding.FLOAT16,
        captured=0.001,
    )
    assert f16 == F16 and len(F16) == 13
    i8 = encode_scores_frame(
        np.zeros((1, 2)),
        sender=127,
        first_sample=127,
        model_version=0x10000,
        encoding="int8",
        captured=16777.216,
    )
    assert i8 == I8 and len(I8) == 11
    ids = {"sender": 128, "first_sample": 0, "model_version": 0x1234, "shape": (2, 5)}
    assert encode_features_frame(FEAT_SIGNS, **ids) == FEAT
    packed = np.array([[0xAF, 0x80], [0x00, 0x40]], np.uint8)
    assert encode_features_frame(packed, **ids) == FEAT  # already-packed rows


def test_hand_frames_decode() -> None:
    f = decode_frame(F32, ALL, now=100.0)
    assert (f.kind, f.encoding, f.sender, f.first_sample, f.count) == (
        FrameKind.SCORES_F32,
        ScoreEncoding.FLOAT32,
        5,
        300,
        2,
    )
    assert f.model_tag == 0xBEEF and f.captured == 1.5 and f.sample_ids == range(300, 302)
    assert np.array_equal(f.rows, [[0, 1, 2], [3, 4, 5]]) and not f.rows.flags.writeable
    g = decode_frame(FEAT, Expect(0x1234, {FrameKind.FEATURES}, feature_shapes=SHAPES))
    assert g.captured is None and g.encoding is None
    assert np.array_equal(g.rows, [[0xAF, 0x80], [0x00, 0x40]])
    assert np.array_equal(g.unpacked((2, 5)), np.where(FEAT_SIGNS >= 0, 1, -1))
    mutable = bytearray(FEAT)
    k = decode_frame(
        memoryview(mutable), Expect(0x1234, {FrameKind.FEATURES}, feature_shapes=SHAPES)
    )
    mutable[-1] = 0  # the decoded rows do not alias the caller's buffer
    assert np.array_equal(k.rows, g.rows)
    h = decode_frame(I8, Expect(0, {FrameKind.SCORES_I8}, num_classes=2), now=16777.0)
    assert np.array_equal(h.rows, [[-0.6875, -0.6875]]) and h.captured == 16777.216


def test_read_header_fields() -> None:
    h = read_header(F32)
    assert (h.kind, h.sender, h.first_sample, h.count, h.model_tag) == (1, 5, 300, 2, 0xBEEF)
    assert (h.captured_field, h.header_len) == (1500, 10)
    h = read_header(memoryview(FEAT))
    assert (h.captured_field, h.header_len, h.encoding) == (None, 7, None)
    assert (
        read_header(F16).header_len == 9
        and read_header(bytes.fromhex("24000001 0000")).header_len == 6
    )


@pytest.mark.parametrize(
    ("frame", "expect"),
    [
        (F32, ALL),
        (F16, Expect(1, {FrameKind.SCORES_F16}, num_classes=2)),
        (I8, Expect(0, {FrameKind.SCORES_I8}, num_classes=2)),
        (FEAT, Expect(0x1234, {FrameKind.FEATURES}, feature_shapes=SHAPES)),
    ],
)
def test_every_truncation_and_extension_is_caught(frame: bytes, expect: Expect) -> None:
    decode_frame(frame, expect, now=0.0)  # the frame itself is valid
    header_len = read_header(frame).header_len
    for k in range(len(frame)):
        assert reason(frame[:k], expect) == ("truncated" if k < header_len else "length")
    for extra in (b"\x00", b"\xff", frame[-1:]):
        assert reason(frame + extra, expect) == "length"


@st.composite
def frames(draw: st.DrawFn) -> tuple[FrameKind, dict, np.ndarray, tuple[int, ...]]:
    kind = draw(st.sampled_from(list(FrameKind)))
    count = draw(st.integers(1, 5))
    ids = {
        "sender": draw(st.sampled_from([0, 1, 127, 128, 16384, 65535])),
        "first_sample": draw(st.sampled_from([0, 127, 128, 2**31, 2**53 - count])),
        "model_version": draw(st.integers(0, 2**32 - 1)),
    }
    if kind is FrameKind.FEATURES_IDS:  # strictly increasing ids, not all consecutive
        gaps = draw(st.lists(st.integers(0, 300), min_size=count - 1, max_size=count - 1))
        if not any(gaps):
            count, gaps = 2, [draw(st.integers(1, 2**20))]
        ids["first_sample"] = min(ids["first_sample"], 2**53 - 1 - (count - 1) - sum(gaps))
        ids["gaps"] = gaps
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind.is_features:
        shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
        data = rng.choice([-1.0, 1.0], size=(count, *shape)).astype(np.float32)
    else:
        shape = (draw(st.integers(1, 6)),)
        data = (rng.standard_normal((count, shape[0])) * 10).astype(np.float32)
    return kind, ids, data, shape


@settings(max_examples=150, deadline=None)
@given(frames(), st.floats(0, 2e9), st.integers(-(2**23) + 1, 2**23 - 1))
def test_round_trip(frame: tuple, captured: float, skew_ms: int) -> None:
    kind, ids, data, shape = frame
    gaps = ids.pop("gaps", [])
    sample_ids = [ids["first_sample"]]
    for g in gaps or [0] * (len(data) - 1):
        sample_ids.append(sample_ids[-1] + g + 1)
    if kind is FrameKind.FEATURES_IDS:
        first = ids.pop("first_sample")
        wire = encode_features_frame_ids(data, **ids, sample_ids=sample_ids, shape=shape)
        ids["first_sample"] = first
        expect = Expect(ids["model_version"], {kind}, feature_shapes={ids["sender"]: shape})
    elif kind is FrameKind.FEATURES:
        wire = encode_features_frame(data, **ids, shape=shape)
        expect = Expect(ids["model_version"], {kind}, feature_shapes={ids["sender"]: shape})
    else:
        enc = kind.encoding
        wire = encode_scores_frame(data, **ids, encoding=enc, captured=captured)
        expect = Expect(ids["model_version"], {kind}, num_classes=shape[0])
    fb = frame_bytes(
        kind,
        sender=ids["sender"],
        first_sample=ids["first_sample"],
        count=len(data),
        num_classes=shape[0],
        feature_shape=shape,
        gaps=gaps,
    )
    assert len(wire) == fb
    now = round(captured * 1000) / 1000 + skew_ms / 1000
    f = decode_frame(wire, expect, now=now)
    assert (f.kind, f.sender, f.first_sample, f.count) == (
        kind,
        ids["sender"],
        ids["first_sample"],
        len(data),
    )
    assert f.model_tag == ids["model_version"] % 65536
    assert list(f.sample_ids) == sample_ids
    if kind.is_features:
        assert f.captured is None and np.array_equal(f.unpacked(shape), data)
        assert np.array_equal(f.rows, pack_bits_batch(data))
    else:
        assert f.captured == round(captured * 1000) / 1000
        assert np.array_equal(f.rows, wire_roundtrip(data, kind.encoding))


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda k, rest: bytes([0x20 | k]) + rest, st.integers(0, 15), st.binary(max_size=40)
        ),
    )
)
def test_arbitrary_bytes_raise_only_frame_decode_error(data: bytes) -> None:
    try:
        f = decode_frame(data, ALL, now=0.0)
    except FrameDecodeError as e:
        assert e.reason in REASONS
    else:
        assert f.count >= 1 and f.rows.shape[0] == f.count


def test_v1_frames_are_named() -> None:
    # v1's 33-byte header (magic "DN", version 1, kind, sender u16, sample u64, model u32,
    # ndim, 3 dims u16, payload length u32, CRC u32), then the payload
    v1_header = struct.Struct("<2sBBHQIB3HII")
    v1 = [
        v1_header.pack(b"DN", 1, 1, 1, 2, MODEL & 0xFFFFFFFF, 1, 3, 0, 0, 12, 0) + bytes(12),
        v1_header.pack(b"DN", 1, 2, 0, 2, MODEL & 0xFFFFFFFF, 2, 2, 5, 0, 2, 0) + b"\xff\xc0",
    ]
    for frame in v1:
        with pytest.raises(FrameDecodeError, match="v1 frames are no longer read") as e:
            read_header(frame)
        assert e.value.reason == "version_1"
        assert reason(frame) == "version_1"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"\x11\x00\x00\x01\x00\x00\x00\x00\x00", "version"),  # version 1 without the magic
        (b"\x31\x00\x00\x01", "version"),
        (b"\x01", "version"),
        (b"\x20\x00\x00\x01\x00\x00", "kind"),
        (b"\x25\x00\x00\x01\x00\x00", "kind"),
        (b"\x2f", "kind"),
        (b"\x21\x80\x00\x00\x01\x00\x00\x00\x00\x00", "varint"),  # sender 0 in two bytes
        (b"\x24\x80\x80\x04\x00\x01\x00\x00", "sender"),  # 65536
        (b"\x24\x00\x00\x00\xef\xbe", "count"),  # count 0
        (b"\x24\x00\x00\x80\x80\x04\xef\xbe", "count"),  # 65536
        (b"\x24\x00" + b"\xff" * 7 + b"\x0f\x02\xef\xbe" + b"\x00" * 2, "sample_range"),
        (b"\x21\x05\x00", "truncated"),
        (b"\x21\x05\x00\x01\xef\xbe\x00\x00", "truncated"),  # time field cut short
    ],
)
def test_header_checks(data: bytes, why: str) -> None:
    assert reason(data) == why


def test_receiver_checks() -> None:
    only_f32 = Expect(MODEL, {FrameKind.SCORES_F32}, num_classes=3, senders={4, 6})
    assert reason(F32, only_f32) == "sender"  # sender 5 is not one of ours
    assert reason(F32, Expect(MODEL, {FrameKind.SCORES_I8}, num_classes=3)) == "kind"
    assert (
        reason(
            F32,
            Expect(MODEL, frozenset(FrameKind), num_classes=3, feature_shapes=SHAPES, max_count=1),
        )
        == "count"
    )
    assert reason(F32, Expect(MODEL, {FrameKind.SCORES_F32}, num_classes=4)) == "length"
    assert reason(F32, Expect(0xBEEE, {FrameKind.SCORES_F32}, num_classes=3)) == "wrong_model"
    assert decode_frame(F32, Expect(0x0000BEEF, {FrameKind.SCORES_F32}, num_classes=3)).count == 2
    # order: a wrong length is reported before a wrong model, a wrong kind before both
    assert reason(F32, Expect(1, {FrameKind.SCORES_F32}, num_classes=4)) == "length"
    assert reason(F32, Expect(1, {FrameKind.SCORES_I8}, num_classes=4)) == "kind"
    assert reason(FEAT, Expect(0x1234, {FrameKind.FEATURES}, feature_shapes={0: (10,)})) == "sender"
    assert (
        reason(FEAT, Expect(0x1234, {FrameKind.FEATURES}, feature_shapes={128: (2, 9)})) == "length"
    )


def test_payload_checks() -> None:
    nan = F32[:-4] + bytes.fromhex("0000c07f")
    assert reason(nan) == "non_finite"
    inf16 = F16[:-2] + bytes.fromhex("007c")
    assert reason(inf16, Expect(1, {FrameKind.SCORES_F16}, num_classes=2)) == "non_finite"
    padded = FEAT[:-1] + b"\x41"  # the 6 padding bits of a 10-bit row must be 0
    assert reason(padded, Expect(0x1234, {FrameKind.FEATURES}, feature_shapes=SHAPES)) == "padding"


def test_capture_time() -> None:
    assert capture_field(1.5) == 1500
    assert capture_field(16777.216) == 0 and capture_field(16777.217) == 1
    assert capture_field(1.0019) == 1002  # rounded to the nearest ms, not floored
    assert unwrap_capture(1500, 2.0) == 1.5
    assert unwrap_capture(16_777_000, 16778.0) == 16777.0  # across the wrap at 2**24 ms
    assert unwrap_capture(784, 16777.0) == 16778.0  # 16778000 ms mod 2**24 = 784
    assert unwrap_capture(0, (2**23 - 1) / 1000) == 0.0
    assert unwrap_capture(0, 2**23 / 1000) == 0.0  # an exact tie takes the earlier instant
    # beyond the +/-2.33 h window the nearest instant is a whole period off
    assert unwrap_capture(0, (2**23 + 1) / 1000) == 2**24 / 1000
    with pytest.raises(ValueError):
        capture_field(float("nan"))
    with pytest.raises(ValueError):
        unwrap_capture(2**24, 0.0)


@given(st.integers(0, 2**44), st.integers(-(2**23) + 1, 2**23 - 1))
def test_unwrap_inverts_capture_within_the_window(t_ms: int, skew: int) -> None:
    t = t_ms / 1000
    assert unwrap_capture(capture_field(t), (t_ms + skew) / 1000) == t


def test_model_tag() -> None:
    assert model_tag(0xDEADBEEF) == 0xBEEF and model_tag(0x10000) == 0
    with pytest.raises(ValueError):
        model_tag(2**32)


def test_encode_refuses_what_the_format_cannot_carry() -> None:
    s = np.zeros((2, 3))
    ids = {"sender": 0, "first_sample": 0, "model_version": 1}
    kw = {"encoding": "float32", "captured": 1.0}
    with pytest.raises(ValueError, match="sender"):
        encode_scores_frame(s, **{**ids, "sender": 65536}, **kw)
    with pytest.raises(ValueError, match="count"):
        encode_scores_frame(np.zeros((0, 3)), **ids, **kw)
    with pytest.raises(ValueError, match="count"):
        encode_scores_frame(np.zeros((65536, 1)), **ids, **kw)
    with pytest.raises(ValueError, match="first_sample"):
        encode_scores_frame(s, **{**ids, "first_sample": 2**53 - 1}, **kw)  # last id 2**53
    encode_scores_frame(s, **{**ids, "first_sample": 2**53 - 2}, **kw)  # last id 2**53 - 1
    with pytest.raises(ValueError, match="model_version"):
        encode_scores_frame(s, **{**ids, "model_version": -1}, **kw)
    with pytest.raises(ValueError, match="finite"):
        encode_scores_frame(np.array([[0.0, np.nan]]), **ids, **kw)
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        encode_scores_frame(np.zeros(3), **ids, **kw)
    with pytest.raises(ValueError, match="shape"):
        encode_features_frame(np.ones((2, 4)), **ids, shape=(5,))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        encode_features_frame(np.zeros((2, 1), np.uint8), **ids, shape=(9,))
    with pytest.raises(ValueError, match="padding"):
        encode_features_frame(np.array([[0, 1]], np.uint8), **ids, shape=(9,))
    with pytest.raises(ValueError, match="dtype"):
        encode_features_frame(np.ones((1, 3), bool), **ids, shape=(3,))


def test_expect_validation() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        Expect(1, {FrameKind.SCORES_F32})
    with pytest.raises(ValueError, match="feature_shapes"):
        Expect(1, {FrameKind.FEATURES})
    with pytest.raises(ValueError, match="at least one"):
        Expect(1, set())
    with pytest.raises(ValueError):
        Expect(1, {FrameKind.SCORES_F32}, num_classes=3, max_count=0)
    e = Expect(1, [FrameKind.FEATURES], feature_shapes={3: [4, 4]}, senders=[3])
    assert e.kinds == frozenset({FrameKind.FEATURES}) and e.senders == frozenset({3})
    assert e.feature_shapes[3] == (4, 4)


def test_frame_decode_error() -> None:
    err = FrameDecodeError("bad", "length")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.reason == "length" and str(again) == "bad"
    with pytest.raises(ValueError, match="FEATURES"):
        decode_frame(F32, ALL, now=0.0).unpacked((3,))


def test_features_ids_frame_by_hand() -> None:
    # 3 rows of 9 values from sender 2, samples 5, 6 and 9, model version 7:
    # head 0x27 | sender 02 | first 05 | count 03 | tag 07 00 | gaps 00 02 | 3 rows of 2 bytes
    maps = np.ones((3, 9), dtype=np.float32)
    maps[:, 1] = -1  # bit 1 clear: 0b1011_1111 0b1000_0000 (MSB first, as pack_bits)
    wire = encode_features_frame_ids(
        maps, sender=2, sample_ids=[5, 6, 9], model_version=7, shape=(9,)
    )
    assert wire == bytes.fromhex("27 02 05 03 0700 00 02") + bytes([0xBF, 0x80]) * 3
    expect = Expect(7, {FrameKind.FEATURES, FrameKind.FEATURES_IDS}, feature_shapes={2: (9,)})
    f = decode_frame(wire, expect)
    assert f.sample_ids == (5, 6, 9) and f.header_len == 8
    assert np.array_equal(f.unpacked((9,)), maps)
    # consecutive ids make a plain FEATURES frame: no gaps on the wire
    plain = encode_features_frame_ids(
        maps, sender=2, sample_ids=[5, 6, 7], model_version=7, shape=(9,)
    )
    assert plain[0] == 0x24 and len(plain) == len(wire) - 2
    # a frame claiming gaps it does not carry, or ids past 2**53 - 1
    assert reason(wire[:7], expect) == "truncated"
    assert reason(bytes.fromhex("27 02 05 02 0700") + b"\xff" * 7 + b"\x7f" + bytes(4), expect) == (
        "sample_range"
    )
    with pytest.raises(ValueError, match="increase"):
        encode_features_frame_ids(maps, sender=2, sample_ids=[5, 9, 6], model_version=7, shape=(9,))
    with pytest.raises(ValueError, match="3 feature rows"):
        encode_features_frame_ids(maps, sender=2, sample_ids=[5, 9], model_version=7, shape=(9,))
