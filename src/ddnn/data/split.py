"""Deterministic train/test splits and device selection shared by the file loaders."""

from __future__ import annotations

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits, MultiDeviceDataset


def seeded_split(
    num_samples: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded random split; the test part is round(test_fraction · N) samples."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
    num_test = int(round(test_fraction * num_samples))
    if num_test < 1 or num_test >= num_samples:
        raise ValueError(
            f"cannot split {num_samples} samples with test fraction {test_fraction}: "
            "both splits need at least one sample"
        )
    order = np.random.default_rng(seed).permutation(num_samples)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def apply_device_selection(splits: DataSplits, config: DataConfig) -> DataSplits:
    """Keep only ``config.devices`` (in that order) when given; errors name the valid range."""
    if not config.devices:
        return splits
    devices = list(config.devices)
    if len(set(devices)) != len(devices):
        raise ValueError(f"device list {devices} repeats a device")
    return DataSplits(splits.train.select_devices(devices), splits.test.select_devices(devices))


def split_dataset(data: MultiDeviceDataset, config: DataConfig) -> DataSplits:
    """Seeded split of one data set into train and test, then device selection."""
    train_idx, test_idx = seeded_split(len(data), config.test_fraction, config.seed)
    return apply_device_selection(DataSplits(data.subset(train_idx), data.subset(test_idx)), config)
