"""Binary control messages (PROGRESS, ASKS): hand-computed bytes, round trips, corruption."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddnn.wire import FrameDecodeError
from ddnn.wire.control import (
    decode_asks,
    decode_progress,
    decode_tick,
    encode_asks,
    encode_progress,
    encode_tick,
    samples_asked_of,
)


def test_progress_bytes_by_hand():
    # head 0x25 (version 2, kind 5), decided + 1 = 0, latest + 1 = 0
    assert encode_progress(-1, -1) == bytes([0x25, 0x00, 0x00])
    # decided 299 -> 300 = 0xac 0x02; latest 126 -> 127 = 0x7f
    assert encode_progress(299, 126) == bytes([0x25, 0xAC, 0x02, 0x7F])
    assert decode_progress(bytes([0x25, 0xAC, 0x02, 0x7F])) == (299, 126, None)


def test_progress_with_a_model_switch_by_hand():
    # ... then switch_at 428 = 0xac 0x03, tag 0xbeef little-endian = 0xef 0xbe
    got = encode_progress(299, 126, (428, 0xBEEF))
    assert got == bytes([0x25, 0xAC, 0x02, 0x7F, 0xAC, 0x03, 0xEF, 0xBE])
    assert decode_progress(got) == (299, 126, (428, 0xBEEF))


@pytest.mark.parametrize(
    "tail, reason",
    [
        (bytes([0xAC, 0x03, 0xEF]), "truncated"),  # one byte of the tag
        (bytes([0xAC, 0x03, 0xEF, 0xBE, 0x00]), "length"),  # a byte after the tag
        (bytes([0xAC]), "truncated"),  # a varint cut short
    ],
)
def test_a_damaged_model_switch_is_refused(tail, reason):
    with pytest.raises(FrameDecodeError) as exc:
        decode_progress(bytes([0x25, 0x01, 0x01]) + tail)
    assert exc.value.reason == reason


def test_asks_bytes_by_hand():
    # six devices: 1 mask byte; samples 300 (devices 0-5) and 302 (devices 1, 4)
    got = encode_asks([(300, [5, 4, 3, 2, 1, 0]), (302, [4, 1])])
    assert got == bytes([0x26, 0x01, 0x02, 0xAC, 0x02, 0x3F, 0x01, 0x12])
    assert decode_asks(got) == [(300, [0, 1, 2, 3, 4, 5]), (302, [1, 4])]
    assert samples_asked_of(got, 4) == [300, 302]
    assert samples_asked_of(got, 0) == [300]
    assert samples_asked_of(got, 6) == []


def test_asks_with_a_device_past_bit_7_use_two_mask_bytes():
    got = encode_asks([(0, [9])])
    assert got == bytes([0x26, 0x02, 0x01, 0x00, 0x00, 0x02])
    assert decode_asks(got) == [(0, [9])]


@pytest.mark.parametrize(
    "asks, why",
    [
        ([], "1.."),
        ([(3, [0]), (3, [1])], "increase"),
        ([(4, [0]), (3, [1])], "increase"),
        ([(3, [])], "no device"),
        ([(-1, [0])], "sample"),
        ([(0, [70000])], "device"),
    ],
)
def test_bad_asks_are_refused_when_encoding(asks, why):
    with pytest.raises(ValueError, match=why):
        encode_asks(asks)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "truncated"),
        (b'{"decided": 1, "latest": 2}', "version"),  # the JSON of before
        (b"DN\x01", "version_1"),
        (bytes([0x26, 0x00, 0x00]), "kind"),  # ASKS where PROGRESS is expected
        (bytes([0x25, 0x01]), "truncated"),
        (bytes([0x25, 0x01, 0x01, 0x00]), "truncated"),  # a model switch without its tag
        (bytes([0x25, 0x80, 0x00, 0x01]), "varint"),  # non-minimal
        (bytes([0x25]) + b"\xff" * 8 + b"\x01\x00", "varint"),  # longer than 8 bytes
        (bytes([0x25]) + b"\xff" * 7 + b"\x7f\x00", "sample_range"),  # 2**56 - 2
    ],
)
def test_bad_progress_is_refused_with_its_reason(data, reason):
    with pytest.raises(FrameDecodeError) as err:
        decode_progress(data)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "data, reason",
    [
        (bytes([0x26, 0x01, 0x00]), "count"),
        (bytes([0x26, 0x00, 0x01, 0x00]), "length"),  # zero mask bytes
        (bytes([0x26, 0x01, 0x02, 0x00, 0x01]), "truncated"),  # two asked, one there
        (bytes([0x26, 0x01, 0x01, 0x00, 0x00]), "sender"),  # a mask naming nobody
        (bytes([0x26, 0x01, 0x01, 0x00, 0x01, 0x00]), "length"),
        (bytes([0x26, 0x01, 0xFF, 0xFF, 0x03]) + b"\x00\x01" * 10, "truncated"),  # count lies
        (bytes([0x26, 0x01, 0x01]) + b"\xff" * 7 + b"\x7f" + b"\x01", "sample_range"),
    ],
)
def test_bad_asks_are_refused_with_their_reason(data, reason):
    with pytest.raises(FrameDecodeError) as err:
        decode_asks(data)
    assert err.value.reason == reason


asks_strategy = st.dictionaries(
    st.integers(0, 2**53 - 1),
    st.sets(st.integers(0, 40), min_size=1, max_size=8),
    min_size=1,
    max_size=30,
).map(lambda d: sorted((s, sorted(v)) for s, v in d.items()))


@settings(max_examples=200, deadline=None)
@given(asks_strategy, st.integers(0, 40))
def test_asks_round_trip(asks, device):
    data = encode_asks(asks)
    assert decode_asks(data) == asks
    assert samples_asked_of(data, device) == [s for s, devices in asks if device in devices]


@settings(max_examples=200, deadline=None)
@given(st.integers(-1, 2**53 - 1), st.integers(-1, 2**53 - 1))
def test_progress_round_trip(decided, latest):
    assert decode_progress(encode_progress(decided, latest)) == (decided, latest, None)


@settings(max_examples=300, deadline=None)
@given(asks_strategy, st.data())
def test_corrupted_control_messages_raise_only_the_decode_error(asks, data):
    good = bytearray(encode_asks(asks))
    i = data.draw(st.integers(0, len(good) - 1))
    good[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(good)))
    for bad in (bytes(good), bytes(good[:cut])):
        for parse in (decode_asks, decode_progress, lambda b: samples_asked_of(b, 3)):
            try:
                parse(bad)
            except FrameDecodeError:
                pass


def test_tick_bytes_by_hand():
    # head 0x28, sample 300 = ac 02, 1.5 s = 1500 ms = dc 0b
    assert encode_tick(300, 1.5) == bytes([0x28, 0xAC, 0x02, 0xDC, 0x0B])
    assert decode_tick(bytes([0x28, 0xAC, 0x02, 0xDC, 0x0B])) == (300, 1.5)
    for bad, reason in [
        (bytes([0x28, 0x01]), "truncated"),
        (bytes([0x28, 0x01, 0x01, 0x00]), "length"),
        (bytes([0x25, 0x01, 0x01]), "kind"),
    ]:
        with pytest.raises(FrameDecodeError) as err:
            decode_tick(bad)
        assert err.value.reason == reason
    with pytest.raises(ValueError):
        encode_tick(1, float("nan"))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**53 - 1), st.integers(0, 2**41))
def test_tick_round_trip(sample, at_ms):
    assert decode_tick(encode_tick(sample, at_ms / 1000)) == (sample, at_ms / 1000)
