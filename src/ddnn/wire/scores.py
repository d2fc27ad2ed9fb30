"""Class-score payload encodings: float32 and float16 logits, or 8-bit quantized log-probabilities.

Every encoding is a fixed number of bytes per class, so a score row is ``score_bytes(C, enc)``
bytes and a batch of ``B`` rows is ``B`` rows back to back, in class order:

- ``float32``: the scores themselves (logits), IEEE-754 binary32 little-endian, 4 B per class.
- ``float16``: the scores as IEEE-754 binary16 little-endian, 2 B per class. Scores that round
  beyond the float16 range (``|x| > 65504`` after rounding, i.e. ``|x| >= 65520``) are refused
  rather than sent as infinities.
- ``int8``: quantized log-probabilities, 1 B per class. The sender computes
  ``logp = log_softmax(x)`` per row in float64 and sends ``q = clip(round(-logp / INT8_SCALE),
  0, 255)`` as uint8; the receiver reads ``-q * INT8_SCALE``. With ``INT8_SCALE = 1/16`` nat the
  resolution is 0.0625 nat (|error| <= 1/32 nat) and any probability below ``e^-15.94`` saturates
  at ``q = 255``. The decoded row is a log-probability vector up to that quantization, so argmax,
  softmax and normalized entropy work on it directly (softmax of a log-probability vector is the
  distribution itself). It is called int8 for "8 bits per class", the name quantization tools use;
  it is stored unsigned because a log-probability is never positive, so the sign bit would be
  wasted and unsigned doubles the range to 255 steps.

NaN and ±inf are refused at encode (``ValueError``) and, for the float encodings, at decode
(:class:`FrameDecodeError` ``"non_finite"``); every int8 byte decodes to a finite value.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from ddnn.wire._array import ArrayLike, BytesLike, check_real, is_tensor, to_numpy
from ddnn.wire.errors import FrameDecodeError

__all__ = [
    "INT8_SCALE",
    "ScoreEncoding",
    "decode_scores",
    "encode_scores",
    "score_bytes",
    "wire_roundtrip",
]

INT8_SCALE = 1.0 / 16.0  # nat per int8 step


class ScoreEncoding(StrEnum):
    """How a class-score row is sent; the value is the name used in configs and CLIs."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"


_WIRE_DTYPE: dict[ScoreEncoding, np.dtype] = {
    ScoreEncoding.FLOAT32: np.dtype("<f4"),
    ScoreEncoding.FLOAT16: np.dtype("<f2"),
    ScoreEncoding.INT8: np.dtype(np.uint8),
}


def as_encoding(encoding: ScoreEncoding | str) -> ScoreEncoding:
    """Returns ``encoding`` as a :class:`ScoreEncoding`, with an error listing the valid names."""
    try:
        return ScoreEncoding(encoding)
    except ValueError:
        valid = ", ".join(e.value for e in ScoreEncoding)
        raise ValueError(f"unknown score encoding {encoding!r}; expected one of {valid}") from None


def score_bytes(num_classes: int, encoding: ScoreEncoding | str) -> int:
    """Bytes one score row takes: ``4·C`` (float32), ``2·C`` (float16) or ``C`` (int8)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return _WIRE_DTYPE[as_encoding(encoding)].itemsize * num_classes


def _quantize(x: np.ndarray, enc: ScoreEncoding) -> np.ndarray:
    """``(N, C)`` real scores to their wire values, in the wire dtype; refuses non-finite."""
    check_real(x, "scores")
    wire_dtype = _WIRE_DTYPE[enc]
    if enc is not ScoreEncoding.INT8 and x.dtype == wire_dtype:
        wire = x  # nothing to convert (float32 rows sent as float32), nothing can overflow
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is rejected just below
            if enc is ScoreEncoding.INT8:
                x64 = x.astype(np.float64)
                if not np.isfinite(x64).all():
                    raise ValueError("scores must be finite (no NaN or ±inf)")
                shifted = x64 - x64.max(axis=1, keepdims=True)  # (N, C), max 0: no overflow
                logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                return np.clip(np.rint(-logp / INT8_SCALE), 0, 255).astype(np.uint8)
            wire = x.astype(wire_dtype)
    if not np.isfinite(wire).all():
        hint = (
            " (|x| >= 65520 rounds past the float16 maximum 65504)"
            if enc is ScoreEncoding.FLOAT16
            else ""
        )
        raise ValueError(f"scores must be finite as {enc.value}: no NaN or ±inf{hint}")
    return wire


def _dequantize(wire: np.ndarray, enc: ScoreEncoding) -> np.ndarray:
    """Wire values to float32 scores (int8: to log-probabilities)."""
    if enc is ScoreEncoding.INT8:
        return wire.astype(np.float32) * np.float32(-INT8_SCALE)  # exact: multiples of 1/16
    return wire.astype(np.float32)


def _rows(scores: ArrayLike) -> np.ndarray:
    s = to_numpy(scores, "scores")
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"scores must have shape (B, C) with C >= 1, got shape {s.shape}")
    return s


def encode_scores(scores: ArrayLike, encoding: ScoreEncoding | str) -> bytes:
    """Encodes a batch of score rows.

    Args:
        scores: ``(B, C)`` real scores (logits); numpy array or torch tensor.
        encoding: The payload encoding.

    Returns:
        ``B * score_bytes(C, encoding)`` bytes, rows in order.

    Raises:
        ValueError: On a bad shape or dtype, or a value that is not finite in the encoding.
    """
    enc = as_encoding(encoding)
    return np.ascontiguousarray(_quantize(_rows(scores), enc)).tobytes()


def decode_scores(
    buf: BytesLike, count: int, num_classes: int, encoding: ScoreEncoding | str
) -> np.ndarray:
    """Decodes ``count`` score rows.

    Args:
        buf: Exactly ``count * score_bytes(num_classes, encoding)`` bytes.
        count: Rows in ``buf``.
        num_classes: Classes per row.
        encoding: The payload encoding.

    Returns:
        ``(count, num_classes)`` float32: logits for float32/float16, log-probabilities for int8.

    Raises:
        FrameDecodeError: ``"length"`` on a wrong byte count, ``"non_finite"`` on NaN or ±inf.
    """
    enc = as_encoding(encoding)
    expected = count * score_bytes(num_classes, enc)
    if len(buf) != expected:
        raise FrameDecodeError(
            f"{count} x {num_classes} {enc.value} scores need {expected} bytes, got {len(buf)}",
            "length",
        )
    wire = np.frombuffer(buf, dtype=_WIRE_DTYPE[enc]).reshape(count, num_classes)
    if enc is not ScoreEncoding.INT8 and not np.isfinite(wire).all():
        raise FrameDecodeError(f"{enc.value} scores hold NaN or ±inf", "non_finite")
    return _dequantize(wire, enc)


def wire_roundtrip(scores: ArrayLike, encoding: ScoreEncoding | str) -> ArrayLike:
    """What a receiver gets for ``scores``: ``decode_scores(encode_scores(x))``, without the bytes.

    In-process evaluation applies this so that its numbers are those the wire gives. Not
    differentiable (the result is detached).

    Args:
        scores: ``(..., C)`` real scores, numpy array or torch tensor.
        encoding: The payload encoding.

    Returns:
        float32 scores of the same shape and container: a numpy array, or a tensor on the input's
        device. int8 gives log-probabilities.

    Raises:
        ValueError: As :func:`encode_scores`.
    """
    enc = as_encoding(encoding)
    s = to_numpy(scores, "scores")
    if s.ndim < 1 or s.shape[-1] < 1:
        raise ValueError(f"scores must have shape (..., C) with C >= 1, got shape {s.shape}")
    rows = s.reshape(-1, s.shape[-1])  # (N, C)
    out = _dequantize(_quantize(rows, enc), enc).reshape(s.shape)
    if is_tensor(scores):
        import torch  # already loaded: the input is a tensor

        return torch.from_numpy(out).to(scores.device)
    return out
