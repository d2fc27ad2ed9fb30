"""Frame format v2: the exact bytes of every message a DDNN node sends (SPEC §6).

A frame carries ``count`` consecutive samples of one sender: a short header, then ``count``
payload rows in sample order. Integers are little-endian; ids are unsigned LEB128 varints
(:mod:`ddnn.wire.varint`), minimal, at most 8 bytes each.

=======  =====  ==============  =========================================================
field    size   encoding        meaning
=======  =====  ==============  =========================================================
head     1      uint8           ``(VERSION << 4) | kind``; ``VERSION = 2``, kind in the low
                                nibble: 1 SCORES_F32, 2 SCORES_F16, 3 SCORES_I8, 4 FEATURES,
                                7 FEATURES_IDS (5 and 6 are control messages,
                                :mod:`ddnn.wire.control`)
sender   1-3    varint          end device id, or the edge id for an edge's features;
                                0..65535
first    1-8    varint          id of the first sample in the frame; 0..2**53 - 1 (exact in
                                float64 and JSON); ``first + count - 1`` must be in range too
count    1-3    varint          samples in the frame, 1..65535
model    2      uint16          ``model_tag(version)``: the low 16 bits of the 32-bit model
                                version; receivers drop frames of another model
time     3      uint24          SCORES kinds only: capture time, Unix milliseconds mod 2**24
                                (``capture_field``); FEATURES frames have no time field
gaps     count  varints         FEATURES_IDS only: for each sample after the first,
         - 1                    ``id - previous id - 1`` (ids strictly increase): the samples
                                need not be consecutive, so a device answers one feature ask
                                with one frame
payload  count  rows            SCORES: ``score_bytes(C, encoding)`` per sample
         x row                  (:mod:`ddnn.wire.scores`); FEATURES: ``ceil(numel / 8)``
                                bit-packed bytes per sample (:mod:`ddnn.wire.bits`)
=======  =====  ==============  =========================================================

With sender, first sample and count below 128 the header is 1+1+1+1+2+3 = 9 bytes for scores
and 6 bytes for features. For example, 2 samples x 3 classes of float32 scores from sender 5,
samples 300 and 301, model version 0xDEADBEEF, captured at t = 1.5 s, are the 34 bytes
``21 | 05 | ac 02 | 02 | ef be | dc 05 00 |`` then six float32 values (24 B).

Neither the number of classes nor the feature shape is on the wire: a receiver knows them
(:class:`ddnn.wire.decode.Expect`) and :func:`ddnn.wire.decode.decode_frame` checks the payload
length against ``count`` rows of that size before it allocates anything, so any truncation or
extension of a frame is caught. This module encodes frames and parses headers.

There is no CRC: frames travel over MQTT, i.e. TCP (and TLS with ``--secure``), whose checksums
and MAC already cover every byte; the exact length check and the ``"padding"`` and
``"non_finite"`` checks catch what a buggy sender could still produce.

A v1 frame begins with ``b"DN"`` (0x44, which reads as version 4): it is refused with reason
``"version_1"``, so no v2 or later format may use 0x44 as its first byte.

The capture time wraps every 2**24 ms (4.66 h); :func:`unwrap_capture` picks the instant nearest
the receiver's clock, which is right while sender and receiver clocks (plus the transit time)
agree within ±2.33 h.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from ddnn.wire._array import ArrayLike, BytesLike, check_int, check_real, check_shape, to_numpy
from ddnn.wire.bits import check_padding, pack_bits_batch, packed_bytes
from ddnn.wire.errors import FrameDecodeError
from ddnn.wire.scores import ScoreEncoding, as_encoding, encode_scores
from ddnn.wire.varint import decode_varint, encode_varint

__all__ = [
    "CAPTURE_BYTES",
    "MAX_COUNT",
    "MAX_MODEL_VERSION",
    "MAX_SAMPLE",
    "MAX_SENDER",
    "MODEL_TAG_BYTES",
    "VERSION",
    "FrameHeader",
    "FrameKind",
    "capture_field",
    "encode_features_frame",
    "encode_features_frame_ids",
    "id_gaps",
    "encode_scores_frame",
    "model_tag",
    "parse_header",
    "read_header",
    "unwrap_capture",
]

VERSION = 2
V1_FIRST_BYTE = 0x44  # b"D", first byte of the v1 magic b"DN"
MAX_SENDER = 0xFFFF
MAX_SAMPLE = 2**53 - 1
MAX_COUNT = 0xFFFF
MAX_MODEL_VERSION = 0xFFFF_FFFF
MODEL_TAG_BYTES = 2
CAPTURE_BYTES = 3
CAPTURE_PERIOD_MS = 1 << 24


class FrameKind(IntEnum):
    """What a frame's payload holds (the low nibble of its first byte)."""

    SCORES_F32 = 1
    SCORES_F16 = 2
    SCORES_I8 = 3
    FEATURES = 4  # bit-packed ±1 feature maps of consecutive samples
    FEATURES_IDS = 7  # the same, for any increasing sample ids (gaps in the header)

    @property
    def is_features(self) -> bool:
        return self in (FrameKind.FEATURES, FrameKind.FEATURES_IDS)

    @property
    def encoding(self) -> ScoreEncoding | None:
        """The score encoding of a SCORES kind; None for FEATURES."""
        return _KIND_ENCODING.get(self)

    @classmethod
    def for_scores(cls, encoding: ScoreEncoding | str) -> FrameKind:
        """The SCORES kind that carries ``encoding``."""
        return _ENCODING_KIND[as_encoding(encoding)]


_KIND_ENCODING = {
    FrameKind.SCORES_F32: ScoreEncoding.FLOAT32,
    FrameKind.SCORES_F16: ScoreEncoding.FLOAT16,
    FrameKind.SCORES_I8: ScoreEncoding.INT8,
}
_ENCODING_KIND = {enc: kind for kind, enc in _KIND_ENCODING.items()}


def model_tag(version: int) -> int:
    """The 16-bit tag a frame carries for a 32-bit model version: its low 16 bits.

    The tag guards against a node running another checkpoint, not against an attacker (TLS and
    the broker's ACL do that): two different versions share a tag with probability 1/65536.
    """
    return check_int(version, "model_version", 0, MAX_MODEL_VERSION) & 0xFFFF


def capture_field(unix_seconds: float) -> int:
    """The uint24 time field for a capture time: Unix milliseconds (rounded) mod 2**24."""
    if not (math.isfinite(unix_seconds) and unix_seconds >= 0):
        raise ValueError(f"capture time must be finite Unix seconds >= 0, got {unix_seconds}")
    return round(unix_seconds * 1000) % CAPTURE_PERIOD_MS


def unwrap_capture(field: int, now_unix_seconds: float) -> float:
    """The capture time, in Unix seconds, nearest ``now`` whose time field is ``field``.

    Exact to the millisecond while the true capture time is within ±2**23 ms (±2.33 h) of
    ``now``; on an exact tie the earlier instant is chosen.
    """
    field = check_int(field, "capture field", 0, CAPTURE_PERIOD_MS - 1)
    if not math.isfinite(now_unix_seconds):
        raise ValueError(f"now must be finite Unix seconds, got {now_unix_seconds}")
    now_ms = round(now_unix_seconds * 1000)
    delta = (field - now_ms) % CAPTURE_PERIOD_MS
    if delta >= CAPTURE_PERIOD_MS // 2:
        delta -= CAPTURE_PERIOD_MS
    return (now_ms + delta) / 1000


# ---------------------------------------------------------------------------------------------
# encoding


def _header(
    kind: FrameKind,
    sender: int,
    first: int,
    count: int,
    version: int,
    time: int | None,
    gaps: Sequence[int] = (),
) -> bytes:
    sender = check_int(sender, "sender", 0, MAX_SENDER)
    count = check_int(count, "count (samples in the frame)", 1, MAX_COUNT)
    first = check_int(first, "first_sample", 0, MAX_SAMPLE - count + 1 - sum(gaps))
    head = bytes([(VERSION << 4) | kind]) + encode_varint(sender) + encode_varint(first)
    head += encode_varint(count) + model_tag(version).to_bytes(MODEL_TAG_BYTES, "little")
    if time is not None:
        head += time.to_bytes(CAPTURE_BYTES, "little")
    if kind is FrameKind.FEATURES_IDS:
        head += b"".join(encode_varint(g) for g in gaps)
    return head


def id_gaps(sample_ids: Sequence[int]) -> list[int]:
    """The FEATURES_IDS gaps of strictly increasing ids: ``id - previous id - 1`` after the first.

    Raises:
        ValueError: If the ids are empty or do not strictly increase.
    """
    ids = [check_int(s, "sample id", 0, MAX_SAMPLE) for s in sample_ids]
    if not ids:
        raise ValueError("a frame carries at least one sample")
    gaps = [b - a - 1 for a, b in zip(ids, ids[1:], strict=False)]
    if any(g < 0 for g in gaps):
        raise ValueError(f"sample ids must strictly increase, got {ids[:8]}…")
    return gaps


def encode_scores_frame(
    scores: ArrayLike,
    *,
    sender: int,
    first_sample: int,
    model_version: int,
    encoding: ScoreEncoding | str,
    captured: float,
) -> bytes:
    """Encodes a batch of one sender's class-score rows as one SCORES frame.

    Args:
        scores: ``(B, C)`` finite scores (logits) of samples ``first_sample .. first_sample+B-1``.
        sender: Device id, 0..65535.
        first_sample: Id of the first row's sample.
        model_version: 32-bit model version; its low 16 bits are sent.
        encoding: Payload encoding; selects the kind.
        captured: When the input was captured, Unix seconds (sent to the millisecond mod 2**24).

    Returns:
        ``frame_header_bytes(...) + B * score_bytes(C, encoding)`` bytes.

    Raises:
        ValueError: On a bad shape, a non-finite score, or a field out of range.
    """
    kind = FrameKind.for_scores(encoding)
    s = to_numpy(scores, "scores")
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (B, C), got shape {s.shape}")
    payload = encode_scores(s, encoding)
    time = capture_field(captured)
    return _header(kind, sender, first_sample, s.shape[0], model_version, time) + payload


def encode_features_frame(
    features: ArrayLike,
    *,
    sender: int,
    first_sample: int,
    model_version: int,
    shape: tuple[int, ...],
) -> bytes:
    """Encodes a batch of one sender's binarized feature maps as one FEATURES frame.

    Args:
        features: Either already packed rows, a ``(B, ceil(prod(shape) / 8))`` uint8 array (a
            uint8 array is always taken as packed), or ``(B, *shape)`` ±1 maps of any other
            integer or float dtype, binarized with sign(0) = +1.
        sender: Device id, or the edge id when an edge forwards its own features.
        first_sample: Id of the first row's sample.
        model_version: 32-bit model version; its low 16 bits are sent.
        shape: Per-sample feature shape; the receiver must expect the same.

    Returns:
        ``frame_header_bytes(...) + B * ceil(prod(shape) / 8)`` bytes.

    Raises:
        ValueError: On a shape mismatch, set padding bits, NaN, or a field out of range.
    """
    packed = _packed_rows(features, shape)
    head = _header(FrameKind.FEATURES, sender, first_sample, len(packed), model_version, None)
    return head + packed.tobytes()


def _packed_rows(features: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """``features`` (see :func:`encode_features_frame`) as checked, contiguous packed rows."""
    f = to_numpy(features, "features")
    dims = check_shape(shape, "shape")
    numel = math.prod(dims)
    if f.dtype == np.uint8:
        nbytes = packed_bytes(numel)
        if f.ndim != 2 or f.shape[1] != nbytes:
            raise ValueError(
                f"packed features of shape {dims} must be (B, {nbytes}) uint8, got {f.shape}"
            )
        try:
            check_padding(f, numel)
        except FrameDecodeError as e:
            raise ValueError(f"packed features: {e}") from None
        return np.ascontiguousarray(f)
    check_real(f, "features")
    if f.shape[1:] != dims:
        raise ValueError(f"features must have shape (B, *{dims}), got {f.shape}")
    return np.ascontiguousarray(pack_bits_batch(f))


def encode_features_frame_ids(
    features: ArrayLike,
    *,
    sender: int,
    sample_ids: Sequence[int],
    model_version: int,
    shape: tuple[int, ...],
) -> bytes:
    """Like :func:`encode_features_frame`, for any strictly increasing ``sample_ids`` (one per
    row): a FEATURES frame when they are consecutive, else a FEATURES_IDS frame.

    Raises:
        ValueError: As :func:`encode_features_frame`, or if the ids do not strictly increase or
            are not one per row.
    """
    gaps = id_gaps(sample_ids)
    packed = _packed_rows(features, shape)
    count = len(packed)
    if count != len(sample_ids):
        raise ValueError(f"{len(sample_ids)} sample ids for {count} feature rows")
    kind = FrameKind.FEATURES_IDS if any(gaps) else FrameKind.FEATURES
    head = _header(
        kind, sender, sample_ids[0], count, model_version, None, gaps if any(gaps) else ()
    )
    return head + packed.tobytes()


# ---------------------------------------------------------------------------------------------
# decoding


@dataclass(frozen=True)
class FrameHeader:
    """A frame's header fields, parsed and range-checked, with no payload work.

    Attributes:
        captured_field: The raw uint24 time field (SCORES kinds); None for FEATURES.
        header_len: Bytes before the payload.
    """

    kind: FrameKind
    encoding: ScoreEncoding | None
    sender: int
    first_sample: int
    count: int
    model_tag: int
    captured_field: int | None
    header_len: int
    gaps: tuple[int, ...] = ()

    @property
    def sample_ids(self) -> range | tuple[int, ...]:
        """The frame's sample ids, in order."""
        if not self.gaps:
            return range(self.first_sample, self.first_sample + self.count)
        ids, s = [self.first_sample], self.first_sample
        for g in self.gaps:
            s += g + 1
            ids.append(s)
        return tuple(ids)


def as_buffer(data: BytesLike) -> bytes | bytearray | memoryview:
    """``data`` as a flat byte sequence, without copying it."""
    if isinstance(data, bytes | bytearray):
        return data
    if isinstance(data, memoryview):
        return data.cast("B")  # a view of unsigned bytes, whatever its format
    raise TypeError(f"a frame is bytes, bytearray or memoryview, got {type(data).__name__}")


def read_header(data: BytesLike) -> FrameHeader:
    """Parses and checks a frame's header; cheap however long the payload.

    Checks, in order: ``"truncated"`` (empty), ``"version_1"``, ``"version"``, ``"kind"`` (not a
    known kind), then the fields in wire order (``"truncated"`` if the data ends inside them,
    ``"varint"`` for a malformed varint), then ``"sender"`` (> 65535), ``"count"`` (0 or
    > 65535) and ``"sample_range"`` (last sample id > 2**53 - 1).

    Raises:
        FrameDecodeError: With the reason of the first failed check.
    """
    return FrameHeader(*parse_header(as_buffer(data)))


_KINDS = {k.value: (k, k.encoding) for k in FrameKind}  # the low nibble -> (kind, encoding)


def parse_header(buf: bytes | bytearray | memoryview) -> tuple[Any, ...]:
    """:func:`read_header`'s fields as a plain tuple, in :class:`FrameHeader`'s order (what a
    receiver's hot path reads without building the dataclass); ``buf`` is flat bytes."""
    if not buf:
        raise FrameDecodeError("empty frame", "truncated")
    head = buf[0]
    if head == V1_FIRST_BYTE:
        raise FrameDecodeError(
            "this is a v1 frame (it starts with b'DN'); v1 frames are no longer read, "
            f"senders must use frame format v{VERSION}",
            "version_1",
        )
    version, kind_raw = head >> 4, head & 0x0F
    if version != VERSION:
        raise FrameDecodeError(
            f"unsupported frame format version {version}, this decoder reads {VERSION}", "version"
        )
    known = _KINDS.get(kind_raw)
    if known is None:
        names = ", ".join(f"{k.value} ({k.name})" for k in FrameKind)
        raise FrameDecodeError(f"unknown frame kind {kind_raw}; known: {names}", "kind")
    kind, encoding = known
    sender, pos = decode_varint(buf, 1)
    first, pos = decode_varint(buf, pos)
    count, pos = decode_varint(buf, pos)
    end = pos + MODEL_TAG_BYTES + (CAPTURE_BYTES if encoding else 0)
    if len(buf) < end:
        raise FrameDecodeError(f"{kind.name} header needs {end} bytes, got {len(buf)}", "truncated")
    tag = buf[pos] | buf[pos + 1] << 8  # uint16, little-endian
    time = buf[pos + 2] | buf[pos + 3] << 8 | buf[pos + 4] << 16 if encoding else None  # uint24
    if sender > MAX_SENDER:
        raise FrameDecodeError(f"sender {sender} is over {MAX_SENDER}", "sender")
    if not 1 <= count <= MAX_COUNT:
        raise FrameDecodeError(f"count {count} is not in [1, {MAX_COUNT}]", "count")
    gaps: tuple[int, ...] = ()
    if kind is FrameKind.FEATURES_IDS:
        if len(buf) - end < count - 1:  # each gap takes a byte at least: before reading them
            raise FrameDecodeError(f"{count - 1} gaps do not fit in the frame", "truncated")
        read = []
        for _ in range(count - 1):
            gap, end = decode_varint(buf, end)
            read.append(gap)
        gaps = tuple(read)
    last = first + count - 1 + sum(gaps)
    if last > MAX_SAMPLE:
        raise FrameDecodeError(f"samples {first}..{last} go past {MAX_SAMPLE}", "sample_range")
    return kind, encoding, sender, first, count, tag, time, end, gaps
