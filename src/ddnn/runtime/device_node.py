"""The end-device node: replays its sensor's view, publishes class scores, sends features on request.

Two-phase protocol (SPEC §6): every sample costs one SCORES frame (one frame per capture batch);
its features are sent only when the aggregator asks for them (one frame per ask) (the sample did not exit locally). Features wait in a cache bounded
in entries and in age; a request for an evicted sample is counted and answered by the deadline
of the tier above, which then fuses without this device.

Flow control: a device runs at most ``window`` samples ahead of the highest sample the
aggregator has decided (its retained ``progress`` message). If progress stalls for
``resend_after`` seconds while frames are in flight (they were lost: say the aggregator
restarted while the broker did), the device sends those SCORES frames again, with a doubling
back-off, so a lost window never stalls the deployment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho

from ddnn.runtime.engine import DeviceEngine, prepare_inputs, prepared_inference
from ddnn.runtime.feature_cache import FeatureCache
from ddnn.runtime.messages import Control, parse_progress, samples_asked_of
from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.node import Node, NodeFenced
from ddnn.runtime.protocol import BATCH, WINDOW, Topics
from ddnn.runtime.rollout import Versions
from ddnn.wire import encode_features_frame_ids, encode_scores_frame, score_bytes
from ddnn.wire.accounting import raw_bytes_per_device

log = logging.getLogger(__name__)

START = b"start"
MAX_RESEND_BACKOFF = 8.0  # s between resends while the aggregator stays silent


def start_command(at: float | None = None) -> bytes:
    """The control message that starts every device's replay, optionally at a common wall-clock
    time: devices then capture sample i at ``at + i / rate``, in step with each other."""
    return START if at is None else START + f" {at:.6f}".encode()


def consecutive_runs(samples: list[int]) -> list[list[int]]:
    """Sorted sample ids split into runs of consecutive ids (one batched frame each)."""
    runs: list[list[int]] = []
    for s in samples:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


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

    role = "device"

    def __init__(
        self,
        device: int,
        engine: DeviceEngine,
        inputs: np.ndarray,
        settings: BrokerSettings,
        topics: Topics,
        *,
        rate: float = 0.0,
        batch: int = BATCH,
        window: int = WINDOW,
        feature_ttl: float = 30.0,
        cache_size: int = 20_000,
        wait_for_start: bool = False,
        resend_after: float = 2.0,
        score_encoding: str = "float32",
        qos: int = 1,
    ) -> None:
        super().__init__(f"device_{device}", settings, topics, engine.model_version, qos)
        if tuple(inputs.shape[1:]) != tuple(engine.input_shape):
            raise ValueError(
                f"device {device} input has per-sample shape {tuple(inputs.shape[1:])}, "
                f"the trained section expects {tuple(engine.input_shape)}"
            )
        if (
            not (rate >= 0 and batch >= 1 and window >= 1 and feature_ttl > 0 and cache_size >= 1)
            or not resend_after > 0
        ):
            raise ValueError(
                "rate must be >= 0; batch, window, feature TTL, cache size and resend time > 0"
            )
        self.device = device
        self.engine = engine  # the one it started with (every version has its shapes)
        self.engines: Versions[DeviceEngine] = Versions(engine.model_version, engine)
        # builds the engine of a rolled-out version from its files (set by `ddnn serve`)
        self.engine_factory: Callable[[Path], DeviceEngine] | None = None
        self.inputs = prepare_inputs(engine, inputs)  # checked and converted once (C: uint8)
        self._infer = {engine.model_version: prepared_inference(engine)}
        self.rate = rate
        self.batch = batch
        self.window = window
        self.started = not wait_for_start  # without waiting, serve() begins the replay
        self.next_sample = 0
        self.decided = -1  # highest sample id the aggregator has decided (flow control)
        self.latest = -1  # newest sample any device has sent (where a rejoining device starts)
        self.t_start = 0.0
        # sample -> (model version, packed features of its batch, the batch's first sample)
        self.cache: FeatureCache[tuple[int, np.ndarray, int]] = FeatureCache(
            feature_ttl, self.counters, cache_size
        )
        self.finished = False
        self.score_encoding = score_encoding
        self._score_row = score_bytes(engine.num_classes, score_encoding)  # payload per sample
        # SCORES frames sent and not all decided: first sample -> (last sample, frame)
        self.in_flight: dict[int, tuple[int, bytes]] = {}
        self.resend_after = resend_after
        self._backoff = resend_after
        self._progress_at = 0.0  # monotonic time progress last moved (or we last resent)
        self._switches_seen: set[int] = set()
        self.metrics.raw_bytes_per_sample = raw_bytes_per_device(tuple(engine.input_shape))
        self.metrics.gauges["feature_cache_samples"] = lambda: len(self.cache)
        self._infer[engine.model_version](self.inputs[:1])  # warm up before going online

    def subscriptions(self) -> list[str]:
        return [self.topics.request, self.topics.progress]

    # -- messages ------------------------------------------------------------------------------
    def handle(self, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.request:
            self._send_features(samples_asked_of(msg.payload, self.device))
        elif msg.topic == self.topics.progress:
            self._on_progress(msg.payload)

    def _on_progress(self, payload: bytes | bytearray) -> None:
        """The aggregator's position. The newest message wins, not the largest value: the
        aggregator's own progress never goes back, so a forged position far ahead (anyone may
        write on an insecure broker) holds only until the aggregator's next message."""
        p = parse_progress(payload)
        if p.decided > self.decided:
            self._progress_at = self.clock()
            self._backoff = self.resend_after
            for first in [f for f, (last, _) in self.in_flight.items() if last <= p.decided]:
                del self.in_flight[first]
        elif p.decided < self.decided:
            self.counters["progress_went_back"] += 1
        self.decided = p.decided
        self.latest = p.latest
        if p.switch is not None:
            self._on_switch(*p.switch)
        self.engines.settle(p.decided)  # a switch point the deployment passed: the new base

    def _on_switch(self, at: int, tag: int) -> None:
        """A rollout: samples from ``at`` on are served by the model whose frame tag is ``tag``."""
        version = self.engines.by_tag(tag)
        if version is None:
            if self.engines.switches and self.engines.switches[-1][0] == at:
                return
            self.counters["rollout_switch_unprepared"] += 1
            if self.counters["rollout_switch_unprepared"] in (1, 1000):
                log.error(
                    "%s: the deployment switches models at sample %d to one this device "
                    "has not prepared (tag %04x); its frames from then on are refused",
                    self.name,
                    at,
                    tag,
                )
            return
        if self.engines.base == version and not self.engines.switches:
            return  # switched and settled already
        if self.engines.switch(at, version) and at not in self._switches_seen:
            self._switches_seen.add(at)
            log.info("%s: model version %d serves samples from %d on", self.name, version, at)

    # -- rollout -------------------------------------------------------------------------------
    def prepare_model(self, run_dir: Path, version: int) -> None:
        if self.engine_factory is None:
            raise ValueError("this device cannot load other models (no engine factory)")
        engine = self.engine_factory(run_dir)
        if engine.model_version != version:
            raise ValueError(f"the section is of model version {engine.model_version}")
        for what in ("input_shape", "feature_shape", "num_classes"):
            if getattr(engine, what) != getattr(self.engine, what):
                raise ValueError(
                    f"the new device section's {what} is {getattr(engine, what)}, the running "
                    f"one's {getattr(self.engine, what)}: a rollout keeps the hierarchy"
                )
        infer = prepared_inference(engine)
        infer(
            self.inputs[:1]
            if len(self.inputs)
            else prepare_inputs(engine, np.zeros((1, *engine.input_shape), np.float32))
        )
        self.engines.add(version, engine)
        self._infer[version] = infer

    def holds_model(self, version: int) -> bool:
        return version in self.engines.models

    def _send_features(self, samples: list[int]) -> None:
        """One FEATURES frame with every asked sample still in the cache (a feature ask is
        answered by one message, whether its samples are consecutive or not)."""
        rows = {s: r for s in samples if (r := self.cache.take(s)) is not None}
        by_version: dict[int, list[int]] = {}
        for s in sorted(rows):  # one frame per model version (two only across a rollout)
            by_version.setdefault(rows[s][0], []).append(s)
        for version, ids in by_version.items():
            packed = np.stack([rows[s][1][s - rows[s][2]] for s in ids])  # (n, nbytes) uint8
            frame = encode_features_frame_ids(
                packed,
                sender=self.device,
                sample_ids=ids,
                model_version=version,
                shape=self.engine.feature_shape,
            )
            header = len(frame) - packed.nbytes
            self.publish(self.topics.device_features(self.device), frame, header=header)
        self.counters["features_sent"] += len(rows)

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
        self._send_scores(start, self.inputs[start : start + n], self.wall())
        self.next_sample += n

    def _send_scores(self, start: int, x: np.ndarray, captured: float) -> None:
        """Runs the section on consecutive samples ``start, start + 1, …`` (inputs as
        :func:`~ddnn.runtime.engine.prepare_inputs` gives them) and publishes one SCORES frame
        (two when a model switch falls inside); their features wait in the cache for the
        aggregator's ask."""
        n = len(x)
        version = self.engines.version_for(start)
        for at, _ in self.engines.switches:
            if start < at < start + n:  # every sample of a frame is served by one model
                self._send_scores(start, x[: at - start], captured)
                self._send_scores(at, x[at - start :], captured)
                return
        scores, packed = self._infer[version](x)
        self.metrics.captured += n
        now = self.clock()
        if not self.in_flight:
            self._progress_at = now  # the resend clock runs from the oldest frame in flight
        self.cache.put_many(range(start, start + n), (version, packed, start), now)
        frame = encode_scores_frame(
            scores,
            sender=self.device,
            first_sample=start,
            model_version=version,
            encoding=self.score_encoding,
            captured=captured,
        )
        header = len(frame) - n * self._score_row
        self.publish(self.topics.device_scores(self.device), frame, header=header)
        self.in_flight[start] = (start + n - 1, frame)
        # Under the aggregator's flow control every frame a window behind is decided; older
        # ones are held only under a forged position: drop them, so the list stays bounded.
        for first in [f for f, (last, _) in self.in_flight.items() if last < start - self.window]:
            del self.in_flight[first]
            self.counters["in_flight_dropped"] += 1
        self.counters["samples"] += n
        self.cache.evict(now)

    def _resend_if_stalled(self, now: float) -> None:
        """Frames in flight and no progress for a while: they were lost; send them again."""
        if not self.in_flight or now - self._progress_at < self._backoff:
            return
        topic = self.topics.device_scores(self.device)
        for first in sorted(self.in_flight):
            last, frame = self.in_flight[first]
            header = len(frame) - (last - first + 1) * self._score_row
            self.publish(topic, frame, header=header)
        self.counters["resent"] += sum(
            last - first + 1 for first, (last, _) in self.in_flight.items()
        )
        log.warning(
            "%s: no progress for %.1f s; sent %d frames in flight again",
            self.name,
            now - self._progress_at,
            len(self.in_flight),
        )
        self._progress_at = now
        self._backoff = min(2 * self._backoff, MAX_RESEND_BACKOFF)

    def on_control(self, control: Control) -> None:
        if control.command == "start" and not self.started:
            self._begin(control.at)

    def _begin(self, origin: float | None = None) -> None:
        """Start replaying at wall-clock ``origin`` (default: now). A device that (re)joins a
        running deployment starts at its newest sample, in step with the other devices."""
        self.started = True
        self.t_start = self.clock()
        if origin is not None:
            self.t_start += origin - self.wall()
        self.next_sample = max(self.next_sample, self.decided + 1, self.latest + 1)
        if self.rate > 0 and origin is None:  # the schedule's origin is the deployment's sample 0
            self.t_start -= self.next_sample / self.rate

    def await_progress(self, timeout: float = 1.0) -> None:
        """A device started without waiting may be rejoining: learn the deployment's position
        from the retained progress message (absent in a fresh deployment: then start at 0)."""
        deadline = self.clock() + timeout
        while self.latest < 0 and self.clock() < deadline:
            self.step(0.05)

    def poll(self, max_wait: float) -> bool:
        """One turn of the replay loop: capture what is due (-> True), else wait up to ``max_wait``."""
        now = self.clock()
        n = self._due(now) if self.started else 0
        if self.started:
            self._resend_if_stalled(now)
        if n:
            self._capture(n)
            self.step(0.0)
            return True
        if self.started and not self.finished and self.next_sample >= len(self.inputs):
            self.finished = True
            self.announce_done()
            log.info("%s replayed %d samples", self.name, len(self.inputs))
        self.step(min(max_wait, self.idle_wait(now)))
        self.cache.evict(self.clock())
        return False

    def idle_wait(self, now: float) -> float:
        """Seconds until time alone gives this device something to do: the next sample due at
        its rate, or the resend check of frames in flight. (A message ends any wait sooner: the
        progress that opens a full window arrives as one.)"""
        if not self.started or self.finished:
            return float("inf")
        wait = float("inf")
        if self.rate > 0 or now < self.t_start:
            wait = self.t_start + (self.next_sample / self.rate if self.rate > 0 else 0.0) - now
        if self.in_flight:
            wait = min(wait, self._progress_at + self._backoff - now)
        return max(0.0, wait)

    def safe_poll(self, max_wait: float) -> bool:
        """:meth:`poll` that never raises: an unexpected error is counted and logged."""
        try:
            return self.poll(max_wait)
        except Exception:
            self._error("poll_error", "in poll")
            time.sleep(min(max_wait, 0.01))  # a persistent error must not spin the CPU
            return False

    def serve(self, idle_poll: float = 0.05) -> None:
        serve_devices([self], idle_poll)


def serve_devices(nodes: Sequence[DeviceNode], idle_poll: float = 0.05) -> None:
    """Serve one or several devices from one process (each keeps its own MQTT client) until
    every one has been told to stop.

    Raises:
        NodeFenced: Another process took over one of these devices (after the rest stopped).
    """
    for node in nodes:
        if node.client is None:
            node.connect()
        if node.started:
            node.await_progress()
            node._begin()
    wake = threading.Event()  # set by every node's inbox: one wait covers them all
    for node in nodes:
        node.inbox.wake = wake
    try:
        while not all(node.stopping for node in nodes):
            if len(nodes) == 1:
                nodes[0].safe_poll(idle_poll)
                continue
            wake.clear()  # before polling: a message that arrives meanwhile ends the wait
            busy = False
            for node in nodes:
                if not node.stopping:
                    busy |= node.safe_poll(0.0)
            if not busy:
                now = nodes[0].clock()
                wake.wait(min([idle_poll, *(n.idle_wait(now) for n in nodes if not n.stopping)]))
    finally:
        for node in nodes:
            node.close()
    fenced = [node.fenced for node in nodes if node.fenced]
    if fenced:
        raise NodeFenced("; ".join(fenced))
