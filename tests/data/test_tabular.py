"""Vector-sensor data sets: the synthetic case and the real sets shipped inside scikit-learn."""

import json

import numpy as np
import pytest

from ddnn.cli import main
from ddnn.config import DataConfig
from ddnn.data.registry import list_datasets, load_dataset
from ddnn.data.tabular import make_shifted_sensors
from ddnn.models.defaults import VECTOR_FILTERS, vector_binary
from ddnn.train.checkpoint import load_run


def test_synthetic_vectors_shift_the_class_feature_on_every_sensor():
    x, y = make_shifted_sensors(num_samples=3000, seed=1)
    assert x.shape == (3000, 4, 16) and set(np.unique(y)) == {0, 1, 2}
    for c in range(3):
        means = x[y == c].mean(axis=0)  # (4, 16)
        assert np.allclose(means[:, c], 2.0, atol=0.2)
        others = np.delete(means, c, axis=1)
        assert np.abs(others).max() < 0.2


def test_synthetic_vectors_split_is_seeded():
    splits = load_dataset(DataConfig(name="synthetic-vectors", seed=5, validation_fraction=0.2))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (384, 96, 120)
    assert splits.train.input_shape == (16,) and splits.train.num_devices == 4
    again = load_dataset(DataConfig(name="synthetic-vectors", seed=5))
    assert np.array_equal(again.test.x.numpy(), splits.test.x.numpy())
    other = load_dataset(DataConfig(name="synthetic-vectors", seed=6))
    assert not np.array_equal(other.test.x.numpy(), splits.test.x.numpy())


def test_digits_quadrants_reassemble_the_real_images():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    images = sklearn_datasets.load_digits().images
    splits = load_dataset(DataConfig(name="digits-4"))
    assert (len(splits.train), len(splits.test)) == (1438, 359)
    assert splits.train.num_classes == 10 and splits.train.shapes == ((16,),) * 4
    from ddnn.data.tabular import digits_quadrants

    quads, y, _ = digits_quadrants()
    rebuilt = quads.reshape(-1, 2, 2, 4, 4).transpose(0, 1, 3, 2, 4).reshape(-1, 8, 8)
    assert np.array_equal(rebuilt * 16, images) and quads.max() == 1.0
    assert (splits.train.view_labels == splits.train.labels[:, None]).all()


def test_breast_cancer_views_are_mean_error_worst():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_breast_cancer()
    from ddnn.data.tabular import breast_cancer_views

    x, y, classes = breast_cancer_views()
    assert x.shape == (569, 3, 10) and classes == ("malignant", "benign")
    names = np.asarray(bunch.feature_names).reshape(3, 10)
    assert names[0, 0] == "mean radius" and names[1, 0] == "radius error"
    assert names[2, 0] == "worst radius"
    assert np.allclose(x[:, 2, 0], bunch.data[:, 20])
    splits = load_dataset(DataConfig(name="breast-cancer-3", test_fraction=0.25))
    assert (len(splits.train), len(splits.test)) == (427, 142)


BUILT_IN = ["synthetic-vectors", "digits-4", "breast-cancer-3", "synthetic-series", "digits-rows-4"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_sets_are_listed_and_take_no_path(name):
    assert name in list_datasets()
    with pytest.raises(ValueError, match="takes no --data-path"):
        load_dataset(DataConfig(name=name, path="x.npz"))


def test_train_on_a_vector_set_from_the_cli_uses_the_vector_defaults(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic-vectors", "--out", str(out), "train.epochs=1"]) == 0
    _, config, _ = load_run(out)
    assert config.model.device.filters == VECTOR_FILTERS
    assert config.model.device.binary == vector_binary(VECTOR_FILTERS)
    capsys.readouterr()
    assert main(["profile", str(out), "--json"]) == 0
    sections = {s["name"]: s for s in json.loads(capsys.readouterr().out)["sections"]}
    bits = config.model.device.filters[-1]
    assert sections["device_0"]["feature_bytes"] == -(-bits // 8)
