"""Users' own multi-device data as a folder: one sub-folder per device, labels in a CSV.

Layout (``--data folder --data-path DIR``)::

    DIR/labels.csv           header ``file,label``, optional ``split`` column (train / test)
    DIR/classes.txt          optional: one class name per line (fixes names and their order)
    DIR/<device_a>/0001.png  one sub-folder per device; devices in sorted folder-name order
    DIR/<device_b>/0001.npy

* A sample is a row of ``labels.csv``. Its ``file`` is a file-name stem (``0001``) or a name
  with a supported extension (``0001.png``, the extension is ignored): device files are matched
  by stem, so ``cam/0001.png`` and ``accel/0001.npy`` are two views of one sample. A device
  folder without the stem does not see the sample (all-zero input, view label ``ABSENT``); a
  row that no device folder has is an error. Device files no row names are skipped with a
  warning.
* Labels are non-negative integers (classes ``"0"`` … ``"K-1"``, K = largest + 1) or class
  names (classes = the sorted distinct names). ``classes.txt`` fixes the names and their order;
  labels are then names from it, or, if every label is one, indices into it.
* Images (.png .jpg .jpeg .bmp .gif .tif .tiff .pgm .ppm) become (C, H, W) float32 in [0, 1]:
  grayscale (modes L, 1, 16-bit I;16 / I) gives one channel (16-bit divided by 65535), every
  other mode is converted to RGB. A device's first image fixes its channel count (later images
  are converted to it) and its size (every other image must match).
* ``.npy`` files hold non-image sensors: a vector (F,), a time series (C, L) or a (C, H, W)
  array, one shape per device, loaded as float32 without pickle. A device folder holds images or
  ``.npy`` files, not both. Devices may differ in input shape.
* With a ``split`` column its rows give the train and test splits; without one the split is a
  seeded 80/20 (``data.test_fraction``, ``data.seed``).

With ``data.in_memory=false`` only each device's first file is read at load (it fixes the
shape); the others are read when a batch asks for them, with the same checks.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ddnn.config import DataConfig
from ddnn.data.dataset import (
    ABSENT,
    AnyDataset,
    DataSplits,
    from_device_arrays,
    mapped_from_reader,
)
from ddnn.data.split import apply_device_selection, limit_sizes, split_dataset

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")
ARRAY_SUFFIX = ".npy"
SUFFIXES = (*IMAGE_SUFFIXES, ARRAY_SUFFIX)
REQUIRED_COLUMNS = ("file", "label")
OPTIONAL_COLUMNS = ("split",)
SPLITS = ("train", "test")
GRAY_MODES = frozenset({"L", "1"})
WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})  # 16-bit grayscale
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _Rows:
    """The rows of ``labels.csv``, in file order."""

    files: list[str]  # as written
    stems: list[str]
    labels: list[str]
    lines: list[int]  # CSV line of every row, for messages
    splits: list[str] | None


def _stem(name: str) -> str:
    root, ext = os.path.splitext(name)
    return root if ext.lower() in SUFFIXES else name


def _read_rows(path: Path) -> _Rows:
    """Parse and validate ``labels.csv``."""
    accepted = f"required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)}"
    if not path.is_file():
        raise ValueError(f"{path} is missing: the folder needs a labels.csv ({accepted})")
    rows = _Rows([], [], [], [], None)
    first_line: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if (
                any(c not in header for c in REQUIRED_COLUMNS)
                or any(c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) for c in header)
                or len(set(header)) != len(header)
            ):
                raise ValueError(f"{path}: header has columns {header}; {accepted}")
            col = {name: header.index(name) for name in header}
            if "split" in col:
                rows = _Rows([], [], [], [], [])
            for values in reader:
                line = reader.line_num
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise ValueError(
                        f"{path} line {line}: {len(values)} fields, the header has {len(header)}"
                    )
                file, label = values[col["file"]].strip(), values[col["label"]].strip()
                if not file or not label:
                    raise ValueError(f"{path} line {line}: empty file or label")
                stem = _stem(file)
                if stem in first_line:
                    raise ValueError(
                        f"{path} lines {first_line[stem]} and {line} both name file {stem!r}; "
                        "each sample takes one row"
                    )
                first_line[stem] = line
                rows.files.append(file)
                rows.stems.append(stem)
                rows.labels.append(label)
                rows.lines.append(line)
                if rows.splits is not None:
                    split = values[col["split"]].strip().lower()
                    if split not in SPLITS:
                        raise ValueError(
                            f"{path} line {line}: split {values[col['split']]!r}; "
                            f"accepted: {', '.join(SPLITS)}"
                        )
                    rows.splits.append(split)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a readable UTF-8 CSV file ({exc})") from None
    if not rows.stems:
        raise ValueError(f"{path} has no sample rows")
    return rows


def _class_labels(rows: _Rows, classes_path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N,) int64 labels and the class names (see the module docstring for the rules)."""
    numeric = all(_INT.fullmatch(v) for v in rows.labels)
    if not classes_path.is_file():
        if numeric:
            labels = np.array([int(v) for v in rows.labels], dtype=np.int64)
            return labels, tuple(str(k) for k in range(int(labels.max()) + 1))
        names = tuple(sorted(set(rows.labels)))
        index = {name: k for k, name in enumerate(names)}
        return np.array([index[v] for v in rows.labels], dtype=np.int64), names
    try:
        text = classes_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{classes_path} is not a readable UTF-8 text file ({exc})") from None
    names = tuple(n.strip() for n in text.splitlines() if n.strip())
    if not names:
        raise ValueError(f"{classes_path} lists no class names (one per line)")
    dup = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if dup is not None:
        raise ValueError(f"{classes_path} lists class {dup!r} twice")
    index = {name: k for k, name in enumerate(names)}
    if all(v in index for v in rows.labels):
        return np.array([index[v] for v in rows.labels], dtype=np.int64), names
    if numeric and all(int(v) < len(names) for v in rows.labels):
        return np.array([int(v) for v in rows.labels], dtype=np.int64), names
    i = next(i for i, v in enumerate(rows.labels) if v not in index)
    shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
    raise ValueError(
        f"labels.csv line {rows.lines[i]} (file {rows.files[i]!r}): label {rows.labels[i]!r} is "
        f"not in classes.txt; accepted: {shown} (or indices 0..{len(names) - 1})"
    )


def _device_files(folder: Path) -> dict[str, Path]:
    """Stem -> file of one device folder; one kind of file, one file per stem."""
    files: dict[str, Path] = {}
    with os.scandir(folder) as it:  # scandir: no stat call per file
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in entries:
        if not entry.is_file():
            raise ValueError(f"device folder {folder} holds {entry.name!r}, which is not a file")
        p = Path(entry.path)
        if p.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{p}: unsupported file type; accepted: {' '.join(SUFFIXES)}")
        if p.stem in files:
            raise ValueError(f"{files[p.stem]} and {p} are the same sample; keep one")
        files[p.stem] = p
    if not files:
        raise ValueError(f"device folder {folder} is empty; it needs one file per sample it sees")
    kinds = {p.suffix.lower() == ARRAY_SUFFIX: p for p in files.values()}
    if len(kinds) > 1:
        raise ValueError(
            f"device folder {folder} mixes images and .npy files ({kinds[False].name}, "
            f"{kinds[True].name}); a device holds one kind of file"
        )
    return files


def _read_npy(path: Path) -> np.ndarray:
    """One sensor sample: (F,), (C, L) or (C, H, W) float32, finite."""
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as exc:  # format/pickle/zip errors all mean "not a readable .npy"
        raise ValueError(f"{path} is not a readable .npy array ({type(exc).__name__})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise ValueError(f"{path} must hold one numeric array (int or float)")
    if not 1 <= a.ndim <= 3 or 0 in a.shape:
        raise ValueError(f"{path} has shape {a.shape}; accepted: (F,), (C, L) or (C, H, W)")
    out = a.astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{path} holds NaN or infinite values (as float32)")
    return out


def read_image(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]; ``channels`` 0 = the image's own (1 for grayscale, else 3)."""
    from PIL import Image

    try:
        img = Image.open(path)
    except Exception as exc:  # UnidentifiedImageError, OSError, decompression-bomb errors
        raise ValueError(f"{path} is not a readable image ({type(exc).__name__})") from None
    with img:
        if size is not None and img.size != size:
            raise ValueError(
                f"{path} is {img.size[0]}x{img.size[1]} (width x height); this device's images "
                f"are {size[0]}x{size[1]} like its first one"
            )
        wide = img.mode in WIDE_MODES
        channels = channels or (1 if wide or img.mode in GRAY_MODES else 3)
        try:
            if wide:
                a = np.asarray(img).astype(np.float32)
            else:
                mode = "L" if channels == 1 else "RGB"
                a = np.asarray(img if img.mode == mode else img.convert(mode), dtype=np.float32)
        except Exception as exc:  # truncated or corrupt pixel data
            raise ValueError(
                f"{path} is not a readable image ({type(exc).__name__}: {exc})"
            ) from None
    if wide:
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"{path}: 16-bit image with values outside 0..65535")
        a = np.repeat(a[None] / 65535.0, channels, axis=0)
    else:
        a = (a / 255.0)[None] if a.ndim == 2 else (a / 255.0).transpose(2, 0, 1)
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass(frozen=True)
class _DeviceFiles:
    """One device's files, one per sample (``None``: the device does not see it), and how to
    read them; its first file fixes the shape (and, for images, channels and size)."""

    paths: list[Path | None]
    first: Path
    sample: np.ndarray
    read: Callable[[Path], np.ndarray]

    @classmethod
    def of(cls, folder: Path, paths: list[Path | None]) -> _DeviceFiles:
        first = next((p for p in paths if p is not None), None)
        if first is None:
            raise ValueError(f"device folder {folder} holds no file named in labels.csv")
        if first.suffix.lower() == ARRAY_SUFFIX:
            return cls(paths, first, _read_npy(first), _read_npy)
        sample = read_image(first, 0, None)
        size = (sample.shape[2], sample.shape[1])
        return cls(paths, first, sample, partial(read_image, channels=sample.shape[0], size=size))

    def load(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(rows), *shape) inputs of the samples ``rows``; zeros where there is no file."""
        out = np.zeros((len(rows), *self.sample.shape), dtype=np.float32)
        for i, row in enumerate(rows):
            p = self.paths[row]
            if p is None:
                continue
            a = self.sample if p == self.first else self.read(p)
            if a.shape != self.sample.shape:
                raise ValueError(
                    f"{p} has shape {a.shape}; this device's arrays are {self.sample.shape} "
                    f"like {self.first.name}"
                )
            out[i] = a
        return out


class _FolderReader:
    """The folder's files read when a batch asks for them (``data.in_memory=false``)."""

    def __init__(self, devices: list[_DeviceFiles]) -> None:
        self.devices = devices

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(n) for n in d.sample.shape) for d in self.devices)

    def __len__(self) -> int:
        return len(self.devices[0].paths)

    def read(self, rows: np.ndarray, devices: Sequence[int]) -> list[np.ndarray]:
        return [self.devices[k].load(rows) for k in devices]


def _root(path: str) -> Path:
    if not path:
        raise ValueError("the folder data set needs a folder: pass --data-path DIR")
    root = Path(path)
    if not root.exists():
        raise ValueError(f"data folder {path!r} does not exist")
    if not root.is_dir():
        raise ValueError(
            f"data folder {path!r} is not a folder; pass a folder holding labels.csv and one "
            "sub-folder per device"
        )
    return root


def load_folder(config: DataConfig) -> DataSplits:
    """Load and validate a data folder (see the module docstring)."""
    root = _root(config.path)
    rows = _read_rows(root / "labels.csv")
    devices = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not devices:
        raise ValueError(
            f"data folder {str(root)!r} has no device sub-folders; put each device's files "
            "in DIR/<device>/"
        )
    files = [_device_files(d) for d in devices]
    seen = np.array([[s in f for f in files] for s in rows.stems])  # (N, D)
    nobody = np.nonzero(~seen.any(axis=1))[0]
    if nobody.size:
        i = int(nobody[0])
        raise ValueError(
            f"labels.csv line {rows.lines[i]}: file {rows.files[i]!r} is in no device folder "
            f"({', '.join(d.name for d in devices)}); {nobody.size} row(s) in all"
        )
    listed = set(rows.stems)
    extra = [
        f"{d.name}/{p.name}"
        for d, f in zip(devices, files, strict=True)
        for stem, p in f.items()
        if stem not in listed
    ]
    if extra:
        logger.warning(
            "%d file(s) in %s are not in labels.csv and are ignored: %s%s",
            len(extra),
            root,
            ", ".join(extra[:5]),
            ", …" if len(extra) > 5 else "",
        )
    labels, names = _class_labels(rows, root / "classes.txt")
    sources = [
        _DeviceFiles.of(d, [f.get(s) for s in rows.stems])
        for d, f in zip(devices, files, strict=True)
    ]
    views = np.where(seen, labels[:, None], ABSENT)
    data: AnyDataset
    if config.in_memory:
        inputs = [d.load(range(len(rows.stems))) for d in sources]
        data = from_device_arrays(inputs, views, labels, names, ABSENT, "folder")
    else:
        data = mapped_from_reader(_FolderReader(sources), views, labels, names, ABSENT, "folder")
    data.meta["source"] = str(root)
    logger.info(
        "folder %s: %d samples, %d classes, devices %s with shapes %s",
        root,
        len(data),
        len(names),
        [d.name for d in devices],
        list(data.shapes),
    )
    if rows.splits is None:
        return split_dataset(data, config)
    test = np.array([s == "test" for s in rows.splits])
    if test.all() or not test.any():
        raise ValueError(
            f"labels.csv split column puts {int((~test).sum())} sample(s) in train and "
            f"{int(test.sum())} in test; each split needs at least one"
        )
    splits = DataSplits(data.subset(np.nonzero(~test)[0]), data.subset(np.nonzero(test)[0]))
    return apply_device_selection(limit_sizes(splits, config), config)
