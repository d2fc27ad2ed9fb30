"""Multi-sensor time-series data sets: a synthetic vibration case and a real set read as series.

- ``synthetic-series``: 4 sensors, each a 3-axis signal of 64 steps, 3 classes. The class is the
  frequency of a shared vibration (2, 3 or 5 cycles per window); each sensor sees it with its own
  phase and axis gains, under a distractor vibration of a random frequency and Gaussian noise that
  grows from sensor to sensor (sensor ``k`` has noise ``0.8 + 0.4·k``), so the sensors are not
  equally informative. 600 samples by default.
- ``digits-rows-4``: scikit-learn's real handwritten digits (1797 8 x 8 scans, 10 classes) read
  as series: sensor ``k`` sees rows ``2k`` and ``2k + 1`` as a 2-channel series of 8 steps
  (column by column), like a line sensor sweeping the digit.

Inputs are (C, L) per sensor, so device sections are 1-D ConvP blocks. Splits are seeded
(``data.test_fraction``, ``data.seed``), as for ``.npz`` files; every sensor sees every sample.
"""

from __future__ import annotations

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits
from ddnn.data.split import split_dataset
from ddnn.data.tabular import check_no_path, digits_images, real_loader, views_dataset

SERIES_SAMPLES = 600
SERIES_SENSORS = 4
SERIES_AXES = 3
SERIES_LENGTH = 64
SERIES_CYCLES = (2, 3, 5)  # the class's vibration, cycles per window
DISTRACTOR_CYCLES = (1, 8)  # a class-free vibration of a random whole frequency in this range
DISTRACTOR_AMPLITUDE = 0.7  # the class's vibration has amplitude 1 times an axis gain in [0.5, 1.5]
NOISE_BASE, NOISE_STEP = 0.8, 0.4  # sensor k's noise standard deviation: base + k * step


def make_vibration_sensors(
    num_samples: int = SERIES_SAMPLES,
    num_sensors: int = SERIES_SENSORS,
    axes: int = SERIES_AXES,
    length: int = SERIES_LENGTH,
    cycles: tuple[int, ...] = SERIES_CYCLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, sensors, axes, length) float32, y (N,)): class ``y`` vibrates at ``cycles[y]``."""
    if num_samples < 1 or num_sensors < 1 or axes < 1 or length < 2 * max(cycles):
        raise ValueError(
            f"need samples, sensors and axes >= 1 and length >= {2 * max(cycles)} "
            f"(two steps per cycle), got {num_samples}, {num_sensors}, {axes}, {length}"
        )
    rng = np.random.default_rng(seed)
    y = rng.integers(len(cycles), size=num_samples)
    t = np.arange(length) / length  # (L,)
    freq = np.asarray(cycles, dtype=np.float64)[y]  # (N,)
    phase = rng.uniform(0, 2 * np.pi, (num_samples, num_sensors))
    gains = rng.uniform(0.5, 1.5, (num_samples, num_sensors, axes))
    signal = np.sin(2 * np.pi * freq[:, None, None] * t + phase[..., None])  # (N, S, L)
    lo, hi = DISTRACTOR_CYCLES
    d_freq = rng.integers(lo, hi + 1, (num_samples, num_sensors))
    d_phase = rng.uniform(0, 2 * np.pi, (num_samples, num_sensors))
    distractor = np.sin(2 * np.pi * d_freq[..., None] * t + d_phase[..., None])  # (N, S, L)
    noise_sd = NOISE_BASE + NOISE_STEP * np.arange(num_sensors)  # (S,)
    noise = rng.standard_normal((num_samples, num_sensors, axes, length))
    x = gains[..., None] * signal[:, :, None, :] + DISTRACTOR_AMPLITUDE * distractor[:, :, None, :]
    x = x + noise_sd[None, :, None, None] * noise
    return x.astype(np.float32), y


def digits_rows() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's digits as (x (1797, 4, 2, 8) in [0, 1], y, class names): sensor ``k`` sees
    rows ``2k`` and ``2k + 1`` as two channels over the 8 columns."""
    images, y, classes = digits_images()
    return images.reshape(len(images), 4, 2, 8), y, classes


def load_synthetic_series(config: DataConfig) -> DataSplits:
    """The synthetic case: 600 samples generated from ``data.seed``, split like a file."""
    check_no_path(config)
    x, y = make_vibration_sensors(seed=config.seed)
    classes = tuple(f"{c} cycles" for c in SERIES_CYCLES)
    return split_dataset(views_dataset(x, y, classes, "synthetic-series"), config)


load_digits_rows_4 = real_loader(digits_rows, "digits-rows-4")
