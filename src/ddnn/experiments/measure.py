"""Measurements shared by the experiments: one threshold's row, thresholds for a target exit rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ddnn.eval.evaluate import ThresholdRow, threshold_sweep
from ddnn.experiments.runner import TrainedRun
from ddnn.nn.functional import entropy_from_logits


def pct(value: float | None) -> float | None:
    """A fraction in [0, 1] as a percentage (None stays None)."""
    return None if value is None else 100.0 * value


def at_threshold(
    run: TrainedRun,
    local_threshold: float,
    missing: Sequence[int] = (),
    edge_threshold: float | None = None,
) -> ThresholdRow:
    """Staged inference of ``run`` on its test split at one local (and edge) threshold."""
    edge_t = run.config.eval.edge_threshold if edge_threshold is None else edge_threshold
    return threshold_sweep(run.model, run.splits.test, [local_threshold], edge_t, missing)[0]


def row_fields(row: ThresholdRow) -> dict[str, Any]:
    """The usual columns of a threshold row, accuracies and exit rates in percent."""
    return {
        "local_exit_pct": pct(row.local_exit_fraction),
        "local_acc": pct(row.local_accuracy),
        "cloud_acc": pct(row.cloud_accuracy),
        "overall_acc": pct(row.overall_accuracy),
        "bytes_per_device": row.bytes_per_device,
        "bytes_formula": row.bytes_per_device_formula,
        "raw_bytes": row.raw_bytes_per_device,
        "reduction": row.reduction_factor,
    }


@torch.no_grad()
def threshold_for_local_exit(run: TrainedRun, fraction: float) -> float:
    """The local T at which ``fraction`` of the test samples exit locally (η < T).

    T is placed midway between the normalized entropies on either side of the cut, so exactly
    round(fraction · N) samples exit unless entropies tie.
    """
    model = run.model.eval()
    data = run.splits.test
    eta = entropy_from_logits(model(data.x).local_logits).sort().values  # type: ignore[arg-type]
    k = round(fraction * len(eta))
    if k <= 0:
        return 0.0
    if k >= len(eta):
        return 1.0
    return float((eta[k - 1] + eta[k]) / 2)
