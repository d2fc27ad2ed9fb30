"""The model over a whole data set: in memory in one pass, as before; on disk in chunks.

Evaluation, calibration and experiments call these instead of ``model(data.x)`` so that data
left on disk (``data.in_memory=false``) are read a chunk at a time. Per-sample results do not
depend on the chunking; staged inference's byte record is joined as if one batch had been sent
(``LinkBytes.concat`` renumbers the sample ids).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ddnn.data.dataset import AnyDataset
from ddnn.data.streaming import Batch, iter_chunks
from ddnn.models.ddnn import DDNN, DDNNOutput, InferenceResult, check_threshold_keys
from ddnn.wire import LinkBytes


def _with_presence(
    data: AnyDataset, presence: Tensor | None, workers: int
) -> Iterator[tuple[Batch, Tensor | None]]:
    begin = 0
    for batch in iter_chunks(data, workers=workers):
        end = begin + len(batch)
        yield batch, None if presence is None else presence[begin:end]
        begin = end


def _cat(parts: list[Tensor | None]) -> Tensor | None:
    return None if parts[0] is None else torch.cat(parts)  # type: ignore[arg-type]


@torch.no_grad()
def forward_all(
    model: DDNN,
    data: AnyDataset,
    presence: Tensor | None = None,
    *,
    wire: bool = False,
    workers: int = 0,
) -> DDNNOutput:
    """Every exit's logits on every sample: ``model(x)``, or ``model.wire_forward(x)``."""
    run = model.wire_forward if wire else model
    return _join_outputs([run(b.x, p) for b, p in _with_presence(data, presence, workers)])


def _join_outputs(outs: list[DDNNOutput]) -> DDNNOutput:
    if len(outs) == 1:
        return outs[0]
    return DDNNOutput(
        _cat([o.device_logits for o in outs]),
        _cat([o.local_logits for o in outs]),
        _cat([o.edge_group_logits for o in outs]),
        _cat([o.edge_logits for o in outs]),
        _cat([o.cloud_logits for o in outs]),
    )


@torch.no_grad()
def infer_all(
    model: DDNN,
    data: AnyDataset,
    thresholds: dict[str, float] | None = None,
    presence: Tensor | None = None,
    *,
    workers: int = 0,
) -> InferenceResult:
    """``model.infer`` on every sample of ``data``, as one batch."""
    (result,) = infer_all_at(model, data, [thresholds or {}], presence, workers=workers)
    return result


@torch.no_grad()
def infer_all_at(
    model: DDNN,
    data: AnyDataset,
    threshold_sets: Sequence[dict[str, float]],
    presence: Tensor | None = None,
    *,
    workers: int = 0,
) -> list[InferenceResult]:
    """:func:`infer_all` at each of ``threshold_sets``, running the devices once per chunk.

    The devices' outputs do not depend on the thresholds, so a sweep of K thresholds costs one
    pass of the devices and K of the exits and upper tiers, not K of everything."""
    if not threshold_sets:
        return []
    return _sweep(model, data, threshold_sets, presence, workers, forced=False)[0]


@dataclass(frozen=True)
class Sweep:
    """Staged inference at several thresholds, and every exit forced on every sample."""

    results: list[InferenceResult]  # one per threshold set, as infer_all_at gives them
    forced: DDNNOutput  # forward_all(..., wire=True): each exit's logits on every sample


@torch.no_grad()
def sweep_all(
    model: DDNN,
    data: AnyDataset,
    threshold_sets: Sequence[dict[str, float]],
    presence: Tensor | None = None,
    *,
    workers: int = 0,
) -> Sweep:
    """:func:`infer_all_at` and ``forward_all(..., wire=True)`` with one pass of the devices per
    chunk: what a threshold sweep reports (each threshold's outcome, each exit's accuracy)."""
    results, forced = _sweep(model, data, threshold_sets, presence, workers, forced=True)
    return Sweep(results, _join_outputs(forced))


def _sweep(
    model: DDNN,
    data: AnyDataset,
    threshold_sets: Sequence[dict[str, float]],
    presence: Tensor | None,
    workers: int,
    forced: bool,
) -> tuple[list[InferenceResult], list[DDNNOutput]]:
    """Each threshold set's joined result, and per chunk every exit forced (when ``forced``)."""
    for thresholds in threshold_sets:  # a bad key fails before any device runs
        check_threshold_keys(thresholds)
    per_set: list[list[InferenceResult]] = [[] for _ in threshold_sets]
    outputs: list[DDNNOutput] = []
    for b, p in _with_presence(data, presence, workers):
        devices = model.device_outputs(b.x, p)
        if forced:
            outputs.append(model.wire_exits_from(devices))
        for results, thresholds in zip(per_set, threshold_sets, strict=True):
            results.append(model.infer_from(devices, thresholds))
    return [_join(parts) for parts in per_set], outputs


def _join(parts: list[InferenceResult]) -> InferenceResult:
    if len(parts) == 1:
        return parts[0]
    return InferenceResult(
        torch.cat([r.predictions for r in parts]),
        torch.cat([r.exit_index for r in parts]),
        parts[0].exit_names,
        LinkBytes.concat([r.bytes for r in parts]),
    )
