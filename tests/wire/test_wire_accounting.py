"""Tests for byte accounting: hand-counted headers, frames, SPEC §6's formula and MQTT overhead."""

from __future__ import annotations

import numpy as np
import pytest

from ddnn.wire import (
    FrameKind,
    WireBytes,
    encode_features_frame,
    encode_scores,
    encode_scores_frame,
    feature_payload_bytes,
    formula_bytes_per_device,
    frame_bytes,
    frame_header_bytes,
    mqtt_fixed_header_bytes,
    mqtt_publish_overhead,
    mqtt_variable_header_bytes,
    pack_bits,
    raw_bytes_per_device,
    score_payload_bytes,
)


def test_payload_bytes() -> None:
    assert [score_payload_bytes(3, e) for e in ("float32", "float16", "int8")] == [12, 6, 3]
    assert feature_payload_bytes((4, 16, 16)) == 128  # the paper's f = 4, o = 256
    assert feature_payload_bytes((13,)) == 2
    assert feature_payload_bytes((1, 1)) == 1


@pytest.mark.parametrize(
    ("kind", "ids", "expected"),
    [
        (FrameKind.SCORES_F32, (0, 0, 1), 9),  # 1 + 1 + 1 + 1 + 2 + 3
        (FrameKind.SCORES_I8, (127, 127, 127), 9),
        (FrameKind.FEATURES, (0, 0, 1), 6),  # 1 + 1 + 1 + 1 + 2
        (FrameKind.SCORES_F32, (5, 300, 2), 10),  # first sample 300 takes 2 bytes
        (FrameKind.FEATURES, (128, 0, 2), 7),
        (FrameKind.SCORES_F16, (65535, 2**53 - 65535, 65535), 20),  # 1 + 3 + 8 + 3 + 2 + 3
        (FrameKind.FEATURES, (65535, 2**53 - 65535, 65535), 17),
    ],
)
def test_frame_header_bytes(kind: FrameKind, ids: tuple[int, int, int], expected: int) -> None:
    assert frame_header_bytes(kind, *ids) == expected


def test_frame_bytes_match_encoded_frames() -> None:
    # 2 samples x 3 classes float32 from sender 5 at sample 300: 10 + 24 = 34 bytes
    kw = {"sender": 5, "first_sample": 300, "count": 2}
    assert frame_bytes(FrameKind.SCORES_F32, **kw, num_classes=3) == 34
    assert frame_bytes(FrameKind.SCORES_I8, **kw, num_classes=3) == 10 + 6
    assert frame_bytes(FrameKind.FEATURES, **kw, feature_shape=(13,)) == 7 + 4
    scores = encode_scores_frame(
        np.zeros((2, 3)),
        sender=5,
        first_sample=300,
        model_version=7,
        encoding="float32",
        captured=0.0,
    )
    feats = encode_features_frame(
        np.ones((2, 13)), sender=5, first_sample=300, model_version=7, shape=(13,)
    )
    assert (len(scores), len(feats)) == (34, 11)
    with pytest.raises(ValueError, match="num_classes"):
        frame_bytes(FrameKind.SCORES_F16, **kw)
    with pytest.raises(ValueError, match="feature_shape"):
        frame_bytes(FrameKind.FEATURES, **kw)
    with pytest.raises(ValueError, match="sender"):
        frame_header_bytes(FrameKind.FEATURES, 65536, 0, 1)


def test_formula_is_the_papers_for_whole_bytes() -> None:
    assert formula_bytes_per_device(3, 0.0, 1024) == 140.0  # SPEC §6: 4·3 + 4·256/8
    assert formula_bytes_per_device(3, 1.0, 1024) == 12.0
    assert formula_bytes_per_device(3, 0.5, 1024, "float16") == 6 + 64
    assert formula_bytes_per_device(10, 0.0, 13, "int8") == 10 + 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        formula_bytes_per_device(3, 1.5, 8)


def test_formula_equals_measured_payload_for_13_feature_bits() -> None:
    # 4 samples, 3 classes, 13 feature bits; sample 0 exits locally (l = 1/4), so the device
    # sends 4 score rows and 3 feature maps: 4 x 12 + 3 x 2 = 54 bytes, 13.5 per sample.
    rng = np.random.default_rng(0)
    rows = [encode_scores(rng.standard_normal((1, 3)), "float32") for _ in range(4)]
    maps = [pack_bits(rng.choice([-1.0, 1.0], size=13)) for _ in range(3)]
    measured = (sum(map(len, rows)) + sum(map(len, maps))) / 4
    assert measured == 13.5
    assert formula_bytes_per_device(3, 0.25, 13) == 13.5
    assert 12 + 0.75 * 13 / 8 != 13.5  # the uncorrected f·o/8 would undercount padding


def test_raw_bytes() -> None:
    assert raw_bytes_per_device((3, 32, 32)) == 3072


def test_mqtt_overhead_by_hand() -> None:
    # same values as tests/runtime/test_security_and_errors.py::test_publish_overhead_by_hand
    assert mqtt_publish_overhead("a/b", 45, 1, 1) == 10
    assert mqtt_publish_overhead("a/b", 194, 0, 1) == 9  # remaining 200 -> 2-byte varint
    # QoS 0, topic "a/b", empty properties: variable header 2 + 3 + 1 = 6
    assert mqtt_publish_overhead("a/b", 121, 0) == 1 + 1 + 6  # remaining 127
    assert mqtt_publish_overhead("a/b", 122, 0) == 1 + 2 + 6  # remaining 128
    assert mqtt_publish_overhead("a/b", 16378, 2) == 1 + 3 + 8  # remaining 16386
    assert mqtt_publish_overhead("é", 0, 1, 5) == 1 + 1 + 2 + 2 + 2 + 5  # UTF-8 topic
    with pytest.raises(ValueError, match="qos"):
        mqtt_publish_overhead("a", 1, 3)
    with pytest.raises(ValueError, match="268435455"):
        mqtt_publish_overhead("a", 268_435_455, 0)


def test_mqtt_overhead_split_per_topic_and_per_packet() -> None:
    # what a sender computes once per topic, plus what it adds per packet, is the whole overhead
    assert mqtt_variable_header_bytes("a/b", 1) == 2 + 3 + 2 + 1
    assert mqtt_variable_header_bytes("a/b", 0) == 2 + 3 + 1
    assert mqtt_variable_header_bytes("é", 1, 5) == 2 + 2 + 2 + 5
    assert mqtt_fixed_header_bytes(6, 121) == 1 + 1  # remaining 127
    assert mqtt_fixed_header_bytes(6, 122) == 1 + 2  # remaining 128
    for topic, n, qos, props in [("a/b", 45, 1, 1), ("a/b", 122, 0, 1), ("é", 0, 1, 5)]:
        variable = mqtt_variable_header_bytes(topic, qos, props)
        assert mqtt_fixed_header_bytes(variable, n) + variable == mqtt_publish_overhead(
            topic, n, qos, props
        )
    with pytest.raises(ValueError, match="qos"):
        mqtt_variable_header_bytes("a", 3)


def test_wire_bytes() -> None:
    kw = {"sender": 5, "first_sample": 300, "count": 2}
    scores = WireBytes.for_frame(FrameKind.SCORES_F32, **kw, num_classes=3, topic="a/b")
    # payload 24, header 10, frame 34; MQTT QoS 1: variable 2 + 3 + 2 + 1 = 8, remaining 42
    assert scores == WireBytes(payload=24, header=10, transport=10, frames=1, samples=2)
    feats = WireBytes.for_frame(FrameKind.FEATURES, **kw, feature_shape=(13,))
    assert feats == WireBytes(payload=4, header=7, transport=0, frames=1, samples=2)
    both = scores + feats
    assert both.total == 55 and both.frames == 2 and both.samples == 4
    assert both.per_sample() == 7.0 and both.per_sample("total") == 13.75
    assert both.per_sample("header") == 4.25
    assert WireBytes().per_sample("total") == 0.0
