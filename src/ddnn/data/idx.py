"""Reader of the IDX binary format (MNIST, Fashion-MNIST), plain or gzip-compressed, into NumPy.

Layout: two zero bytes, a data type code, the number of dimensions ``ndim``, then ``ndim``
big-endian uint32 sizes, then the data in big-endian C order.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: IDX data type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"IDX file {str(path)!r} cannot be read: {e}") from e
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"IDX file {str(path)!r} is a corrupt or truncated gzip file: {e}") from e


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the content of an IDX file.

    Args:
        data: the uncompressed bytes.
        name: how errors name the source.

    Returns:
        The array, shape from the header, in native byte order (``uint8`` data is not copied and
        is read-only).

    Raises:
        ValueError: wrong magic, unsupported data type code, truncated header or data, or
            trailing bytes.
    """
    if len(data) < 4:
        raise ValueError(f"IDX file {name!r} is truncated: {len(data)} bytes, no 4-byte magic")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"IDX file {name!r} has a wrong magic number {data[:4].hex()}: "
            "it must start with two zero bytes"
        )
    code, ndim = data[2], data[3]
    dtype = IDX_DTYPES.get(code)
    if dtype is None:
        accepted = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"IDX file {name!r} has an unsupported data type code 0x{code:02X}; accepted: {accepted}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"IDX file {name!r} is truncated: the header of {ndim} dimensions needs {header} bytes, "
            f"the file has {len(data)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"IDX file {name!r} is {problem}: shape {shape} of {dtype.itemsize}-byte items needs "
            f"{expected} bytes, the file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by content) or plain.

    Args:
        path: the file.

    Returns:
        The array (see :func:`parse_idx`).

    Raises:
        ValueError: the file is missing, unreadable or not a valid IDX file; the message names it.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"IDX file {str(p)!r} does not exist")
    arr = parse_idx(_read_bytes(p), str(p))
    logger.debug("read %s: %s %s", p, arr.dtype, arr.shape)
    return arr


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (the inverse of :func:`read_idx`, used by tests and tools).

    Args:
        path: the file to write.
        array: data of a dtype listed in ``IDX_DTYPES``.
        compress: gzip the file; by default when ``path`` ends in ``.gz``.

    Raises:
        ValueError: the dtype has no IDX code or the array has more than 255 dimensions.
    """
    p = Path(path)
    arr = np.asarray(array)
    codes = {dt.newbyteorder("="): c for c, dt in IDX_DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"dtype {arr.dtype} has no IDX type code")
    if arr.ndim > 255:
        raise ValueError(f"IDX supports at most 255 dimensions, got {arr.ndim}")
    head = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    body = head + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = p.suffix == ".gz"
    p.write_bytes(gzip.compress(body, compresslevel=1) if compress else body)
