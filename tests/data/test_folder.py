"""The folder-of-images loader (``--data folder``), on tiny folders the tests write themselves."""

import logging

import numpy as np
import pytest
from PIL import Image

from ddnn.cli import main
from ddnn.config import DataConfig
from ddnn.data.dataset import ABSENT
from ddnn.data.registry import load_dataset


def _png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _csv(root, text):
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(text)


def _load(root, **kw):
    return load_dataset(DataConfig(name="folder", path=str(root), **kw))


def _gray_folder(root, n=40, devices=("a", "b", "c"), size=8, seed=0, split=False):
    """``n`` samples, grayscale size x size PNGs on every device; returns the written pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, len(devices), size, size), dtype=np.uint8)
    for i in range(n):
        for k, d in enumerate(devices):
            _png(root / d / f"{i:04d}.png", pixels[i, k])
    head = "file,label,split\n" if split else "file,label\n"
    rows = [
        f"{i:04d}.png,{i % 3}" + (f",{'test' if i % 4 == 0 else 'train'}" if split else "")
        for i in range(n)
    ]
    _csv(root, head + "\n".join(rows) + "\n")
    return pixels


def _all(splits):
    """(train + test) inputs, view labels and labels as NumPy."""
    return tuple(
        np.concatenate([getattr(splits.train, a).numpy(), getattr(splits.test, a).numpy()])
        for a in ("x", "view_labels", "labels")
    )


def test_pixels_are_written_values_over_255_and_split_column_is_honoured(tmp_path):
    pixels = _gray_folder(tmp_path, n=12, split=True)
    splits = _load(tmp_path)
    test_rows, train_rows = [0, 4, 8], [i for i in range(12) if i % 4]
    assert splits.train.input_shape == (1, 8, 8) and splits.train.num_devices == 3
    assert (len(splits.train), len(splits.test)) == (9, 3)
    expected = pixels.astype(np.float64) / 255.0  # (N, D, H, W)
    np.testing.assert_allclose(splits.train.x.numpy()[:, :, 0], expected[train_rows], atol=1e-6)
    np.testing.assert_allclose(splits.test.x.numpy()[:, :, 0], expected[test_rows], atol=1e-6)
    assert splits.test.labels.tolist() == [0, 1, 2]  # i % 3 for rows 0, 4, 8
    assert splits.train.class_names == ("0", "1", "2")
    small = _load(tmp_path, num_train=4, num_test=2, devices=(2, 0))
    assert (len(small.train), len(small.test), small.train.num_devices) == (4, 2, 2)
    np.testing.assert_allclose(small.train.x.numpy()[:, 0, 0], expected[[1, 2, 3, 5], 2], atol=1e-6)


def test_without_split_column_the_split_is_seeded_80_20(tmp_path):
    _gray_folder(tmp_path, n=20)
    a, b = _load(tmp_path, seed=1), _load(tmp_path, seed=1)
    assert (len(a.train), len(a.test)) == (16, 4)
    assert np.array_equal(a.test.x.numpy(), b.test.x.numpy())


def test_rgb_and_16_bit_images_scale_to_unit_range(tmp_path):
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3  # H=4, W=6
    wide = (np.arange(4 * 6, dtype=np.uint16).reshape(4, 6) * 2000) + 7
    for i in range(2):
        _png(tmp_path / "cam" / f"{i}.png", rgb + i)
        _png(tmp_path / "depth" / f"{i}.png", wide + i)
    _csv(tmp_path, "file,label,split\n0,0,train\n1,1,test\n")
    splits = _load(tmp_path)
    cam, depth = splits.train.device_input(0).numpy()[0], splits.train.device_input(1).numpy()[0]
    assert splits.train.shapes == ((3, 4, 6), (1, 4, 6))
    np.testing.assert_allclose(cam, rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(depth[0], wide / 65535.0, atol=1e-6)


def test_match_by_stem_absent_views_and_heterogeneous_shapes(tmp_path, caplog):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)  # 32 wide, 24 high
    accel = rng.normal(size=(5, 3, 20)).astype(np.float32)
    (tmp_path / "accel").mkdir(parents=True)
    for i in range(5):
        _png(tmp_path / "cam_gray" / f"s{i}.png", gray[i])
        if i != 2:  # the RGB camera does not see sample s2
            _png(tmp_path / "cam_rgb" / f"s{i}.bmp", rgb[i])
        np.save(tmp_path / "accel" / f"s{i}.npy", accel[i])
    np.save(tmp_path / "accel" / "stray.npy", accel[0])  # not in the CSV: warned about
    _csv(
        tmp_path,
        "file,label,split\ns0,cat,train\ns1.png,dog,train\ns2,cat,train\ns3,dog,test\ns4.npy,bird,test\n",
    )
    with caplog.at_level(logging.WARNING, logger="ddnn.data.folder"):
        splits = _load(tmp_path)
    assert "1 file(s)" in caplog.text and "accel/stray.npy" in caplog.text
    train = splits.train
    # Devices in sorted folder order: accel, cam_gray, cam_rgb.
    assert train.shapes == ((3, 20), (1, 16, 16), (3, 24, 32))
    assert train.is_packed
    np.testing.assert_allclose(train.device_input(0).numpy(), accel[:3])
    np.testing.assert_allclose(train.device_input(1).numpy()[:, 0], gray[:3] / 255.0, atol=1e-6)
    np.testing.assert_allclose(
        train.device_input(2).numpy()[[0, 1]], rgb[[0, 1]].transpose(0, 3, 1, 2) / 255.0, atol=1e-6
    )
    assert not train.device_input(2).numpy()[2].any()  # absent view: all zeros
    assert train.class_names == ("bird", "cat", "dog")  # sorted distinct names
    assert train.labels.tolist() == [1, 2, 1]
    assert train.view_labels.tolist() == [[1, 1, 1], [2, 2, 2], [1, 1, ABSENT]]
    assert splits.test.labels.tolist() == [2, 0]


def test_classes_txt_fixes_names_and_order(tmp_path):
    _gray_folder(tmp_path, n=6, devices=("a",))
    _csv(tmp_path, "file,label\n" + "".join(f"{i:04d},{'xyz'[i % 3]}\n" for i in range(6)))
    (tmp_path / "classes.txt").write_text("z\ny\nx\nw\n")
    splits = _load(tmp_path, test_fraction=0.5)
    assert splits.train.class_names == ("z", "y", "x", "w")
    _, _, labels = _all(splits)
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    _csv(tmp_path, "file,label\n" + "".join(f"{i:04d},{i % 3}\n" for i in range(6)))
    assert _load(tmp_path, test_fraction=0.5).train.class_names == ("z", "y", "x", "w")  # indices
    _csv(tmp_path, "file,label\n0000,x\n0001,y\n0002,q\n0003,x\n0004,x\n0005,x\n")
    with pytest.raises(
        ValueError, match=r"line 4 \(file '0002'\): label 'q' is not in classes.txt"
    ):
        _load(tmp_path)


def _break(root, what):
    """Mutate a good 3-device folder so that loading it must fail."""
    if what == "no labels":
        (root / "labels.csv").unlink()
    elif what == "header":
        _csv(root, "name,label\n0000,1\n")
    elif what == "duplicate":
        _csv(root, "file,label\n0000,1\n0001,0\n0000.png,1\n")
    elif what == "split value":
        _csv(root, "file,label,split\n0000,1,train\n0001,0,val\n")
    elif what == "empty split":
        _csv(root, "file,label,split\n0000,1,train\n0001,0,train\n")
    elif what == "row nowhere":
        _csv(root, "file,label\n0000,1\n0001,0\n9999.png,1\n")
    elif what == "no devices":
        for d in ("a", "b", "c"):
            for p in (root / d).iterdir():
                p.unlink()
            (root / d).rmdir()
    elif what == "empty device":
        (root / "d").mkdir()
    elif what == "corrupt":
        (root / "b" / "0003.png").write_bytes(b"not a png")
    elif what == "size":
        _png(root / "c" / "0002.png", np.zeros((8, 9), np.uint8))
    elif what == "nan":
        np.save(root / "b" / "0001.npy", np.array([1.0, np.nan]))
        for p in (root / "b").glob("*.png"):
            p.unlink()
    elif what == "mixed kinds":
        np.save(root / "a" / "0099.npy", np.zeros(3))
    elif what == "device sees nothing":
        _png(root / "d" / "other.png", np.zeros((8, 8), np.uint8))
    elif what == "unsupported":
        (root / "a" / "0001.webp").write_bytes(b"")


@pytest.mark.parametrize(
    "what, message",
    [
        ("no labels", r"labels.csv is missing.*required: file, label; optional: split"),
        ("header", r"header has columns \['name', 'label'\]; required: file, label"),
        ("duplicate", r"lines 2 and 4 both name file '0000'"),
        ("split value", r"line 3: split 'val'; accepted: train, test"),
        ("empty split", r"puts 2 sample\(s\) in train and 0 in test"),
        ("row nowhere", r"line 4: file '9999.png' is in no device folder \(a, b, c\)"),
        ("no devices", r"has no device sub-folders"),
        ("empty device", r"device folder .*d is empty"),
        ("corrupt", r"0003.png is not a readable image"),
        ("size", r"0002.png is 9x8 \(width x height\); this device's images are 8x8"),
        ("nan", r"0001.npy holds NaN or infinite values"),
        ("mixed kinds", r"mixes images and .npy files"),
        ("device sees nothing", r"device folder .*d holds no file named in labels.csv"),
        ("unsupported", r"0001.webp: unsupported file type; accepted: .png"),
    ],
)
def test_validation_names_what_is_wrong(tmp_path, what, message):
    _gray_folder(tmp_path, n=6)
    _break(tmp_path, what)
    with pytest.raises(ValueError, match=message):
        _load(tmp_path)


def test_bad_data_path(tmp_path):
    with pytest.raises(ValueError, match="pass --data-path DIR"):
        _load("")
    with pytest.raises(ValueError, match="does not exist"):
        _load(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        _load(tmp_path / "file.txt")


def test_cli_trains_on_a_folder_and_reports_a_missing_one(tmp_path, capsys):
    data = tmp_path / "data"
    _gray_folder(data, n=40)
    argv = ["train", "--data", "folder", "--data-path", str(data), "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "run"), "model.cloud.filters=[4]"]) == 0
    capsys.readouterr()
    argv[4] = str(tmp_path / "missing")
    assert main([*argv, "--out", str(tmp_path / "run2"), "model.cloud.filters=[4]"]) == 2
    assert "ddnn: error: data folder" in capsys.readouterr().err
