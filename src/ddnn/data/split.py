"""Deterministic train/test splits and device selection shared by the file loaders."""

from __future__ import annotations

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import AnyDataset, DataSplits


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


def limit_sizes(splits: DataSplits, config: DataConfig) -> DataSplits:
    """Keep the first ``data.num_train`` / ``data.num_test`` samples when they are set (0 = all)."""
    for name, want, have in (
        ("num_train", config.num_train, len(splits.train)),
        ("num_test", config.num_test, len(splits.test)),
    ):
        if want < 0 or want > have:
            raise ValueError(
                f"data.{name} = {want}, but the split has {have} samples (0 = all of them)"
            )
    train = splits.train.subset(np.arange(config.num_train)) if config.num_train else splits.train
    test = splits.test.subset(np.arange(config.num_test)) if config.num_test else splits.test
    return DataSplits(train, test)


def split_dataset(data: AnyDataset, config: DataConfig) -> DataSplits:
    """Seeded split of one data set into train and test, size limits, then device selection."""
    train_idx, test_idx = seeded_split(len(data), config.test_fraction, config.seed)
    splits = limit_sizes(DataSplits(data.subset(train_idx), data.subset(test_idx)), config)
    return apply_device_selection(splits, config)


def carve_validation(splits: DataSplits, config: DataConfig) -> DataSplits:
    """Hold out ``data.validation_fraction`` of the training split (seeded) as validation."""
    if config.validation_fraction == 0.0:
        return splits
    if not 0.0 < config.validation_fraction < 1.0:
        raise ValueError(
            f"data.validation_fraction must be in [0, 1) (0 = none), got {config.validation_fraction}"
        )
    train_idx, val_idx = seeded_split(
        len(splits.train), config.validation_fraction, config.seed + 1
    )
    return DataSplits(splits.train.subset(train_idx), splits.test, splits.train.subset(val_idx))
