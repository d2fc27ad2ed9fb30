"""``folder:DIR``: a watched folder, one capture per new image or ``.npy`` file."""

from __future__ import annotations

import logging
import math
import os
import stat
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
from ddnn.runtime.sources.folder_watch import FolderWatch

log = logging.getLogger(__name__)

LOOK_EVERY = 0.01  # s between listings of a folder that no watch reports on
LIST_EVERY = 0.5  # s between listings of a watched folder (a safety net: files it cannot see)


def _nothing() -> None:
    pass


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
        watch: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``watch``: have the kernel report finished files (inotify, Linux) instead of only
        listing the folder; ``monotonic`` times the listings (replaceable in tests)."""
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
        self.monotonic = monotonic
        self._next_listing = -math.inf
        self._watch = FolderWatch.start(self.folder, self.description) if watch else None

    @property
    def finished(self) -> bool:
        """A folder may always receive another file."""
        return False

    @property
    def poll_interval(self) -> float:
        """Seconds after which ``poll`` should run again even if ``on_change`` was not called."""
        return LIST_EVERY if self._watch is not None and self._watch.alive else LOOK_EVERY

    @property
    def on_change(self) -> Callable[[], None]:
        return self._watch.on_change if self._watch is not None else _nothing

    @on_change.setter
    def on_change(self, callback: Callable[[], None]) -> None:
        """Called (from the watch's thread) when a file was finished: time to ``poll``."""
        if self._watch is not None:
            self._watch.on_change = callback

    def poll(self) -> list[Reading]:
        """Reads the files that are ready, in name order: those the watch reports finished
        (closed after writing, or renamed in), and, at each listing, those whose size and
        modification time held since the previous listing."""
        ready: set[str] = set()
        listing = self._watch is None
        if self._watch is not None:
            finished, lost = self._watch.take()
            ready = {name for name in finished if self._wanted(name) and self._nonempty(name)}
            listing = lost or not self._watch.alive or self.monotonic() >= self._next_listing
        if listing:
            self._next_listing = self.monotonic() + LIST_EVERY
            ready |= self._settled(skip=ready)
        now = self.clock()
        out = []
        for name in sorted(ready):
            data = self._read(name)
            if data is not None:
                out.append(Reading(data, now, sample_id(name)))
        return out

    def close(self) -> None:
        """Stops the watch (the folder holds no open file)."""
        if self._watch is not None:
            self._watch.close()

    def _nonempty(self, name: str) -> bool:
        try:
            st = os.stat(self.folder / name)
        except OSError:  # gone already (moved or deleted by someone else)
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def _settled(self, skip: set[str]) -> set[str]:
        """Names (not in ``skip``) unchanged in size and mtime since the previous listing."""
        try:
            with os.scandir(self.folder) as it:
                entries = [e for e in it if self._wanted(e.name)]
        except OSError as exc:
            _note(self.counters, "folder_unreadable", f"{self.description}: cannot list ({exc})")
            return set()
        settled, now_seen = set(), {}
        for entry in entries:
            if entry.name in skip:
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:  # vanished between the listing and the stat
                continue
            mark = (st.st_size, st.st_mtime_ns)
            if st.st_size > 0 and self._last.get(entry.name) == mark:
                settled.add(entry.name)
            else:
                now_seen[entry.name] = mark
        self._last = now_seen
        return settled

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
