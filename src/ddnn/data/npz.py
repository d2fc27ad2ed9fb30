"""Users' own multi-device data as one ``.npz`` file.

Arrays (docs/data.md, "Your own .npz"):

* ``X`` — (N, D, ...) inputs for D devices: images (C, H, W), time series (C, L) or vectors (F,);
  or, when devices have different input shapes, one array per device ``X0`` … ``X{D-1}``, each
  (N, *shape_k) (say a camera (3, 32, 32) beside an accelerometer (3, 50)).
* ``y`` — (N,) sample labels (every device sees every sample), or (N, D) per-device labels with
  the sentinel ``absent`` (default -1) for devices that do not see the object.
* optional ``labels`` (N,) sample labels when ``y`` is per device and views may disagree;
  ``absent`` scalar; ``class_names`` (K,) strings; ``split`` (N,) with 0/"train" and 1/"test"
  (without it the split is a seeded 80/20).

The same arrays may lie in a folder as one ``.npy`` file each (``DIR/X0.npy``, ``DIR/y.npy`` …).
With ``data.in_memory=false`` the inputs are memory-mapped (an ``.npz`` must then be written by
``np.savez``, uncompressed) and read batch by batch; their NaN / infinity check moves to those
reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import AnyDataset, DataSplits, from_device_arrays, mapped_from_reader
from ddnn.data.files import labels_from_views, read_npz
from ddnn.data.ondisk import ArrayReader, MappedArray, read_array_set
from ddnn.data.split import apply_device_selection, limit_sizes, split_dataset

KNOWN = {"X", "y", "labels", "absent", "class_names", "split"}
PER_DEVICE = re.compile(r"X(\d+)")


def _is_input(name: str) -> bool:
    return name == "X" or PER_DEVICE.fullmatch(name) is not None


def _device_inputs(arrays: dict[str, np.ndarray], check_values: bool = True) -> list[np.ndarray]:
    """The per-device input arrays: ``X`` split along axis 1, or ``X0`` … ``X{D-1}``.

    ``check_values=False`` leaves the NaN / infinity check to whoever reads the values (mapped
    arrays are not read here).
    """
    keys = sorted((k for k in arrays if PER_DEVICE.fullmatch(k)), key=lambda k: int(k[1:]))
    if "X" in arrays and keys:
        raise ValueError(f"npz gives both X and per-device arrays {keys}; give one or the other")
    if "X" in arrays:
        x = arrays["X"]
        if x.ndim < 3 or x.ndim > 5:
            raise ValueError(
                f"npz X must be (N, devices, ...) with 1-3 dims per device, got shape {x.shape}"
            )
        inputs = [x[:, k] for k in range(x.shape[1])]
        names = [f"X[:, {k}]" for k in range(x.shape[1])]
    else:
        expected = [f"X{k}" for k in range(len(keys))]
        if keys != expected:
            raise ValueError(
                f"per-device arrays must be numbered X0..X{len(keys) - 1} without gaps, got {keys}"
            )
        inputs = [arrays[k] for k in keys]
        names = keys
        for name, a in zip(names, inputs, strict=True):
            if not 2 <= a.ndim <= 4:
                raise ValueError(
                    f"npz {name} must be (N, ...) with 1-3 dims per sample, got shape {a.shape}"
                )
        n = inputs[0].shape[0]
        for name, a in zip(names, inputs, strict=True):
            if a.shape[0] != n:
                raise ValueError(f"npz {name} has {a.shape[0]} samples, X0 has {n}")
    for name, a in zip(names, inputs, strict=True):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"npz {name} must be numeric, got {a.dtype}")
        if check_values and not np.isfinite(a).all():
            raise ValueError(f"npz {name} holds NaN or infinite values")
    return inputs


def _split_mask(split: np.ndarray, n: int) -> np.ndarray:
    """True for test samples."""
    if split.shape != (n,):
        raise ValueError(f"npz split must have shape ({n},), got {split.shape}")
    if split.dtype.kind in "US":
        values = split.astype(str)
        bad = ~np.isin(values, ["train", "test"])
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise ValueError(f"npz sample {i}: split {values[i]!r}; accepted: 'train', 'test'")
        return values == "test"
    if not np.issubdtype(split.dtype, np.integer) or not np.isin(split, [0, 1]).all():
        raise ValueError("npz split must hold 0 (train) / 1 (test) or 'train' / 'test'")
    return split == 1


def _read(config: DataConfig) -> tuple[dict[str, np.ndarray], dict[str, MappedArray]]:
    """The arrays (inputs memory-mapped when streaming) and where the mapped ones lie."""
    if config.in_memory and not Path(config.path).is_dir():
        return read_npz(config.path, "npz"), {}
    return read_array_set(config.path, "npz", _is_input if not config.in_memory else _never)


def _never(name: str) -> bool:
    return False


def _mapped(
    where: dict[str, MappedArray],
    views: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    absent: int,
) -> AnyDataset:
    """The data set left on disk, read per batch."""
    keys = ["X"] if "X" in where else sorted(where, key=lambda k: int(k[1:]))
    reader = ArrayReader([where[k] for k in keys], keys, stacked=keys == ["X"])
    return mapped_from_reader(reader, views, labels, names, absent, "npz")


def load_npz(config: DataConfig) -> DataSplits:
    """Load and validate a user ``.npz`` or ``.npy`` folder (see the module docstring)."""
    arrays, where = _read(config)
    unknown = sorted(k for k in set(arrays) - KNOWN if not PER_DEVICE.fullmatch(k))
    has_x = "X" in arrays or "X0" in arrays
    if unknown or not has_x or "y" not in arrays:
        raise ValueError(
            f"npz data {config.path!r} must hold X (or X0, X1, … per device) and y "
            f"(optional: labels, absent, class_names, split); found {sorted(arrays)}"
        )
    inputs = _device_inputs(arrays, check_values=config.in_memory)
    y = arrays["y"]
    n, d = inputs[0].shape[0], len(inputs)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"npz y must hold integer labels, got {y.dtype}")
    absent = int(arrays["absent"]) if "absent" in arrays else -1
    if y.shape == (n,):
        labels, views = y.astype(np.int64), np.repeat(y[:, None], d, axis=1)
    elif y.shape == (n, d):
        views = y
        labels = (
            arrays["labels"].astype(np.int64)
            if "labels" in arrays
            else labels_from_views(
                y,
                absent,
                "npz",
                f"every device is marked absent ({absent}); give a `labels` array",
                "devices disagree on the label; give a `labels` array",
            )
        )
    else:
        raise ValueError(f"npz y must have shape ({n},) or ({n}, {d}), got {y.shape}")
    if labels.shape != (n,):
        raise ValueError(f"npz labels must have shape ({n},), got {labels.shape}")
    if "class_names" in arrays:
        names = tuple(str(c) for c in arrays["class_names"].tolist())
    else:
        names = tuple(str(c) for c in range(int(labels.max()) + 1))
    if labels.min() < 0 or labels.max() >= len(names):
        i = int(np.nonzero((labels < 0) | (labels >= len(names)))[0][0])
        raise ValueError(f"npz sample {i}: label {int(labels[i])} outside 0..{len(names) - 1}")
    if config.in_memory:
        data: AnyDataset = from_device_arrays(inputs, views, labels, names, absent, "npz")
    else:
        data = _mapped(where, views, labels, names, absent)
    if "split" not in arrays:
        return split_dataset(data, config)
    test = _split_mask(arrays["split"], n)
    if test.all() or not test.any():
        raise ValueError("npz split must put at least one sample in each of train and test")
    splits = DataSplits(data.subset(np.nonzero(~test)[0]), data.subset(np.nonzero(test)[0]))
    return apply_device_selection(limit_sizes(splits, config), config)
