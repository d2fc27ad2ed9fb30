"""Loader of the paper's published ``MVMC.npz`` (multi-view multi-camera: 6 cameras, 3 classes).

Arrays: ``X`` float32 (N, 6, 3, 32, 32) and ``y`` integer (N, 6) with 3 meaning "the object is not
in this camera's view". The sample label is the class seen by the cameras that see the object.
"""

from __future__ import annotations

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits, from_arrays
from ddnn.data.files import labels_from_views, read_npz
from ddnn.data.split import split_dataset

MVMC_CLASSES = ("car", "bus", "person")
MVMC_ABSENT = 3
MVMC_SHAPE = (6, 3, 32, 32)


def mvmc_labels(y: np.ndarray) -> np.ndarray:
    """Sample labels from per-camera labels; errors name the first bad sample."""
    bad = (y < 0) | (y > MVMC_ABSENT)
    if bad.any():
        i = int(np.nonzero(bad.any(axis=1))[0][0])
        raise ValueError(f"MVMC sample {i}: labels {y[i].tolist()} outside 0-3 (3 = not in view)")
    return labels_from_views(
        y,
        MVMC_ABSENT,
        "MVMC",
        "no camera sees the object (all labels are 3)",
        "cameras disagree on the class",
    )


def load_mvmc(config: DataConfig) -> DataSplits:
    """``MVMC.npz`` from ``config.path``, split 80/20 by ``config.seed`` (680/171 for 851 samples)."""
    arrays = read_npz(config.path, "mvmc")
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise ValueError(
            f"MVMC file {config.path!r} lacks array(s) {missing}; it must hold X and y"
        )
    x, y = arrays["X"], arrays["y"]
    if x.ndim != 5 or x.shape[1:] != MVMC_SHAPE:
        raise ValueError(f"MVMC X must have shape (N, 6, 3, 32, 32), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"MVMC X must be floating point, got {x.dtype}")
    if y.shape != x.shape[:2] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"MVMC y must be integers of shape {x.shape[:2]}, got {y.dtype} {y.shape}")
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        i = int(np.nonzero(~finite)[0][0])
        raise ValueError(f"MVMC sample {i}: X holds NaN or infinite values")
    labels = mvmc_labels(y)
    data = from_arrays(x, y, labels, MVMC_CLASSES, MVMC_ABSENT, "mvmc")
    return split_dataset(data, config)
