"""All byte accounting of the wire: payloads, frame headers, MQTT overhead and SPEC §6's formula.

Three layers are counted apart, because SPEC §6 compares only the first with the paper:

- **payload**: score rows and bit-packed feature rows, what ``c = 4·|C| + (1 − l)·f·o/8`` counts;
- **header**: the frame header (:mod:`ddnn.wire.frame`), 6 to 9 bytes per frame in practice;
- **transport**: the MQTT 5 PUBLISH packet around each frame (TCP/IP and TLS not counted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ddnn.wire._array import check_int, check_shape
from ddnn.wire.bits import packed_bytes
from ddnn.wire.frame import (
    CAPTURE_BYTES,
    MAX_COUNT,
    MAX_SAMPLE,
    MAX_SENDER,
    MODEL_TAG_BYTES,
    FrameKind,
)
from ddnn.wire.scores import ScoreEncoding, score_bytes
from ddnn.wire.varint import varint_len

__all__ = [
    "MQTT_MAX_REMAINING",
    "WireBytes",
    "feature_payload_bytes",
    "formula_bytes_per_device",
    "frame_bytes",
    "frame_header_bytes",
    "mqtt_fixed_header_bytes",
    "mqtt_publish_overhead",
    "mqtt_variable_header_bytes",
    "raw_bytes_per_device",
    "score_payload_bytes",
]

MQTT_MAX_REMAINING = 268_435_455  # the largest remaining length a 4-byte MQTT varint holds


def score_payload_bytes(num_classes: int, encoding: ScoreEncoding | str) -> int:
    """Payload bytes of one score row: ``4·C``, ``2·C`` or ``C`` for float32, float16, int8."""
    return score_bytes(num_classes, encoding)


def feature_payload_bytes(shape: tuple[int, ...]) -> int:
    """Payload bytes of one bit-packed feature map of ``shape``: ``ceil(prod(shape) / 8)``."""
    return packed_bytes(math.prod(check_shape(shape)))


def frame_header_bytes(
    kind: FrameKind, sender: int, first_sample: int, count: int, gaps: Sequence[int] = ()
) -> int:
    """Exact header bytes of a frame: 1 + three varints + 2, plus 3 for a SCORES kind, plus the
    ``gaps`` varints for FEATURES_IDS (``count - 1`` of them, see :func:`~ddnn.wire.frame.id_gaps`).

    Raises:
        ValueError: If a field is out of the range the frame format carries.
    """
    kind = FrameKind(kind)
    count = check_int(count, "count", 1, MAX_COUNT)
    ids = (
        check_int(sender, "sender", 0, MAX_SENDER),
        check_int(first_sample, "first_sample", 0, MAX_SAMPLE - count + 1),
        count,
    )
    time = CAPTURE_BYTES if kind.encoding is not None else 0
    extra = 0
    if kind is FrameKind.FEATURES_IDS:
        if len(gaps) != count - 1:
            raise ValueError(f"a FEATURES_IDS frame of {count} samples has {count - 1} gaps")
        extra = sum(varint_len(g) for g in gaps)
    return 1 + sum(varint_len(v) for v in ids) + MODEL_TAG_BYTES + time + extra


def frame_bytes(
    kind: FrameKind,
    *,
    sender: int,
    first_sample: int,
    count: int,
    num_classes: int | None = None,
    feature_shape: tuple[int, ...] | None = None,
    gaps: Sequence[int] = (),
) -> int:
    """Exact length of a frame: its header plus ``count`` payload rows.

    Args:
        kind: The frame kind (a SCORES kind fixes the encoding).
        sender: Sender id.
        first_sample: First sample id.
        count: Samples in the frame.
        num_classes: Classes per row; required for SCORES kinds.
        feature_shape: Per-sample feature shape; required for FEATURES kinds.
        gaps: The id gaps of a FEATURES_IDS frame.
    """
    kind = FrameKind(kind)
    if kind.encoding is not None:
        if num_classes is None:
            raise ValueError(f"{kind.name} frames need num_classes")
        row = score_payload_bytes(num_classes, kind.encoding)
    else:
        if feature_shape is None:
            raise ValueError("FEATURES frames need feature_shape")
        row = feature_payload_bytes(feature_shape)
    return frame_header_bytes(kind, sender, first_sample, count, gaps) + count * row


def formula_bytes_per_device(
    num_classes: int,
    local_exit_fraction: float,
    feature_bits: int,
    encoding: ScoreEncoding | str = ScoreEncoding.FLOAT32,
) -> float:
    """SPEC §6's payload bytes per device per sample: ``score + (1 − l)·ceil(feature_bits / 8)``.

    ``feature_bits`` is the paper's ``f·o`` (filters × outputs per filter). For float32 scores
    and ``f·o`` a multiple of 8 this is exactly the paper's ``4·|C| + (1 − l)·f·o/8`` (140 B for
    |C| = 3, f = 4, o = 256, l = 0). The ceiling makes it equal to the mean measured payload
    when ``f·o`` is not a multiple of 8, since a packed map is padded to whole bytes.

    Args:
        num_classes: |C|.
        local_exit_fraction: l, the fraction of samples exiting locally, in [0, 1].
        feature_bits: f·o, the bits of one device's binary feature map.
        encoding: The score encoding.
    """
    if not 0.0 <= local_exit_fraction <= 1.0:
        raise ValueError(f"local exit fraction must be in [0, 1], got {local_exit_fraction}")
    bits = check_int(feature_bits, "feature_bits", 0, 2**63 - 1)
    up = (1.0 - local_exit_fraction) * packed_bytes(bits)
    return score_payload_bytes(num_classes, encoding) + up


def raw_bytes_per_device(input_shape: tuple[int, ...]) -> int:
    """Raw offloading: the device's input as 8-bit values, ``prod(shape)`` (3072 B for 3×32×32)."""
    return math.prod(check_shape(input_shape, "input_shape"))


def mqtt_variable_header_bytes(topic: str, qos: int, properties_len: int = 1) -> int:
    """The part of an MQTT 5 PUBLISH header that does not depend on the payload: topic (2-byte
    length + UTF-8 bytes), packet id (2 bytes, QoS 1 and 2 only) and property block.

    A sender computes it once per topic; :func:`mqtt_fixed_header_bytes` adds the rest per packet.

    Raises:
        ValueError: On a bad QoS, a topic over 65535 bytes or a bad ``properties_len``.
    """
    qos = check_int(qos, "qos", 0, 2)
    topic_len = check_int(len(topic.encode()), "topic length in bytes", 0, 0xFFFF)
    properties_len = check_int(properties_len, "properties_len", 1, MQTT_MAX_REMAINING)
    return 2 + topic_len + (2 if qos > 0 else 0) + properties_len


def mqtt_fixed_header_bytes(variable: int, payload_len: int) -> int:
    """The fixed header of a PUBLISH packet: 1 byte + the remaining-length varint of
    ``variable + payload_len`` (not checked: :func:`mqtt_publish_overhead` checks)."""
    return 1 + varint_len(variable + payload_len)


def mqtt_publish_overhead(topic: str, payload_len: int, qos: int, properties_len: int = 1) -> int:
    """Bytes an MQTT 5 PUBLISH packet adds around its payload.

    Fixed header (1 byte + the remaining-length varint) + topic (2-byte length + UTF-8 bytes)
    + packet id (2 bytes, QoS 1 and 2 only) + property block. TCP/IP, TLS and the PUBACK are not
    included.

    Args:
        topic: The topic name.
        payload_len: Payload (frame) length in bytes.
        qos: 0, 1 or 2.
        properties_len: The encoded property block including its length prefix (1 when empty).

    Raises:
        ValueError: On a bad QoS, a topic over 65535 bytes, or a packet MQTT cannot carry.
    """
    variable = mqtt_variable_header_bytes(topic, qos, properties_len)
    payload_len = check_int(payload_len, "payload_len", 0, MQTT_MAX_REMAINING)
    remaining = variable + payload_len
    if remaining > MQTT_MAX_REMAINING:
        raise ValueError(
            f"an MQTT packet holds at most {MQTT_MAX_REMAINING} bytes, got {remaining}"
        )
    return mqtt_fixed_header_bytes(variable, payload_len) + variable


@dataclass(frozen=True)
class WireBytes:
    """Bytes one link carried, split by layer, and what they covered; sums with ``+``.

    Attributes:
        payload: Payload bytes (what SPEC §6's formula counts).
        header: Frame-header bytes.
        transport: MQTT PUBLISH bytes around the frames.
        frames: Frames sent.
        samples: (sample, sender) pairs covered. On a device link, ``per_sample()`` is thus the
            per-device-per-sample figure of SPEC §6.
    """

    payload: int = 0
    header: int = 0
    transport: int = 0
    frames: int = 0
    samples: int = 0

    @property
    def total(self) -> int:
        """All bytes counted: payload + header + transport."""
        return self.payload + self.header + self.transport

    def __add__(self, other: WireBytes) -> WireBytes:
        if not isinstance(other, WireBytes):
            return NotImplemented
        return WireBytes(
            self.payload + other.payload,
            self.header + other.header,
            self.transport + other.transport,
            self.frames + other.frames,
            self.samples + other.samples,
        )

    def per_sample(
        self, part: Literal["payload", "header", "transport", "total"] = "payload"
    ) -> float:
        """Mean bytes of ``part`` per covered (sample, sender) pair; 0.0 when nothing was sent."""
        value = self.total if part == "total" else getattr(self, part)
        return value / self.samples if self.samples else 0.0

    @classmethod
    def for_frame(
        cls,
        kind: FrameKind,
        *,
        sender: int,
        first_sample: int,
        count: int,
        num_classes: int | None = None,
        feature_shape: tuple[int, ...] | None = None,
        topic: str | None = None,
        qos: int = 1,
        properties_len: int = 1,
    ) -> WireBytes:
        """The bytes one frame costs; ``transport`` is 0 unless a ``topic`` is given."""
        header = frame_header_bytes(kind, sender, first_sample, count)
        length = frame_bytes(
            kind,
            sender=sender,
            first_sample=first_sample,
            count=count,
            num_classes=num_classes,
            feature_shape=feature_shape,
        )
        transport = 0
        if topic is not None:
            transport = mqtt_publish_overhead(topic, length, qos, properties_len)
        return cls(length - header, header, transport, frames=1, samples=count)
