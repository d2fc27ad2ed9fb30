"""The multi-device data containers every loader returns (in memory, or read on demand)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

ABSENT = -1  # view label of a device that does not see the object (contributes no head loss)


@dataclass
class MultiDeviceDataset:
    """N samples seen by D devices.

    Devices usually share one input shape and ``x`` is (N, D, *input_shape). Devices with
    different shapes (a camera beside an accelerometer) are *packed*: each device's input is
    flattened into a row of ``x`` (N, D, P), zero-padded to the longest (P elements), and
    ``device_shapes`` records every device's own shape; ``device_input(k)`` unpacks one.

    Attributes:
        x: (N, D, *input_shape) or packed (N, D, P) float32 inputs; an absent view is all zeros.
        view_labels: (N, D) int64 per-device labels, ``ABSENT`` where the device does not see it.
        labels: (N,) int64 sample labels.
        class_names: names of the classes, index = label.
    """

    x: Tensor
    view_labels: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    name: str = ""
    meta: dict[str, object] = field(default_factory=dict)
    device_shapes: tuple[tuple[int, ...], ...] = ()  # per-device shapes of packed inputs; () = x's

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.x.dim() < 3:
            raise ValueError(
                f"{self.name}: inputs must be (N, devices, ...), got shape {tuple(self.x.shape)}"
            )
        if self.device_shapes:
            check_packed_shapes(self.device_shapes, tuple(self.x.shape[1:]), self.name)
        check_labels(
            self.name, self.view_labels, self.labels, n, int(self.x.shape[1]), self.class_names
        )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_devices(self) -> int:
        return int(self.x.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[2:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_packed(self) -> bool:
        """True when devices have different input shapes (``x`` holds flattened, padded rows)."""
        return bool(self.device_shapes)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Every device's own input shape."""
        return self.device_shapes or (self.input_shape,) * self.num_devices

    def device_input(self, k: int) -> Tensor:
        """(N, *shape_k) inputs of device ``k``."""
        if not self.is_packed:
            return self.x[:, k]
        shape = self.device_shapes[k]
        return self.x[:, k, : math.prod(shape)].reshape(len(self), *shape)

    def subset(self, index: Tensor | np.ndarray) -> MultiDeviceDataset:
        """The samples at ``index``."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return MultiDeviceDataset(
            self.x[idx],
            self.view_labels[idx],
            self.labels[idx],
            self.class_names,
            self.name,
            dict(self.meta),
            self.device_shapes,
        )

    def select_devices(self, devices: list[int]) -> MultiDeviceDataset:
        """Keep only the given devices (in that order)."""
        bad = [d for d in devices if not 0 <= d < self.num_devices]
        if bad:
            raise ValueError(
                f"device index {bad} out of range; accepted: 0..{self.num_devices - 1}"
            )
        x, shapes = pack_device_inputs([self.device_input(d) for d in devices])
        return MultiDeviceDataset(
            x,
            self.view_labels[:, devices],
            self.labels,
            self.class_names,
            self.name,
            dict(self.meta),
            shapes,
        )


def check_labels(
    name: str,
    view_labels: Tensor,
    labels: Tensor,
    n: int,
    d: int,
    class_names: tuple[str, ...],
) -> None:
    """(N, D) view labels and (N,) labels of ``len(class_names)`` classes (views may be absent)."""
    if tuple(view_labels.shape) != (n, d):
        raise ValueError(
            f"{name}: view labels must have shape {(n, d)}, got {tuple(view_labels.shape)}"
        )
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{name}: labels must have shape ({n},), got {tuple(labels.shape)}")
    c = len(class_names)
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"{name}: labels must be in 0..{c - 1}")
    bad = (view_labels != ABSENT) & ((view_labels < 0) | (view_labels >= c))
    if bool(bad.any()):
        i = int(bad.any(dim=1).nonzero()[0])
        raise ValueError(f"{name}: sample {i} has a view label outside 0..{c - 1} / absent")


class SampleReader(Protocol):
    """Where a ``MappedDataset``'s inputs come from: rows of files, read on demand."""

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Every source device's own input shape."""
        ...

    def __len__(self) -> int:
        """Rows (samples) in the source."""
        ...

    def read(self, rows: np.ndarray, devices: Sequence[int]) -> list[np.ndarray]:
        """Per device in ``devices``, its (len(rows), *shape) float32 inputs at the source ``rows``."""
        ...


@dataclass
class MappedDataset:
    """N samples whose inputs stay on disk until a batch asks for them (``data.in_memory=false``).

    It has ``MultiDeviceDataset``'s contract but no ``x``: labels live in memory, inputs are read
    by ``take`` (``ddnn.data.streaming.iter_batches`` streams them). Splits and device selections
    are index views on the source: sample i is source row ``rows[i]`` and device k is source
    device ``devices[k]``; ``take`` returns exactly what ``MultiDeviceDataset.x`` would hold.

    Attributes:
        reader: the source (memory-mapped arrays, or a folder's files).
        rows: (N,) int64 source rows.
        devices: the source devices kept, in order.
        view_labels: (N, D) int64 per-device labels, ``ABSENT`` where the device does not see it.
        labels: (N,) int64 sample labels.
    """

    reader: SampleReader
    rows: np.ndarray
    devices: tuple[int, ...]
    view_labels: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    name: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = len(self.reader)
        if self.rows.ndim != 1 or (
            len(self.rows) and not 0 <= self.rows.min() <= self.rows.max() < total
        ):
            raise ValueError(f"{self.name}: rows must be (N,) indices into the {total} source rows")
        source = len(self.reader.shapes)
        if not self.devices or any(not 0 <= k < source for k in self.devices):
            raise ValueError(
                f"{self.name}: devices {list(self.devices)} must be in 0..{source - 1}"
            )
        shapes = self.shapes
        if len(set(shapes)) > 1:
            width = max(math.prod(s) for s in shapes)
            check_packed_shapes(shapes, (len(shapes), width), self.name)
        check_labels(
            self.name, self.view_labels, self.labels, len(self), self.num_devices, self.class_names
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Every device's own input shape."""
        return tuple(self.reader.shapes[k] for k in self.devices)

    @property
    def device_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-device shapes when they differ (inputs are packed), else ``()``."""
        shapes = self.shapes
        return shapes if len(set(shapes)) > 1 else ()

    @property
    def is_packed(self) -> bool:
        return bool(self.device_shapes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one device's row of ``take``: the shared shape, or (P,) when packed."""
        if self.is_packed:
            return (max(math.prod(s) for s in self.shapes),)
        return self.shapes[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, index: Tensor | np.ndarray) -> Tensor:
        """(B, D, *input_shape) float32 inputs of the samples at ``index``, read from the source."""
        rows = self.rows[np.asarray(index, dtype=np.int64).reshape(-1)]
        unique, inverse = np.unique(rows, return_inverse=True)  # read each row once, in file order
        inputs = self.reader.read(unique, self.devices)
        b, shapes = len(rows), self.shapes
        if self.is_packed:  # as pack_device_inputs: flattened rows, zero-padded to the longest
            x = np.zeros((b, len(shapes), self.input_shape[0]), dtype=np.float32)
            for k, a in enumerate(inputs):
                x[:, k, : a[0].size] = a[inverse].reshape(b, -1)
        else:  # filled in NumPy: much cheaper than torch.stack of per-device tensors
            x = np.empty((b, len(shapes), *shapes[0]), dtype=np.float32)
            for k, a in enumerate(inputs):
                x[:, k] = a[inverse]
        return torch.from_numpy(x)

    def device_input(self, k: int) -> Tensor:
        """(N, *shape_k) inputs of device ``k``; this reads the device's whole split into memory."""
        if not 0 <= k < self.num_devices:
            raise ValueError(f"device index {k} out of range; accepted: 0..{self.num_devices - 1}")
        (x,) = self.reader.read(self.rows, (self.devices[k],))
        return torch.from_numpy(x)

    def subset(self, index: Tensor | np.ndarray) -> MappedDataset:
        """The samples at ``index`` (an index view; nothing is read)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self,
            rows=self.rows[idx.numpy()],
            view_labels=self.view_labels[idx],
            labels=self.labels[idx],
            meta=dict(self.meta),
        )

    def select_devices(self, devices: list[int]) -> MappedDataset:
        """Keep only the given devices (in that order)."""
        bad = [d for d in devices if not 0 <= d < self.num_devices]
        if bad:
            raise ValueError(
                f"device index {bad} out of range; accepted: 0..{self.num_devices - 1}"
            )
        return replace(
            self,
            devices=tuple(self.devices[d] for d in devices),
            view_labels=self.view_labels[:, devices],
            meta=dict(self.meta),
        )


AnyDataset = MultiDeviceDataset | MappedDataset  # what loaders, the trainer and evaluation take


@dataclass
class DataSplits:
    """A train and a test split of one data set, and an optional validation split (from train)."""

    train: AnyDataset
    test: AnyDataset
    validation: AnyDataset | None = None

    def __post_init__(self) -> None:
        if self.train.num_devices != self.test.num_devices or self.train.shapes != self.test.shapes:
            raise ValueError("train and test splits must have the same devices and input shapes")


def check_packed_shapes(
    shapes: tuple[tuple[int, ...], ...], row_shape: tuple[int, ...], name: str = ""
) -> None:
    """``row_shape`` (D, P) must hold D devices whose flattened inputs fit P (the longest)."""
    prefix = f"{name}: " if name else ""
    if len(row_shape) != 2 or len(shapes) != row_shape[0]:
        raise ValueError(
            f"{prefix}packed inputs must be (N, {len(shapes)}, P) for {len(shapes)} device "
            f"shapes, got rows of shape {row_shape}"
        )
    for k, shape in enumerate(shapes):
        if not 1 <= len(shape) <= 3 or any(n < 1 for n in shape):
            raise ValueError(
                f"{prefix}device {k} input shape must be (C, H, W), (C, L) or (F,) with positive "
                f"sizes, got {shape}"
            )
    width = max(math.prod(s) for s in shapes)
    if row_shape[1] != width:
        raise ValueError(
            f"{prefix}packed rows must hold {width} elements (the largest device input), "
            f"got {row_shape[1]}"
        )


def pack_device_inputs(
    inputs: Sequence[Tensor | np.ndarray],
) -> tuple[Tensor, tuple[tuple[int, ...], ...]]:
    """Per-device inputs (N, *shape_k) -> (x, device_shapes) for ``MultiDeviceDataset``.

    Devices that all share one shape give x (N, D, *shape) and no device shapes; otherwise every
    device's input is flattened and zero-padded to the longest: x (N, D, P).
    """
    if not inputs:
        raise ValueError("need at least one device")
    tensors = [torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a) for a in inputs]
    n = tensors[0].shape[0]
    bad = [k for k, t in enumerate(tensors) if t.shape[0] != n]
    if bad:
        raise ValueError(
            f"device {bad[0]} has {tensors[bad[0]].shape[0]} samples, device 0 has {n}"
        )
    shapes = tuple(tuple(int(s) for s in t.shape[1:]) for t in tensors)
    if len(set(shapes)) == 1:
        return torch.stack([t.float() for t in tensors], dim=1).contiguous(), ()
    width = max(math.prod(s) for s in shapes)
    x = torch.zeros(n, len(tensors), width, dtype=torch.float32)
    for k, t in enumerate(tensors):
        x[:, k, : math.prod(shapes[k])] = t.reshape(n, -1).float()
    check_packed_shapes(shapes, tuple(x.shape[1:]))
    return x, shapes


def from_arrays(
    x: np.ndarray,
    view_labels: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    absent_value: int,
    name: str,
) -> MultiDeviceDataset:
    """Wrap NumPy arrays, mapping the file's absent sentinel to ``ABSENT``."""
    vl = view_labels.astype(np.int64).copy()
    vl[vl == absent_value] = ABSENT
    return MultiDeviceDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(vl),
        torch.from_numpy(labels.astype(np.int64)),
        class_names,
        name,
    )


def from_device_arrays(
    inputs: Sequence[np.ndarray],
    view_labels: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    absent_value: int,
    name: str,
) -> MultiDeviceDataset:
    """Like ``from_arrays`` but with one (N, *shape_k) array per device; shapes may differ."""
    x, shapes = pack_device_inputs([np.asarray(a, dtype=np.float32) for a in inputs])
    data = from_arrays(x.numpy(), view_labels, labels, class_names, absent_value, name)
    return replace(data, device_shapes=shapes)


def mapped_from_reader(
    reader: SampleReader,
    view_labels: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    absent_value: int,
    name: str,
) -> MappedDataset:
    """Like ``from_arrays`` for inputs left in ``reader``: all its rows and devices."""
    vl = view_labels.astype(np.int64).copy()
    vl[vl == absent_value] = ABSENT
    return MappedDataset(
        reader,
        np.arange(len(reader), dtype=np.int64),
        tuple(range(len(reader.shapes))),
        torch.from_numpy(vl),
        torch.from_numpy(labels.astype(np.int64)),
        class_names,
        name,
    )
