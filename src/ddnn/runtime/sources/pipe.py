"""``pipe:PATH`` / ``pipe:-``: fixed-size raw frames from a FIFO, a file or stdin."""

from __future__ import annotations

import logging
import math
import os
import select
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable

from ddnn.runtime.sources.common import (
    _POLL_MS,
    MAX_QUEUE,
    Reading,
    _Queue,
    _Queued,
    raw_to_input,
)

log = logging.getLogger(__name__)


class PipeSource(_Queued):
    """Raw uint8 frames from a FIFO, a file or stdin (``pipe:PATH``; layout in the module doc).

    A reader thread reads the frames; ``on_change`` (set by the node) is called whenever it has
    something new (a frame, a count, the end of the stream), so the node need not poll.
    """

    poll_interval = None  # the reader thread calls on_change

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
            self._queue.on_change()

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
