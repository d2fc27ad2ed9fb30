"""The multi-device data container every loader returns, with its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

ABSENT = -1  # view label of a device that does not see the object (contributes no head loss)


@dataclass
class MultiDeviceDataset:
    """N samples seen by D devices.

    Attributes:
        x: (N, D, *input_shape) float32 inputs; an absent view is all zeros.
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

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.x.dim() < 3:
            raise ValueError(
                f"{self.name}: inputs must be (N, devices, ...), got shape {tuple(self.x.shape)}"
            )
        if tuple(self.view_labels.shape) != tuple(self.x.shape[:2]):
            raise ValueError(
                f"{self.name}: view labels must have shape {tuple(self.x.shape[:2])}, "
                f"got {tuple(self.view_labels.shape)}"
            )
        if tuple(self.labels.shape) != (n,):
            raise ValueError(
                f"{self.name}: labels must have shape ({n},), got {tuple(self.labels.shape)}"
            )
        c = len(self.class_names)
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= c):
            raise ValueError(f"{self.name}: labels must be in 0..{c - 1}")
        bad = (self.view_labels != ABSENT) & ((self.view_labels < 0) | (self.view_labels >= c))
        if bool(bad.any()):
            i = int(bad.any(dim=1).nonzero()[0])
            raise ValueError(
                f"{self.name}: sample {i} has a view label outside 0..{c - 1} / absent"
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
        )

    def select_devices(self, devices: list[int]) -> MultiDeviceDataset:
        """Keep only the given devices (in that order)."""
        bad = [d for d in devices if not 0 <= d < self.num_devices]
        if bad:
            raise ValueError(
                f"device index {bad} out of range; accepted: 0..{self.num_devices - 1}"
            )
        return MultiDeviceDataset(
            self.x[:, devices],
            self.view_labels[:, devices],
            self.labels,
            self.class_names,
            self.name,
            dict(self.meta),
        )


@dataclass
class DataSplits:
    """A train and a test split of one data set."""

    train: MultiDeviceDataset
    test: MultiDeviceDataset

    def __post_init__(self) -> None:
        if (
            self.train.num_devices != self.test.num_devices
            or self.train.input_shape != self.test.input_shape
        ):
            raise ValueError("train and test splits must have the same devices and input shape")


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
