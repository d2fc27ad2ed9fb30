"""Data left on disk (``data.in_memory=false``): the same splits, batches, training and
evaluation as in memory, nothing loaded that a batch does not ask for, and clear errors.

Expectations are NumPy references: the seeded split re-derived from ``default_rng(seed)`` and
rows of the arrays the test wrote.
"""

from __future__ import annotations

import inspect
import tracemalloc
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import ddnn.data.folder as folder_module
from ddnn.cli import main
from ddnn.config import CloudConfig, DataConfig, DeviceConfig, EdgeConfig, ModelConfig, TrainConfig
from ddnn.data.dataset import ABSENT, MappedDataset, MultiDeviceDataset
from ddnn.data.registry import load_dataset
from ddnn.data.streaming import iter_batches
from ddnn.eval.calibrate import CalibrationTarget, calibrate
from ddnn.eval.evaluate import threshold_sweep
from ddnn.models.ddnn import DDNN
from ddnn.train import trainer
from ddnn.train.losses import joint_loss

N = 90


def _arrays(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """3 devices of 1x4x4 in float64 (the loader converts to float32), per-device labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    y = np.repeat(labels[:, None], 3, axis=1)
    y[rng.random((n, 3)) < 0.3] = -1
    y[:, 0] = labels
    return {"X": rng.random((n, 3, 1, 4, 4)), "y": y}


def _mixed(n: int = N, seed: int = 1) -> dict[str, np.ndarray]:
    """Devices of different shapes and dtypes (an image, a series of ints, a vector)."""
    rng = np.random.default_rng(seed)
    return {
        "X0": rng.random((n, 1, 4, 4)).astype(np.float32),
        "X1": rng.integers(-5, 5, (n, 2, 6)),
        "X2": rng.random((n, 5)),
        "y": rng.integers(0, 3, n),
    }


def _savez(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _npy_dir(root, **arrays) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for k, a in arrays.items():
        np.save(root / f"{k}.npy", a)
    return str(root)


def _both(path: str, **kw) -> tuple:
    config = DataConfig(name="npz", path=path, **kw)
    return load_dataset(config), load_dataset(replace(config, in_memory=False))


def _reference_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """data.split's rule, re-derived: the first round(f·n) of a seeded permutation are test."""
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(fraction * n))
    return np.sort(order[k:]), np.sort(order[:k])


def _stacked_inputs(arrays: dict[str, np.ndarray], devices=None) -> np.ndarray:
    """(N, D, *shape) float32, or packed (N, D, P) zero-padded rows for different shapes."""
    if "X" in arrays:
        x = arrays["X"].astype(np.float32)
        return x if devices is None else x[:, devices]
    keys = sorted((k for k in arrays if k[0] == "X"), key=lambda k: int(k[1:]))
    parts = [arrays[keys[d]] for d in (devices if devices is not None else range(len(keys)))]
    if len({p.shape[1:] for p in parts}) == 1:
        return np.stack([p.astype(np.float32) for p in parts], axis=1)
    width = max(int(np.prod(p.shape[1:])) for p in parts)
    out = np.zeros((len(parts[0]), len(parts), width), np.float32)
    for k, p in enumerate(parts):
        out[:, k, : p[0].size] = p.reshape(len(p), -1)
    return out


def _all_x(data) -> torch.Tensor:
    return data.x if isinstance(data, MultiDeviceDataset) else data.take(torch.arange(len(data)))


# --- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["npz", "npy-dir"])
@pytest.mark.parametrize("arrays_of", [_arrays, _mixed])
def test_streamed_splits_equal_in_memory_and_the_seeded_rule(tmp_path, kind, arrays_of):
    arrays = arrays_of()
    path = (
        _savez(tmp_path / "d.npz", **arrays)
        if kind == "npz"
        else _npy_dir(tmp_path / "d", **arrays)
    )
    memory, disk = _both(path, seed=5, validation_fraction=0.25)
    train_rows, test_rows = _reference_split(N, 0.2, 5)
    fit, val = _reference_split(len(train_rows), 0.25, 6)  # validation: seed + 1, from train
    x = _stacked_inputs(arrays)
    labels = arrays["y"] if arrays["y"].ndim == 1 else arrays["y"][:, 0]
    for name, rows in [
        ("train", train_rows[fit]),
        ("validation", train_rows[val]),
        ("test", test_rows),
    ]:
        m, d = getattr(memory, name), getattr(disk, name)
        assert isinstance(d, MappedDataset) and isinstance(m, MultiDeviceDataset)
        assert np.array_equal(d.rows, rows)  # an index view on the file's rows
        assert np.array_equal(_all_x(d).numpy(), x[rows])
        assert np.array_equal(m.x.numpy(), x[rows])
        assert np.array_equal(d.labels.numpy(), labels[rows])
        assert torch.equal(d.view_labels, m.view_labels)
        assert (d.shapes, d.device_shapes, d.input_shape) == (
            m.shapes,
            m.device_shapes,
            m.input_shape,
        )


def test_device_selection_limits_and_split_array_stream_alike(tmp_path):
    arrays = _mixed()
    split = np.where(np.arange(N) % 3 == 0, "test", "train")
    path = _savez(tmp_path / "d.npz", **arrays, split=split)
    memory, disk = _both(path, devices=(2, 0), num_train=20, num_test=7)
    train_rows = np.nonzero(split == "train")[0][:20]
    test_rows = np.nonzero(split == "test")[0][:7]
    x = _stacked_inputs(arrays, devices=[2, 0])
    for name, rows in [("train", train_rows), ("test", test_rows)]:
        d = getattr(disk, name)
        assert np.array_equal(_all_x(d).numpy(), x[rows])
        assert torch.equal(_all_x(d), getattr(memory, name).x)
        assert d.shapes == ((5,), (1, 4, 4))
    # Devices of one shape left after a selection are no longer packed, as in memory.
    same = load_dataset(DataConfig(name="npz", path=path, devices=(0,), in_memory=False))
    assert same.train.device_shapes == () and same.train.input_shape == (1, 4, 4)
    all_test = np.nonzero(split == "test")[0]
    assert np.array_equal(_all_x(same.test).numpy(), arrays["X0"][all_test][:, None])


# --- batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_follow_the_order_exactly(tmp_path, workers):
    arrays = _arrays()
    memory, disk = _both(_savez(tmp_path / "d.npz", **arrays))
    order = torch.randperm(len(disk.train), generator=torch.Generator().manual_seed(3))
    x = _stacked_inputs(arrays)
    rows = disk.train.rows[order.numpy()]
    streamed = list(iter_batches(disk.train, order, 16, workers=workers))
    in_memory = list(iter_batches(memory.train, order, 16))
    assert [len(b) for b in streamed] == [16, 16, 16, 16, 8]
    for k, (s, m) in enumerate(zip(streamed, in_memory, strict=True)):
        want = rows[16 * k : 16 * (k + 1)]
        assert np.array_equal(s.x.numpy(), x[want])
        assert np.array_equal(s.labels.numpy(), arrays["y"][want, 0])
        assert torch.equal(s.x, m.x) and torch.equal(s.view_labels, m.view_labels)
        assert torch.equal(s.labels, m.labels)


def test_batch_size_zero_is_one_batch_and_bad_orders_are_refused(tmp_path):
    _, disk = _both(_savez(tmp_path / "d.npz", **_arrays()))
    (only,) = iter_batches(disk.test, torch.arange(len(disk.test)), 0)
    assert len(only) == len(disk.test)
    with pytest.raises(ValueError, match=r"outside 0\.\.17"):
        next(iter_batches(disk.test, torch.tensor([0, 18]), 4))
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        next(iter_batches(disk.test, torch.arange(3), -1))
    with pytest.raises(ValueError, match="workers must be >= 0"):
        next(iter_batches(disk.test, torch.arange(3), 2, workers=-1))


def _train_by_hand(model: DDNN, data, epochs: int = 2) -> None:
    """The trainer's loop in miniature: a seeded permutation per epoch, Adam, the joint loss."""
    config = TrainConfig(batch_size=24)
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for batch in iter_batches(data, torch.randperm(len(data), generator=gen), 24):
            presence = torch.ones(len(batch), data.num_devices, dtype=torch.bool)
            loss, _ = joint_loss(
                model(batch.x, presence), batch.labels, batch.view_labels, presence, config
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


TINY = ModelConfig(
    num_devices=3,
    input_shape=(1, 4, 4),
    num_classes=3,
    device=DeviceConfig(filters=(2,)),
    edge=EdgeConfig(groups=((0, 1), (2,)), filters=(2,)),
    cloud=CloudConfig(filters=(4,)),
)


def test_training_on_streamed_batches_gives_the_same_weights(tmp_path):
    memory, disk = _both(_savez(tmp_path / "d.npz", **_arrays()))
    weights = []
    for data in (memory.train, disk.train):
        torch.manual_seed(0)
        model = DDNN(TINY)
        _train_by_hand(model, data)
        weights.append(model.state_dict())
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), name
    assert any(not torch.equal(w, DDNN(TINY).state_dict()[k]) for k, w in weights[0].items())


@pytest.mark.skipif(
    "iter_batches" not in inspect.getsource(trainer),
    reason="the trainer does not read batches through iter_batches yet",
)
def test_trainer_gives_the_same_weights_in_memory_and_streamed(tmp_path):
    memory, disk = _both(_savez(tmp_path / "d.npz", **_arrays()))
    config = TrainConfig(epochs=2, batch_size=24, seed=0)
    weights = []
    for data in (memory.train, disk.train):
        torch.manual_seed(0)
        model = DDNN(TINY)
        trainer.train(model, data, config)
        weights.append(model.state_dict())
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), name


# --- evaluation ------------------------------------------------------------------------------


def test_evaluation_streams_in_chunks_with_the_same_results(tmp_path, monkeypatch):
    # 150 test samples: ids past 127 take a 2-byte varint, so joined chunks must renumber ids.
    arrays = _arrays(n=750)
    memory, disk = _both(_savez(tmp_path / "d.npz", **arrays), validation_fraction=0.2)
    monkeypatch.setattr("ddnn.data.streaming.EVAL_CHUNK_BYTES", 40 * 3 * 16 * 4)  # 40 samples
    torch.manual_seed(0)
    model = DDNN(TINY).eval()
    missing = (1,)
    rows = [
        threshold_sweep(model, d.test, (0.2, 0.6, 1.0), missing=missing) for d in (memory, disk)
    ]
    assert [r.as_dict() for r in rows[0]] == [r.as_dict() for r in rows[1]]
    target = CalibrationTarget(max_accuracy_drop=5.0)
    a, b = (calibrate(model, d.validation, target) for d in (memory, disk))
    assert a.as_dict() == b.as_dict()


# --- memory ----------------------------------------------------------------------------------


def test_a_large_npz_is_mapped_not_loaded(tmp_path):
    n, width = 2_000, 2_500  # X: 2 000 x 2 x 2 500 float32 = 40 MB
    x = np.ones((n, 2, width), dtype=np.float32)
    x[:, 1] = 2.0
    path = _savez(tmp_path / "big.npz", X=x, y=np.arange(n) % 2)
    del x
    tracemalloc.start()
    try:
        splits = load_dataset(DataConfig(name="npz", path=path, in_memory=False))
        loaded = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        order = torch.arange(len(splits.train))
        total = sum(float(b.x[:, 1].sum()) for b in iter_batches(splits.train, order, 64))
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        load_dataset(DataConfig(name="npz", path=path))
        in_memory = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded < 2 << 20, loaded  # labels and indices only
    assert streamed < 8 << 20, streamed  # about one 1.3 MB batch at a time
    assert in_memory > 40 << 20  # the same file in memory: the contrast this test guards
    assert total == 2.0 * width * len(splits.train)
    (source,) = splits.train.reader._open()  # type: ignore[attr-defined]
    assert isinstance(source, np.memmap) and source.shape == (n, 2, width)


# --- the folder loader -----------------------------------------------------------------------


def _folder(root, n=24, seed=0):
    """Device ``a``: 8x8 grayscale PNGs; device ``b``: (3, 5) .npy series, missing for i % 5 == 0."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    series = rng.normal(size=(n, 3, 5)).astype(np.float32)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(n):
        Image.fromarray(pixels[i]).save(root / "a" / f"{i:03d}.png")
        if i % 5:
            np.save(root / "b" / f"{i:03d}.npy", series[i])
    (root / "labels.csv").write_text(
        "file,label\n" + "".join(f"{i:03d},{i % 3}\n" for i in range(n))
    )
    return pixels, series


def test_folder_streams_lazily_with_the_same_splits(tmp_path, monkeypatch):
    pixels, series = _folder(tmp_path / "f")
    reads = []
    real = folder_module._read_npy
    monkeypatch.setattr(folder_module, "_read_npy", lambda p: reads.append(p) or real(p))
    config = DataConfig(name="folder", path=str(tmp_path / "f"), seed=2)
    disk = load_dataset(replace(config, in_memory=False))
    assert len(reads) == 1  # only device b's first file, which fixes its shape
    memory = load_dataset(config)
    train_rows, test_rows = _reference_split(24, 0.2, 2)
    for name, rows in [("train", train_rows), ("test", test_rows)]:
        d, m = getattr(disk, name), getattr(memory, name)
        x = _all_x(d).numpy()  # packed: device a 64 values, device b 15 then zeros
        assert np.array_equal(x[:, 0].reshape(-1, 1, 8, 8), pixels[rows][:, None] / np.float32(255))
        want_b = np.where((rows % 5 != 0)[:, None, None], series[rows], 0)
        assert np.array_equal(x[:, 1, :15].reshape(-1, 3, 5), want_b)
        assert not x[:, 1, 15:].any()
        assert np.array_equal(d.view_labels[:, 1].numpy(), np.where(rows % 5, rows % 3, ABSENT))
        assert torch.equal(_all_x(d), m.x)


def test_folder_file_errors_surface_when_the_batch_is_read(tmp_path):
    _folder(tmp_path / "f")
    np.save(tmp_path / "f" / "b" / "007.npy", np.zeros((4, 5), np.float32))
    splits = load_dataset(DataConfig(name="folder", path=str(tmp_path / "f"), in_memory=False))
    data = splits.train.subset(np.arange(len(splits.train)))
    with pytest.raises(
        ValueError, match=r"007\.npy has shape \(4, 5\); this device's arrays are \(3, 5\)"
    ):
        for _ in iter_batches(data, torch.arange(len(data)), 8):
            pass


# --- bad input -------------------------------------------------------------------------------


def _load_streamed(path: str, name: str = "npz"):
    return load_dataset(DataConfig(name=name, path=path, in_memory=False))


def test_a_compressed_npz_is_refused_with_the_fix(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", **_arrays())
    with pytest.raises(
        ValueError,
        match="member X.npy is compressed.*write it with np.savez, not np.savez_compressed",
    ):
        _load_streamed(str(tmp_path / "c.npz"))
    assert len(load_dataset(DataConfig(name="npz", path=str(tmp_path / "c.npz"))).train) == 72


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"X0": np.ones((4, 3)), "X1": np.ones((4, 3))},
            r"must hold X \(or X0, X1, … per device\) and y",
        ),
        (
            {"X0": np.ones((4, 3)), "X1": np.ones((5, 3)), "y": np.zeros(4, int)},
            "npz X1 has 5 samples, X0 has 4",
        ),
        (
            {"X0": np.ones((4, 3)), "X2": np.ones((4, 3)), "y": np.zeros(4, int)},
            r"numbered X0\.\.X1 without gaps, got \['X0', 'X2'\]",
        ),
        ({"X": np.ones((4, 2, 3)), "y": np.zeros(5, int)}, r"y must have shape \(4,\) or \(4, 2\)"),
        (
            {"X": np.ones((4, 2, 3)), "X0": np.ones((4, 3)), "y": np.zeros(4, int)},
            "both X and per-device arrays",
        ),
        ({"X": np.ones((4, 2, 3), bool), "y": np.zeros(4, int)}, "must be numeric, got bool"),
        (
            {"X": np.ones((4, 2, 3)), "y": np.zeros(4, int), "notes": np.ones(2)},
            r"found \['X', 'notes', 'y'\]",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["npz", "npy-dir"])
def test_bad_layouts_name_what_is_wrong(tmp_path, arrays, message, kind):
    path = (
        _savez(tmp_path / "d.npz", **arrays)
        if kind == "npz"
        else _npy_dir(tmp_path / "d", **arrays)
    )
    with pytest.raises(ValueError, match=message):
        _load_streamed(path)


def test_other_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="holds no .npy files; it needs X.npy"):
        _load_streamed(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        _load_streamed(str(tmp_path / "none.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        _load_streamed(str(tmp_path / "junk.npz"))
    np.save(tmp_path / "X.npy", np.array([[None, 1]] * 4, dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.zeros(4, int))
    with pytest.raises(ValueError, match="X.npy holds Python objects"):
        _load_streamed(str(tmp_path))
    with pytest.raises(
        ValueError, match="data.in_memory=false reads files on demand; 'synthetic-mvmc'.*npz"
    ):
        load_dataset(DataConfig(in_memory=False))
    with pytest.raises(ValueError, match="data.workers must be >= 0"):
        load_dataset(DataConfig(workers=-1))


def test_a_truncated_member_is_refused(tmp_path):
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w") as z:  # a .npy header promising more rows than stored
        with z.open("X.npy", "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (100, 2, 3)}
            )
            f.write(np.ones((4, 2, 3), np.float32).tobytes())
        with z.open("y.npy", "w") as f:
            np.save(f, np.zeros(4, int))
    with pytest.raises(ValueError, match="member X.npy is damaged"):
        _load_streamed(str(path))


def test_nan_is_found_when_its_batch_is_read(tmp_path):
    arrays = _arrays()
    arrays["X"][41, 2, 0, 1, 1] = np.inf
    splits = _load_streamed(_savez(tmp_path / "d.npz", **arrays))
    data = splits.train if 41 in splits.train.rows else splits.test
    with pytest.raises(ValueError, match=r"npz X\[:, 2\] sample 41 holds NaN or infinite values"):
        for _ in iter_batches(data, torch.arange(len(data)), 8):
            pass


def test_cli_reports_a_compressed_npz_as_a_usage_error(tmp_path, capsys):
    np.savez_compressed(tmp_path / "c.npz", **_arrays())
    argv = [
        "train",
        "--data",
        "npz",
        "--data-path",
        str(tmp_path / "c.npz"),
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*argv, "data.in_memory=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddnn: error: ") and "np.savez, not np.savez_compressed" in err
    assert len(err.strip().splitlines()) == 1


def test_a_batch_of_everything_in_order_is_the_data_itself_and_any_other_order_a_gather():
    x = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 2, 3)
    data = MultiDeviceDataset(
        x, torch.zeros(5, 2, dtype=torch.long), torch.arange(5) % 2, ("a", "b")
    )
    (whole,) = iter_batches(data, torch.arange(5), 0)
    assert whole.x is data.x  # no copy of the whole set
    order = torch.tensor([4, 2, 0, 1, 3])
    (shuffled,) = iter_batches(data, order, 0)
    assert torch.equal(shuffled.x, x[order]) and torch.equal(shuffled.labels, order % 2)
    first, second = iter_batches(data, torch.arange(5), 3)  # in order, but in two batches
    assert torch.equal(first.x, x[:3]) and torch.equal(second.x, x[3:])
