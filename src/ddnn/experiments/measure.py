"""Measurements shared by the experiments: one threshold's row on a split, thresholds for a
target exit rate.

Experiments choose (thresholds, best rows, orders) on the validation split and report on the
test split: a row carries the test measurements under the usual column names and the validation
ones under the same names prefixed ``val_``, so every choice can be redone from the JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ddnn.data.dataset import AnyDataset
from ddnn.eval.batched import forward_all
from ddnn.eval.evaluate import ThresholdRow, threshold_sweep
from ddnn.experiments.runner import TrainedRun
from ddnn.nn.functional import entropy_from_logits

CHOOSE_ON = "validation"
REPORT_ON = "test"
SPLITS = ("train", "validation", "test")
VAL = "val_"

Fields = Callable[[ThresholdRow], dict[str, Any]]


def pct(value: float | None) -> float | None:
    """A fraction in [0, 1] as a percentage (None stays None)."""
    return None if value is None else 100.0 * value


def split_data(run: TrainedRun, split: str) -> AnyDataset:
    """The ``train``, ``validation`` or ``test`` split of ``run``'s data."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    data: AnyDataset | None = getattr(run.splits, split)
    if data is None:
        raise ValueError(
            f"run {run.run_dir.name} has no validation split (data.validation_fraction = "
            f"{run.config.data.validation_fraction:g}); experiments choose thresholds on it, "
            "so give data.validation_fraction > 0"
        )
    return data


def at_threshold(
    run: TrainedRun,
    local_threshold: float,
    missing: Sequence[int] = (),
    edge_threshold: float | None = None,
    split: str = REPORT_ON,
) -> ThresholdRow:
    """Staged inference of ``run`` on one split (test unless told) at one local (and edge) T."""
    edge_t = run.config.eval.edge_threshold if edge_threshold is None else edge_threshold
    data = split_data(run, split)
    return threshold_sweep(run.model, data, [local_threshold], edge_t, missing)[0]


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


def on_both_splits(
    run: TrainedRun,
    local_threshold: float,
    missing: Sequence[int] = (),
    edge_threshold: float | None = None,
    fields: Fields = row_fields,
) -> dict[str, Any]:
    """``fields`` of one threshold on the test split, and the same on validation as ``val_*``."""
    test = fields(at_threshold(run, local_threshold, missing, edge_threshold, REPORT_ON))
    val = fields(at_threshold(run, local_threshold, missing, edge_threshold, CHOOSE_ON))
    return {**test, **{f"{VAL}{k}": v for k, v in val.items()}}


@torch.no_grad()
def threshold_for_local_exit(run: TrainedRun, fraction: float, split: str = CHOOSE_ON) -> float:
    """The local T at which ``fraction`` of ``split``'s samples exit locally (η < T).

    T is placed midway between the normalized entropies on either side of the cut, so exactly
    round(fraction · N) samples of that split exit unless entropies tie.
    """
    model = run.model.eval()
    data = split_data(run, split)
    eta = entropy_from_logits(forward_all(model, data).local_logits).sort().values  # type: ignore[arg-type]
    k = round(fraction * len(eta))
    if k <= 0:
        return 0.0
    if k >= len(eta):
        return 1.0
    return float((eta[k - 1] + eta[k]) / 2)
