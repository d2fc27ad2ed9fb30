"""Frame codec: the exact bytes a DDNN node sends up the hierarchy (SPEC §6).

Every message is a *frame*: a fixed 33-byte header followed by a payload. This layout is a wire
format shared with the C exporter, so it is specified here to the byte.

Header (``HEADER_BYTES == 33``), all integers little-endian, no padding
(``struct`` format ``"<2sBBHQIB3HII"``):

======  ====  ==============  ==========================================================
offset  size  field           meaning
======  ====  ==============  ==========================================================
0       2     magic           ``b"DN"``
2       1     version         codec format version, uint8 (``FORMAT_VERSION`` = 1)
3       1     kind            uint8, ``FrameKind``: 1 = SCORES, 2 = FEATURES
4       2     sender_id       uint16: end device id, or the edge node id for its features
6       8     sample_id       uint64: which input sample the frame belongs to
14      4     model_version   uint32: hash of the checkpoint; nodes reject other models
18      1     ndim            uint8: payload rank, 1 for SCORES, 1..3 for FEATURES
19      6     dims            3 x uint16: payload shape, unused trailing dims are 0;
                              SCORES: ``dims[0]`` = number of classes |C|
25      4     payload_len     uint32: payload size in bytes (must match the shape)
29      4     crc32           uint32: CRC-32 of header bytes 0..28 followed by the payload
======  ====  ==============  ==========================================================

The CRC is the standard CRC-32 of zlib/Ethernet (reflected polynomial ``0xEDB88320``, initial
value ``0xFFFFFFFF``, final XOR ``0xFFFFFFFF``), computed over the 29 header bytes preceding the
CRC field and then the payload, i.e. ``zlib.crc32(payload, zlib.crc32(header[:29]))``.

Payloads:

- **SCORES** (kind 1): the |C| class scores as IEEE-754 float32, little-endian, in class order:
  exactly ``4 * |C|`` bytes.
- **FEATURES** (kind 2): a binarized feature map of shape ``(C, H, W)``, ``(C, L)`` or ``(F,)``,
  flattened in C order (channel-major: ``index = (c * H + h) * W + w``), one bit per value with
  +1 -> 1 and -1 -> 0 (any value >= 0 counts as +1, so sign(0) = +1). Bits are packed MSB-first:
  element ``i`` is bit ``7 - i % 8`` of byte ``i // 8`` (``np.packbits`` with ``bitorder="big"``).
  The last byte is zero-padded; the payload is exactly ``ceil(numel / 8)`` bytes and a decoder
  rejects nonzero padding bits, so every feature map has exactly one encoding.

The batch helpers (``pack_bits_batch``/``unpack_bits_batch``) produce the same per-sample bytes
without building a frame per sample, for the in-process simulator's byte accounting.
"""

from __future__ import annotations

import math
import operator
import struct
import sys
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor
else:
    ArrayLike = Any

BytesLike = bytes | bytearray | memoryview

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BYTES",
    "MAGIC",
    "Frame",
    "FrameDecodeError",
    "FrameHeader",
    "FrameKind",
    "decode_frame",
    "encode_features",
    "encode_packed_features",
    "encode_frame",
    "encode_scores",
    "pack_bits",
    "pack_bits_batch",
    "payload_bytes",
    "read_header",
    "unpack_bits",
    "unpack_bits_batch",
]

MAGIC = b"DN"
FORMAT_VERSION = 1
MAX_DIMS = 3

_HEADER = struct.Struct("<2sBBHQIB3HII")
HEADER_BYTES: int = _HEADER.size  # 33
_CRC_OFFSET = HEADER_BYTES - 4  # the CRC covers every header byte before it

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


class FrameKind(IntEnum):
    """What a frame's payload holds."""

    SCORES = 1  # float32 class-score vector for the local aggregator
    FEATURES = 2  # bit-packed ±1 feature map for the tier above


class FrameDecodeError(ValueError):
    """Raised when bytes are not a valid frame of this codec version."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded message.

    Attributes:
        kind: Payload kind.
        sender_id: End device id, or the edge node id when an edge forwards its features.
        sample_id: Input sample the frame belongs to, so receivers can join devices' frames.
        model_version: Checkpoint hash; a node must reject frames of another model.
        payload: ``(C,)`` float32 scores, or the float32 ±1 feature map in its original shape.
    """

    kind: FrameKind
    sender_id: int
    sample_id: int
    model_version: int
    payload: np.ndarray

    def __eq__(self, other: object) -> bool:
        # Generated dataclass equality would compare arrays with `==` and fail on truthiness.
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.sender_id == other.sender_id
            and self.sample_id == other.sample_id
            and self.model_version == other.model_version
            and self.payload.dtype == other.payload.dtype
            and np.array_equal(self.payload, other.payload)
        )

    __hash__ = None  # type: ignore[assignment]  # the payload array is mutable


# ---------------------------------------------------------------------------------------------
# input checks


def _to_numpy(x: ArrayLike, what: str) -> np.ndarray:
    """Returns ``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    torch = sys.modules.get("torch")  # no import cost for numpy-only callers
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.generic):  # numpy scalar, e.g. np.float32(1.0)
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def _check_signs(a: np.ndarray, what: str) -> None:
    if a.dtype == np.bool_ or not (
        np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    ):
        raise ValueError(
            f"{what} must hold ±1 values of an integer or float dtype, got dtype {a.dtype}"
        )
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise ValueError(f"{what} contains NaN, which has no sign; expected ±1 values")


def _check_id(value: int, name: str, max_value: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer in [0, {max_value}], got a bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer in [0, {max_value}], got {type(value).__name__}"
        ) from None
    if not 0 <= v <= max_value:
        raise ValueError(f"{name} must be in [0, {max_value}], got {v}")
    return v


def _check_shape(kind: FrameKind, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Validates a payload shape for ``kind`` and returns it as a tuple of ints."""
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of integers, got {shape!r}") from None
    if kind == FrameKind.SCORES:
        if len(dims) != 1 or not 1 <= dims[0] <= _U16_MAX:
            raise ValueError(
                f"scores must have shape (C,) with 1 <= C <= {_U16_MAX}, got shape {dims}"
            )
    elif kind == FrameKind.FEATURES:
        if not 1 <= len(dims) <= MAX_DIMS:
            raise ValueError(
                f"features must have 1 to {MAX_DIMS} dims ((F,), (C, L) or (C, H, W)), "
                f"got shape {dims}"
            )
        if any(d < 1 for d in dims):
            raise ValueError(f"features must not be empty, got shape {dims}")
        if any(d > _U16_MAX for d in dims):
            raise ValueError(f"each feature dim must be <= {_U16_MAX}, got shape {dims}")
    else:  # pragma: no cover - FrameKind is closed
        raise ValueError(f"unknown frame kind {kind!r}; expected one of {list(FrameKind)}")
    return dims


def payload_bytes(kind: FrameKind, shape: tuple[int, ...]) -> int:
    """Analytical payload size, the terms of SPEC §6's ``c = 4·|C| + (1 − l)·f·o/8``.

    Args:
        kind: Payload kind.
        shape: ``(C,)`` for scores, or the feature map's shape (1 to 3 dims).

    Returns:
        ``4 * C`` for scores, ``ceil(prod(shape) / 8)`` for features. The frame on the wire is
        ``HEADER_BYTES`` longer.

    Raises:
        ValueError: If the shape cannot be carried by a frame of this kind.
    """
    kind = FrameKind(kind)
    dims = _check_shape(kind, shape)
    n = 4 * dims[0] if kind == FrameKind.SCORES else -(-math.prod(dims) // 8)
    if n > _U32_MAX:
        raise ValueError(f"payload of shape {dims} is {n} bytes, over the {_U32_MAX}-byte limit")
    return n


# ---------------------------------------------------------------------------------------------
# bit packing


def pack_bits(signs: ArrayLike) -> bytes:
    """Bit-packs a ±1 array in the FEATURES payload layout.

    Args:
        signs: Array of any shape, integer or float dtype. Values >= 0 (including 0) become bit 1,
            negative values bit 0, so a non-binary array is binarized with sign(0) = +1.

    Returns:
        ``ceil(numel / 8)`` bytes: C-order elements, MSB-first, last byte zero-padded.
    """
    a = _to_numpy(signs, "signs")
    _check_signs(a, "signs")
    return np.packbits(a.reshape(-1) >= 0).tobytes()


def unpack_bits(data: BytesLike, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_bits`.

    Args:
        data: Exactly ``ceil(prod(shape) / 8)`` packed bytes with zero padding bits.
        shape: Shape of the array to restore.

    Returns:
        float32 array of ``shape`` holding +1.0 / -1.0.

    Raises:
        ValueError: If the byte count does not match ``shape`` or padding bits are set.
    """
    packed = np.frombuffer(bytes(data), dtype=np.uint8)
    return unpack_bits_batch(packed[None, :], shape)[0]


def pack_bits_batch(signs: ArrayLike) -> np.ndarray:
    """Bit-packs every sample of a batch at once; row ``b`` equals ``pack_bits(signs[b])``.

    Args:
        signs: ``(B, *shape)`` array of ±1 values (same binarization as :func:`pack_bits`).

    Returns:
        ``(B, ceil(prod(shape) / 8))`` uint8 array.
    """
    a = _to_numpy(signs, "signs")
    if a.ndim < 1:
        raise ValueError("signs must have a leading batch dim, shape (B, *shape); got a scalar")
    _check_signs(a, "signs")
    flat = a.reshape(a.shape[0], math.prod(a.shape[1:]))  # (B, numel); -1 fails when B = 0
    return np.packbits(flat >= 0, axis=1)  # (B, nbytes)


def unpack_bits_batch(packed: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_bits_batch`.

    Args:
        packed: ``(B, ceil(prod(shape) / 8))`` uint8 array with zero padding bits.
        shape: Per-sample shape to restore.

    Returns:
        ``(B, *shape)`` float32 array of ±1.

    Raises:
        ValueError: If ``packed`` is not 2-D uint8 of the right width or padding bits are set.
    """
    p = _to_numpy(packed, "packed")
    try:
        shape = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of integers, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"shape must have non-negative dims, got {shape}")
    numel = math.prod(shape)
    nbytes = -(-numel // 8)
    if p.dtype != np.uint8 or p.ndim != 2 or p.shape[1] != nbytes:
        raise ValueError(
            f"packed must be a (B, {nbytes}) uint8 array for per-sample shape {shape}, "
            f"got {p.dtype} array of shape {p.shape}"
        )
    pad = 8 * nbytes - numel
    if pad and (p[:, -1] & ((1 << pad) - 1)).any():
        raise ValueError(f"the last byte's {pad} padding bits must be zero")
    bits = np.unpackbits(p, axis=1, count=numel)  # (B, numel) of 0/1
    out = bits.astype(np.float32) * 2.0 - 1.0
    return out.reshape((p.shape[0], *shape))


# ---------------------------------------------------------------------------------------------
# frames


def _encode(
    kind: FrameKind,
    payload: bytes,
    dims: tuple[int, ...],
    sender_id: int,
    sample_id: int,
    model_version: int,
) -> bytes:
    sender_id = _check_id(sender_id, "sender_id", _U16_MAX)
    sample_id = _check_id(sample_id, "sample_id", _U64_MAX)
    model_version = _check_id(model_version, "model_version", _U32_MAX)
    padded = dims + (0,) * (MAX_DIMS - len(dims))
    head = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        int(kind),
        sender_id,
        sample_id,
        model_version,
        len(dims),
        *padded,
        len(payload),
        0,
    )[:_CRC_OFFSET]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


def encode_scores(
    scores: ArrayLike, *, sender_id: int, sample_id: int, model_version: int
) -> bytes:
    """Encodes a device's class-score vector as a SCORES frame.

    Args:
        scores: ``(C,)`` finite real scores (logits or probabilities); sent as float32.
        sender_id: Device id, 0..65535.
        sample_id: Sample id, 0..2**64-1.
        model_version: Checkpoint hash, 0..2**32-1.

    Returns:
        ``HEADER_BYTES + 4 * C`` bytes.

    Raises:
        ValueError: On a non-1-D, empty, non-finite or non-numeric score vector or an id out of
            range.
    """
    s = _to_numpy(scores, "scores")
    if s.dtype == np.bool_ or not (
        np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)
    ):
        raise ValueError(f"scores must have an integer or float dtype, got {s.dtype}")
    dims = _check_shape(FrameKind.SCORES, s.shape)
    with np.errstate(over="ignore"):  # an overflow to inf is rejected just below
        s32 = s.astype("<f4")
    if not np.isfinite(s32).all():
        raise ValueError("scores must be finite as float32 (no NaN or ±inf)")
    return _encode(FrameKind.SCORES, s32.tobytes(), dims, sender_id, sample_id, model_version)


def encode_features(
    features: ArrayLike, *, sender_id: int, sample_id: int, model_version: int
) -> bytes:
    """Encodes a binarized feature map as a FEATURES frame.

    Args:
        features: ``(C, H, W)``, ``(C, L)`` or ``(F,)`` ±1 map, each dim 1..65535. Values are
            binarized like :func:`pack_bits` (>= 0 -> +1), so a ±1 map round-trips exactly.
        sender_id: Device id, or the edge node id when an edge forwards its own features.
        sample_id: Sample id, 0..2**64-1.
        model_version: Checkpoint hash, 0..2**32-1.

    Returns:
        ``HEADER_BYTES + ceil(numel / 8)`` bytes.

    Raises:
        ValueError: On an empty map, more than 3 dims, a dim over 65535, a bad dtype or NaN, or
            an id out of range.
    """
    f = _to_numpy(features, "features")
    dims = _check_shape(FrameKind.FEATURES, f.shape)
    payload_bytes(FrameKind.FEATURES, dims)  # rejects maps beyond the uint32 length field
    return _encode(FrameKind.FEATURES, pack_bits(f), dims, sender_id, sample_id, model_version)


def encode_packed_features(
    packed: BytesLike, shape: tuple[int, ...], *, sender_id: int, sample_id: int, model_version: int
) -> bytes:
    """Encodes an already bit-packed feature map (e.g. from a C device) as a FEATURES frame.

    Args:
        packed: Exactly ``ceil(prod(shape) / 8)`` bytes in the FEATURES payload layout.
        shape: The feature map's shape, 1 to 3 dims.

    Raises:
        ValueError: If the byte count does not match ``shape`` or padding bits are set.
    """
    dims = _check_shape(FrameKind.FEATURES, tuple(shape))
    data = bytes(packed)
    expected = payload_bytes(FrameKind.FEATURES, dims)
    if len(data) != expected:
        raise ValueError(f"packed features of shape {dims} need {expected} bytes, got {len(data)}")
    pad = 8 * expected - math.prod(dims)
    if pad and data[-1] & ((1 << pad) - 1):
        raise ValueError(f"the last byte's {pad} padding bits must be zero")
    return _encode(FrameKind.FEATURES, data, dims, sender_id, sample_id, model_version)


def encode_frame(frame: Frame) -> bytes:
    """Encodes a :class:`Frame`; ``decode_frame(encode_frame(f)) == f`` for valid frames."""
    ids = {
        "sender_id": frame.sender_id,
        "sample_id": frame.sample_id,
        "model_version": frame.model_version,
    }
    if frame.kind == FrameKind.SCORES:
        return encode_scores(frame.payload, **ids)
    if frame.kind == FrameKind.FEATURES:
        return encode_features(frame.payload, **ids)
    raise ValueError(f"unknown frame kind {frame.kind!r}; expected one of {list(FrameKind)}")


@dataclass(frozen=True)
class FrameHeader:
    """A frame's header fields, read and checked without touching the payload."""

    kind: FrameKind
    sender_id: int
    sample_id: int
    model_version: int
    shape: tuple[int, ...]
    payload_len: int
    crc: int


def read_header(data: BytesLike) -> FrameHeader:
    """Parses and checks a frame's header (size, magic, version, length, kind, shape).

    Cheap whatever the payload: a receiver checks kind, sender, model and shape against what it
    expects before it decodes (and allocates for) the payload.

    Raises:
        FrameDecodeError: On a short frame, bad magic, unsupported version, unknown kind, bad
            shape or a declared length that does not match the frame or the shape.
    """
    n = len(data)
    if n < HEADER_BYTES:
        raise FrameDecodeError(f"frame too short: {n} bytes, a frame is at least {HEADER_BYTES}")
    magic, version, kind_raw, sender, sample, model, ndim, d0, d1, d2, plen, crc = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise FrameDecodeError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise FrameDecodeError(
            f"unsupported codec version {version}, this decoder reads version {FORMAT_VERSION}"
        )
    if n != HEADER_BYTES + plen:
        raise FrameDecodeError(
            f"length mismatch: header declares a {plen}-byte payload, "
            f"frame carries {n - HEADER_BYTES} bytes after the {HEADER_BYTES}-byte header"
        )
    try:
        kind = FrameKind(kind_raw)
    except ValueError:
        raise FrameDecodeError(
            f"unknown frame kind {kind_raw}, expected one of "
            + ", ".join(f"{k.value} ({k.name})" for k in FrameKind)
        ) from None
    if not 1 <= ndim <= MAX_DIMS or any((d0, d1, d2)[ndim:]):
        raise FrameDecodeError(
            f"bad shape: ndim {ndim} with dims {(d0, d1, d2)}; ndim must be 1..{MAX_DIMS} "
            "and unused dims 0"
        )
    dims = (d0, d1, d2)[:ndim]
    try:
        expected = payload_bytes(kind, dims)
    except ValueError as e:
        raise FrameDecodeError(f"bad shape for {kind.name}: {e}") from None
    if plen != expected:
        raise FrameDecodeError(
            f"length mismatch: {kind.name} of shape {dims} needs {expected} payload bytes, "
            f"header declares {plen}"
        )
    return FrameHeader(kind, sender, sample, model, dims, plen, crc)


def decode_frame(data: BytesLike, header: FrameHeader | None = None) -> Frame:
    """Parses and verifies one frame.

    Checks run in wire order: size, magic, version, declared length, kind and shape (all in
    :func:`read_header`), then the CRC and the payload: scores must be finite, feature padding
    bits zero.

    Args:
        data: Exactly one frame (bytes, bytearray or memoryview).
        header: ``read_header(data)`` if the caller already has it.

    Returns:
        The decoded frame; scores as ``(C,)`` float32, features as float32 ±1 of their shape.

    Raises:
        FrameDecodeError: If any check fails.
    """
    buf = bytes(data)
    h = header if header is not None else read_header(buf)
    payload = buf[HEADER_BYTES:]
    actual = zlib.crc32(payload, zlib.crc32(buf[:_CRC_OFFSET]))
    if actual != h.crc:
        raise FrameDecodeError(
            f"CRC mismatch: header says {h.crc:#010x}, data gives {actual:#010x}"
        )
    if h.kind == FrameKind.SCORES:
        values = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise FrameDecodeError("SCORES payload holds NaN or ±inf; scores must be finite")
    else:
        try:
            values = unpack_bits(payload, h.shape)
        except ValueError as e:
            raise FrameDecodeError(f"bad FEATURES payload: {e}") from None
    values.flags.writeable = False  # frames are immutable values
    return Frame(h.kind, h.sender_id, h.sample_id, h.model_version, values)
