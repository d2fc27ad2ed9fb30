"""Time-series sensor data sets: the synthetic vibration case and the real digits read as series."""

import numpy as np
import pytest

from ddnn.cli import main
from ddnn.config import DataConfig
from ddnn.data.registry import load_dataset
from ddnn.data.series import SERIES_CYCLES, make_vibration_sensors
from ddnn.models.defaults import SERIES_FILTERS
from ddnn.train.checkpoint import load_run


def test_each_class_vibrates_at_its_own_frequency():
    x, y = make_vibration_sensors(num_samples=1500, seed=3)
    assert x.shape == (1500, 4, 3, 64) and x.dtype == np.float32
    assert set(np.unique(y)) == {0, 1, 2}
    # mean power spectrum of each class over samples, sensors and axes: the class's own
    # frequency stands out; the distractor (a random 1..8 cycles) and the noise are spread out
    power = (np.abs(np.fft.rfft(x, axis=-1)) ** 2).mean(axis=(1, 2))  # (N, 33)
    for c, cycles in enumerate(SERIES_CYCLES):
        spectrum = power[y == c].mean(axis=0)
        assert spectrum.argmax() == cycles
        others = [spectrum[k] for k in SERIES_CYCLES if k != cycles]
        assert spectrum[cycles] > 3 * max(others)


def test_noise_grows_from_sensor_to_sensor_as_documented():
    x, _ = make_vibration_sensors(num_samples=3000, seed=4)
    # per-value variance: the vibration gain g ~ U(0.5, 1.5) gives E[g^2]/2 = (1 + 1/12)/2, the
    # distractor 0.7^2/2, and sensor k's noise (0.8 + 0.4 k)^2, all independent with mean 0
    expected = [(1 + 1 / 12) / 2 + 0.49 / 2 + (0.8 + 0.4 * k) ** 2 for k in range(4)]
    measured = x.var(axis=(0, 2, 3))
    assert np.allclose(measured, expected, rtol=0.05)


def test_synthetic_series_is_seeded_and_checks_its_arguments():
    a, ya = make_vibration_sensors(num_samples=50, seed=7)
    b, yb = make_vibration_sensors(num_samples=50, seed=7)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, make_vibration_sensors(num_samples=50, seed=8)[0])
    with pytest.raises(ValueError, match="length >= 10"):
        make_vibration_sensors(length=8)
    with pytest.raises(ValueError, match="sensors and axes >= 1"):
        make_vibration_sensors(num_sensors=0)
    splits = load_dataset(DataConfig(name="synthetic-series", seed=2, validation_fraction=0.2))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (384, 96, 120)
    assert splits.train.shapes == ((3, 64),) * 4 and splits.train.num_classes == 3


def test_digits_rows_are_the_real_images_two_rows_per_sensor():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    images = sklearn_datasets.load_digits().images  # (1797, 8, 8), counts 0..16
    from ddnn.data.series import digits_rows

    x, y, classes = digits_rows()
    assert x.shape == (1797, 4, 2, 8) and len(classes) == 10
    for k in range(4):
        for j in range(2):
            assert np.array_equal(x[:, k, j] * 16, images[:, 2 * k + j])
    splits = load_dataset(DataConfig(name="digits-rows-4"))
    assert (len(splits.train), len(splits.test)) == (1438, 359)
    assert splits.train.shapes == ((2, 8),) * 4


def test_train_on_a_series_set_builds_1d_device_sections_with_the_series_defaults(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic-series", "--out", str(out), "train.epochs=1"]) == 0
    model, config, _ = load_run(out)
    assert config.model.device_shapes == ((3, 64),) * 4
    assert config.model.device.filters == SERIES_FILTERS
    convs = [m for m in model.modules() if type(m).__name__ in ("BinaryConv1d", "Conv1d")]
    assert convs, "a (C, L) device input is served by 1-D convolutions"
    capsys.readouterr()
