"""Users' own multi-device data as one ``.npz`` file.

Arrays (README "Your own data"):

* ``X`` — (N, D, ...) inputs for D devices: images (C, H, W), time series (C, L) or vectors (F,).
* ``y`` — (N,) sample labels (every device sees every sample), or (N, D) per-device labels with
  the sentinel ``absent`` (default -1) for devices that do not see the object.
* optional ``labels`` (N,) sample labels when ``y`` is per device and views may disagree;
  ``absent`` scalar; ``class_names`` (K,) strings; ``split`` (N,) with 0/"train" and 1/"test"
  (without it the split is a seeded 80/20).
"""

from __future__ import annotations

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits, from_arrays
from ddnn.data.files import labels_from_views, read_npz
from ddnn.data.split import apply_device_selection, limit_sizes, split_dataset

KNOWN = {"X", "y", "labels", "absent", "class_names", "split"}


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


def load_npz(config: DataConfig) -> DataSplits:
    """Load and validate a user ``.npz`` (see the module docstring)."""
    arrays = read_npz(config.path, "npz")
    unknown = sorted(set(arrays) - KNOWN)
    if unknown or "X" not in arrays or "y" not in arrays:
        raise ValueError(
            f"npz file {config.path!r} must hold X and y (optional: labels, absent, class_names, split); "
            f"found {sorted(arrays)}"
        )
    x, y = arrays["X"], arrays["y"]
    if x.ndim < 3 or x.ndim > 5:
        raise ValueError(
            f"npz X must be (N, devices, ...) with 1-3 dims per device, got shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"npz X must be numeric, got {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError("npz X holds NaN or infinite values")
    n, d = x.shape[:2]
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
    data = from_arrays(x.astype(np.float32), views, labels, names, absent, "npz")
    if "split" not in arrays:
        return split_dataset(data, config)
    test = _split_mask(arrays["split"], n)
    if test.all() or not test.any():
        raise ValueError("npz split must put at least one sample in each of train and test")
    splits = DataSplits(data.subset(np.nonzero(~test)[0]), data.subset(np.nonzero(test)[0]))
    return apply_device_selection(limit_sizes(splits, config), config)
