"""Live inputs of a device node: a watched folder, a raw byte pipe, or readings on an MQTT topic.

``ddnn serve device … --source SPEC`` picks one; the node polls it (``poll`` never blocks) and
runs its section on whatever came in. Every reading is float32 of exactly the device's input
shape with the values training saw (8-bit pixel ``k`` is ``k / 255``).

``folder:DIR`` — each new file in DIR is one capture.

* Images (``.png .jpg .jpeg .bmp .gif .tif .tiff .pgm .ppm``, through Pillow) are converted as
  ``ddnn.data.folder`` converted the training images (the same function does it): for an input
  (C, H, W), mode ``L`` when C = 1 and ``RGB`` when C = 3 (16-bit grayscale is divided by
  65535), pixel ``k`` -> ``k / 255``. Training never resized (every image of a device had one
  size), so an image that is not W x H is rejected (``rejected_image_size``), not resized.
* ``.npy`` files hold exactly the input shape; their numbers are taken as they are, as float32
  (as the training folder loader took them: a uint8 file's values stay 0..255), finite; else ``rejected_npy_shape`` / ``rejected_npy_dtype`` /
  ``rejected_non_finite``. Unreadable files count ``rejected_undecodable``.
* Writers should write to a temporary name and rename when done: names starting with ``.`` or
  ending in ``.tmp`` / ``.part`` are ignored. As a safety net a file is only read once its size
  and modification time are the same at two consecutive polls (so it waits one poll interval),
  and an empty file is never read.
* Ready files are read in name order (zero-pad numbers: ``0009`` sorts before ``0010``); the
  trailing integer of the stem is the sample id (``cam0_000017.png`` -> 17, ``img.png`` -> None).
* ``on_done``: ``keep`` remembers the name and never reads it again, ``move`` moves the file to
  DIR/done/ (replacing a file of that name there), ``delete`` removes it. A rejected file is left
  where it is for inspection (and never read again).

``pipe:PATH`` / ``pipe:-`` (stdin) — fixed-size frames of raw uint8 from a FIFO, a file or
stdin, say from ``ffmpeg -f v4l2 -i /dev/video0 -vf scale=32:32 -pix_fmt rgb24 -f rawvideo -``.
For an image input (C, H, W) with C = 1 or 3 a frame is H*W*C bytes, rows top to bottom, pixels
left to right, channels interleaved (what ffmpeg's ``-pix_fmt gray`` / ``rgb24`` writes); it
becomes (C, H, W) / 255. For any other input shape a frame is prod(shape) bytes in C order,
divided by 255. A reader thread opens the pipe (opening a FIFO waits for a writer) and queues
whole frames; when the node falls behind the oldest are dropped (``dropped_behind``): a live
sensor keeps its latest. A partial frame at the end counts ``short_read``. When the stream has
ended and every frame was polled, ``finished`` is true.

``mqtt:TOPIC`` — readings a sensor publishes on TOPIC (no wildcards). The node owns the MQTT
client: it subscribes to ``topic`` and calls ``feed(payload)`` for each message. A payload is a
raw frame (the pipe layout, exactly prod(shape) bytes), or a JSON array of prod(shape) finite
numbers, flat or nested exactly as the input shape, taken as they are as float32: JSON values
are already in the model's input range (``k / 255`` for images). Anything else counts
``rejected_payload_size``, ``rejected_malformed`` or ``rejected_non_finite``.

Bad input is counted in ``counters`` and logged (the first few of each reason, then every
thousandth), never raised out of ``poll`` or ``feed``; queues are bounded in readings.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import select
import stat
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ddnn.data.folder import IMAGE_SUFFIXES
from ddnn.data.folder import read_image as read_training_image  # the training conversion

log = logging.getLogger(__name__)

SCHEMES = ("folder", "pipe", "mqtt")
ACCEPTED = "accepted: folder:DIR, pipe:PATH (pipe:- for stdin), mqtt:TOPIC, replay:FILE.npy"
ON_DONE = ("keep", "move", "delete")
MAX_QUEUE = 256  # readings a pipe / MQTT source holds before dropping the oldest
LOG_FIRST, LOG_EVERY = 5, 1000  # log the first few occurrences of a reason, then every 1000th
IGNORED_SUFFIXES = (".tmp", ".part")
_TRAILING_INT = re.compile(r"([0-9]+)$")
_POLL_MS = 100  # how often the pipe reader looks at its stop flag while no byte arrives


@dataclass(frozen=True)
class Reading:
    """One capture, ready for the device's section.

    Attributes:
        data: float32 of exactly the device's input shape, in the training value range.
        captured: Unix seconds at which the reading became available (the source's clock).
        sample: the sample id the input carries (a folder file's stem), else ``None``.
    """

    data: np.ndarray
    captured: float
    sample: int | None


class Source(Protocol):
    """What a device node polls for live input."""

    description: str  # e.g. "folder:/data/cam0"
    counters: Counter[str]  # rejected_<reason>, dropped_behind, …; the node's own if passed in

    @property
    def finished(self) -> bool:
        """True once no reading will ever come (a pipe at end of stream, all polled)."""
        ...

    def poll(self) -> list[Reading]:
        """Readings that became available since the last call, oldest first; never blocks."""
        ...

    def close(self) -> None:
        """Stops reading and releases what the source holds."""
        ...


class _Rejected(Exception):
    """An input that cannot be used: counted as ``rejected_<reason>``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _note(counters: Counter[str], key: str, detail: str) -> None:
    """Counts ``key`` and logs the first few occurrences, then every ``LOG_EVERY``-th."""
    counters[key] += 1
    n = counters[key]
    if n <= LOG_FIRST or n % LOG_EVERY == 0:
        log.warning("%s (%s, %d so far)", detail, key, n)


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """Whether an input shape is an image (C, H, W) with 1 or 3 channels."""
    return len(shape) == 3 and shape[0] in (1, 3)


def raw_to_input(frame: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """One raw uint8 frame (the layout in the module docstring) -> float32 ``shape`` / 255."""
    pixels = np.frombuffer(frame, dtype=np.uint8)
    if is_image_shape(shape):
        c, h, w = shape
        pixels = pixels.reshape(h, w, c).transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    a = np.ascontiguousarray(pixels.reshape(shape), dtype=np.float32)
    return a / 255.0  # float32 / 255 is k/255 correctly rounded, as the image loaders divide


def sample_id(name: str) -> int | None:
    """The trailing integer of a file name's stem (``cam0_000017.png`` -> 17), else ``None``."""
    match = _TRAILING_INT.search(Path(name).stem)
    return int(match.group(1)) if match else None


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


class _Queue:
    """Readings handed from a producer to ``poll``: bounded, oldest dropped, thread-safe.

    Counts made on the producer's side wait in ``pending`` and reach the shared counters in
    ``drain``, on the polling thread, so only that thread ever writes the node's counters.
    """

    def __init__(self, max_len: int, description: str) -> None:
        if max_len < 1:
            raise ValueError(f"queue length must be >= 1, got {max_len}")
        self.lock = threading.Lock()
        self.items: deque[Reading] = deque(maxlen=max_len)
        self.pending: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()  # every count ever made, for log throttling
        self.description = description

    def count(self, key: str, detail: str) -> None:
        with self.lock:
            self.pending[key] += 1
            self.totals[key] += 1
            total = self.totals[key]
        if total <= LOG_FIRST or total % LOG_EVERY == 0:
            log.warning("%s: %s (%s, %d so far)", self.description, detail, key, total)

    def put(self, reading: Reading) -> None:
        with self.lock:
            full = len(self.items) == self.items.maxlen
            self.items.append(reading)  # a full deque drops its oldest
        if full:
            self.count("dropped_behind", "the node is behind; dropped the oldest reading")

    def drain(self, counters: Counter[str]) -> list[Reading]:
        with self.lock:
            out, pending = list(self.items), self.pending
            self.items.clear()
            self.pending = Counter()
        counters.update(pending)
        return out


class PipeSource:
    """Raw uint8 frames from a FIFO, a file or stdin (``pipe:PATH``; layout in the module doc)."""

    def __init__(
        self,
        path: str | int,
        input_shape: tuple[int, ...],
        *,
        counters: Counter[str] | None = None,
        clock: Callable[[], float] = time.time,
        max_queue: int = MAX_QUEUE,
        description: str | None = None,
    ) -> None:
        """``path`` is a file name (opened and closed here) or an open descriptor (left open)."""
        mode = 0
        if isinstance(path, str):
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                raise ValueError(f"source pipe {path!r}: {exc.strerror}") from None
            if stat.S_ISDIR(mode):
                raise ValueError(f"source pipe {path!r} is a folder; use folder:{path}")
        self._fifo = stat.S_ISFIFO(mode)
        self.description = description or f"pipe:{path}"
        self.input_shape = tuple(input_shape)
        self.frame_bytes = math.prod(self.input_shape)
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.clock = clock
        self._path = path
        self._queue = _Queue(max_queue, self.description)
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddnn-pipe-source", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        """True once the stream has ended and every frame and count was polled."""
        with self._queue.lock:
            return self._ended.is_set() and not self._queue.items and not self._queue.pending

    def poll(self) -> list[Reading]:
        """The frames read since the last call, oldest first."""
        return self._queue.drain(self.counters)

    def close(self, timeout: float = 2.0) -> None:
        """Stops the reader (waking it if it still waits for a FIFO's writer) and joins it."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._thread.join(0.2)  # a reader in its read loop stops by itself
        while self._thread.is_alive() and time.monotonic() < deadline:
            if self._fifo and isinstance(self._path, str):
                try:  # a reader blocked in open() of a FIFO returns once a writer opens it
                    os.close(os.open(self._path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
            self._thread.join(0.05)
        if self._thread.is_alive():
            log.warning(
                "%s: the reader thread did not stop within %.1f s", self.description, timeout
            )

    def _run(self) -> None:
        fd: int | None = None
        try:
            if isinstance(self._path, int):
                self._read_frames(self._path)
            elif not self._stop.is_set():
                fd = os.open(self._path, os.O_RDONLY)  # a FIFO: waits here for a writer
                self._read_frames(fd)
        except OSError as exc:
            self._queue.count("read_error", f"cannot read ({exc})")
        except Exception:  # a bug must end the stream visibly, not kill the thread silently
            log.exception("%s: reader failed", self.description)
            self._queue.count("read_error", "reader failed")
        finally:
            if fd is not None:
                os.close(fd)
            self._ended.set()

    def _read_frames(self, fd: int) -> None:
        poller = select.poll()  # poll, not epoll: it also takes regular files
        poller.register(fd, select.POLLIN)
        buf = bytearray()
        while not self._stop.is_set():
            if not poller.poll(_POLL_MS):
                continue
            chunk = os.read(fd, self.frame_bytes - len(buf))
            if not chunk:  # end of stream
                if buf:
                    self._queue.count(
                        "short_read",
                        f"the stream ended inside a frame ({len(buf)} of {self.frame_bytes} "
                        "bytes); check the frame size and pixel format",
                    )
                log.info("%s: end of stream", self.description)
                return
            buf += chunk
            if len(buf) == self.frame_bytes:
                data = raw_to_input(bytes(buf), self.input_shape)
                self._queue.put(Reading(data, self.clock(), None))
                buf.clear()


def check_topic(topic: str) -> str:
    """``topic`` if it names one MQTT topic a sensor can publish to; else ``ValueError``."""
    if not topic:
        raise ValueError("the MQTT source topic is empty; accepted: a topic such as sensors/cam0")
    if "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(
            f"MQTT source topic {topic!r} holds a wildcard or NUL; name one topic (no + or #)"
        )
    if len(topic.encode()) > 65535:
        raise ValueError("MQTT source topic is longer than MQTT's 65535 bytes")
    return topic


class MqttSource:
    """Readings published on an MQTT topic, fed in by the node (``mqtt:TOPIC``)."""

    def __init__(
        self,
        topic: str,
        input_shape: tuple[int, ...],
        *,
        counters: Counter[str] | None = None,
        clock: Callable[[], float] = time.time,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.topic = check_topic(topic)
        self.description = f"mqtt:{topic}"
        self.input_shape = tuple(input_shape)
        self.size = math.prod(self.input_shape)
        self.max_json_bytes = 64 * self.size + 1024  # generous; refuses floods before parsing
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.clock = clock
        self._queue = _Queue(max_queue, self.description)

    @property
    def finished(self) -> bool:
        """A topic may always carry another reading."""
        return False

    def feed(self, payload: bytes) -> None:
        """Takes one message published on ``topic``; a bad one is counted, never raised."""
        try:
            data = self._decode(bytes(payload))
        except _Rejected as exc:
            self._queue.count(f"rejected_{exc.reason}", f"{len(payload)} B payload: {exc}")
            return
        self._queue.put(Reading(data, self.clock(), None))

    def poll(self) -> list[Reading]:
        """The readings fed since the last call, oldest first."""
        return self._queue.drain(self.counters)

    def close(self) -> None:
        """Drops what was fed and not polled."""
        self._queue.drain(Counter())

    def _decode(self, payload: bytes) -> np.ndarray:
        # A JSON array of n numbers takes at least 2n + 1 bytes, so n bytes are always raw.
        if len(payload) == self.size:
            return raw_to_input(payload, self.input_shape)
        if payload.lstrip()[:1] != b"[":
            raise _Rejected(
                "payload_size", f"neither a raw frame of {self.size} bytes nor a JSON array"
            )
        if len(payload) > self.max_json_bytes:
            raise _Rejected("payload_size", f"too long for {self.size} JSON numbers")
        try:
            values = np.asarray(_json_numbers(json.loads(payload)), dtype=np.float64)
        except OverflowError:  # an integer beyond float range
            raise _Rejected("non_finite", "a JSON number is out of range") from None
        except (ValueError, TypeError, RecursionError) as exc:  # bad JSON, ragged, non-number
            raise _Rejected("malformed", f"not a usable JSON array ({exc})") from None
        if values.size != self.size:
            raise _Rejected(
                "payload_size", f"{values.size} JSON numbers; this device takes {self.size}"
            )
        if values.ndim != 1 and values.shape != self.input_shape:
            raise _Rejected(
                "malformed",
                f"JSON nested as {values.shape}; nest as {self.input_shape} or send a flat array",
            )
        with np.errstate(over="ignore", invalid="ignore"):
            data = values.astype(np.float32).reshape(self.input_shape)
        if not np.isfinite(data).all():
            raise _Rejected("non_finite", "NaN or infinite values (as float32)")
        return data


def _json_numbers(obj: object) -> object:
    """``obj`` if it is a list of lists … of numbers; else ``TypeError`` (bools and strings too,
    which NumPy would silently convert)."""
    if not isinstance(obj, list):
        raise TypeError(f"a JSON {type(obj).__name__}, not an array")
    stack = [obj]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, bool) or not isinstance(item, int | float):
                raise TypeError(f"holds {json.dumps(item)[:40]}, not a number")
    return obj


def open_source(
    spec: str,
    input_shape: tuple[int, ...],
    *,
    on_done: str = "keep",
    counters: Counter[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> Source:
    """The source ``spec`` names (``SCHEME:ARG``, see the module docstring).

    Args:
        spec: ``folder:DIR``, ``pipe:PATH``, ``pipe:-`` (stdin) or ``mqtt:TOPIC``.
        input_shape: the device section's input shape (without the batch dimension).
        on_done: what a folder source does with a file it has read: keep, move or delete.
        counters: the node's counters, to count rejections and drops in; a new one if ``None``.
        clock: gives the ``captured`` time of readings.

    Raises:
        ValueError: one line saying what is wrong with ``spec`` or ``on_done`` and what is
            accepted; also a missing folder or pipe.
    """
    scheme, colon, arg = spec.partition(":")
    if not colon or scheme not in SCHEMES:
        raise ValueError(f"source {spec!r} has an unknown scheme; {ACCEPTED}")
    if not arg:
        raise ValueError(f"source {spec!r} names no {scheme}; {ACCEPTED}")
    if on_done not in ON_DONE:
        raise ValueError(f"on_done {on_done!r} is not one of: {', '.join(ON_DONE)}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input shape {shape} must be positive integers")
    if scheme == "folder":
        return FolderSource(arg, shape, on_done=on_done, counters=counters, clock=clock)
    if scheme == "pipe":
        path: str | int = arg
        if arg == "-":
            try:
                path = sys.stdin.fileno()
            except (AttributeError, OSError, ValueError):  # no stdin, or one without a descriptor
                raise ValueError("source pipe:- reads stdin, which this process has not") from None
        return PipeSource(path, shape, counters=counters, clock=clock, description=f"pipe:{arg}")
    return MqttSource(arg, shape, counters=counters, clock=clock)
