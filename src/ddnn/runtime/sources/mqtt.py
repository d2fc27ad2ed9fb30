"""``mqtt:TOPIC``: readings a sensor publishes on the deployment's broker."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from ddnn.runtime.sources.common import (
    MAX_QUEUE,
    Reading,
    _Queue,
    _Queued,
    _Rejected,
    raw_to_input,
)

log = logging.getLogger(__name__)


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


class MqttSource(_Queued):
    """Readings published on an MQTT topic, fed in by the node (``mqtt:TOPIC``)."""

    poll_interval = None  # readings arrive as the node's own MQTT messages

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
