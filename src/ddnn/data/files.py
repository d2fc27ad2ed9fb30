"""Shared by the file loaders: reading an ``.npz`` archive and deriving sample labels from views."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, with clear errors for a missing or unreadable file."""
    p = Path(path)
    if not str(path):
        raise ValueError(f"{what} needs a file: pass --data-path FILE.npz")
    if not p.is_file():
        raise ValueError(f"{what} file {str(p)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zipfile/pickle/format errors all mean "not a readable npz"
        raise ValueError(
            f"{what} file {str(p)!r} is not a readable .npz archive ({type(exc).__name__})"
        ) from None


def labels_from_views(
    views: np.ndarray, absent: int, source: str, nobody: str, disagree: str
) -> np.ndarray:
    """The label every seeing view agrees on, per sample; errors name the first bad sample.

    Args:
        views: (N, D) per-device labels with ``absent`` for devices that do not see the object.
        absent: the sentinel.
        source: names the data in messages (``"MVMC"``, ``"npz"``).
        nobody: message for a sample no device sees.
        disagree: message for a sample whose views disagree (the labels are appended).
    """
    seen = views != absent
    unseen = ~seen.any(axis=1)
    if unseen.any():
        i = int(np.nonzero(unseen)[0][0])
        raise ValueError(f"{source} sample {i}: {nobody}")
    first = np.take_along_axis(views, seen.argmax(axis=1)[:, None], axis=1)[:, 0]
    conflict = (seen & (views != first[:, None])).any(axis=1)
    if conflict.any():
        i = int(np.nonzero(conflict)[0][0])
        raise ValueError(f"{source} sample {i}: {disagree} ({views[i].tolist()})")
    return first.astype(np.int64)
