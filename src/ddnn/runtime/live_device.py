"""A device node that reads a live sensor (a watched folder, a pipe of raw frames, an MQTT topic).

Two ways to number captures:

- **Free-running** (no trigger): every reading is one capture. Its sample id is the one the input
  carries (a folder file named ``…17.png`` is sample 17), else the next of the device's own
  counter. Devices agree on ids when their inputs carry them (``ddnn samples`` writes such
  folders) or when they start together at the same rate.
- **Triggered** (``--trigger``): the trigger node (``ddnn serve trigger --rate HZ``) publishes
  capture ticks on ``tick``; on tick k every device takes its **latest** reading as sample k, so
  the views the aggregator fuses are of the same instant, within one reading period. A device
  with no reading newer than the one it used last waits for one until ``tick_deadline`` after the
  tick; then it is absent for sample k (counted ``absent_no_reading``), and the aggregator fuses
  without it after its own deadline and flags the answer ``devices_missing``. Older readings
  superseded before a tick are counted ``readings_superseded``.

Clock and latency model: a reading is stamped with the device's wall clock when it became
available (``Reading.captured``); that time travels in the SCORES frame, and an answer's latency
is the aggregator's or cloud's wall clock at the answer minus it, so clocks must agree (NTP) for
latencies across machines to be meaningful. The tick carries the trigger's time only for
diagnostics; it is never compared with a device's clock.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from ddnn.runtime.device_node import DeviceNode, consecutive_runs
from ddnn.runtime.engine import DeviceEngine, prepare_inputs
from ddnn.runtime.messages import parse_tick
from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.protocol import BATCH, Topics

log = logging.getLogger(__name__)

MAX_PENDING_TICKS = 64  # ticks waiting for a reading at once; older ones are absent


class LiveDeviceNode(DeviceNode):
    """Serves device section K on readings from a live source."""

    def __init__(
        self,
        device: int,
        engine: DeviceEngine,
        source: Any,
        settings: BrokerSettings,
        topics: Topics,
        *,
        triggered: bool = False,
        tick_deadline: float = 0.5,
        batch: int = BATCH,
        feature_ttl: float = 30.0,
        cache_size: int = 20_000,
        score_encoding: str = "float32",
        wait_for_start: bool = False,
        qos: int = 1,
    ) -> None:
        empty = np.zeros((0, *engine.input_shape), dtype=np.float32)
        super().__init__(
            device,
            engine,
            empty,
            settings,
            topics,
            batch=batch,
            feature_ttl=feature_ttl,
            cache_size=cache_size,
            score_encoding=score_encoding,
            wait_for_start=wait_for_start,
            qos=qos,
        )
        if not tick_deadline > 0:
            raise ValueError(f"the tick deadline must be > 0 s, got {tick_deadline}")
        self.source = source
        self.triggered = triggered
        self.tick_deadline = tick_deadline
        self.pending: dict[int, float] = {}  # tick sample id -> monotonic time it gives up
        self.fresh: Any = None  # the newest reading not used by a tick yet
        # a source wakes the node when it has something (a pipe's reader, a folder's watch,
        # the node's own MQTT messages) and may ask to be looked at every poll_interval seconds
        source.on_change = self.inbox.nudge
        if getattr(source, "counters", None) is not None and source.counters is not self.counters:
            self.source_counters = source.counters
        else:
            self.source_counters = None

    def subscriptions(self) -> list[str]:
        topics = super().subscriptions()
        if self.triggered:
            topics.append(self.topics.tick)
        if getattr(self.source, "topic", None):
            topics.append(self.source.topic)
        return topics

    def handle(self, msg: paho.MQTTMessage) -> None:
        if self.triggered and msg.topic == self.topics.tick:
            sample, _ = parse_tick(msg.payload)
            if sample >= self.next_sample and sample not in self.pending:
                self.pending[sample] = self.clock() + self.tick_deadline
                while len(self.pending) > MAX_PENDING_TICKS:
                    self.pending.pop(min(self.pending))
                    self.counters["absent_no_reading"] += 1
        elif getattr(self.source, "topic", None) == msg.topic:
            self.source.feed(bytes(msg.payload))
        else:
            super().handle(msg)

    # -- captures -------------------------------------------------------------------------------
    def _due_readings(self, now: float) -> list[tuple[int, Any]]:
        """(sample id, reading) pairs to capture now."""
        readings = self.source.poll()
        if not self.triggered:
            if all(r.sample is not None for r in readings):  # "10.png" sorts before "2.png"
                readings = sorted(readings, key=lambda r: r.sample)
            due = []
            for r in readings:
                sample = r.sample if r.sample is not None else self.next_sample
                if sample < self.next_sample:  # ids must grow: a file numbered behind is late
                    self.counters["readings_behind"] += 1
                    continue
                due.append((sample, r))
                self.next_sample = sample + 1
            return due
        if readings:
            self.counters["readings_superseded"] += len(readings) - 1 + (self.fresh is not None)
            self.fresh = readings[-1]
        due = []
        if self.pending and self.fresh is not None:
            newest = max(self.pending)  # the newest tick takes the latest reading
            due.append((newest, self.fresh))
            self.fresh = None
            for k in [k for k in self.pending if k < newest]:
                del self.pending[k]
                self.counters["absent_no_reading"] += 1
            del self.pending[newest]
            self.next_sample = newest + 1
        for k in [k for k, give_up in self.pending.items() if now >= give_up]:
            del self.pending[k]
            self.counters["absent_no_reading"] += 1
        return due

    def _capture_readings(self, due: list[tuple[int, Any]]) -> None:
        by_id = dict(due)
        for run in consecutive_runs(sorted(by_id)):
            for i in range(0, len(run), self.batch):
                part = run[i : i + self.batch]
                x = np.stack([by_id[s].data for s in part]).astype(np.float32, copy=False)
                x = prepare_inputs(self.engine, x)  # a rollout's engines are of one kind
                self._send_scores(part[0], x, min(by_id[s].captured for s in part))

    def poll(self, max_wait: float) -> bool:
        """One turn: capture what the source has (and the ticks ask for), else wait."""
        if not self.started:  # waiting for the start command: the source is not read yet
            self.step(max_wait)
            return False
        now = self.clock()
        due = self._due_readings(now)
        self._resend_if_stalled(now)
        if due:
            self._capture_readings(due)
        if self.source_counters:
            self.counters.update(self.source_counters)
            self.source_counters.clear()
        if not self.finished and getattr(self.source, "finished", False):
            if not self.pending:
                self.finished = True
                self.announce_done()
                log.info("%s: the source %s ended", self.name, self.source.description)
        wait = 0.0 if due else min(max_wait, self.idle_wait(now))
        if self.pending:  # a tick gives up on its reading then
            wait = min(wait, min(self.pending.values()) - now)
        if self.source.poll_interval is not None:
            wait = min(wait, self.source.poll_interval)
        self.step(max(0.0, wait))
        self.cache.evict(self.clock())
        return bool(due)

    def close(self) -> None:
        super().close()
        self.source.close()
