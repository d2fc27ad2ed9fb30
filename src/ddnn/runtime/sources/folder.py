"""``folder:DIR``: a watched folder, one capture per new image or ``.npy`` file."""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ddnn.data.folder import IMAGE_SUFFIXES
from ddnn.data.folder import read_image as read_training_image  # the training conversion
from ddnn.runtime.sources.common import (
    IGNORED_SUFFIXES,
    Reading,
    _note,
    _Rejected,
    is_image_shape,
    sample_id,
)

log = logging.getLogger(__name__)


class FolderSource:
    """Captures written as files into a folder (``folder:DIR``; rules in the module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        input_shape: tuple[int, ...],
        *,
        on_done: str = "keep",
        counters: Counter[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"source folder {str(folder)!r} does not exist or is not a folder")
        self.description = f"folder:{folder}"
        self.input_shape = tuple(input_shape)
        self.on_done = on_done
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.clock = clock
        self.done_dir = self.folder / "done"
        if on_done == "move":
            self.done_dir.mkdir(exist_ok=True)
        self.max_npy_bytes = 8 * math.prod(self.input_shape) + 65536  # data + largest header
        self._last: dict[str, tuple[int, int]] = {}  # name -> (size, mtime) at the last poll
        self._taken: set[str] = set()  # names never to read again

    @property
    def finished(self) -> bool:
        """A folder may always receive another file."""
        return False

    def poll(self) -> list[Reading]:
        """Reads the files that are ready (stable since the last poll), in name order."""
        try:
            with os.scandir(self.folder) as it:
                entries = [e for e in it if self._wanted(e.name)]
        except OSError as exc:
            _note(self.counters, "folder_unreadable", f"{self.description}: cannot list ({exc})")
            return []
        ready, now_seen = [], {}
        for entry in entries:
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:  # vanished between the listing and the stat
                continue
            mark = (st.st_size, st.st_mtime_ns)
            if st.st_size > 0 and self._last.get(entry.name) == mark:
                ready.append(entry.name)
            else:
                now_seen[entry.name] = mark
        self._last = now_seen
        now = self.clock()
        out = []
        for name in sorted(ready):
            data = self._read(name)
            if data is not None:
                out.append(Reading(data, now, sample_id(name)))
        return out

    def close(self) -> None:
        """Nothing to release: a folder source holds no open file."""

    def _wanted(self, name: str) -> bool:
        return (
            not name.startswith(".")
            and not name.lower().endswith(IGNORED_SUFFIXES)
            and name not in self._taken
        )

    def _read(self, name: str) -> np.ndarray | None:
        """The file's reading, then ``on_done``; ``None`` (counted, remembered) if rejected."""
        path = self.folder / name
        try:
            suffix = path.suffix.lower()
            if suffix == ".npy":
                data = self._read_npy(path)
            elif suffix in IMAGE_SUFFIXES and is_image_shape(self.input_shape):
                data = self._read_image(path)
            else:
                kinds = (*IMAGE_SUFFIXES, ".npy") if is_image_shape(self.input_shape) else (".npy",)
                raise _Rejected("file_type", f"not an input file; accepted: {' '.join(kinds)}")
        except _Rejected as exc:
            self._taken.add(name)
            _note(self.counters, f"rejected_{exc.reason}", f"{self.description}: {name}: {exc}")
            return None
        try:
            if self.on_done == "move":
                os.replace(path, self.done_dir / name)
            elif self.on_done == "delete":
                os.remove(path)
            else:
                self._taken.add(name)
        except OSError as exc:
            self._taken.add(name)  # read once, whatever happens to the file
            _note(self.counters, "done_failed", f"{self.description}: {self.on_done} {name}: {exc}")
        return data

    def _read_npy(self, path: Path) -> np.ndarray:
        try:  # no mmap: a file cut short under a mapping would kill the process (SIGBUS)
            if path.stat().st_size > self.max_npy_bytes:  # memory stays bounded
                raise _Rejected("npy_shape", f"too large to hold {self.input_shape}")
            a = np.load(path, allow_pickle=False)
        except _Rejected:
            raise
        except Exception as exc:  # format, pickle, truncation errors all mean "not readable"
            raise _Rejected("undecodable", f"not a readable .npy ({type(exc).__name__})") from None
        if not isinstance(a, np.ndarray):  # an .npz archive under an .npy name
            a.close()
            raise _Rejected("undecodable", "an .npz archive, not one .npy array")
        if a.dtype.kind not in "biuf":
            raise _Rejected("npy_dtype", f"dtype {a.dtype}; accepted: integers or floats")
        if a.shape != self.input_shape:
            raise _Rejected("npy_shape", f"shape {a.shape}; this device takes {self.input_shape}")
        with np.errstate(over="ignore", invalid="ignore"):  # as training took them, no scaling
            out = a.astype(np.float32)
        if not np.isfinite(out).all():
            raise _Rejected("non_finite", "holds NaN or infinite values (as float32)")
        return out

    def _read_image(self, path: Path) -> np.ndarray:
        from PIL import Image

        c, h, w = self.input_shape
        try:  # the header alone gives the size: a wrong one is refused before decoding
            with Image.open(path) as img:
                size = img.size
        except Exception as exc:  # UnidentifiedImageError, OSError, decompression bombs
            raise _Rejected("undecodable", f"not a readable image ({type(exc).__name__})") from None
        if size != (w, h):
            raise _Rejected(
                "image_size", f"is {size[0]}x{size[1]} (width x height); this device takes {w}x{h}"
            )
        try:
            return read_training_image(path, c, (w, h))
        except ValueError as exc:  # truncated or corrupt pixel data
            raise _Rejected("undecodable", str(exc)) from None
