"""What every live source shares: readings, the protocol, counting, the raw layout, a queue."""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

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
    # the node calls ``poll`` when ``on_change`` (which it sets) was called, and at least every
    # ``poll_interval`` seconds (``None``: only when told)
    on_change: Callable[[], None]

    @property
    def poll_interval(self) -> float | None:
        """Seconds after which ``poll`` must run again even if ``on_change`` was not called."""
        ...

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
        self.on_change: Callable[[], None] = lambda: None  # wakes the polling thread

    def count(self, key: str, detail: str) -> None:
        with self.lock:
            self.pending[key] += 1
            self.totals[key] += 1
            total = self.totals[key]
        if total <= LOG_FIRST or total % LOG_EVERY == 0:
            log.warning("%s: %s (%s, %d so far)", self.description, detail, key, total)
        self.on_change()

    def put(self, reading: Reading) -> None:
        with self.lock:
            full = len(self.items) == self.items.maxlen
            self.items.append(reading)  # a full deque drops its oldest
        if full:
            self.count("dropped_behind", "the node is behind; dropped the oldest reading")
        self.on_change()

    def drain(self, counters: Counter[str]) -> list[Reading]:
        with self.lock:
            out, pending = list(self.items), self.pending
            self.items.clear()
            self.pending = Counter()
        counters.update(pending)
        return out


class _Queued:
    """A source whose readings arrive through a :class:`_Queue` (``self._queue``): its
    ``on_change`` is the queue's, called whenever something is put in or counted."""

    _queue: _Queue

    @property
    def on_change(self) -> Callable[[], None]:
        return self._queue.on_change

    @on_change.setter
    def on_change(self, callback: Callable[[], None]) -> None:
        self._queue.on_change = callback
