"""Communication accounting (SPEC §6): the analytical formula and bytes measured on real encodings.

Measured bytes are the lengths of the actual payload buffers produced by the frame codec's encoders
(float32 score vectors, bit-packed feature maps, 8-bit raw pixels); frame headers are counted
separately as transport overhead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ddnn.runtime.codec import HEADER_BYTES, pack_bits_batch

SCORE_BYTES_PER_CLASS = 4  # float32


def formula_bytes_per_device(
    num_classes: int, local_exit_fraction: float, filters: int, outputs_per_filter: int
) -> float:
    """c = 4·|C| + (1 − l)·f·o/8 bytes per device per sample (SPEC §6)."""
    if not 0.0 <= local_exit_fraction <= 1.0:
        raise ValueError(f"local exit fraction must be in [0, 1], got {local_exit_fraction}")
    return (
        SCORE_BYTES_PER_CLASS * num_classes
        + (1.0 - local_exit_fraction) * filters * outputs_per_filter / 8
    )


def raw_bytes_per_device(input_shape: tuple[int, ...]) -> int:
    """Raw offloading: the device's input tensor as 8-bit values (3072 B for 3×32×32)."""
    return math.prod(input_shape)


def mean_raw_bytes_per_device(shapes: Sequence[tuple[int, ...]]) -> float:
    """Raw offloading bytes averaged over devices (they differ when input shapes differ)."""
    return sum(raw_bytes_per_device(s) for s in shapes) / len(shapes)


@dataclass
class LinkBytes:
    """Payload bytes sent on every link for each sample of a batch, and the frames that carried them."""

    device_up: np.ndarray  # (B, D) bytes each device sent (scores + features)
    device_frames: np.ndarray  # (B, D) frames each device sent
    edge_up: np.ndarray  # (B, E) bytes each edge sent to the cloud
    edge_frames: np.ndarray  # (B, E)
    present: np.ndarray  # (B, D) bool, devices that took part

    @classmethod
    def empty(cls, batch: int, num_devices: int, num_edges: int) -> LinkBytes:
        return cls(
            np.zeros((batch, num_devices), dtype=np.int64),
            np.zeros((batch, num_devices), dtype=np.int64),
            np.zeros((batch, num_edges), dtype=np.int64),
            np.zeros((batch, num_edges), dtype=np.int64),
            np.ones((batch, num_devices), dtype=bool),
        )

    def per_device(self) -> float:
        """Mean payload bytes per present device per sample."""
        n = int(self.present.sum())
        return float(self.device_up[self.present].sum() / n) if n else 0.0

    def header_overhead_per_device(self) -> float:
        """Mean frame-header bytes per present device per sample (transport overhead)."""
        n = int(self.present.sum())
        return float(self.device_frames[self.present].sum() * HEADER_BYTES / n) if n else 0.0

    def edge_to_cloud_per_sample(self) -> float:
        """Mean payload bytes all edges send to the cloud per sample."""
        b = self.edge_up.shape[0]
        return float(self.edge_up.sum() / b) if b and self.edge_up.size else 0.0


def _account(bytes_per_row: int | np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes and frames per (sample, sender): a frame from every present sender."""
    return mask.astype(np.int64) * bytes_per_row, mask.astype(np.int64)


def measure_score_bytes(scores: Tensor, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode (B, D, C) class scores as float32 and count each present device's bytes and frames."""
    encoded = np.ascontiguousarray(scores.detach().cpu().numpy().astype("<f4"))
    row = encoded.reshape(*encoded.shape[:2], -1).view(np.uint8)  # (B, D, 4C) bytes on the wire
    return _account(row.shape[-1], present)


def measure_feature_bytes(
    features: Tensor, present: np.ndarray, raw: bool, elements: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Encode (B, N, ...) features — bit-packed ±1 maps, or 8-bit pixels for raw devices — and count.

    ``elements`` gives, for padded (B, N, F) rows of senders with different feature sizes, how
    many values of each sender's row are real; each sender is then encoded on its own.
    """
    b, n = features.shape[:2]
    if b == 0:
        return np.zeros((0, n), dtype=np.int64), np.zeros((0, n), dtype=np.int64)
    if elements is not None:
        per_sender = [
            measure_feature_bytes(features[:, j : j + 1, :count], present[:, j : j + 1], raw)[0]
            for j, count in enumerate(elements)
        ]
        return np.concatenate(per_sender, axis=1), present.astype(np.int64)
    flat = features.detach().cpu().flatten(0, 1)
    if raw:
        pixels = (flat.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        row_bytes = pixels.reshape(b * n, -1).shape[1]
    else:
        row_bytes = pack_bits_batch(flat.numpy()).shape[1]
    return _account(row_bytes, present)
