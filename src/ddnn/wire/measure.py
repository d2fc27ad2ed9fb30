"""Bytes each link of a hierarchy carries per sample, measured on really encoded v2 frames.

In-process inference (``DDNN.infer``) sends what the runtime sends, one frame per sample and
sender (``count`` 1): a SCORES frame in the configured encoding from every present device, a
FEATURES frame from every present device for each sample that goes up, and a FEATURES frame from
every present edge for each sample that goes on to the cloud. This module encodes those frames
and counts their payload and header bytes apart, per (sample, sender).

How a frame is measured: a count-1 frame is ``header + row``, rows are fixed width, and its
header length depends only on its kind, its sender and the varint length of its sample id. So
each sender's rows are encoded in one batched frame (every row really encoded: the payload
length, and the encoder's checks such as float16 overflow, are those of the real rows), and one
real count-1 frame per sample-id varint length gives the header length of all the others;
``tests/wire/test_wire_measure.py`` checks the result against encoding every frame one by one.

Raw offloading (configuration a, no device layers) has no frame kind of its own: a raw device
sends its input as 8-bit pixels, ``raw_bytes_per_device(shape)`` bytes, counted here as the
payload of a FEATURES-layout frame (kind, sender, sample, count and model fields, no capture
time; 6 header bytes for small ids). The runtime does not serve raw devices, so this frame is
what v2 would carry, not something a node sends today.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ddnn.wire._array import ArrayLike, check_shape, is_tensor, to_numpy
from ddnn.wire.accounting import WireBytes, raw_bytes_per_device
from ddnn.wire.frame import (
    MAX_COUNT,
    encode_features_frame,
    encode_scores_frame,
    read_header,
)
from ddnn.wire.scores import ScoreEncoding

__all__ = [
    "FrameCounts",
    "LinkBytes",
    "feature_frames",
    "mean_raw_bytes_per_device",
    "raw_frames",
    "score_frames",
]

_MODEL_VERSION = 0  # the tag is 2 bytes whatever the version: lengths do not depend on it
_CAPTURED = 0.0  # likewise the 3-byte capture time
# A varint of v takes k bytes for 2**(7(k-1)) <= v < 2**(7k).
_VARINT_STEPS = np.array([1 << (7 * k) for k in range(1, 8)], dtype=np.int64)

IdsLike = ArrayLike | Sequence[int]  # (n,) sample ids
MaskLike = ArrayLike | Sequence[Sequence[bool]]  # (n, S) which senders send


@dataclass(frozen=True)
class FrameCounts:
    """Bytes and frames per (sample, sender) of one link; (n, S) int64 arrays, zero = nothing sent.

    Attributes:
        payload: Payload bytes (what SPEC §6's formula counts).
        header: Frame-header bytes.
        frames: Frames sent.
    """

    payload: np.ndarray
    header: np.ndarray
    frames: np.ndarray

    @classmethod
    def zeros(cls, num_samples: int, num_senders: int) -> FrameCounts:
        shape = (num_samples, num_senders)
        return cls(*(np.zeros(shape, dtype=np.int64) for _ in range(3)))

    def add(self, rows: np.ndarray, other: FrameCounts) -> None:
        """Adds ``other``'s counts, whose row ``i`` is this record's row ``rows[i]`` (distinct)."""
        self.payload[rows] += other.payload
        self.header[rows] += other.header
        self.frames[rows] += other.frames

    @classmethod
    def concat(cls, parts: Sequence[FrameCounts], firsts: Sequence[int]) -> FrameCounts:
        """Rows of ``parts`` stacked; part k's sample ids ``0 .. n-1`` become ``firsts[k] + …``."""
        headers = []
        for part, first in zip(parts, firsts, strict=True):
            ids = np.arange(part.frames.shape[0], dtype=np.int64)
            grow = _varint_lengths(ids + int(first)) - _varint_lengths(ids)  # (n,) bytes per frame
            headers.append(part.header + part.frames * grow[:, None])
        return cls(
            np.concatenate([p.payload for p in parts]),
            np.concatenate(headers),
            np.concatenate([p.frames for p in parts]),
        )

    def totals(self, mask: np.ndarray | None = None) -> WireBytes:
        """Sums as :class:`WireBytes`; ``samples`` counts the (sample, sender) pairs in ``mask``
        (default: those that sent a frame)."""
        mask = self.frames > 0 if mask is None else mask
        return WireBytes(
            payload=int(self.payload[mask].sum()),
            header=int(self.header[mask].sum()),
            frames=int(self.frames[mask].sum()),
            samples=int(mask.sum()),
        )


@dataclass(frozen=True)
class LinkBytes:
    """Bytes every link carried for each sample of a batch, payload and frame headers apart.

    Attributes:
        device: (B, D): what each device sent (scores, and features when the sample went up).
        edge: (B, E): what each edge sent on to the cloud (features).
        present: (B, D) bool, the devices that took part; per-device means are over these.
    """

    device: FrameCounts
    edge: FrameCounts
    present: np.ndarray

    @classmethod
    def empty(cls, present: np.ndarray, num_edges: int) -> LinkBytes:
        b, d = present.shape
        return cls(FrameCounts.zeros(b, d), FrameCounts.zeros(b, num_edges), present.astype(bool))

    @classmethod
    def concat(cls, parts: Sequence[LinkBytes]) -> LinkBytes:
        """Records of consecutive batches as the record of one batch holding them all.

        Each part counted its samples with ids ``0 .. b-1``; here the ids run on across parts,
        so a frame's header grows wherever its id now needs a longer varint (header lengths
        depend on the id only through its varint length, see the module docstring).
        """
        if not parts:
            raise ValueError("need at least one LinkBytes to concatenate")
        firsts = np.cumsum([0] + [len(p.present) for p in parts[:-1]]).tolist()
        return cls(
            FrameCounts.concat([p.device for p in parts], firsts),
            FrameCounts.concat([p.edge for p in parts], firsts),
            np.concatenate([p.present for p in parts]),
        )

    def _per_present(self, counts: np.ndarray) -> float:
        n = int(self.present.sum())
        return float(counts[self.present].sum() / n) if n else 0.0

    def per_device(self) -> float:
        """Mean payload bytes per present device per sample (SPEC §6's ``c``)."""
        return self._per_present(self.device.payload)

    def header_per_device(self) -> float:
        """Mean frame-header bytes per present device per sample."""
        return self._per_present(self.device.header)

    def frames_per_device(self) -> float:
        """Mean frames per present device per sample."""
        return self._per_present(self.device.frames)

    def edge_to_cloud_per_sample(self) -> float:
        """Mean payload bytes all edges send to the cloud per sample."""
        b = self.edge.payload.shape[0]
        return float(self.edge.payload.sum() / b) if b else 0.0

    def edge_header_per_sample(self) -> float:
        """Mean frame-header bytes all edges send to the cloud per sample."""
        b = self.edge.header.shape[0]
        return float(self.edge.header.sum() / b) if b else 0.0

    def device_link(self) -> WireBytes:
        """All devices' bytes; ``per_sample()`` is per present (sample, device) pair."""
        return self.device.totals(self.present)

    def edge_link(self) -> WireBytes:
        """All edges' bytes to the cloud; ``per_sample()`` is per edge frame."""
        return self.edge.totals()


def mean_raw_bytes_per_device(shapes: Sequence[tuple[int, ...]]) -> float:
    """Raw offloading bytes averaged over devices (they differ when input shapes differ)."""
    if not shapes:
        raise ValueError("need at least one device input shape")
    return sum(raw_bytes_per_device(s) for s in shapes) / len(shapes)


def _varint_lengths(ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(_VARINT_STEPS, ids, side="right") + 1


def _array(x: object, what: str) -> np.ndarray:
    return to_numpy(x, what) if is_tensor(x) else np.asarray(x)


def _sample_ids(sample_ids: IdsLike | None, n: int) -> np.ndarray:
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = _array(sample_ids, "sample_ids").astype(np.int64).reshape(-1)
    if ids.shape != (n,) or (ids < 0).any():
        raise ValueError(f"sample_ids must be {n} ids >= 0, got shape {ids.shape}")
    return ids


def _present(present: MaskLike, n: int, senders: int) -> np.ndarray:
    mask = _array(present, "present").astype(bool)
    if mask.shape != (n, senders):
        raise ValueError(f"present must have shape ({n}, {senders}), got {mask.shape}")
    return mask


def _count(
    encode: Callable[[np.ndarray, int, int], bytes],
    rows_of: Sequence[np.ndarray],
    present: np.ndarray,
    ids: np.ndarray,
    senders: Sequence[int],
) -> FrameCounts:
    """Counts one count-1 frame per present (sample, sender); ``encode(rows, sender, first)``."""
    out = FrameCounts.zeros(*present.shape)
    for s, (data, sender) in enumerate(zip(rows_of, senders, strict=True)):
        rows = np.flatnonzero(present[:, s])
        if not rows.size:
            continue
        row_bytes = 0
        for start in range(0, rows.size, MAX_COUNT):  # one batched frame: every row encoded
            chunk = rows[start : start + MAX_COUNT]
            batch = encode(data[chunk], sender, 0)
            row_bytes, rest = divmod(len(batch) - read_header(batch).header_len, chunk.size)
            assert rest == 0, "a frame's payload is whole rows"
        bands = _varint_lengths(ids[rows])
        for band in np.unique(bands):
            i = int(np.flatnonzero(bands == band)[0])
            one = encode(data[rows[i : i + 1]], sender, int(ids[rows[i]]))
            header = read_header(one).header_len
            assert len(one) == header + row_bytes, "rows are fixed width"
            out.header[rows[bands == band], s] = header
        out.payload[rows, s] = row_bytes
        out.frames[rows, s] = 1
    return out


def score_frames(
    scores: ArrayLike,
    present: MaskLike,
    encoding: ScoreEncoding | str,
    *,
    sample_ids: IdsLike | None = None,
    senders: Sequence[int] | None = None,
) -> FrameCounts:
    """Bytes of the SCORES frames (count 1) every present sender sends for every sample.

    Args:
        scores: ``(n, S, C)`` class scores (logits) of ``S`` senders.
        present: ``(n, S)`` bool, which senders send.
        encoding: The score encoding.
        sample_ids: ``(n,)`` the samples' ids on the wire (default ``0 .. n-1``).
        senders: The ``S`` sender ids (default ``0 .. S-1``).

    Raises:
        ValueError: As :func:`~ddnn.wire.frame.encode_scores_frame`, e.g. a score that float16
            cannot carry.
    """
    s = to_numpy(scores, "scores")
    if s.ndim != 3:
        raise ValueError(f"scores must have shape (n, S, C), got shape {s.shape}")
    n, num = s.shape[:2]
    columns = [s[:, k] for k in range(num)]

    def encode(rows: np.ndarray, sender: int, first: int) -> bytes:
        return encode_scores_frame(
            rows,
            sender=sender,
            first_sample=first,
            model_version=_MODEL_VERSION,
            encoding=encoding,
            captured=_CAPTURED,
        )

    senders = list(range(num)) if senders is None else list(senders)
    return _count(encode, columns, _present(present, n, num), _sample_ids(sample_ids, n), senders)


def feature_frames(
    features: Sequence[ArrayLike],
    present: MaskLike,
    *,
    sample_ids: IdsLike | None = None,
    senders: Sequence[int] | None = None,
) -> FrameCounts:
    """Bytes of the FEATURES frames (count 1) every present sender sends for every sample.

    Args:
        features: One ``(n, *shape)`` ±1 feature map array per sender (shapes may differ),
            bit-packed with sign(0) = +1.
        present: ``(n, S)`` bool, which senders send.
        sample_ids: ``(n,)`` the samples' ids on the wire (default ``0 .. n-1``).
        senders: The ``S`` sender ids (default ``0 .. S-1``).
    """
    maps = [to_numpy(f, "features") for f in features]
    n = maps[0].shape[0] if maps else 0

    def encode(rows: np.ndarray, sender: int, first: int) -> bytes:
        return encode_features_frame(
            rows,
            sender=sender,
            first_sample=first,
            model_version=_MODEL_VERSION,
            shape=tuple(rows.shape[1:]),
        )

    senders = list(range(len(maps))) if senders is None else list(senders)
    mask = _present(present, n, len(maps))
    return _count(encode, maps, mask, _sample_ids(sample_ids, n), senders)


def raw_frames(
    pixels: Sequence[ArrayLike],
    present: MaskLike,
    *,
    sample_ids: IdsLike | None = None,
    senders: Sequence[int] | None = None,
) -> FrameCounts:
    """Bytes a raw-offloading device sends: its input as 8-bit pixels in a FEATURES-layout frame.

    Each value in [0, 1] becomes one byte ``round(255 x)``, so the payload is
    ``raw_bytes_per_device(shape)``; the frame is a FEATURES frame whose packed row is those
    bytes (see the module docstring: v2 has no raw kind).

    Args:
        pixels: One ``(n, *shape)`` array of inputs in [0, 1] per sender.
        present: ``(n, S)`` bool, which senders send.
        sample_ids: ``(n,)`` the samples' ids on the wire (default ``0 .. n-1``).
        senders: The ``S`` sender ids (default ``0 .. S-1``).
    """
    rows_of = []
    for p in pixels:
        a = to_numpy(p, "pixels").astype(np.float32)
        dims = check_shape(tuple(a.shape[1:]), "pixel shape")
        u8 = np.rint(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
        rows_of.append(u8.reshape(a.shape[0], raw_bytes_per_device(dims)))  # (n, P) bytes
    n = rows_of[0].shape[0] if rows_of else 0

    def encode(rows: np.ndarray, sender: int, first: int) -> bytes:
        # Packed uint8 rows of width P are what a FEATURES frame of 8·P bits carries.
        return encode_features_frame(
            rows,
            sender=sender,
            first_sample=first,
            model_version=_MODEL_VERSION,
            shape=(8 * rows.shape[1],),
        )

    senders = list(range(len(rows_of))) if senders is None else list(senders)
    mask = _present(present, n, len(rows_of))
    return _count(encode, rows_of, mask, _sample_ids(sample_ids, n), senders)
