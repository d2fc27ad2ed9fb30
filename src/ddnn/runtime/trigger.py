"""The trigger node: publishes capture ticks so that live devices capture the same instant.

Tick k goes out at ``t0 + k' / rate`` (k' counting from the first tick), as a binary TICK message
(:mod:`ddnn.wire.control`) on the ``tick`` topic, QoS 0: a tick that is lost is a sample no
device captures, nothing to retry. The first tick's id continues the deployment (one past the
newest sample in the aggregator's retained progress), so a restarted trigger never reuses ids.
"""

from __future__ import annotations

import logging
import math

import paho.mqtt.client as paho

from ddnn.runtime.messages import encode_tick, parse_progress
from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.node import Node
from ddnn.runtime.protocol import Topics

log = logging.getLogger(__name__)


class TriggerNode(Node):
    """Publishes ``count`` capture ticks (forever if None) at ``rate`` per second."""

    role = "trigger"

    def __init__(
        self,
        settings: BrokerSettings,
        topics: Topics,
        rate: float,
        count: int | None = None,
        first: int | None = None,
    ) -> None:
        super().__init__("trigger", settings, topics, model_version=0, qos=0)
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"the trigger rate must be a finite number of ticks/s > 0, got {rate}")
        if count is not None and count < 1:
            raise ValueError(f"the tick count must be >= 1, got {count}")
        if first is not None and first < 0:
            raise ValueError(f"the first tick id must be >= 0, got {first}")
        self.rate = rate
        self.count = count
        self.first = first
        self.position = -1  # newest sample id in the deployment (from the retained progress)
        self.sent = 0
        self.t0: float | None = None

    def subscriptions(self) -> list[str]:
        return [self.topics.progress]

    def handle(self, msg: paho.MQTTMessage) -> None:
        p = parse_progress(msg.payload)
        self.position = max(self.position, p.decided, p.latest)

    def next_wakeup(self) -> float | None:
        if self.t0 is None or (self.count is not None and self.sent >= self.count):
            return None
        return self.t0 + self.sent / self.rate

    def tick(self, now: float) -> None:
        if self.t0 is None:
            return
        while (self.count is None or self.sent < self.count) and now >= self.t0 + (
            self.sent / self.rate
        ):
            sample = self.first + self.sent  # type: ignore[operator]
            self.publish(self.topics.tick, encode_tick(sample, self.wall()), qos=0)
            self.sent += 1
            self.counters["ticks"] += 1
        if self.count is not None and self.sent >= self.count and not self.counters["done"]:
            self.counters["done"] = 1
            self.announce_done()
            log.info("trigger sent %d ticks", self.sent)

    def start(self, wait_for_progress: float = 1.0) -> None:
        """Learn the deployment's position (retained progress, if any), then start ticking."""
        deadline = self.clock() + wait_for_progress
        while self.first is None and self.position < 0 and self.clock() < deadline:
            self.step(0.05)
        if self.first is None:
            self.first = self.position + 1
        self.t0 = self.clock()
        log.info("trigger: ticks from sample %d at %.3g/s", self.first, self.rate)

    def serve(self, idle_poll: float = 0.05) -> None:
        if self.client is None:
            self.connect()
        self.start()
        super().serve(idle_poll)
