"""The MVMC.npz loader and the user .npz format, on small files the tests write themselves."""

import numpy as np
import pytest

from ddnn.cli import main
from ddnn.config import DataConfig
from ddnn.data.dataset import ABSENT
from ddnn.data.registry import load_dataset


def _mvmc_arrays(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    y = np.repeat(labels[:, None], 6, axis=1)
    y[rng.random((n, 6)) < 0.3] = 3
    y[:, 0] = labels  # camera 0 always sees the object
    x = rng.random((n, 6, 3, 32, 32)).astype(np.float32)
    x[y == 3] = 0.0
    return x, y


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_mvmc_split_labels_and_camera_subset(tmp_path):
    x, y = _mvmc_arrays(50)
    path = _write(tmp_path / "MVMC.npz", X=x, y=y)
    splits = load_dataset(DataConfig(name="mvmc", path=path, seed=3))
    assert (len(splits.train), len(splits.test)) == (40, 10)  # 80/20
    again = load_dataset(DataConfig(name="mvmc", path=path, seed=3))
    assert np.array_equal(splits.test.x.numpy(), again.test.x.numpy())  # deterministic
    other = load_dataset(DataConfig(name="mvmc", path=path, seed=4))
    assert not np.array_equal(splits.test.x.numpy(), other.test.x.numpy())
    # Labels: class of the cameras that see it; absent (3 in the file) becomes ABSENT.
    all_x = np.concatenate([splits.train.x.numpy(), splits.test.x.numpy()])
    all_views = np.concatenate([splits.train.view_labels.numpy(), splits.test.view_labels.numpy()])
    assert set(np.unique(all_views)) <= {ABSENT, 0, 1, 2}
    for xi, vi in zip(all_x, all_views, strict=True):
        row = np.nonzero((x == xi).all(axis=(1, 2, 3, 4)))[0][0]
        assert np.array_equal(np.where(y[row] == 3, ABSENT, y[row]), vi)
    sub = load_dataset(DataConfig(name="mvmc", path=path, devices=(0, 2, 5)))
    full = load_dataset(DataConfig(name="mvmc", path=path))
    assert sub.train.num_devices == 3
    assert np.array_equal(sub.train.x.numpy(), full.train.x.numpy()[:, [0, 2, 5]])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.pop("y"), r"lacks array\(s\) \['y'\]"),
        (lambda a: a.update(X=a["X"][:, :5]), r"shape \(N, 6, 3, 32, 32\)"),
        (lambda a: a.update(X=a["X"].astype(np.int32)), "floating point"),
        (lambda a: a.update(y=a["y"].astype(np.float32)), "must be integers"),
        (lambda a: a["y"].__setitem__((7, 2), 5), "sample 7: labels .* outside 0-3"),
        (lambda a: a["y"].__setitem__(11, 3), "sample 11: no camera sees the object"),
        (lambda a: a["y"].__setitem__(13, [0, 1, 3, 3, 3, 3]), "sample 13: cameras disagree"),
    ],
)
def test_mvmc_validation_names_the_problem(tmp_path, mutate, message):
    x, y = _mvmc_arrays(20)
    arrays = {"X": x, "y": y}
    mutate(arrays)
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(DataConfig(name="mvmc", path=path))


def test_mvmc_missing_or_corrupt_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(DataConfig(name="mvmc", path=str(tmp_path / "none.npz")))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_dataset(DataConfig(name="mvmc", path=str(tmp_path / "junk.npz")))
    with pytest.raises(ValueError, match="--data-path"):
        load_dataset(DataConfig(name="mvmc"))


def test_npz_sample_labels_vectors_and_explicit_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 4, 12)).astype(np.float32)  # 4 devices, feature vectors of 12
    y = rng.integers(0, 5, 30)
    split = np.array(["train"] * 24 + ["test"] * 6)
    names = np.array(["a", "b", "c", "d", "e"])
    path = _write(tmp_path / "mine.npz", X=x, y=y, split=split, class_names=names)
    splits = load_dataset(DataConfig(name="npz", path=path))
    assert (len(splits.train), len(splits.test)) == (24, 6)
    assert splits.train.input_shape == (12,) and splits.train.class_names == tuple("abcde")
    assert np.array_equal(splits.test.labels.numpy(), y[24:])
    assert (splits.train.view_labels.numpy() == y[:24, None]).all()


def test_npz_per_device_labels_with_sentinel(tmp_path):
    x = np.ones((10, 2, 3, 8), np.float32)  # time series: 3 channels x 8 steps
    y = np.array([[1, 9]] * 5 + [[9, 0]] * 5)
    path = _write(tmp_path / "v.npz", X=x, y=y, absent=np.array(9))
    splits = load_dataset(DataConfig(name="npz", path=path, seed=1))
    views = np.concatenate([splits.train.view_labels.numpy(), splits.test.view_labels.numpy()])
    assert set(np.unique(views)) == {ABSENT, 0, 1}


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X": np.ones((4, 2, 3)), "y": np.zeros(5, int)}, r"shape \(4,\) or \(4, 2\)"),
        ({"X": np.ones((4, 2, 3)), "y": np.zeros(4)}, "integer labels"),
        ({"X": np.ones((4, 2, 3)), "y": np.array([[0, 1]] * 4)}, "sample 0: devices disagree"),
        (
            {"X": np.ones((4, 2, 3)), "y": np.zeros(4, int), "extra": np.ones(1)},
            r"must hold X \(or X0, X1, … per device\) and y",
        ),
        (
            {"X": np.ones((4, 2, 3)), "y": np.zeros(4, int), "split": np.array([0, 0, 2, 1])},
            "0 \\(train\\)",
        ),
        ({"X": np.full((4, 2, 3), np.nan), "y": np.zeros(4, int)}, "NaN"),
        ({"X": np.ones(4), "y": np.zeros(4, int)}, r"\(N, devices, ...\)"),
    ],
)
def test_npz_validation(tmp_path, arrays, message):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(DataConfig(name="npz", path=path))


def test_cli_trains_on_mvmc_file_and_rejects_bad_cameras(tmp_path, capsys):
    x, y = _mvmc_arrays(40)
    path = _write(tmp_path / "MVMC.npz", X=x, y=y)
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        "mvmc",
        "--data-path",
        path,
        "--cameras",
        "0,1,2",
        "--out",
        str(out),
        "--epochs",
        "1",
    ]
    assert main([*argv, "model.cloud.filters=[4]"]) == 0
    assert main(["evaluate", str(out), "--json", "--thresholds", "0.5"]) == 0
    assert '"rows"' in capsys.readouterr().out
    assert main([*argv[:5], "--cameras", "0,7", "--out", str(out)]) == 2
    assert "out of range; accepted: 0..5" in capsys.readouterr().err


def test_size_limits_apply_to_file_data(tmp_path):
    x, y = _mvmc_arrays(50)
    path = _write(tmp_path / "MVMC.npz", X=x, y=y)
    full = load_dataset(DataConfig(name="mvmc", path=path))
    small = load_dataset(DataConfig(name="mvmc", path=path, num_train=7, num_test=3))
    assert (len(small.train), len(small.test)) == (7, 3)
    assert np.array_equal(small.train.x.numpy(), full.train.x.numpy()[:7])
    with pytest.raises(ValueError, match="data.num_test = 99, but the split has 10 samples"):
        load_dataset(DataConfig(name="mvmc", path=path, num_test=99))
