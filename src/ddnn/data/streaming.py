"""One way to walk a data set in batches, in memory or streamed from disk: ``iter_batches``.

Training and evaluation both call ``iter_batches(data, order, batch_size)``: batch k holds the
samples ``order[k·batch_size : (k+1)·batch_size]``. In-memory data are indexed directly (what
``data.x[idx]`` gives, no DataLoader); data left on disk (``MappedDataset``) go through a
``torch.utils.data.DataLoader`` whose batch sampler yields exactly those index batches, so a
seeded run sees the same batches, in the same order, either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ddnn.data.dataset import AnyDataset, MappedDataset, MultiDeviceDataset

EVAL_CHUNK_BYTES = 64 << 20  # input bytes per chunk when a forward pass streams a data set


@dataclass(frozen=True)
class Batch:
    """The samples of one batch.

    Attributes:
        x: (B, D, *input_shape) or packed (B, D, P) float32 inputs.
        view_labels: (B, D) int64 per-device labels (``ABSENT`` where a device does not see it).
        labels: (B,) int64 sample labels.
    """

    x: Tensor
    view_labels: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader's pin-memory thread calls this)."""
        return Batch(self.x.pin_memory(), self.view_labels.pin_memory(), self.labels.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            self.x.to(device, non_blocking=non_blocking),
            self.view_labels.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
        )


class OrderBatchSampler(Sampler[list[int]]):
    """Consecutive slices of ``order``, ``batch_size`` at a time (the last may be shorter)."""

    def __init__(self, order: Tensor, batch_size: int) -> None:
        self.order = order
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for begin in range(0, len(self.order), self.batch_size):
            yield self.order[begin : begin + self.batch_size].tolist()


class _Samples(Dataset[Batch]):
    """A ``MappedDataset`` as the DataLoader sees it: a whole batch is read in one call."""

    def __init__(self, data: MappedDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.tensor(indices, dtype=torch.long)
        return Batch(self.data.take(idx), self.data.view_labels[idx], self.data.labels[idx])


def _as_is(batch: Any) -> Any:
    return batch  # module level, so spawned workers can unpickle it


def _check_order(order: Tensor | np.ndarray | Sequence[int], n: int) -> Tensor:
    idx = torch.as_tensor(order, dtype=torch.long).reshape(-1)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"batch order holds indices outside 0..{n - 1}")
    return idx


def iter_batches(
    data: AnyDataset,
    order: Tensor | np.ndarray | Sequence[int],
    batch_size: int,
    *,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """The batches ``order[0:batch_size]``, ``order[batch_size:2·batch_size]``, … of ``data``.

    Args:
        data: in memory (indexed directly) or on disk (read through a DataLoader).
        order: (M,) sample indices into ``data``, e.g. a seeded permutation or ``arange(N)``.
        batch_size: samples per batch (the last batch may be shorter); 0 = all of ``order`` at once.
        workers: DataLoader worker processes for data on disk (0 = read in this process).
        pin_memory: page-locked batches for fast copies to a GPU (data on disk, with CUDA only).
    """
    if batch_size < 0:
        raise ValueError(f"batch size must be >= 1 (0 = one batch of everything), got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = read in the main process), got {workers}")
    idx = _check_order(order, len(data))
    size = batch_size or max(len(idx), 1)
    if isinstance(data, MultiDeviceDataset):
        if size >= len(data) and _is_everything_in_order(idx, len(data)):
            yield Batch(data.x, data.view_labels, data.labels)  # no copy of the whole set
            return
        for begin in range(0, len(idx), size):
            i = idx[begin : begin + size]
            yield Batch(data.x[i], data.view_labels[i], data.labels[i])
        return
    loader = DataLoader(
        _Samples(data),
        batch_sampler=OrderBatchSampler(idx, size),
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin_memory and torch.cuda.is_available(),
    )
    yield from loader


def _is_everything_in_order(idx: Tensor, n: int) -> bool:
    return len(idx) == n and bool(torch.equal(idx, torch.arange(n, dtype=idx.dtype)))


def chunk_size(data: AnyDataset, budget: int | None = None) -> int:
    """Samples per chunk when a forward pass streams ``data``: about ``budget`` input bytes
    (default ``EVAL_CHUNK_BYTES``)."""
    row = 4 * data.num_devices * int(np.prod(data.input_shape))  # float32 inputs of one sample
    return max(1, (budget or EVAL_CHUNK_BYTES) // max(row, 1))


def iter_chunks(
    data: AnyDataset, *, workers: int = 0, budget: int | None = None
) -> Iterator[Batch]:
    """``data`` in order: one batch of everything when in memory, else chunks of ``budget`` bytes."""
    if isinstance(data, MultiDeviceDataset):
        yield Batch(data.x, data.view_labels, data.labels)
        return
    if not len(data):  # one empty chunk, as in memory
        yield Batch(data.take(np.zeros(0, dtype=np.int64)), data.view_labels, data.labels)
        return
    yield from iter_batches(
        data, torch.arange(len(data)), chunk_size(data, budget), workers=workers
    )
