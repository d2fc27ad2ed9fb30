"""`ddnn.wire.measure`: per-(sample, sender) bytes equal those of every count-1 frame encoded one
by one, headers are counted apart, raw offloading is counted as 8-bit pixels, and the records
sum as documented."""

from __future__ import annotations

import numpy as np
import pytest

from ddnn.wire import (
    FrameCounts,
    LinkBytes,
    encode_features_frame,
    encode_scores_frame,
    feature_frames,
    formula_bytes_per_device,
    mean_raw_bytes_per_device,
    raw_bytes_per_device,
    raw_frames,
    read_header,
    score_frames,
)

# Sample ids across the 1- / 2- / 3-byte varint boundaries, senders across 1 / 2 bytes.
IDS = np.array([0, 5, 126, 127, 128, 129, 300, 16383, 16384, 20000])
SENDERS = [0, 7, 200]


def _one_by_one(encode, rows_of, present, ids, senders):
    """Payload / header / frames per (sample, sender), encoding every count-1 frame on its own."""
    n, s = present.shape
    out = FrameCounts.zeros(n, s)
    for i in range(n):
        for k in range(s):
            if present[i, k]:
                frame = encode(rows_of[k][i : i + 1], senders[k], int(ids[i]))
                header = read_header(frame).header_len
                out.payload[i, k] = len(frame) - header
                out.header[i, k] = header
                out.frames[i, k] = 1
    return out


def _assert_equal(a: FrameCounts, b: FrameCounts) -> None:
    for field in ("payload", "header", "frames"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize("encoding", ["float32", "float16", "int8"])
def test_score_frames_equal_every_frame_encoded_one_by_one(encoding):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((len(IDS), 3, 4)).astype(np.float32)  # (n, S, C)
    present = rng.random((len(IDS), 3)) < 0.7
    present[[0, 4, 8]] = True  # checked by hand below
    got = score_frames(scores, present, encoding, sample_ids=IDS, senders=SENDERS)

    def encode(rows, sender, first):
        return encode_scores_frame(
            rows,
            sender=sender,
            first_sample=first,
            model_version=0xBEEF,
            encoding=encoding,
            captured=12.5,
        )

    want = _one_by_one(encode, [scores[:, k] for k in range(3)], present, IDS, SENDERS)
    _assert_equal(got, want)
    row = {"float32": 16, "float16": 8, "int8": 4}[encoding]  # 4 classes
    assert set(np.unique(got.payload[present])) == {row}
    # By hand: 1 + sender + sample + count + 2 (model) + 3 (time); sender 200 takes 2 bytes.
    assert got.header[0, 0] == 9 and got.header[4, 0] == 10 and got.header[8, 0] == 11
    assert got.header[0, 2] == 10
    assert not got.payload[~present].any() and not got.header[~present].any()


def test_feature_frames_with_shapes_that_differ_per_sender():
    rng = np.random.default_rng(1)
    shapes = [(4, 4, 4), (13,), (1,)]  # 64, 13 and 1 bits -> 8, 2 and 1 bytes
    maps = [rng.choice([-1.0, 0.0, 1.0], size=(len(IDS), *s)).astype(np.float32) for s in shapes]
    present = rng.random((len(IDS), 3)) < 0.7
    present[0] = True
    got = feature_frames(maps, present, sample_ids=IDS, senders=SENDERS)

    def encode(rows, sender, first):
        shape = tuple(rows.shape[1:])
        return encode_features_frame(
            rows, sender=sender, first_sample=first, model_version=1, shape=shape
        )

    _assert_equal(got, _one_by_one(encode, maps, present, IDS, SENDERS))
    for k, nbytes in enumerate((8, 2, 1)):
        assert set(np.unique(got.payload[present[:, k], k])) == {nbytes}
    assert got.header[0, 0] == 6 and got.header[0, 2] == 7  # 1 + 1 + 1 + 1 + 2; sender 200: 2


def test_default_ids_and_senders_count_from_zero():
    scores = np.zeros((3, 2, 3), np.float32)
    got = score_frames(scores, np.ones((3, 2), bool), "int8")
    np.testing.assert_array_equal(got.payload, np.full((3, 2), 3))
    np.testing.assert_array_equal(got.header, np.full((3, 2), 9))


def test_raw_frames_carry_8_bit_pixels():
    rng = np.random.default_rng(2)
    pixels = [rng.random((4, 3, 8, 8)), rng.random((4, 5))]
    present = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], bool)
    got = raw_frames(pixels, present)
    assert raw_bytes_per_device((3, 8, 8)) == 192
    np.testing.assert_array_equal(got.payload, np.where(present, [[192, 5]], 0))
    np.testing.assert_array_equal(got.header, np.where(present, 6, 0))  # FEATURES layout
    assert mean_raw_bytes_per_device([(3, 8, 8), (5,)]) == (192 + 5) / 2
    assert raw_bytes_per_device((3, 32, 32)) == 3072  # SPEC §6's raw baseline


def test_float16_overflow_is_refused_like_the_runtime_would():
    scores = np.array([[[70000.0, 0.0, 0.0]]], np.float32)
    with pytest.raises(ValueError, match="float16"):
        score_frames(scores, np.ones((1, 1), bool), "float16")


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(n, S, C\)"):
        score_frames(np.zeros((2, 3)), np.ones((2, 3), bool), "int8")
    with pytest.raises(ValueError, match="present must have shape"):
        score_frames(np.zeros((2, 3, 3)), np.ones((2, 2), bool), "int8")
    with pytest.raises(ValueError, match="sample_ids"):
        score_frames(np.zeros((2, 1, 3)), np.ones((2, 1), bool), "int8", sample_ids=[0])


def test_link_bytes_by_hand():
    # 2 samples, 2 devices (device 1 absent on sample 1), 1 edge.
    present = np.array([[True, True], [True, False]])
    link = LinkBytes.empty(present, num_edges=1)
    link.device.add(np.arange(2), score_frames(np.zeros((2, 2, 3)), present, "float32"))
    # sample 0 goes up: both devices send 2 bytes of features; the edge sends 5 on to the cloud
    up = feature_frames([np.ones((1, 13)), np.ones((1, 9))], present[:1], sample_ids=[0])
    link.device.add(np.array([0]), up)
    link.edge.add(np.array([0]), feature_frames([np.ones((1, 40))], [[True]], sample_ids=[0]))
    # payload: (12 + 2) + (12 + 2) + 12 over 3 present slots; headers 9 + 6, 9 + 6, 9
    assert link.per_device() == pytest.approx((14 + 14 + 12) / 3)
    assert link.header_per_device() == pytest.approx((15 + 15 + 9) / 3)
    assert link.frames_per_device() == pytest.approx(5 / 3)
    assert link.edge_to_cloud_per_sample() == 5 / 2 and link.edge_header_per_sample() == 6 / 2
    dev = link.device_link()
    assert (dev.payload, dev.header, dev.frames, dev.samples) == (40, 39, 5, 3)
    assert dev.per_sample() == link.per_device()
    assert link.edge_link().per_sample("total") == 5 + 6


@pytest.mark.parametrize(
    "local_fraction, expected",
    [(0.0, 140.0), (0.6082, 62.15), (1.0, 12.0)],  # SPEC §6: f = 4, o = 256, |C| = 3
)
def test_papers_examples(local_fraction, expected):
    assert formula_bytes_per_device(3, local_fraction, 4 * 256) == pytest.approx(expected, abs=0.01)
    ratio = raw_bytes_per_device((3, 32, 32)) / formula_bytes_per_device(3, 0.6082, 4 * 256)
    assert ratio == pytest.approx(49.4, abs=0.1)
