"""Threshold sweeps: accuracies at every exit, exit fractions and bytes, one row per threshold.

Every figure is on the deployed path: exits fuse scores as the wire delivers them in the model's
score encoding (``DDNN.wire_forward`` / ``DDNN.infer``), and bytes come from ``ddnn.wire``: the
payload and frame headers of really encoded frames, and SPEC §6's formula for that encoding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ddnn.config import DEFAULT_THRESHOLDS  # noqa: E402  (re-exported)
from ddnn.data.dataset import AnyDataset
from ddnn.eval.batched import forward_all, sweep_all
from ddnn.models.ddnn import CLOUD, DDNN, EDGE, LOCAL, DDNNOutput
from ddnn.nn.exits import check_threshold
from ddnn.wire import formula_bytes_per_device, mean_raw_bytes_per_device


@dataclass
class ThresholdRow:
    """One line of the threshold table; fractions and accuracies in [0, 1], bytes per device per sample.

    ``bytes_per_device`` is the measured payload, ``header_bytes_per_device`` the frame headers
    apart, ``bytes_per_device_formula`` SPEC §6's formula in the model's score encoding.
    """

    threshold: float
    edge_threshold: float | None
    local_exit_fraction: float
    edge_exit_fraction: float | None
    cloud_exit_fraction: float | None
    local_accuracy: float | None
    edge_accuracy: float | None
    cloud_accuracy: float | None
    overall_accuracy: float
    bytes_per_device: float
    bytes_per_device_formula: float
    header_bytes_per_device: float
    edge_to_cloud_bytes: float | None
    raw_bytes_per_device: float  # mean over devices when their input shapes differ
    reduction_factor: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def presence_without(num_samples: int, num_devices: int, missing: Sequence[int]) -> torch.Tensor:
    """(N, D) presence mask with the ``missing`` devices absent for every sample."""
    bad = [d for d in missing if not 0 <= d < num_devices]
    if bad:
        raise ValueError(f"missing device index {bad} out of range; accepted: 0..{num_devices - 1}")
    if len(set(missing)) >= num_devices:
        raise ValueError("at least one device must remain present")
    mask = torch.ones(num_samples, num_devices, dtype=torch.bool)
    mask[:, list(missing)] = False
    return mask


def _accuracy(logits: torch.Tensor | None, labels: torch.Tensor) -> float | None:
    return None if logits is None else float((logits.argmax(dim=1) == labels).float().mean())


@torch.no_grad()
def exit_accuracies(
    model: DDNN, data: AnyDataset, presence: torch.Tensor | None = None
) -> dict[str, float | None]:
    """Accuracy when every sample is forced to each exit (local, edge, cloud), as deployed."""
    model.eval()
    return _forced_accuracies(forward_all(model, data, presence, wire=True), data.labels)


def _forced_accuracies(out: DDNNOutput, labels: torch.Tensor) -> dict[str, float | None]:
    return {
        LOCAL: _accuracy(out.local_logits, labels),
        EDGE: _accuracy(out.edge_logits, labels),
        CLOUD: _accuracy(out.cloud_logits, labels),
    }


def check_data_fits_model(model: DDNN, data: AnyDataset) -> None:
    """The data must have the model's devices and device input shapes."""
    if data.num_devices != model.config.num_devices:
        raise ValueError(
            f"data has {data.num_devices} devices but the model was trained for {model.config.num_devices}"
        )
    if data.shapes != model.config.device_shapes:
        raise ValueError(
            f"data device input shapes {_shapes_text(data.shapes)} do not match the model's "
            f"{_shapes_text(model.config.device_shapes)}"
        )


@torch.no_grad()
def threshold_sweep(
    model: DDNN,
    data: AnyDataset,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    edge_threshold: float = 0.8,
    missing: Sequence[int] = (),
) -> list[ThresholdRow]:
    """Staged inference at each local-exit threshold; edges (if any) use ``edge_threshold``."""
    check_data_fits_model(model, data)
    thresholds = [check_threshold(t) for t in thresholds]
    has_edge = EDGE in model.exit_names
    edge_t = check_threshold(edge_threshold) if has_edge else None
    presence = presence_without(len(data), data.num_devices, missing)
    feature_bits = [
        math.prod(model.device(k).feature_shape) for k in range(model.config.num_devices)
    ]
    encoding = model.config.wire.scores
    raw = mean_raw_bytes_per_device(model.config.device_shapes)
    model.eval()
    sweep = sweep_all(model, data, [{LOCAL: t, EDGE: edge_t or 0.0} for t in thresholds], presence)
    results, forced = sweep.results, _forced_accuracies(sweep.forced, data.labels)
    rows = []
    for t, result in zip(thresholds, results, strict=True):
        local_frac = result.exit_fraction(LOCAL)
        if model.has_local_exit:
            formula = sum(
                formula_bytes_per_device(model.config.num_classes, local_frac, bits, encoding)
                for bits in feature_bits
            ) / len(feature_bits)
        else:
            formula = float(raw)
        measured = result.bytes.per_device()
        rows.append(
            ThresholdRow(
                threshold=t,
                edge_threshold=edge_t,
                local_exit_fraction=local_frac,
                edge_exit_fraction=result.exit_fraction(EDGE) if has_edge else None,
                cloud_exit_fraction=result.exit_fraction(CLOUD)
                if CLOUD in model.exit_names
                else None,
                local_accuracy=forced[LOCAL],
                edge_accuracy=forced[EDGE],
                cloud_accuracy=forced[CLOUD],
                overall_accuracy=float((result.predictions == data.labels).float().mean()),
                bytes_per_device=measured,
                bytes_per_device_formula=formula,
                header_bytes_per_device=result.bytes.header_per_device(),
                edge_to_cloud_bytes=result.bytes.edge_to_cloud_per_sample() if has_edge else None,
                raw_bytes_per_device=raw,
                reduction_factor=raw / measured if measured > 0 else math.inf,
            )
        )
    return rows


def _shapes_text(shapes: Sequence[tuple[int, ...]]) -> str:
    """One shape when all devices share it, else the list."""
    unique = set(shapes)
    return f"{len(shapes)} x {shapes[0]}" if len(unique) == 1 else str(list(shapes))


def best_row(rows: Sequence[ThresholdRow]) -> ThresholdRow:
    """Highest overall accuracy; ties go to the one with more local exits (fewer bytes)."""
    return max(rows, key=lambda r: (round(r.overall_accuracy, 9), r.local_exit_fraction))
