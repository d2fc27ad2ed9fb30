"""What every runtime node shares: an MQTT client, an inbox, a status topic, counters, a main loop.

paho delivers messages on its network thread; a node only queues them there and handles them on
its own thread, so a slow section never stalls keep-alives or acknowledgements.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as paho

from ddnn.runtime.codec import Frame, FrameDecodeError, FrameKind, decode_frame
from ddnn.runtime.mqtt import BrokerSettings, close_client, connect_client
from ddnn.runtime.protocol import DONE, OFFLINE, ONLINE, STOP, Topics

log = logging.getLogger(__name__)


class Node:
    """Base of device, aggregator, edge and cloud nodes.

    Subclasses set ``name`` and ``subscriptions``, and implement ``handle`` (one message) and
    optionally ``tick`` (time-driven work such as deadlines) and ``next_wakeup``.
    """

    def __init__(
        self,
        name: str,
        settings: BrokerSettings,
        topics: Topics,
        model_version: int,
        qos: int = 1,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos}")
        self.name = name
        self.settings = settings
        self.topics = topics
        self.model_version = model_version
        self.qos = qos
        self.inbox: queue.SimpleQueue[paho.MQTTMessage] = queue.SimpleQueue()
        self.counters: Counter[str] = Counter()
        self.client: paho.Client | None = None
        self.stopping = False

    # -- wiring --------------------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """Topic filters this node listens to (besides ``control``)."""
        return []

    def connect(self, connect_timeout: float = 10.0) -> None:
        subs = [(t, 1) for t in [*self.subscriptions(), self.topics.control]]
        status = self.topics.status(self.name)
        self.client = connect_client(
            f"ddnn-{self.topics.namespace}-{self.name}",
            self.settings,
            self.inbox.put,
            subs,
            will=(status, OFFLINE),
            online=(status, ONLINE),
            connect_timeout=connect_timeout,
        )

    def publish(self, topic: str, payload: bytes, qos: int | None = None, **kw: Any) -> None:
        assert self.client is not None, "connect() first"
        self.client.publish(topic, payload, qos=self.qos if qos is None else qos, **kw)

    def announce_done(self) -> None:
        self.publish(self.topics.status(self.name), DONE, qos=1, retain=True)

    # -- frames --------------------------------------------------------------------------------
    def reject(self, reason: str, detail: str) -> None:
        """Count and log a message we cannot use; never raises."""
        self.counters[f"rejected_{reason}"] += 1
        n = self.counters[f"rejected_{reason}"]
        if n <= 5 or n % 1000 == 0:
            log.warning("%s rejected a message (%s, %d so far): %s", self.name, reason, n, detail)

    def decode(
        self, msg: paho.MQTTMessage, kind: FrameKind, senders: set[int] | range
    ) -> Frame | None:
        """The frame in ``msg`` if it decodes, is of ``kind``, from a known sender, this model."""
        try:
            frame = decode_frame(msg.payload)
        except FrameDecodeError as exc:
            self.reject("undecodable", f"{msg.topic}: {exc}")
            return None
        if frame.kind != kind:
            self.reject("wrong_kind", f"{msg.topic}: {frame.kind.name} frame, expected {kind.name}")
            return None
        if frame.sender_id not in senders:
            self.reject("unknown_sender", f"{msg.topic}: sender {frame.sender_id} is not known")
            return None
        if frame.model_version != self.model_version:
            self.reject(
                "wrong_model",
                f"{msg.topic}: model version {frame.model_version:#010x}, "
                f"serving {self.model_version:#010x}",
            )
            return None
        return frame

    # -- loop ----------------------------------------------------------------------------------
    def handle(self, msg: paho.MQTTMessage) -> None:
        """Handle one message (subclasses)."""

    def on_control(self, payload: bytes) -> None:
        """A control command other than ``stop`` (subclasses)."""

    def tick(self, now: float) -> None:
        """Time-driven work, called after every batch of messages and at ``next_wakeup``."""

    def next_wakeup(self) -> float | None:
        """Monotonic time ``tick`` must run by, or ``None``."""
        return None

    def step(self, max_wait: float) -> None:
        """Waits up to ``max_wait`` s for messages, handles all that are queued, then ticks."""
        try:
            msg = self.inbox.get(timeout=max(0.0, max_wait))
        except queue.Empty:
            msg = None
        handled = 0
        while msg is not None and handled < 512:  # then tick, so deadlines run under load too
            handled += 1
            if msg.topic == self.topics.control:
                if msg.payload == STOP:
                    self.stopping = True
                else:
                    self.on_control(bytes(msg.payload))
            else:
                try:
                    self.handle(msg)
                except (ValueError, KeyError, TypeError) as exc:  # a malformed control message
                    self.reject("malformed", f"{msg.topic}: {exc}")
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                msg = None
        self.tick(time.monotonic())

    def serve(self, idle_poll: float = 0.05) -> None:
        """Run until a ``stop`` arrives on the control topic."""
        if self.client is None:
            self.connect()
        try:
            while not self.stopping:
                wake = self.next_wakeup()
                wait = idle_poll if wake is None else min(idle_poll, wake - time.monotonic())
                self.step(wait)
        finally:
            self.close()

    def close(self) -> None:
        if self.client is not None:
            close_client(self.client, (self.topics.status(self.name), OFFLINE))
            self.client = None
        if self.counters:
            log.info("%s counters: %s", self.name, dict(self.counters))
