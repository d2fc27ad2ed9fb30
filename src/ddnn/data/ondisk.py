"""Arrays read from disk without loading them: ``.npy`` files and uncompressed ``.npz`` members.

``np.load(..., mmap_mode="r")`` maps a ``.npy`` file but ignores ``mmap_mode`` for an ``.npz``.
An archive written by ``np.savez`` stores each array as an uncompressed (ZIP_STORED) ``.npy``
member, so here the member's bytes are located in the zip (local file header, then the ``.npy``
header) and memory-mapped at that offset. A compressed member (``np.savez_compressed``) cannot
be mapped and is an error that says so.

An *array set* is either an ``.npz`` file or a folder of ``.npy`` files, one per array, named
by its key (``DIR/X0.npy`` holds what ``np.savez(..., X0=...)`` would); docs/data.md.
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
ZIP_LOCAL_SIGNATURE = b"PK\x03\x04"
SAVEZ_HINT = "write it with np.savez, not np.savez_compressed"


@dataclass(frozen=True)
class MappedArray:
    """Where an array's data lie in a file; ``open`` memory-maps them read-only (reads nothing)."""

    path: str
    offset: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran_order: bool = False

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def open(self) -> np.ndarray:
        if self.nbytes == 0:  # mmap cannot map zero bytes
            return np.empty(self.shape, self.dtype)
        if self.fortran_order:
            return np.memmap(
                self.path, self.dtype, mode="r", offset=self.offset, shape=self.shape, order="F"
            )
        return np.memmap(self.path, self.dtype, mode="r", offset=self.offset, shape=self.shape)


def _npy_header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of the ``.npy`` whose header starts at ``f``'s position."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version}; accepted: 1.0, 2.0")
    except ValueError as exc:
        raise ValueError(f"{where} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise ValueError(f"{where} holds Python objects; only numeric arrays can be mapped")
    return tuple(int(n) for n in shape), bool(fortran), dtype


def map_npy(path: Path) -> MappedArray:
    """The array of one ``.npy`` file."""
    with path.open("rb") as f:
        shape, fortran, dtype = _npy_header(f, str(path))
        offset = f.tell()
    mapped = MappedArray(str(path), offset, dtype, shape, fortran)
    if offset + mapped.nbytes > path.stat().st_size:
        raise ValueError(f"{path} is truncated: its header promises {shape} {dtype}")
    return mapped


def map_npz_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> MappedArray:
    """The array stored as member ``info`` of the ``.npz`` at ``path`` (must be ZIP_STORED)."""
    where = f"{path} member {info.filename}"
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(
            f"{where} is compressed; data.in_memory=false memory-maps arrays, which needs an "
            f"uncompressed .npz: {SAVEZ_HINT} (or set data.in_memory=true)"
        )
    if info.flag_bits & 0x1:
        raise ValueError(f"{where} is encrypted; only plain np.savez archives can be mapped")
    with path.open("rb") as f:
        f.seek(info.header_offset)
        signature, name_len, extra_len = ZIP_LOCAL_HEADER.unpack(f.read(ZIP_LOCAL_HEADER.size))
        if signature != ZIP_LOCAL_SIGNATURE:
            raise ValueError(f"{where}: bad zip local header; the archive is damaged")
        start = info.header_offset + ZIP_LOCAL_HEADER.size + name_len + extra_len
        f.seek(start)
        shape, fortran, dtype = _npy_header(f, where)
        offset = f.tell()
    mapped = MappedArray(str(path), offset, dtype, shape, fortran)
    if offset - start + mapped.nbytes != info.file_size:
        raise ValueError(f"{where} is damaged: its size does not match its .npy header")
    return mapped


def _npz_keys(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name -> member, as ``np.load`` names them (``X.npy`` -> ``X``)."""
    return {
        (i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i
        for i in archive.infolist()
    }


def read_array_set(
    path: str, what: str, mapped: Callable[[str], bool]
) -> tuple[dict[str, np.ndarray], dict[str, MappedArray]]:
    """All arrays of an ``.npz`` file or a folder of ``.npy`` files.

    Arrays whose name ``mapped`` accepts are memory-mapped (also returned as ``MappedArray``s,
    which pickle without their data); the rest are read into memory.
    """
    p = Path(path)
    if not path:
        raise ValueError(f"{what} needs a file or folder: pass --data-path FILE.npz or DIR")
    if p.is_dir():
        files = {f.stem: f for f in sorted(p.glob("*.npy")) if f.is_file()}
        if not files:
            raise ValueError(
                f"{what} folder {path!r} holds no .npy files; it needs X.npy (or X0.npy, "
                "X1.npy, … per device) and y.npy"
            )
        where = {k: map_npy(f) for k, f in files.items() if mapped(k)}
        arrays = {k: _load_npy(f) for k, f in files.items() if k not in where}
        return {**arrays, **{k: m.open() for k, m in where.items()}}, where
    if not p.is_file():
        raise ValueError(f"{what} file {path!r} does not exist")
    try:
        with zipfile.ZipFile(p) as archive:
            members = _npz_keys(archive)
            where = {k: map_npz_member(p, archive, i) for k, i in members.items() if mapped(k)}
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k not in where}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(
            f"{what} file {path!r} is not a readable .npz archive ({type(exc).__name__})"
        ) from None
    except ValueError as exc:
        if str(path) in str(exc):  # ours: already says what is wrong
            raise
        raise ValueError(
            f"{what} file {path!r} is not a readable .npz archive ({type(exc).__name__})"
        ) from None
    return {**arrays, **{k: m.open() for k, m in where.items()}}, where


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except Exception as exc:  # format/pickle errors all mean "not a readable .npy"
        raise ValueError(f"{path} is not a readable .npy array ({type(exc).__name__})") from None


class ArrayReader:
    """Per-device inputs from memory-mapped arrays: one (M, D, *shape) ``X``, or one
    (M, *shape_k) array per device (``X0`` … ``X{D-1}``). Reads convert to float32 and
    refuse NaN / infinity, naming the array and the source row."""

    def __init__(self, sources: Sequence[MappedArray], names: Sequence[str], stacked: bool) -> None:
        self.sources = tuple(sources)
        self.names = tuple(names)
        self.stacked = stacked
        self._arrays: tuple[np.ndarray, ...] | None = None
        if stacked:
            (x,) = self.sources
            self._shapes = (x.shape[2:],) * x.shape[1]
            self._rows = x.shape[0]
        else:
            self._shapes = tuple(s.shape[1:] for s in self.sources)
            self._rows = self.sources[0].shape[0]

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return self._shapes

    def __len__(self) -> int:
        return self._rows

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started by spawn get the file positions, never the mapped data.
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:
            self._arrays = tuple(s.open() for s in self.sources)
        return self._arrays

    def read(self, rows: np.ndarray, devices: Sequence[int]) -> list[np.ndarray]:
        arrays = self._open()
        if self.stacked:
            block = np.asarray(arrays[0][rows])  # (B, D, *shape): one read per row
            parts = [(block[:, k], f"{self.names[0]}[:, {k}]") for k in devices]
        else:
            parts = [(np.asarray(arrays[k][rows]), self.names[k]) for k in devices]
        for a, name in parts:
            finite = np.isfinite(a).reshape(len(a), -1).all(axis=1)
            if not finite.all():
                row = int(rows[int(np.argmin(finite))])
                raise ValueError(f"npz {name} sample {row} holds NaN or infinite values")
        return [a.astype(np.float32) for a, _ in parts]
