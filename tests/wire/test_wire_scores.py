"""Tests for score encodings: hand bytes, the int8 error bound, non-finite and overflow refusal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ddnn.wire import (
    INT8_SCALE,
    FrameDecodeError,
    ScoreEncoding,
    decode_scores,
    encode_scores,
    score_bytes,
    wire_roundtrip,
)

ENCODINGS = list(ScoreEncoding)
finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
score_rows = hnp.arrays(
    np.float32, st.tuples(st.integers(0, 4), st.integers(1, 8)), elements=finite
)


@pytest.mark.parametrize(("enc", "nbytes"), [("float32", 40), ("float16", 20), ("int8", 10)])
def test_score_bytes(enc: str, nbytes: int) -> None:
    assert score_bytes(10, enc) == nbytes


def test_hand_bytes() -> None:
    x = np.array([[1.0, -2.0]], np.float32)
    assert encode_scores(x, "float32") == bytes.fromhex("0000803f000000c0")
    assert encode_scores(np.array([[1, -2, 65504.0]]), "float16") == (bytes.fromhex("003c00c0ff7b"))
    # log_softmax([2, 0, -100]) = [-0.12693, -2.12693, -102.127]; x16 -> 2.03, 34.03, saturated
    assert encode_scores(np.array([[2.0, 0.0, -100.0]]), "int8") == bytes([2, 34, 255])
    assert np.array_equal(
        decode_scores(bytes([2, 34, 255]), 1, 3, "int8"), [[-0.125, -2.125, -15.9375]]
    )
    # [0, 0]: log(1/2) = -0.6931 -> 11.09 -> 11 -> -0.6875
    assert encode_scores(np.zeros((2, 2)), "int8") == bytes([11] * 4)


def test_float32_payload_equals_v1() -> None:
    x = np.array([0.5, -3.25, 1e-7], np.float32)
    assert encode_scores(x[None], "float32") == x.astype("<f4").tobytes()  # v1's payload


@settings(deadline=None)
@given(score_rows, st.sampled_from(ENCODINGS))
def test_round_trip(x: np.ndarray, enc: ScoreEncoding) -> None:
    data = encode_scores(x, enc)
    assert len(data) == x.shape[0] * score_bytes(x.shape[1], enc)
    out = decode_scores(data, x.shape[0], x.shape[1], enc)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.array_equal(wire_roundtrip(x, enc), out)
    if enc is ScoreEncoding.FLOAT32:
        assert np.array_equal(out, x)
    elif enc is ScoreEncoding.FLOAT16:
        assert np.array_equal(out, x.astype(np.float16).astype(np.float32))


def _log_softmax(row: np.ndarray) -> list[float]:
    """Reference in exact-ish arithmetic: math.fsum over Python floats."""
    m = max(float(v) for v in row)
    lse = m + math.log(math.fsum(math.exp(float(v) - m) for v in row))
    return [float(v) - lse for v in row]


@settings(deadline=None)
@given(score_rows.filter(lambda a: a.shape[0] > 0))
def test_int8_error_bound(x: np.ndarray) -> None:
    out = decode_scores(encode_scores(x, "int8"), x.shape[0], x.shape[1], "int8")
    for row, got in zip(x, out, strict=True):
        for want, g in zip(_log_softmax(row), got, strict=True):
            if want >= -15.9:
                assert abs(g - want) <= INT8_SCALE / 2 + 1e-9
            if want < -15.9375 - INT8_SCALE / 2:
                assert g == -255 * INT8_SCALE  # saturated


def test_int8_argmax_and_probabilities_survive() -> None:
    x = np.array([[3.0, 1.0, 0.2], [-1.0, 4.0, 4.5]])
    out = wire_roundtrip(x, "int8")
    assert np.array_equal(out.argmax(1), [0, 2])
    assert np.allclose(np.exp(out).sum(1), 1.0, atol=0.05)  # still a distribution


def test_every_int8_byte_decodes() -> None:
    out = decode_scores(bytes(range(256)), 1, 256, "int8")
    assert out[0, 0] == 0.0 and out[0, 255] == -15.9375 and np.isfinite(out).all()


@pytest.mark.parametrize("enc", ENCODINGS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused_at_encode(enc: ScoreEncoding, bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        encode_scores(np.array([[0.0, bad]]), enc)
    with pytest.raises(ValueError, match="finite"):
        wire_roundtrip(np.array([bad]), enc)


def test_overflow_refused() -> None:
    with pytest.raises(ValueError, match="65504"):
        encode_scores(np.array([[65520.0]]), "float16")  # rounds to inf in float16
    with pytest.raises(ValueError, match="finite"):
        encode_scores(np.array([[-7e4]]), "float16")
    assert encode_scores(np.array([[65519.0]]), "float16") == bytes.fromhex("ff7b")  # 65504
    with pytest.raises(ValueError, match="finite"):
        encode_scores(np.array([[1e39]]), "float32")
    assert len(encode_scores(np.array([[1e39, 0.0]]), "int8")) == 2  # finite in float64


@pytest.mark.parametrize(
    ("enc", "payload"), [("float32", "0000c07f"), ("float32", "0000807f"), ("float16", "007c")]
)
def test_non_finite_refused_at_decode(enc: str, payload: str) -> None:
    with pytest.raises(FrameDecodeError) as e:
        decode_scores(bytes.fromhex(payload), 1, 1, enc)
    assert e.value.reason == "non_finite"


def test_decode_length() -> None:
    with pytest.raises(FrameDecodeError) as e:
        decode_scores(b"\x00" * 7, 2, 1, "float32")
    assert e.value.reason == "length"


def test_wire_roundtrip_keeps_container_and_shape() -> None:
    t = torch.tensor([[[0.1, 0.7], [2.0, -1.0]]], dtype=torch.float64, requires_grad=True)
    out = wire_roundtrip(t, "float16")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (1, 2, 2) and out.device == t.device and not out.requires_grad
    expected = t.detach().numpy().astype(np.float16).astype(np.float32)
    assert np.array_equal(out.numpy(), expected)
    b = wire_roundtrip(torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16), "float32")
    assert b.dtype == torch.float32 and torch.equal(b, torch.tensor([[1.0, 2.0]]))
    n = wire_roundtrip(np.array([1.0, 2.0]), "float32")
    assert isinstance(n, np.ndarray) and n.dtype == np.float32


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="float32, float16, int8"):
        score_bytes(3, "int4")
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        encode_scores(np.zeros(3), "float32")
    with pytest.raises(ValueError, match="dtype"):
        encode_scores(np.zeros((1, 2), bool), "float32")
    with pytest.raises(ValueError):
        score_bytes(0, "float32")
