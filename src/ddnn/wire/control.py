"""Binary control messages: the aggregator's position (PROGRESS), its feature asks (ASKS), and the
trigger's capture ticks (TICK).

Both are sent to every device, so their bytes count on every device's link; they share the frame
head byte (:mod:`ddnn.wire.frame`), with kinds of their own, and unsigned LEB128 varints.

========  ====================================================================================
message   layout
========  ====================================================================================
PROGRESS  ``head`` (0x25) | ``decided + 1`` | ``latest + 1`` [| ``switch_at`` | ``tag``]: the
          highest sample id decided and the newest in-window id any device sent, -1 (encoded
          0) meaning none yet. 3 bytes while both ids are below 127, at most 17. After a model
          rollout the aggregator appends where the deployment switches: samples from
          ``switch_at`` (varint) on are served by the model whose 16-bit frame tag is ``tag``
          (2 bytes, little-endian) — 3 to 6 bytes more.
ASKS      ``head`` (0x26) | ``mask_bytes`` | ``count`` | ``count`` x (``gap`` | ``mask``): which
          devices send which samples' features. Samples are strictly increasing; ``gap`` is the
          first sample id, then ``sample - previous - 1``. ``mask`` is ``mask_bytes`` bytes,
          little-endian, bit k set when device k is asked. For six devices and nearby samples,
          2 bytes per sample after a 3-byte preamble (JSON took about 20).
TICK      ``head`` (0x28) | ``sample`` | ``at``: capture tick ``sample`` (every device takes its
          latest reading as that sample), sent by the trigger at Unix time ``at`` in
          milliseconds. About 9 bytes.
========  ====================================================================================

Every field is checked: a varint must be minimal; a mask must name at least one device and no
device above :data:`~ddnn.wire.frame.MAX_SENDER`; the message must end exactly after its last
field. Any violation raises :class:`~ddnn.wire.errors.FrameDecodeError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import IntEnum

from ddnn.wire._array import BytesLike, check_int
from ddnn.wire.errors import FrameDecodeError
from ddnn.wire.frame import MAX_SAMPLE, MAX_SENDER, V1_FIRST_BYTE, VERSION
from ddnn.wire.varint import decode_varint, encode_varint

__all__ = [
    "MAX_ASKS",
    "ControlKind",
    "decode_asks",
    "decode_progress",
    "decode_tick",
    "encode_asks",
    "encode_progress",
    "encode_tick",
    "samples_asked_of",
]

MAX_ASKS = 0xFFFF  # samples in one ASKS message
MAX_MASK_BYTES = (MAX_SENDER + 8) // 8  # enough bits for every sender id


class ControlKind(IntEnum):
    """Kinds of control messages (low nibble of the head byte; frames use 1-4 and 7)."""

    PROGRESS = 5
    ASKS = 6
    TICK = 8

    @property
    def head(self) -> int:
        return (VERSION << 4) | self


def encode_progress(decided: int, latest: int, switch: tuple[int, int] | None = None) -> bytes:
    """A PROGRESS message: highest sample decided and newest seen, each -1 for none, and
    optionally the model switch ``(switch_at, tag)`` of a rollout."""
    d = check_int(decided, "decided", -1, MAX_SAMPLE)
    lt = check_int(latest, "latest", -1, MAX_SAMPLE)
    out = bytes([ControlKind.PROGRESS.head]) + encode_varint(d + 1) + encode_varint(lt + 1)
    if switch is not None:
        at = check_int(switch[0], "switch_at", 0, MAX_SAMPLE)
        tag = check_int(switch[1], "tag", 0, 0xFFFF)
        out += encode_varint(at) + tag.to_bytes(2, "little")
    return out


def decode_progress(buf: BytesLike) -> tuple[int, int, tuple[int, int] | None]:
    """``(decided, latest, switch)`` from a PROGRESS message; ``switch`` is ``(switch_at, tag)``
    or ``None``.

    Raises:
        FrameDecodeError: If ``buf`` is not exactly one valid PROGRESS message.
    """
    pos = _head(buf, ControlKind.PROGRESS)
    decided, pos = _sample_plus_one(buf, pos, "decided")
    latest, pos = _sample_plus_one(buf, pos, "latest")
    switch = None
    if pos < len(buf):
        at, pos = decode_varint(buf, pos)
        if at > MAX_SAMPLE:
            raise FrameDecodeError(f"switch_at {at} beyond {MAX_SAMPLE}", "sample_range")
        if len(buf) < pos + 2:
            raise FrameDecodeError("PROGRESS ends inside its model tag", "truncated")
        switch = (at, int.from_bytes(bytes(buf[pos : pos + 2]), "little"))
        pos += 2
    _end(buf, pos)
    return decided, latest, switch


MAX_TICK_MS = 2**53 - 1  # Unix milliseconds, exact in a float64


def encode_tick(sample: int, at: float) -> bytes:
    """A TICK message: capture sample ``sample``, triggered at Unix time ``at`` (seconds)."""
    s = check_int(sample, "sample", 0, MAX_SAMPLE)
    if not (math.isfinite(at) and 0 <= at * 1000 <= MAX_TICK_MS):
        raise ValueError(f"tick time must be finite Unix seconds >= 0, got {at}")
    return bytes([ControlKind.TICK.head]) + encode_varint(s) + encode_varint(round(at * 1000))


def decode_tick(buf: BytesLike) -> tuple[int, float]:
    """``(sample, Unix seconds)`` from a TICK message.

    Raises:
        FrameDecodeError: If ``buf`` is not exactly one valid TICK message.
    """
    pos = _head(buf, ControlKind.TICK)
    sample, pos = decode_varint(buf, pos)
    if sample > MAX_SAMPLE:
        raise FrameDecodeError(f"tick sample {sample} beyond {MAX_SAMPLE}", "sample_range")
    at_ms, pos = decode_varint(buf, pos)
    if at_ms > MAX_TICK_MS:
        raise FrameDecodeError(f"tick time {at_ms} ms beyond {MAX_TICK_MS}", "sample_range")
    _end(buf, pos)
    return sample, at_ms / 1000


def encode_asks(asks: Iterable[tuple[int, Iterable[int]]]) -> bytes:
    """An ASKS message for ``(sample, devices)`` pairs, sample ids strictly increasing.

    Raises:
        ValueError: On decreasing or repeated samples, an empty device set, an id out of range,
            or more than :data:`MAX_ASKS` samples.
    """
    pairs = [(s, sorted(set(devices))) for s, devices in asks]
    if not 1 <= len(pairs) <= MAX_ASKS:
        raise ValueError(f"an ASKS message holds 1..{MAX_ASKS} samples, got {len(pairs)}")
    top = 0
    for s, devices in pairs:
        check_int(s, "sample", 0, MAX_SAMPLE)
        if not devices:
            raise ValueError(f"sample {s} asks no device")
        top = max(top, check_int(devices[-1], "device", 0, MAX_SENDER))
        check_int(devices[0], "device", 0, MAX_SENDER)
    mask_bytes = top // 8 + 1
    out = bytearray([ControlKind.ASKS.head])
    out += encode_varint(mask_bytes) + encode_varint(len(pairs))
    previous = -1
    for s, devices in pairs:
        if s <= previous:
            raise ValueError(f"ASKS samples must increase strictly: {s} after {previous}")
        out += encode_varint(s - previous - 1)
        previous = s
        mask = sum(1 << k for k in devices)
        out += mask.to_bytes(mask_bytes, "little")
    return bytes(out)


def decode_asks(buf: BytesLike) -> list[tuple[int, list[int]]]:
    """``[(sample, [device, …]), …]`` from an ASKS message.

    Raises:
        FrameDecodeError: If ``buf`` is not exactly one valid ASKS message.
    """
    return [(sample, _bits(mask)) for sample, mask in _asks(buf)]


def samples_asked_of(buf: BytesLike, device: int) -> list[int]:
    """The samples an ASKS message asks ``device`` for: what a device reads, in time linear in
    the message's length whatever its masks hold.

    Raises:
        FrameDecodeError: If ``buf`` is not exactly one valid ASKS message.
    """
    return [sample for sample, mask in _asks(buf) if mask >> device & 1]


def _asks(buf: BytesLike) -> list[tuple[int, int]]:
    """(sample, device mask) pairs of a checked ASKS message."""
    pos = _head(buf, ControlKind.ASKS)
    mask_bytes, pos = decode_varint(buf, pos)
    if not 1 <= mask_bytes <= MAX_MASK_BYTES:
        raise FrameDecodeError(f"ASKS mask of {mask_bytes} bytes (1..{MAX_MASK_BYTES})", "length")
    count, pos = decode_varint(buf, pos)
    if not 1 <= count <= MAX_ASKS:
        raise FrameDecodeError(f"ASKS of {count} samples (1..{MAX_ASKS})", "count")
    if len(buf) - pos < count * (1 + mask_bytes):  # before building anything
        raise FrameDecodeError(f"ASKS of {count} samples in {len(buf)} bytes", "truncated")
    asks: list[tuple[int, int]] = []
    previous = -1
    for _ in range(count):
        gap, pos = decode_varint(buf, pos)
        sample = previous + 1 + gap
        if sample > MAX_SAMPLE:
            raise FrameDecodeError(f"ASKS sample id {sample} beyond {MAX_SAMPLE}", "sample_range")
        if pos + mask_bytes > len(buf):
            raise FrameDecodeError("ASKS message ends inside a device mask", "truncated")
        mask = (
            buf[pos] if mask_bytes == 1 else int.from_bytes(buf[pos : pos + mask_bytes], "little")
        )
        pos += mask_bytes
        if mask == 0:
            raise FrameDecodeError(f"ASKS sample {sample} asks no device", "sender")
        asks.append((sample, mask))
        previous = sample
    _end(buf, pos)
    return asks


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _head(buf: BytesLike, kind: ControlKind) -> int:
    if len(buf) < 1:
        raise FrameDecodeError(f"empty {kind.name} message", "truncated")
    head = buf[0]
    if head == V1_FIRST_BYTE:
        raise FrameDecodeError("a v1 message (JSON or b'DN' frame)", "version_1")
    if head >> 4 != VERSION:
        raise FrameDecodeError(
            f"format version {head >> 4}, this reader knows {VERSION}", "version"
        )
    if head & 0x0F != kind:
        raise FrameDecodeError(f"kind {head & 0x0F} where {kind.name} was expected", "kind")
    return 1


def _sample_plus_one(buf: BytesLike, pos: int, what: str) -> tuple[int, int]:
    value, pos = decode_varint(buf, pos)
    if value > MAX_SAMPLE + 1:
        raise FrameDecodeError(f"{what} {value - 1} beyond {MAX_SAMPLE}", "sample_range")
    return value - 1, pos


def _end(buf: BytesLike, pos: int) -> None:
    if pos != len(buf):
        raise FrameDecodeError(f"{len(buf) - pos} bytes after the message's end", "length")
