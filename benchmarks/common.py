"""Shared helpers for the benchmark scripts (timing, machine description, choosing T)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence

import torch

from ddnn.data.dataset import DataSplits
from ddnn.eval.evaluate import ThresholdRow, best_row, threshold_sweep
from ddnn.models.ddnn import DDNN


def machine() -> str:
    """One line describing where a figure was measured."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    """Best wall time of ``repeats`` calls after one warm-up (least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_on_validation(
    model: DDNN, splits: DataSplits, thresholds: Sequence[float], missing: Sequence[int] = ()
) -> tuple[ThresholdRow, ThresholdRow]:
    """The threshold with the best overall accuracy on the validation split (ties: more local
    exits), and the test split at that threshold: a headline T is never chosen on test."""
    if splits.validation is None:
        raise ValueError("choosing T needs a validation split (data.validation_fraction > 0)")
    chosen = best_row(threshold_sweep(model, splits.validation, thresholds, missing=missing))
    (test,) = threshold_sweep(model, splits.test, [chosen.threshold], missing=missing)
    return chosen, test
