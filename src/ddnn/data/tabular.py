"""Multi-sensor feature-vector data sets: a synthetic case and real sets split into sensor views.

- ``synthetic-vectors``: 4 sensors of 16 Gaussian features, 3 classes; class ``c`` shifts feature
  ``c`` by +2 standard deviations on every sensor (issue 15's easy case). 600 samples by default.
- ``digits-4``: scikit-learn's handwritten digits (1797 real 8 x 8 scans, 10 classes), each image
  cut into its four 4 x 4 quadrants, one sensor each (16 features scaled to [0, 1]).
- ``breast-cancer-3``: scikit-learn's Wisconsin breast cancer set (569 real samples, 2 classes),
  whose 30 features are 10 cell-nucleus measurements taken three ways: the mean, the standard
  error and the worst value over the cells; one sensor per way (10 raw features each).

The real sets are the copies that ship inside the scikit-learn package (``pip install
'ddnn[data]'``); nothing is downloaded. Every sensor sees every sample, so view labels equal the
sample label. Splits are seeded (``data.test_fraction``, ``data.seed``), as for ``.npz`` files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits, MultiDeviceDataset, from_arrays
from ddnn.data.split import split_dataset

SYNTHETIC_SAMPLES = 600
SYNTHETIC_SENSORS = 4
SYNTHETIC_FEATURES = 16
SYNTHETIC_CLASSES = 3
SYNTHETIC_SHIFT = 2.0  # in standard deviations of the features
DIGITS_PIXEL_MAX = 16.0  # digits pixels are counts 0..16


def make_shifted_sensors(
    num_samples: int = SYNTHETIC_SAMPLES,
    num_sensors: int = SYNTHETIC_SENSORS,
    num_features: int = SYNTHETIC_FEATURES,
    num_classes: int = SYNTHETIC_CLASSES,
    shift: float = SYNTHETIC_SHIFT,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, sensors, features) float32, y (N,)): feature ``y`` is shifted by ``shift`` everywhere."""
    if num_classes > num_features:
        raise ValueError(f"need at least one feature per class, got {num_features} < {num_classes}")
    rng = np.random.default_rng(seed)
    y = rng.integers(num_classes, size=num_samples)
    x = rng.standard_normal((num_samples, num_sensors, num_features)).astype(np.float32)
    x[np.arange(num_samples), :, y] += shift
    return x, y


def sklearn_datasets() -> object:
    """``sklearn.datasets``, or a clear error naming the extra to install."""
    try:
        import sklearn.datasets
    except ImportError:
        raise ValueError(
            "this data set ships inside scikit-learn, which is not installed; "
            "pip install 'ddnn[data]' (or scikit-learn)"
        ) from None
    return sklearn.datasets


def digits_images() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's digits as (images (1797, 8, 8) in [0, 1], y, class names)."""
    bunch = sklearn_datasets().load_digits()  # type: ignore[attr-defined]
    images = bunch.images.astype(np.float32) / DIGITS_PIXEL_MAX
    return images, bunch.target, tuple(str(c) for c in bunch.target_names)


def digits_quadrants() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's digits as (x (1797, 4, 16) in [0, 1], y, class names); sensor ``2·row + col``
    sees quadrant (row, col) of the 8 x 8 image, row-major inside the quadrant."""
    images, y, classes = digits_images()
    n = len(images)
    quads = images.reshape(n, 2, 4, 2, 4).transpose(0, 1, 3, 2, 4).reshape(n, 4, 16)
    return quads, y, classes


def breast_cancer_views() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's breast cancer set as (x (569, 3, 10), y, class names); sensors are the
    mean, standard-error and worst views of the same 10 measurements."""
    bunch = sklearn_datasets().load_breast_cancer()  # type: ignore[attr-defined]
    x = bunch.data.astype(np.float32).reshape(-1, 3, 10)  # columns: 10 mean, 10 error, 10 worst
    return x, bunch.target, tuple(str(c) for c in bunch.target_names)


def views_dataset(
    x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], name: str
) -> MultiDeviceDataset:
    """Every sensor sees every sample: each view's label is the sample's."""
    views = np.repeat(y[:, None], x.shape[1], axis=1)
    return from_arrays(x, views, y, classes, -1, name)


def check_no_path(config: DataConfig) -> None:
    """A built-in data set refuses ``--data-path``."""
    if config.path:
        raise ValueError(f"{config.name} is built in, it takes no --data-path")


def load_synthetic_vectors(config: DataConfig) -> DataSplits:
    """The synthetic case: 600 samples generated from ``data.seed``, split like a file."""
    check_no_path(config)
    x, y = make_shifted_sensors(seed=config.seed)
    classes = tuple(f"class {c}" for c in range(SYNTHETIC_CLASSES))
    return split_dataset(views_dataset(x, y, classes, "synthetic-vectors"), config)


def real_loader(
    load: Callable[[], tuple[np.ndarray, np.ndarray, tuple[str, ...]]], name: str
) -> Callable[[DataConfig], DataSplits]:
    def loader(config: DataConfig) -> DataSplits:
        check_no_path(config)
        x, y, classes = load()
        return split_dataset(views_dataset(x, y, classes, name), config)

    loader.__doc__ = f"``{name}``: a seeded split of the real set (``data.test_fraction``)."
    return loader


load_digits_4 = real_loader(digits_quadrants, "digits-4")
load_breast_cancer_3 = real_loader(breast_cancer_views, "breast-cancer-3")
