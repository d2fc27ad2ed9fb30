"""The end-device node: replays its sensor's view, publishes class scores, sends features on request.

Two-phase protocol (SPEC §6): every sample costs one SCORES frame; the FEATURES frame is sent only
when the aggregator asks for it (the sample did not exit locally). Features wait in a cache bounded
in entries and in age; a request for an evicted sample is counted and answered by the deadline
of the tier above, which then fuses without this device.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ddnn.runtime.codec import encode_packed_features, encode_scores
from ddnn.runtime.engine import DeviceEngine
from ddnn.runtime.feature_cache import FeatureCache
from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.node import Node
from ddnn.runtime.protocol import Topics, decode_requests

log = logging.getLogger(__name__)

START = b"start"


def start_command(at: float | None = None) -> bytes:
    """The control message that starts every device's replay, optionally at a common wall-clock
    time: devices then capture sample i at ``at + i / rate``, in step with each other."""
    return START if at is None else START + f" {at:.6f}".encode()


def capture_properties(captured: float) -> Properties:
    """MQTT 5 user property ``t`` = capture time, so latency is measured end to end."""
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("t", f"{captured:.6f}")]
    return props


def captured_at(msg: paho.MQTTMessage, default: float) -> float:
    """The capture time a device stamped on ``msg``, or ``default``."""
    props = getattr(msg, "properties", None)
    for key, value in getattr(props, "UserProperty", None) or []:
        if key == "t":
            try:
                return float(value)
            except ValueError:
                return default
    return default


def load_device_inputs(
    run_dir: str | Path, device: int, input_path: str | None, split: str, limit: int | None
) -> np.ndarray:
    """The device's view to replay: an ``.npy`` file (N, *shape), or a split of the run's data."""
    if input_path is not None:
        try:
            x = np.load(input_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read device input {input_path!r}: {exc}") from None
    else:
        from ddnn.runtime.deploy import read_run_config, select_split

        chosen = select_split(read_run_config(run_dir), split, None)
        if not 0 <= device < chosen.num_devices:
            raise ValueError(f"device {device} is not in the data set's {chosen.num_devices}")
        x = chosen.device_input(device).numpy()
    if limit is not None:
        x = x[:limit]
    return np.ascontiguousarray(x, dtype=np.float32)


class DeviceNode(Node):
    """Serves device section K: replays inputs, publishes scores, keeps features for requests."""

    def __init__(
        self,
        device: int,
        engine: DeviceEngine,
        inputs: np.ndarray,
        settings: BrokerSettings,
        topics: Topics,
        *,
        rate: float = 0.0,
        batch: int = 8,
        window: int = 32,
        feature_ttl: float = 30.0,
        cache_size: int = 20_000,
        wait_for_start: bool = False,
        qos: int = 1,
    ) -> None:
        super().__init__(f"device_{device}", settings, topics, engine.model_version, qos)
        if tuple(inputs.shape[1:]) != tuple(engine.input_shape):
            raise ValueError(
                f"device {device} input has per-sample shape {tuple(inputs.shape[1:])}, "
                f"the trained section expects {tuple(engine.input_shape)}"
            )
        if rate < 0 or batch < 1 or window < 1 or feature_ttl <= 0 or cache_size < 1:
            raise ValueError("rate must be >= 0; batch, window, feature TTL and cache size > 0")
        self.device = device
        self.engine = engine
        self.inputs = inputs
        self.rate = rate
        self.batch = batch
        self.window = window
        self.started = not wait_for_start  # without waiting, serve() begins the replay
        self.next_sample = 0
        self.decided = -1  # highest sample id the aggregator has decided (flow control)
        self.latest = -1  # newest sample any device has sent (where a rejoining device starts)
        self.t_start = 0.0
        self.cache: FeatureCache[bytes] = FeatureCache(feature_ttl, self.counters, cache_size)
        self.finished = False
        engine.infer_batch(inputs[:1])  # warm up (first calls allocate) before going online

    def subscriptions(self) -> list[str]:
        return [self.topics.request, self.topics.progress]

    # -- messages ------------------------------------------------------------------------------
    def handle(self, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.request:
            for req in decode_requests(msg.payload):
                if self.device in req.present:
                    self._send_features(int(req.sample))
        elif msg.topic == self.topics.progress:
            progress = json.loads(msg.payload)
            self.decided = max(self.decided, int(progress["decided"]))
            self.latest = max(self.latest, int(progress.get("latest", -1)))

    def _send_features(self, sample: int) -> None:
        packed = self.cache.take(sample)
        if packed is None:
            return
        frame = encode_packed_features(
            packed,
            self.engine.feature_shape,
            sender_id=self.device,
            sample_id=sample,
            model_version=self.model_version,
        )
        self.publish(self.topics.device_features(self.device), frame)
        self.counters["features_sent"] += 1

    # -- replay --------------------------------------------------------------------------------
    def _due(self, now: float) -> int:
        """How many samples may be captured now (rate, window and what is left)."""
        if self.started and self.next_sample <= self.decided < len(self.inputs):
            # The deployment decided these samples without us (we fell behind past the
            # deadline): frames for them would be discarded, so catch up, as a live sensor would.
            self.counters["skipped_behind"] += self.decided + 1 - self.next_sample
            self.next_sample = self.decided + 1
        left = len(self.inputs) - self.next_sample
        ahead = self.window - (self.next_sample - self.decided - 1)
        n = min(self.batch, left, ahead)
        if now < self.t_start:
            return 0
        if self.rate > 0:
            n = min(n, int((now - self.t_start) * self.rate) + 1 - self.next_sample)
        return max(0, n)

    def _capture(self, n: int) -> None:
        start = self.next_sample
        captured = time.time()
        scores, packed = self.engine.infer_batch(self.inputs[start : start + n])
        now = time.monotonic()
        props = capture_properties(captured)
        topic = self.topics.device_scores(self.device)
        for i in range(n):
            sample = start + i
            self.cache.put(sample, packed[i].tobytes(), now)
            frame = encode_scores(
                scores[i],
                sender_id=self.device,
                sample_id=sample,
                model_version=self.model_version,
            )
            self.publish(topic, frame, properties=props)
        self.next_sample += n
        self.counters["samples"] += n
        self.cache.evict(now)

    def on_control(self, payload: bytes) -> None:
        word, _, at = payload.partition(b" ")
        if word == START and not self.started:
            try:
                origin = float(at) if at else None
            except ValueError:
                origin = None
            self._begin(origin)

    def _begin(self, origin: float | None = None) -> None:
        """Start replaying at wall-clock ``origin`` (default: now). A device that (re)joins a
        running deployment starts at its newest sample, in step with the other devices."""
        self.started = True
        self.t_start = time.monotonic()
        if origin is not None:
            self.t_start += origin - time.time()
        self.next_sample = max(self.next_sample, self.decided + 1, self.latest + 1)
        if self.rate > 0 and origin is None:  # the schedule's origin is the deployment's sample 0
            self.t_start -= self.next_sample / self.rate

    def await_progress(self, timeout: float = 1.0) -> None:
        """A device started without waiting may be rejoining: learn the deployment's position
        from the retained progress message (absent in a fresh deployment: then start at 0)."""
        deadline = time.monotonic() + timeout
        while self.latest < 0 and time.monotonic() < deadline:
            self.step(0.05)

    def poll(self, max_wait: float) -> bool:
        """One turn of the replay loop: capture what is due (-> True), else wait up to ``max_wait``."""
        now = time.monotonic()
        n = self._due(now) if self.started else 0
        if n:
            self._capture(n)
            self.step(0.0)
            return True
        if self.started and not self.finished and self.next_sample >= len(self.inputs):
            self.finished = True
            self.announce_done()
            log.info("%s replayed %d samples", self.name, len(self.inputs))
        wait = max_wait
        if self.started and not self.finished:  # (a progress message also ends the wait)
            due = self.t_start + (self.next_sample / self.rate if self.rate > 0 else 0.0)
            wait = min(wait, due - now) if due > now else min(wait, 0.005)
        self.step(wait)
        self.cache.evict(time.monotonic())
        return False

    def serve(self, idle_poll: float = 0.05) -> None:
        serve_devices([self], idle_poll)


def serve_devices(nodes: list[DeviceNode], idle_poll: float = 0.05) -> None:
    """Serve one or several devices from one process (each keeps its own MQTT client) until
    every one has been told to stop."""
    for node in nodes:
        if node.client is None:
            node.connect()
        if node.started:
            node.await_progress()
            node._begin()
    try:
        while not all(node.stopping for node in nodes):
            busy = False
            for node in nodes:
                if not node.stopping:
                    busy |= node.poll(0.0 if len(nodes) > 1 else idle_poll)
            if len(nodes) > 1 and not busy:
                time.sleep(0.001)
    finally:
        for node in nodes:
            node.close()
