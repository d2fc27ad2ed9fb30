"""Receiving frames: what a receiver expects, and the checked decoding of a frame against it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ddnn.wire._array import BytesLike, check_int, check_shape
from ddnn.wire.bits import check_padding, packed_bytes, unpack_bits_batch
from ddnn.wire.errors import FrameDecodeError
from ddnn.wire.frame import (
    MAX_COUNT,
    MAX_MODEL_VERSION,
    MAX_SENDER,
    FrameKind,
    as_buffer,
    model_tag,
    parse_header,
    unwrap_capture,
)
from ddnn.wire.scores import ScoreEncoding, decode_scores, score_bytes

__all__ = ["Expect", "Frame", "decode_frame"]


@dataclass(frozen=True)
class Expect:
    """What a receiver knows before a frame arrives; :func:`decode_frame` checks frames against it.

    Attributes:
        model_version: The receiver's 32-bit model version; frames must carry its tag.
        kinds: Frame kinds accepted (e.g. only the configured score encoding); stored as a
            frozenset.
        num_classes: Classes per score row; required if a SCORES kind is accepted.
        feature_shapes: Per-sender feature shape; required if FEATURES is accepted, and a
            FEATURES frame from a sender not listed is refused (``"sender"``).
        senders: Sender ids accepted for any kind, stored as a frozenset; None accepts all.
        max_count: Most samples per frame accepted, 1..65535.
    """

    model_version: int
    kinds: AbstractSet[FrameKind]
    num_classes: int | None = None
    feature_shapes: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    senders: AbstractSet[int] | None = None
    max_count: int = MAX_COUNT

    def __post_init__(self) -> None:
        check_int(self.model_version, "model_version", 0, MAX_MODEL_VERSION)
        check_int(self.max_count, "max_count", 1, MAX_COUNT)
        kinds = frozenset(FrameKind(k) for k in _iterable(self.kinds, "kinds"))
        if not kinds:
            raise ValueError("kinds must name at least one FrameKind")
        if any(k.encoding for k in kinds):
            if self.num_classes is None:
                raise ValueError("num_classes is required when a SCORES kind is accepted")
            check_int(self.num_classes, "num_classes", 1, 2**31 - 1)
        shapes = {
            check_int(s, "feature sender", 0, MAX_SENDER): check_shape(shape, f"shape of {s}")
            for s, shape in self.feature_shapes.items()
        }
        if any(k.is_features for k in kinds) and not shapes:
            raise ValueError("feature_shapes is required when FEATURES frames are accepted")
        senders = self.senders
        if senders is not None:
            senders = frozenset(
                check_int(s, "sender", 0, MAX_SENDER) for s in _iterable(senders, "senders")
            )
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "feature_shapes", MappingProxyType(shapes))
        object.__setattr__(self, "senders", senders)
        # what decoding looks up per frame, worked out once
        object.__setattr__(self, "_tag", model_tag(self.model_version))
        object.__setattr__(self, "_numel", {k: math.prod(v) for k, v in shapes.items()})
        classes = self.num_classes
        rows = (
            {}
            if classes is None
            else {k: score_bytes(classes, e) for k in kinds if (e := k.encoding)}
        )
        object.__setattr__(self, "_score_bytes", rows)

    def sample_bytes(self, kind: FrameKind, sender: int) -> int:
        """Payload bytes per sample of an accepted ``kind`` from ``sender``."""
        if kind.is_features:
            return packed_bytes(self._numel[sender])  # type: ignore[attr-defined]
        assert kind.encoding is not None and self.num_classes is not None
        return self._score_bytes[kind]  # type: ignore[attr-defined,no-any-return]


def _iterable(value: Iterable[int], name: str) -> Iterable[int]:
    if isinstance(value, int | str | bytes):
        raise ValueError(f"{name} must be a collection, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded, checked frame: ``count`` samples of one sender (consecutive but for
    FEATURES_IDS frames, whose ids are in ``ids``).

    Attributes:
        encoding: Score encoding for SCORES kinds; None for FEATURES.
        model_tag: The 16-bit model tag (it matched the receiver's model).
        captured: Capture time in Unix seconds (ms resolution) for scores; None for features.
        rows: Read-only. SCORES: ``(count, C)`` float32 (logits; log-probabilities for int8).
            FEATURES: ``(count, ceil(numel / 8))`` uint8 packed rows, see :meth:`unpacked`.
        header_len: Bytes of the frame's header; the rest is ``count`` equal payload rows.
    """

    kind: FrameKind
    encoding: ScoreEncoding | None
    sender: int
    first_sample: int
    count: int
    model_tag: int
    captured: float | None
    rows: np.ndarray
    header_len: int = 0
    ids: tuple[int, ...] | None = None  # FEATURES_IDS: every sample id

    @property
    def sample_ids(self) -> range | tuple[int, ...]:
        """The sample ids of ``rows``, in order."""
        if self.ids is not None:
            return self.ids
        return range(self.first_sample, self.first_sample + self.count)

    def unpacked(self, shape: tuple[int, ...]) -> np.ndarray:
        """FEATURES rows as a ``(count, *shape)`` float32 ±1 array."""
        if not self.kind.is_features:
            raise ValueError(f"unpacked() needs a FEATURES frame, this is {self.kind.name}")
        return unpack_bits_batch(self.rows, shape)


def _check_expected(kind: FrameKind, sender: int, count: int, expect: Expect) -> None:
    if kind not in expect.kinds:
        accepted = ", ".join(sorted(k.name for k in expect.kinds))
        raise FrameDecodeError(f"{kind.name} frames are not accepted here ({accepted})", "kind")
    if expect.senders is not None and sender not in expect.senders:
        raise FrameDecodeError(f"sender {sender} is not accepted here", "sender")
    if kind.is_features and sender not in expect.feature_shapes:
        raise FrameDecodeError(f"no feature shape is known for sender {sender}", "sender")
    if count > expect.max_count:
        raise FrameDecodeError(
            f"count {count} is over this receiver's limit {expect.max_count}", "count"
        )


def decode_frame(data: BytesLike, expect: Expect, *, now: float | None = None) -> Frame:
    """Parses and checks one frame against what the receiver expects.

    Checks run in this order, the first failure raising :class:`FrameDecodeError` with its
    reason: the header checks of :func:`read_header`; ``"kind"`` (not in ``expect.kinds``),
    ``"sender"`` (not accepted, or no feature shape for it), ``"count"`` (over
    ``expect.max_count``); ``"length"`` (payload length != count x per-sample bytes, decided from
    the header before any allocation); ``"wrong_model"``; then the payload: ``"non_finite"``
    (float scores) or ``"padding"`` (feature rows).

    Args:
        data: Exactly one frame.
        expect: What this receiver accepts.
        now: The receiver's clock in Unix seconds, to unwrap the capture time; default the
            current time.

    Returns:
        The decoded frame; its rows never alias ``data``.

    Raises:
        FrameDecodeError: With the reason of the first failed check.
    """
    buf = as_buffer(data)
    kind, encoding, sender, first, count, tag, time_field, header_len, gaps = parse_header(buf)
    _check_expected(kind, sender, count, expect)
    per_sample = expect.sample_bytes(kind, sender)
    payload_len = len(buf) - header_len
    if payload_len != count * per_sample:
        raise FrameDecodeError(
            f"{kind.name} frame of {count} samples needs {count * per_sample} payload "
            f"bytes ({per_sample} each), got {payload_len}",
            "length",
        )
    if tag != expect._tag:  # type: ignore[attr-defined]
        raise FrameDecodeError(
            f"model tag {tag:#06x} is not this receiver's {model_tag(expect.model_version):#06x}",
            "wrong_model",
        )
    payload = memoryview(buf)[header_len:]
    captured = None
    if encoding is not None:
        assert expect.num_classes is not None and time_field is not None
        rows = decode_scores(payload, count, expect.num_classes, encoding)
        captured = unwrap_capture(time_field, time.time() if now is None else now)
    else:
        rows = np.frombuffer(payload, dtype=np.uint8).reshape(count, per_sample).copy()
        check_padding(rows, expect._numel[sender])  # type: ignore[attr-defined]
    rows.flags.writeable = False
    ids = None
    if gaps:
        ids, s = [first], first
        for g in gaps:
            s += g + 1
            ids.append(s)
    return Frame(
        kind,
        encoding,
        sender,
        first,
        count,
        tag,
        captured,
        rows,
        header_len,
        tuple(ids) if ids is not None else None,
    )
