"""Loader of Fashion-MNIST as a 6-device data set: each image cut into a 2 x 3 grid of tiles.

Each 28 x 28 image is scaled to [0, 1] (float32), zero-padded to 32 x 32 (2 pixels each side),
cropped to columns 1..30 (30 columns) and cut into 2 rows x 3 columns of 16 x 10 tiles; device
``d = 3 * row + col`` (row-major) sees tile (row, col). Inputs are (N, 6, 1, 16, 10).

Emptiness rule: a tile with fewer than ``MIN_OBJECT_PIXELS`` (5) pixels above ``PIXEL_ON``
(0.1) does not see the object; its view label is ``ABSENT``, its pixels are kept as they are
(near zero). Other views carry the sample label.

Sizes: the official split (60 000 train / 10 000 test) is used in full when ``config.num_train`` /
``config.num_test`` is 0 (the default); a positive value takes the first n samples of that split
(capped at the official size), for quick runs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import ABSENT, DataSplits, MultiDeviceDataset, from_arrays
from ddnn.data.idx import read_idx
from ddnn.data.split import apply_device_selection

logger = logging.getLogger(__name__)

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
OFFICIAL_SIZES = {"train": 60_000, "test": 10_000}

IMAGE_SIZE = 28
PAD = 2  # zero padding each side: 28 -> 32
COL_START, COL_STOP = 1, 31  # columns kept of the padded image (30 = 3 tiles of 10)
GRID_ROWS, GRID_COLS = 2, 3
TILE_H, TILE_W = 16, 10
NUM_DEVICES = GRID_ROWS * GRID_COLS
TILE_SHAPE = (1, TILE_H, TILE_W)

PIXEL_ON = 0.1  # a pixel above this shows the object
MIN_OBJECT_PIXELS = 5  # a tile with fewer such pixels is empty -> ABSENT

NAME = "fashion-mnist-6"


def tile_images(images: np.ndarray) -> np.ndarray:
    """Scale, pad, crop and cut images into the 6 device tiles.

    Args:
        images: (N, 28, 28) ``uint8`` (0..255) images.

    Returns:
        (N, 6, 1, 16, 10) float32 tiles in [0, 1], devices row-major over the 2 x 3 grid.

    Raises:
        ValueError: the images are not (N, 28, 28).
    """
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"Fashion-MNIST images must be (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.shape}"
        )
    n = images.shape[0]
    canvas = np.zeros((n, GRID_ROWS * TILE_H, COL_STOP - COL_START), dtype=np.float32)
    c0 = PAD - COL_START
    np.multiply(
        images,
        np.float32(1.0 / 255.0),
        out=canvas[:, PAD : PAD + IMAGE_SIZE, c0 : c0 + IMAGE_SIZE],
        casting="unsafe",
    )
    tiles = canvas.reshape(n, GRID_ROWS, TILE_H, GRID_COLS, TILE_W).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(tiles).reshape(n, NUM_DEVICES, *TILE_SHAPE)


def empty_tiles(tiles: np.ndarray) -> np.ndarray:
    """Which tiles do not see the object.

    Args:
        tiles: (N, D, ...) pixel values in [0, 1].

    Returns:
        (N, D) bool, True where fewer than ``MIN_OBJECT_PIXELS`` pixels exceed ``PIXEL_ON``.
    """
    n, d = tiles.shape[:2]
    on = (tiles.reshape(n, d, -1) > PIXEL_ON).sum(axis=2)
    return np.asarray(on < MIN_OBJECT_PIXELS)


def view_labels_for(tiles: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-device labels: the sample label, ``ABSENT`` for an empty tile (see ``empty_tiles``)."""
    vl = np.repeat(labels.astype(np.int64)[:, None], tiles.shape[1], axis=1)
    vl[empty_tiles(tiles)] = ABSENT
    return vl


def requested_size(requested: int, split: str) -> int:
    """How many samples of ``split`` to load (see the module docstring for the rule).

    Raises:
        ValueError: ``requested`` is below 1.
    """
    official = OFFICIAL_SIZES[split]
    if requested < 0:
        raise ValueError(
            f"{NAME}: num_{split} must be >= 1 (0 = the official size), got {requested}"
        )
    return min(requested, official) if requested else official


def _read_split(folder: Path, split: str, n: int) -> MultiDeviceDataset:
    """Read, check and tile the first ``n`` samples of one official split."""
    img_file, lbl_file = (folder / f for f in FILES[split])
    images = read_idx(img_file)
    labels = read_idx(lbl_file)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{img_file}: Fashion-MNIST images must be (N, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"got {images.shape}"
        )
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(
            f"{folder}: Fashion-MNIST files must hold uint8 data, got images {images.dtype}, "
            f"labels {labels.dtype}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{lbl_file}: {labels.shape} labels do not match the {images.shape[0]} images "
            f"of {img_file.name}"
        )
    if labels.size and int(labels.max()) >= len(FASHION_CLASSES):
        bad = int(np.argmax(labels >= len(FASHION_CLASSES)))
        raise ValueError(
            f"{lbl_file}: label {int(labels[bad])} of sample {bad} is out of range "
            f"0..{len(FASHION_CLASSES) - 1}"
        )
    images, labels = images[:n], labels[:n]
    tiles = tile_images(images)
    data = from_arrays(tiles, view_labels_for(tiles, labels), labels, FASHION_CLASSES, ABSENT, NAME)
    data.meta.update({"source": str(folder), "split": split})
    return data


def load_fashion_mnist_6(config: DataConfig) -> DataSplits:
    """Fashion-MNIST as 6 devices (see the module docstring).

    Args:
        config: ``path`` overrides the folder of the four gzip'd IDX files (default
            ``/usr/share/datasets/fashion-mnist``); ``num_train`` / ``num_test`` limit the
            sizes as described in the module docstring; ``devices`` keeps only those devices.

    Returns:
        Train and test splits, inputs (N, 6, 1, 16, 10) float32 in [0, 1].

    Raises:
        ValueError: the files are missing (the message says how to install them), malformed,
            or their labels are out of range / do not match the images.
    """
    folder = Path(config.path) if config.path else Path(DEFAULT_DIR)
    missing = [f for pair in FILES.values() for f in pair if not (folder / f).is_file()]
    if missing:
        raise ValueError(
            f"Fashion-MNIST not found under {folder} (missing {', '.join(missing)}); "
            "install it with: apt-get install dataset-fashion-mnist (or pass --data-path DIR)"
        )
    start = time.perf_counter()
    train = _read_split(folder, "train", requested_size(config.num_train, "train"))
    test = _read_split(folder, "test", requested_size(config.num_test, "test"))
    logger.info(
        "%s: loaded %d train / %d test samples from %s in %.2f s",
        NAME,
        len(train),
        len(test),
        folder,
        time.perf_counter() - start,
    )
    return apply_device_selection(DataSplits(train, test), config)
