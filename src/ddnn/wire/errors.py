"""The one error every ``ddnn.wire`` decoder raises, with a stable reason a receiver can count."""

from __future__ import annotations

__all__ = ["REASONS", "FrameDecodeError"]

#: Every ``FrameDecodeError.reason``, in the order :func:`ddnn.wire.decode_frame` checks them.
#: Receivers use these strings as counter names, so they never change meaning.
REASONS: tuple[str, ...] = (
    "truncated",  # the data ends inside the header (or is empty)
    "version_1",  # a v1 frame (starts with b"DN"); v1 is no longer read
    "version",  # any other unknown format version
    "kind",  # unknown kind, or a kind this receiver does not accept
    "varint",  # a header varint is non-minimal or longer than 8 bytes
    "sender",  # sender id out of range or not one this receiver accepts
    "count",  # batch count 0, over 65535, or over what this receiver accepts
    "sample_range",  # sample ids beyond 2**53 - 1
    "length",  # payload length != count x per-sample bytes
    "wrong_model",  # model tag differs from the receiver's model
    "non_finite",  # a float score is NaN or ±inf
    "padding",  # nonzero padding bits in a bit-packed feature row
)


class FrameDecodeError(ValueError):
    """Bytes that are not a valid v2 frame (or payload) for this receiver.

    Attributes:
        reason: One of :data:`REASONS`; stable, meant as a metrics counter name.
    """

    def __init__(self, message: str, reason: str) -> None:
        assert reason in REASONS, f"unknown decode-error reason {reason!r}"
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[FrameDecodeError], tuple[str, str]]:
        # Keeps the reason when the error crosses a process boundary (multiprocessing pickles it).
        return (type(self), (str(self), self.reason))
