"""Kernel notice of finished files in a folder (inotify, through ``inotify_simple``), so a folder
source is read the moment a capture lands instead of at its next look.

A file is *finished* when a writer that had it open for writing closes it (``IN_CLOSE_WRITE``)
or when it is renamed into the folder (``IN_MOVED_TO``, the write-then-rename pattern). The kernel
queues these events on the watch's descriptor as the writer's ``close``/``rename`` returns, so
``take`` (which reads that descriptor itself) sees every file finished before it was called; the
thread only wakes the node (``on_change``) when an event arrives while it waits.

Only on Linux; ``FolderWatch.start`` returns ``None`` where inotify is missing or refuses (the
per-user watch limit), and the folder source then looks at the folder every few milliseconds.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddnn.runtime.sources.common import _POLL_MS

log = logging.getLogger(__name__)


class FolderWatch:
    """Names of files finished in one folder since the last ``take``."""

    def __init__(self, inotify: Any, flags: Any, description: str) -> None:
        self._inotify = inotify
        self._finished_mask = flags.CLOSE_WRITE | flags.MOVED_TO
        self._overflow, self._ignored = flags.Q_OVERFLOW, flags.IGNORED
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._rescan = False  # events were lost (queue overflow) or the watch ended
        self._stop = threading.Event()
        self.description = description
        self.on_change: Callable[[], None] = lambda: None  # wakes the polling thread
        self._thread = threading.Thread(target=self._run, name=f"watch {description}", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, folder: Path, description: str) -> FolderWatch | None:
        """A running watch on ``folder``, or ``None`` where inotify cannot watch it."""
        try:
            from inotify_simple import INotify, flags
        except (ImportError, OSError):  # not Linux, or no inotify in this libc
            return None
        try:
            inotify = INotify()
        except OSError as exc:
            log.warning("%s: no inotify (%s); looking at the folder instead", description, exc)
            return None
        try:
            inotify.add_watch(folder, flags.CLOSE_WRITE | flags.MOVED_TO | flags.ONLYDIR)
        except OSError as exc:  # e.g. the user's inotify watch limit
            inotify.close()
            log.warning("%s: cannot watch (%s); looking at the folder instead", description, exc)
            return None
        return cls(inotify, flags, description)

    @property
    def alive(self) -> bool:
        """False once the watch ended (folder removed or moved, or ``close``)."""
        return self._thread.is_alive()

    def take(self) -> tuple[set[str], bool]:
        """(names finished since the last call, whether the folder must be listed because
        events may have been lost)."""
        with self._lock:
            if not self._stop.is_set():
                self._read_events()
            names, rescan = self._names, self._rescan
            self._names, self._rescan = set(), False
        return names, rescan

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * _POLL_MS / 1000)

    def _read_events(self) -> None:
        """Moves the queued events into ``_names`` (under ``_lock``, never blocking)."""
        for event in self._inotify.read(timeout=0):
            if event.mask & self._overflow:  # the kernel's queue overflowed: events were lost
                self._rescan = True
            elif event.mask & self._ignored:  # the folder was removed or unmounted
                self._rescan = True
                self._stop.set()
                log.warning("%s: the folder went away; stopped watching it", self.description)
            elif event.mask & self._finished_mask and event.name:
                self._names.add(event.name)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fileno(), select.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(_POLL_MS):
                    continue
                with self._lock:
                    if not self._stop.is_set():
                        self._read_events()
                    pending = bool(self._names) or self._rescan
                if pending:
                    self.on_change()
                else:  # readable but nothing of interest (another thread took it): yield
                    self._stop.wait(0.001)
        except Exception:  # a bug must end the watch visibly; the folder is then listed
            log.exception("%s: the watch failed; looking at the folder instead", self.description)
        finally:
            self._stop.set()
            with self._lock:
                self._rescan = True
                self._inotify.close()
            self.on_change()
