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
* A file is read when it is finished: on Linux the kernel reports (inotify) a file closed by
  the writer that had it open for writing, or renamed into the folder, and the device reads it
  at once. The folder is also listed (every 0.5 s with the watch; every 10 ms where inotify is
  missing): a listed file is read once its size and modification time held from one listing to
  the next. Names starting with ``.`` or ending in ``.tmp`` / ``.part`` are ignored (write to
  such a name and rename when done), and an empty file is never read.
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

import sys
import time
from collections import Counter
from collections.abc import Callable

from ddnn.runtime.sources.common import (
    ACCEPTED,
    MAX_QUEUE,
    ON_DONE,
    SCHEMES,
    Reading,
    Source,
    is_image_shape,
    raw_to_input,
    sample_id,
)
from ddnn.runtime.sources.folder import FolderSource
from ddnn.runtime.sources.mqtt import MqttSource, check_topic
from ddnn.runtime.sources.pipe import PipeSource

__all__ = [
    "ACCEPTED",
    "MAX_QUEUE",
    "ON_DONE",
    "SCHEMES",
    "FolderSource",
    "MqttSource",
    "PipeSource",
    "Reading",
    "Source",
    "check_topic",
    "is_image_shape",
    "open_source",
    "raw_to_input",
    "sample_id",
]


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
