"""The aggregator node: fuses device scores into the local exit, and edge scores into the edge exit.

For each sample it waits for the SCORES frames of every device not known to be dead (MQTT Last
Will), up to a deadline after the first frame; then it fuses what arrived with the presence mask
and applies the exit rule. Samples that go up are requested from the devices (phase two); with
edges, the edges' scores come back here for the edge exit. If the tier above is down or does not
answer in time, the sample is answered with the best exit below it and flagged — never dropped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import torch

from ddnn.models.sections import LocalAggregatorSection
from ddnn.nn.exits import exit_mask
from ddnn.runtime.codec import HEADER_BYTES, FrameKind
from ddnn.runtime.device_node import captured_at
from ddnn.runtime.mqtt import BrokerSettings, message_overhead
from ddnn.runtime.node import Node
from ddnn.runtime.protocol import (
    EDGE,
    LOCAL,
    OFFLINE,
    Answer,
    Topics,
    UpRequest,
    decode_answers,
    encode_answers,
    encode_requests,
)
from ddnn.train.checkpoint import load_section

log = logging.getLogger(__name__)


@dataclass
class Arrivals:
    """A sample's device frames so far."""

    first: float  # monotonic time of the first frame
    captured: float  # earliest capture time stamped by a device
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    payload: dict[str, int] = field(default_factory=dict)
    mqtt: dict[str, int] = field(default_factory=dict)


@dataclass
class EdgeWait:
    """A sample waiting for its edges' scores."""

    request: UpRequest
    expected: set[int]
    deadline: float
    scores: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class UpWait:
    """A sample sent to the cloud; answered here with the fallback if the cloud is silent."""

    request: UpRequest
    deadline: float
    fallback: int
    fallback_exit: str


def stack_scores(
    per_sample: list[dict[int, np.ndarray]], num_inputs: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score vectors by input index -> (B, N, C) scores with zeros where absent, (B, N) presence."""
    scores = np.zeros((len(per_sample), num_inputs, num_classes), dtype=np.float32)
    present = np.zeros((len(per_sample), num_inputs), dtype=bool)
    for b, arrived in enumerate(per_sample):
        for i, s in arrived.items():
            scores[b, i] = s
            present[b, i] = True
    return torch.from_numpy(scores), torch.from_numpy(present)


class AggregatorNode(Node):
    """Local exit (and edge exit, with edges) of a trained hierarchy."""

    def __init__(
        self,
        run_dir: str | Path,
        settings: BrokerSettings,
        topics: Topics,
        thresholds: dict[str, float] | None = None,
        deadline: float = 0.5,
        upper_timeout: float = 3.0,
        qos: int = 1,
    ) -> None:
        local, config, version = load_section(run_dir, "local")
        assert isinstance(local, LocalAggregatorSection)
        super().__init__("aggregator", settings, topics, version, qos)
        if deadline <= 0 or upper_timeout <= 0:
            raise ValueError("the device deadline and the upper-tier timeout must be > 0 s")
        self.local = local
        self.num_devices = config.num_devices
        self.num_classes = config.num_classes
        self.groups = [tuple(g) for g in config.edge.groups]
        self.edge_exit: LocalAggregatorSection | None = None
        if self.groups:
            module, _, _ = load_section(run_dir, "edge_exit")
            assert isinstance(module, LocalAggregatorSection)
            self.edge_exit = module
        self.has_cloud = config.cloud.enabled
        thresholds = dict(thresholds or {})
        self.local_threshold = thresholds.get("local", 0.8)
        self.edge_threshold = thresholds.get("edge", 0.8)
        self.deadline = deadline
        self.upper_timeout = upper_timeout
        self.state: dict[str, bytes] = {}
        self.arrivals: dict[int, Arrivals] = {}
        self.edge_waits: dict[int, EdgeWait] = {}
        self.receipts: dict[int, list[dict]] = {}
        self.up_waits: dict[int, UpWait] = {}
        self.decided: set[int] = set()
        self.max_decided = -1
        self._last_progress = 0.0
        self._progress_sent = (-1, -1)
        self.max_seen = -1  # newest sample any device has sent
        with torch.no_grad():  # warm up before going online
            d, c = self.num_devices, self.num_classes
            local(torch.zeros(1, d, c), torch.ones(1, d, dtype=torch.bool))

    def subscriptions(self) -> list[str]:
        topics = [self.topics.device_scores("+"), self.topics.status("+")]
        if self.groups:
            topics += [self.topics.edge_scores("+"), self.topics.edge_receipts("+")]
        if self.groups or self.has_cloud:
            topics.append(self.topics.results)
        return topics

    def alive(self, node: str) -> bool:
        return self.state.get(node) != OFFLINE

    # -- messages ------------------------------------------------------------------------------
    def handle(self, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if topic.startswith(self.topics.status("")):
            node = topic.rsplit("/", 1)[1]
            self.state[node] = bytes(msg.payload)
        elif topic == self.topics.results:
            for answer in decode_answers(msg.payload):
                self.up_waits.pop(answer.sample, None)
        elif topic.endswith("/receipts"):
            for sample, receipt in json.loads(msg.payload).items():
                self.receipts.setdefault(int(sample), []).append(receipt)
        elif "/edge/" in topic:
            self._on_edge_scores(msg)
        else:
            self._on_device_scores(msg)

    def _on_device_scores(self, msg: paho.MQTTMessage) -> None:
        frame = self.decode(msg, FrameKind.SCORES, range(self.num_devices))
        if frame is None:
            return
        if Topics.index_in(msg.topic, "device") != frame.sender_id:
            self.reject("topic_mismatch", f"{msg.topic}: frame from device {frame.sender_id}")
            return
        if frame.payload.shape != (self.num_classes,):
            self.reject("wrong_shape", f"{msg.topic}: {frame.payload.shape[0]} class scores")
            return
        if frame.sample_id in self.decided:
            self.counters["late_frames"] += 1
            return
        now = time.monotonic()
        self.max_seen = max(self.max_seen, frame.sample_id)
        a = self.arrivals.get(frame.sample_id)
        captured = captured_at(msg, time.time())
        if a is None:
            a = self.arrivals[frame.sample_id] = Arrivals(now, captured)
        a.captured = min(a.captured, captured)
        key = str(frame.sender_id)
        a.scores[frame.sender_id] = frame.payload
        a.payload[key] = len(msg.payload) - HEADER_BYTES
        a.mqtt[key] = message_overhead(msg)

    def _on_edge_scores(self, msg: paho.MQTTMessage) -> None:
        frame = self.decode(msg, FrameKind.SCORES, range(len(self.groups)))
        if frame is None:
            return
        if Topics.index_in(msg.topic, "edge") != frame.sender_id:
            self.reject("topic_mismatch", f"{msg.topic}: frame from edge {frame.sender_id}")
            return
        w = self.edge_waits.get(frame.sample_id)
        if w is None or frame.payload.shape != (self.num_classes,):
            self.counters["late_frames"] += 1
            return
        w.scores[frame.sender_id] = frame.payload

    # -- decisions -----------------------------------------------------------------------------
    def next_wakeup(self) -> float | None:
        times = [a.first + self.deadline for a in self.arrivals.values()]
        times += [w.deadline for w in self.edge_waits.values()]
        times += [w.deadline for w in self.up_waits.values()]
        return min(times, default=None)

    def tick(self, now: float) -> None:
        expected = {k for k in range(self.num_devices) if self.alive(f"device_{k}")}
        ready = [
            s
            for s, a in self.arrivals.items()
            if expected <= set(a.scores) or now >= a.first + self.deadline
        ]
        if ready:
            self._decide_local(sorted(ready))
        edge_ready = [
            s
            for s, w in self.edge_waits.items()
            if {e for e in w.expected if self.alive(f"edge_{e}")} <= set(w.scores)
            or now >= w.deadline
        ]
        if edge_ready:
            self._decide_edge(sorted(edge_ready))
        late = [s for s, w in self.up_waits.items() if now >= w.deadline]
        if late:
            self._fallback(late, "cloud_timeout")
        position = (self.max_decided, self.max_seen)
        if now - self._last_progress > 0.005 and position != self._progress_sent:
            self.publish(
                self.topics.progress,
                json.dumps({"decided": self.max_decided, "latest": self.max_seen}).encode(),
                qos=0,
                retain=True,  # a device that rejoins learns where the deployment is
            )
            self._progress_sent = position
            self._last_progress = now

    def _answer(self, answers: list[Answer]) -> None:
        if answers:
            self.publish(self.topics.results, encode_answers(answers), qos=1)
            self.counters["answered"] += len(answers)

    def _decide_local(self, samples: list[int]) -> None:
        arrivals = [self.arrivals.pop(s) for s in samples]
        self.decided.update(samples)
        self.max_decided = max(self.max_decided, samples[-1])
        d = self.num_devices
        scores, present = stack_scores([a.scores for a in arrivals], d, self.num_classes)
        with torch.no_grad():
            logits = self.local(scores, present)
        is_last = not self.groups and not self.has_cloud
        leaving = (
            torch.ones(len(samples), dtype=torch.bool)
            if is_last
            else exit_mask(logits, self.local_threshold)
        )
        predictions = logits.argmax(dim=1).tolist()
        now = time.time()
        answers, requests = [], []
        for b, (sample, a) in enumerate(zip(samples, arrivals, strict=True)):
            ids = sorted(a.scores)
            flags = [] if len(ids) == d else [f"devices_missing:{sorted(set(range(d)) - set(ids))}"]
            req = UpRequest(
                sample,
                ids,
                a.payload,
                {k: 1 for k in a.payload},
                a.mqtt,
                a.captured,
                predictions[b],
                flags=flags,
            )
            if bool(leaving[b]):
                answers.append(self._answer_from(req, predictions[b], LOCAL, now))
            else:
                requests.append(req)
        self._answer(answers)
        if requests:
            self._send_up(requests)

    def _answer_from(
        self, req: UpRequest, prediction: int, exit_name: str, now: float, extra: str = ""
    ) -> Answer:
        return Answer(
            sample=req.sample,
            prediction=prediction,
            exit=exit_name,
            present=req.present,
            device_payload=req.device_payload,
            device_frames=req.device_frames,
            device_mqtt=req.device_mqtt,
            edge_payload=req.edge_payload,
            captured=req.captured,
            answered=now,
            flags=req.flags + ([extra] if extra else []),
        )

    def _send_up(self, requests: list[UpRequest]) -> None:
        """Phase two: ask the present devices for their features, towards the edges or cloud."""
        now = time.monotonic()
        if self.groups:
            keep, stranded = [], []
            for req in requests:
                edges = {
                    e
                    for e, g in enumerate(self.groups)
                    if set(g) & set(req.present) and self.alive(f"edge_{e}")
                }
                if edges:
                    self.edge_waits[req.sample] = EdgeWait(req, edges, now + self.upper_timeout)
                    keep.append(req)
                else:
                    stranded.append(req)
            self._answer(
                [
                    self._answer_from(r, r.local_prediction, LOCAL, time.time(), "edge_unreachable")
                    for r in stranded
                ]
            )
            requests = keep
        elif not self.alive("cloud"):
            self._answer(
                [
                    self._answer_from(
                        r, r.local_prediction, LOCAL, time.time(), "cloud_unreachable"
                    )
                    for r in requests
                ]
            )
            return
        else:
            for req in requests:
                self.up_waits[req.sample] = UpWait(
                    req, now + self.upper_timeout, req.local_prediction, LOCAL
                )
        if requests:
            self.publish(self.topics.request, encode_requests(requests), qos=1)

    def _decide_edge(self, samples: list[int]) -> None:
        assert self.edge_exit is not None
        waits = [self.edge_waits.pop(s) for s in samples]
        scores, present = stack_scores(
            [w.scores for w in waits], len(self.groups), self.num_classes
        )
        for w in waits:
            for receipt in self.receipts.pop(w.request.sample, []):
                for key, nbytes in receipt["payload"].items():
                    r = w.request
                    r.device_payload[key] = r.device_payload.get(key, 0) + nbytes
                    r.device_frames[key] = r.device_frames.get(key, 0) + 1
                    r.device_mqtt[key] = r.device_mqtt.get(key, 0) + receipt["mqtt"][key]
                w.request.flags.extend(f for f in receipt["flags"] if f not in w.request.flags)
            if not w.expected <= set(w.scores):
                w.request.flags.append(f"edges_missing:{sorted(w.expected - set(w.scores))}")
        with torch.no_grad():
            logits = self.edge_exit(scores, present)
        leaving = (
            exit_mask(logits, self.edge_threshold)
            if self.has_cloud
            else torch.ones(len(samples), dtype=torch.bool)
        )
        predictions = logits.argmax(dim=1).tolist()
        now = time.time()
        answers, forward = [], []
        for b, w in enumerate(waits):
            req = w.request
            req.edge_prediction = predictions[b]
            req.edges = sorted(w.scores)
            if not w.scores:  # no edge answered: the local exit is the best we have
                answers.append(
                    self._answer_from(req, req.local_prediction, LOCAL, now, "edge_timeout")
                )
            elif bool(leaving[b]):
                answers.append(self._answer_from(req, predictions[b], EDGE, now))
            elif not self.alive("cloud"):
                answers.append(
                    self._answer_from(req, predictions[b], EDGE, now, "cloud_unreachable")
                )
            else:
                forward.append(req)
        self._answer(answers)
        mono = time.monotonic()
        for req in forward:
            self.up_waits[req.sample] = UpWait(
                req, mono + self.upper_timeout, req.edge_prediction, EDGE
            )
        if forward:
            self.publish(self.topics.forward, encode_requests(forward), qos=1)

    def _fallback(self, samples: list[int], why: str) -> None:
        now = time.time()
        answers = []
        for s in samples:
            w = self.up_waits.pop(s)
            answers.append(self._answer_from(w.request, w.fallback, w.fallback_exit, now, why))
        self._answer(answers)
