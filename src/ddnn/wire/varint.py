"""Unsigned LEB128 varints, the variable-length integers of the frame header."""

from __future__ import annotations

import operator

from ddnn.wire.errors import FrameDecodeError

__all__ = ["decode_varint", "encode_varint", "varint_len"]

BytesLike = bytes | bytearray | memoryview


def _check_unsigned(n: int) -> int:
    if isinstance(n, bool):
        raise ValueError("a varint holds a non-negative integer, got a bool")
    try:
        v = operator.index(n)
    except TypeError:
        raise ValueError(f"a varint holds a non-negative integer, got {type(n).__name__}") from None
    if v < 0:
        raise ValueError(f"a varint holds a non-negative integer, got {v}")
    return v


_ONE_BYTE = [bytes([v]) for v in range(0x80)]  # the encodings of 0..127, made once


def varint_len(n: int) -> int:
    """Bytes :func:`encode_varint` uses for ``n``: 1 below 2**7, 2 below 2**14, and so on."""
    if type(n) is int and 0 <= n < 0x80:  # the usual case, without the general checks
        return 1
    v = _check_unsigned(n)
    return max(1, -(-v.bit_length() // 7))


def encode_varint(n: int) -> bytes:
    """Encodes ``n`` as an unsigned LEB128 varint.

    Seven value bits per byte, least significant group first; the high bit of every byte but the
    last is set. The encoding is minimal, so each value has exactly one.

    Raises:
        ValueError: If ``n`` is not a non-negative integer.
    """
    if type(n) is int and 0 <= n < 0x80:
        return _ONE_BYTE[n]
    v = _check_unsigned(n)
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def decode_varint(buf: BytesLike, offset: int = 0, max_bytes: int = 8) -> tuple[int, int]:
    """Reads one varint from ``buf`` at ``offset``.

    Args:
        buf: The bytes to read from.
        offset: Where the varint starts.
        max_bytes: The most bytes the varint may take (8 carries 56 bits).

    Returns:
        ``(value, offset just past the varint)``.

    Raises:
        FrameDecodeError: ``"truncated"`` if ``buf`` ends inside the varint; ``"varint"`` if it
            runs past ``max_bytes`` or is non-minimal (a last byte of 0x00 after the first), since
            a non-minimal form would give one value two encodings.
    """
    if 0 <= offset < len(buf) and buf[offset] < 0x80 and max_bytes >= 1:  # a one-byte varint
        return buf[offset], offset + 1
    value = 0
    for i in range(max_bytes):
        pos = offset + i
        if pos >= len(buf):
            raise FrameDecodeError(f"data ends inside a varint at byte {pos}", "truncated")
        byte = buf[pos]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise FrameDecodeError(
                    f"non-minimal varint at byte {offset}: a trailing 0x00 group", "varint"
                )
            return value, pos + 1
    raise FrameDecodeError(f"varint at byte {offset} is longer than {max_bytes} bytes", "varint")
