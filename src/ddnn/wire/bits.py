"""Bit packing of ±1 feature maps, the FEATURES payload (bit-exact with the v1 codec).

Layout: the map is flattened in C order (``index = (c * H + h) * W + w``), one bit per value with
+1 -> 1 and -1 -> 0; any value >= 0 counts as +1, so sign(0) = +1. Bits are packed MSB first:
element ``i`` is bit ``7 - i % 8`` of byte ``i // 8`` (``np.packbits``, ``bitorder="big"``). The
last byte is zero-padded, a row is exactly ``ceil(numel / 8)`` bytes, and decoders reject nonzero
padding bits, so every feature map has exactly one encoding.
"""

from __future__ import annotations

import math

import numpy as np

from ddnn.wire._array import ArrayLike, BytesLike, check_real, check_shape, to_numpy
from ddnn.wire.errors import FrameDecodeError

__all__ = [
    "check_padding",
    "pack_bits",
    "pack_bits_batch",
    "packed_bytes",
    "unpack_bits",
    "unpack_bits_batch",
]


def packed_bytes(numel: int) -> int:
    """Bytes one packed map of ``numel`` values takes: ``ceil(numel / 8)``."""
    if numel < 0:
        raise ValueError(f"numel must be >= 0, got {numel}")
    return -(-numel // 8)


def _signs(x: ArrayLike) -> np.ndarray:
    a = to_numpy(x, "signs")
    check_real(a, "signs")
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise ValueError("signs contain NaN, which has no sign; expected ±1 values")
    return a


def pack_bits(signs: ArrayLike) -> bytes:
    """Bit-packs one ±1 map of any shape.

    Args:
        signs: Integer or float values; >= 0 (including 0) packs as 1, negative as 0, so a
            non-binary map is binarized with sign(0) = +1.

    Returns:
        ``ceil(numel / 8)`` bytes.
    """
    return np.packbits(_signs(signs).reshape(-1) >= 0).tobytes()


def pack_bits_batch(signs: ArrayLike) -> np.ndarray:
    """Bit-packs every sample of a batch; row ``b`` equals ``pack_bits(signs[b])``.

    Args:
        signs: ``(B, *shape)`` values, binarized like :func:`pack_bits`.

    Returns:
        ``(B, ceil(prod(shape) / 8))`` uint8 array.
    """
    a = _signs(signs)
    if a.ndim < 1:
        raise ValueError("signs must have a leading batch dim, shape (B, *shape); got a scalar")
    flat = a.reshape(a.shape[0], math.prod(a.shape[1:]))  # (B, numel); -1 fails when B = 0
    return np.packbits(flat >= 0, axis=1)  # (B, nbytes)


def check_padding(packed: np.ndarray, numel: int) -> None:
    """Rejects rows whose last byte has padding bits set.

    Args:
        packed: ``(B, ceil(numel / 8))`` uint8 rows.
        numel: Values per row.

    Raises:
        FrameDecodeError: ``"padding"`` if any padding bit is 1.
    """
    pad = 8 * packed_bytes(numel) - numel
    if pad and packed.shape[0] and (packed[:, -1] & ((1 << pad) - 1)).any():
        raise FrameDecodeError(f"the last byte's {pad} padding bits must be zero", "padding")


def unpack_bits_batch(packed: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_bits_batch`.

    Args:
        packed: ``(B, ceil(prod(shape) / 8))`` uint8 rows with zero padding bits.
        shape: Per-sample shape to restore.

    Returns:
        ``(B, *shape)`` float32 array of ±1.

    Raises:
        ValueError: If ``packed`` is not 2-D uint8 of the width ``shape`` needs.
        FrameDecodeError: ``"padding"`` (a ValueError too) if padding bits are set.
    """
    p = to_numpy(packed, "packed")
    dims = check_shape(shape)
    numel = math.prod(dims)
    nbytes = packed_bytes(numel)
    if p.dtype != np.uint8 or p.ndim != 2 or p.shape[1] != nbytes:
        raise ValueError(
            f"packed must be a (B, {nbytes}) uint8 array for per-sample shape {dims}, "
            f"got {p.dtype} array of shape {p.shape}"
        )
    check_padding(p, numel)
    bits = np.unpackbits(p, axis=1, count=numel)  # (B, numel) of 0/1
    return (bits.astype(np.float32) * 2.0 - 1.0).reshape((p.shape[0], *dims))


def unpack_bits(data: BytesLike, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_bits`: exactly ``ceil(prod(shape) / 8)`` bytes to a float32 ±1 map.

    Raises:
        ValueError: If the byte count does not match ``shape``, or (as the
            :class:`FrameDecodeError` ``"padding"``) if padding bits are set.
    """
    row = np.frombuffer(bytes(data), dtype=np.uint8)
    return unpack_bits_batch(row[None, :], shape)[0]
