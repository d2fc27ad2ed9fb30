"""The IDX reader and the 6-device Fashion-MNIST loader, on files the tests write themselves."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from ddnn.config import DataConfig
from ddnn.data.dataset import ABSENT
from ddnn.data.fashion import (
    DEFAULT_DIR,
    FASHION_CLASSES,
    FILES,
    load_fashion_mnist_6,
    requested_size,
    tile_images,
    view_labels_for,
)
from ddnn.data.idx import read_idx, write_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 7], dtype=np.int16),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([1, -70000], dtype=np.int32),
    ],
)
def test_idx_round_trip(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    out = read_idx(path)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x01\x00\x08\x01" + np.asarray([2], ">u4").tobytes() + b"ab", "wrong magic"),
        (_header(0x07, (2,)) + b"ab", "unsupported data type code 0x07"),
        (_header(0x08, (2, 3)) + b"abc", "truncated"),
        (_header(0x08, (2,)) + b"abc", "longer than its header"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (b"\x00\x00", "truncated"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_bad_idx_files(tmp_path: Path, content: bytes, problem: str, compress: bool) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(ValueError, match=problem) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(_header(0x08, (100,)) + bytes(100))[:-12])
    with pytest.raises(ValueError, match="gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


def test_tile_geometry() -> None:
    # pixel value encodes its position: (r * 28 + c) % 251 + 1, never zero
    r, c = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    img = ((r * 28 + c) % 251 + 1).astype(np.uint8)
    tiles = tile_images(img[None])
    assert tiles.shape == (1, 6, 1, 16, 10) and tiles.dtype == np.float32
    for rr, cc in [(0, 0), (13, 8), (14, 9), (5, 27), (27, 0), (27, 27), (20, 18), (14, 19)]:
        pr, pc = rr + 2, cc + 2 - 1  # padded 2, then columns from 1
        dev = (pr // 16) * 3 + pc // 10
        assert tiles[0, dev, 0, pr % 16, pc % 10] == pytest.approx(img[rr, cc] / 255.0)
    # every image pixel appears exactly once; everything else is zero padding
    assert np.count_nonzero(tiles) == 28 * 28
    np.testing.assert_allclose(np.sort(tiles[tiles > 0]), np.sort(img.ravel() / 255.0), rtol=1e-6)
    assert not tiles[0, 0:3, 0, 0:2].any()  # top padding rows
    assert not tiles[0, 3:6, 0, 14:16].any()  # bottom padding rows
    assert not tiles[0, [0, 3], 0, :, 0].any()  # left padding column
    assert not tiles[0, [2, 5], 0, :, 9].any()  # right padding column


def test_empty_tiles_absent() -> None:
    img = np.zeros((3, 28, 28), dtype=np.uint8)
    img[0, 20:24, 20:24] = 200  # 16 bright pixels, all in device 5 (rows 22..25, cols 21..24)
    img[1, 0, 0:4] = 255  # 4 bright pixels: too few -> empty
    img[1, 10:14, 10:14] = 10  # dim pixels (< 0.1) do not count
    img[2] = 255  # full image: every device sees it
    tiles = tile_images(img)
    vl = view_labels_for(tiles, np.array([7, 3, 9]))
    assert vl.tolist() == [
        [ABSENT] * 5 + [7],
        [ABSENT] * 6,
        [9] * 6,
    ]
    assert tiles[1, 0].max() == 1.0  # an absent tile keeps its pixels


def _write_fake_folder(folder: Path, n_train: int = 12, n_test: int = 5) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        imgs, lbls = FILES[split]
        write_idx(folder / imgs, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / lbls, rng.integers(0, 10, n).astype(np.uint8))


def test_loader_on_written_files(tmp_path: Path) -> None:
    _write_fake_folder(tmp_path)
    splits = load_fashion_mnist_6(DataConfig(path=str(tmp_path)))
    assert splits.train.x.shape == (12, 6, 1, 16, 10) and len(splits.test) == 5
    assert splits.train.class_names == FASHION_CLASSES
    splits = load_fashion_mnist_6(
        DataConfig(path=str(tmp_path), num_train=4, num_test=2, devices=(5, 0))
    )
    assert splits.train.x.shape == (4, 2, 1, 16, 10) and len(splits.test) == 2


def test_requested_size() -> None:
    assert requested_size(0, "train") == 60_000  # the DataConfig default -> full split
    assert requested_size(0, "test") == 10_000
    assert requested_size(680, "train") == 680
    assert requested_size(100, "train") == 100
    assert requested_size(10**6, "test") == 10_000
    with pytest.raises(ValueError, match="num_train"):
        requested_size(-1, "train")


def test_bad_labels(tmp_path: Path) -> None:
    _write_fake_folder(tmp_path)
    write_idx(tmp_path / FILES["test"][1], np.array([0, 1, 12, 3, 4], dtype=np.uint8))
    with pytest.raises(ValueError, match="label 12 of sample 2 is out of range"):
        load_fashion_mnist_6(DataConfig(path=str(tmp_path)))
    write_idx(tmp_path / FILES["test"][1], np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="do not match the 5 images"):
        load_fashion_mnist_6(DataConfig(path=str(tmp_path)))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist") as err:
        load_fashion_mnist_6(DataConfig(path=str(tmp_path / "nowhere")))
    assert "--data-path DIR" in str(err.value)


@pytest.mark.skipif(
    not Path(DEFAULT_DIR).is_dir(),
    reason=f"{DEFAULT_DIR} absent (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist() -> None:
    splits = load_fashion_mnist_6(DataConfig())
    assert len(splits.train) == 60_000 and len(splits.test) == 10_000
    for data in (splits.train, splits.test):
        assert data.num_devices == 6 and data.input_shape == (1, 16, 10)
        assert int(data.labels.min()) == 0 and int(data.labels.max()) == 9
        assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0
        absent = data.view_labels == ABSENT
        assert bool(absent.any()) and not bool(absent.all(dim=1).any())
        seen = ~absent
        assert bool((data.view_labels[seen] == data.labels[:, None].expand_as(absent)[seen]).all())
