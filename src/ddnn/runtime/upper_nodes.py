"""Edge and cloud nodes: collect feature frames for the samples that go up, fuse, run the section.

A sample's senders are named by the aggregator's request (devices present) or forward (edges that
answered). The node waits for their FEATURES frames up to a deadline, then runs its section on
what arrived, with the presence mask marking the rest absent — so a lost frame degrades one
sample, flagged, and never stalls the pipeline.

Memory is bounded whatever arrives: at most ``MAX_WAITING`` samples wait for their features,
frames that come before their request are kept at most ``ORPHAN_TTL`` s and ``MAX_ORPHANS`` in
number, and the samples already run are remembered in bounded memory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import torch

from ddnn.config import ModelConfig
from ddnn.models.ddnn import upper_input_shape
from ddnn.models.sections import UpperSection, device_feature_shape
from ddnn.runtime.codec import HEADER_BYTES, FrameKind, encode_features, encode_scores
from ddnn.runtime.feature_cache import FeatureCache
from ddnn.runtime.messages import (
    Answer,
    Receipt,
    UpRequest,
    encode_answers,
    encode_receipts,
    parse_requests,
)
from ddnn.runtime.mqtt import BrokerSettings, message_overhead
from ddnn.runtime.node import Node
from ddnn.runtime.protocol import CLOUD, Topics
from ddnn.runtime.window import FinishedIds
from ddnn.train.checkpoint import load_section

log = logging.getLogger(__name__)

ORPHAN_TTL = 5.0  # s a frame that came before its request is kept
MAX_ORPHANS = 4096  # such frames kept at most (the oldest go first)
MAX_WAITING = 4096  # samples collecting features at once; more requests are refused (counted)


@dataclass
class Waiting:
    """A sample whose feature frames are being collected."""

    request: UpRequest
    expected: set[int]  # sender ids (device or edge) we wait for
    deadline: float
    features: dict[int, np.ndarray] = field(default_factory=dict)
    payload: dict[str, int] = field(default_factory=dict)
    mqtt: dict[str, int] = field(default_factory=dict)


class FeatureCollector(Node):
    """Shared by edge and cloud: join FEATURES frames to requests, fuse them, run the section."""

    def __init__(
        self,
        name: str,
        section: UpperSection,
        config: ModelConfig,
        version: int,
        settings: BrokerSettings,
        topics: Topics,
        senders: list[int],
        sender_shapes: dict[int, tuple[int, ...]],
        input_shape: tuple[int, ...],
        deadline: float,
        qos: int,
    ) -> None:
        super().__init__(name, settings, topics, version, qos)
        if deadline <= 0:
            raise ValueError(f"deadline must be > 0 s, got {deadline}")
        self.section = section
        self.config = config
        self.senders = senders  # in the order of the section's input slots
        self.slot = {s: i for i, s in enumerate(senders)}
        self.sender_shapes = sender_shapes
        self.input_shape = input_shape
        self.deadline = deadline
        self.waiting: dict[int, Waiting] = {}
        self.orphans: dict[int, tuple[float, list[paho.MQTTMessage]]] = {}
        self.orphan_count = 0
        self.done = FinishedIds(keep=4 * MAX_WAITING)
        with torch.no_grad():  # warm up (first calls allocate) before going online
            n = len(senders)
            section(torch.zeros(1, n, *input_shape), torch.ones(1, n, dtype=torch.bool))

    # -- hooks -----------------------------------------------------------------------------------
    def sender_of(self, topic: str) -> int | None:
        raise NotImplementedError

    def wanted(self, req: UpRequest) -> set[int]:
        raise NotImplementedError

    def emit(self, batch: list[Waiting], scores: torch.Tensor, feats: torch.Tensor) -> None:
        raise NotImplementedError

    # -- joining ---------------------------------------------------------------------------------
    def on_requests(self, requests: list[UpRequest]) -> None:
        now = self.clock()
        for req in requests:
            expected = self.wanted(req) & set(self.senders)
            if not expected or req.sample in self.done or req.sample in self.waiting:
                continue
            if len(self.waiting) >= MAX_WAITING:  # the aggregator's timeout answers it instead
                self.reject("overloaded", f"sample {req.sample}: {MAX_WAITING} samples waiting")
                continue
            w = Waiting(req, expected, now + self.deadline)
            self.waiting[req.sample] = w
            entry = self.orphans.pop(req.sample, None)
            if entry is not None:
                self.orphan_count -= len(entry[1])
                for msg in entry[1]:
                    self.on_features(msg)

    def on_features(self, msg: paho.MQTTMessage) -> None:
        frame = self.decode(msg, FrameKind.FEATURES, self.sender_shapes, self.sender_of(msg.topic))
        if frame is None:
            return
        w = self.waiting.get(frame.sample_id)
        if w is None:
            if frame.sample_id in self.done:
                self.counters["late_frames"] += 1
                return
            self._keep_orphan(frame.sample_id, msg)
            return
        key = str(frame.sender_id)
        w.features[frame.sender_id] = frame.payload
        w.payload[key] = w.payload.get(key, 0) + len(msg.payload) - HEADER_BYTES
        w.mqtt[key] = w.mqtt.get(key, 0) + message_overhead(msg)

    def _keep_orphan(self, sample: int, msg: paho.MQTTMessage) -> None:
        """A frame ahead of its request: kept briefly, within a count bound (oldest out)."""
        while self.orphan_count >= MAX_ORPHANS:
            oldest = next(iter(self.orphans))
            self.orphan_count -= len(self.orphans.pop(oldest)[1])
            self.counters["orphan_frames_dropped"] += 1
        entry = self.orphans.setdefault(sample, (self.clock(), []))
        if len(entry[1]) >= len(self.senders):  # one per sender is all a sample can have
            self.counters["orphan_frames_dropped"] += 1
            return
        entry[1].append(msg)
        self.orphan_count += 1

    def next_wakeup(self) -> float | None:
        return min((w.deadline for w in self.waiting.values()), default=None)

    def tick(self, now: float) -> None:
        ready = [
            s for s, w in self.waiting.items() if w.expected <= set(w.features) or now >= w.deadline
        ]
        if ready:
            self._run(sorted(ready))
        stale = [s for s, (t, _) in self.orphans.items() if t < now - ORPHAN_TTL]
        for s in stale:
            self.orphan_count -= len(self.orphans.pop(s)[1])
            self.counters["orphan_frames_dropped"] += 1

    def _input(self, sender: int, feats: np.ndarray) -> np.ndarray:
        if len(self.input_shape) == 1 and feats.ndim != 1:  # devices of different shapes
            flat = feats.reshape(-1)
            return np.pad(flat, (0, self.input_shape[0] - flat.size))
        if feats.shape != self.input_shape:  # a vector device's features, padded to the widest
            flat = feats.reshape(-1)
            return np.pad(flat, (0, math.prod(self.input_shape) - flat.size)).reshape(
                self.input_shape
            )
        return feats

    def _run(self, samples: list[int]) -> None:
        batch = [self.waiting.pop(s) for s in samples]
        n = len(self.senders)
        x = np.zeros((len(batch), n, *self.input_shape), dtype=np.float32)
        present = np.zeros((len(batch), n), dtype=bool)
        for b, w in enumerate(batch):
            for sender, feats in w.features.items():
                x[b, self.slot[sender]] = self._input(sender, feats)
                present[b, self.slot[sender]] = True
            if not w.expected <= set(w.features):
                missing = sorted(w.expected - set(w.features))
                w.request.flags.append(f"features_missing:{self.name}:{missing}")
                self.counters["deadline_expired"] += 1
        with torch.no_grad():
            scores, feats = self.section(torch.from_numpy(x), torch.from_numpy(present))
        self.done.add(samples)
        self.emit(batch, scores, feats)


class CloudNode(FeatureCollector):
    """The cloud: answers every sample that reaches it."""

    def __init__(
        self,
        run_dir: str | Path,
        settings: BrokerSettings,
        topics: Topics,
        deadline: float = 0.5,
        qos: int = 1,
    ) -> None:
        section, config, version = load_section(run_dir, "cloud")
        assert isinstance(section, UpperSection)
        self.groups = [tuple(g) for g in config.edge.groups]
        if self.groups:
            edge0, _, _ = load_section(run_dir, "edge_0")
            assert isinstance(edge0, UpperSection)
            senders = list(range(len(self.groups)))
            shapes = {e: tuple(edge0.feature_shape) for e in senders}
            input_shape = tuple(edge0.feature_shape)
        else:
            senders = list(range(config.num_devices))
            shapes = {
                k: device_feature_shape(s, config.device)
                for k, s in enumerate(config.device_shapes)
            }
            input_shape = upper_input_shape(config)
        super().__init__(
            "cloud",
            section,
            config,
            version,
            settings,
            topics,
            senders,
            shapes,
            input_shape,
            deadline,
            qos,
        )

    def subscriptions(self) -> list[str]:
        if self.groups:
            return [self.topics.forward, self.topics.edge_features("+")]
        return [self.topics.up, self.topics.device_features("+")]

    def sender_of(self, topic: str) -> int | None:
        return Topics.index_in(topic, "edge" if self.groups else "device")

    def wanted(self, req: UpRequest) -> set[int]:
        return set(req.edges) if self.groups else set(req.present)

    def handle(self, msg: paho.MQTTMessage) -> None:
        if msg.topic in (self.topics.up, self.topics.forward):
            self.on_requests(parse_requests(msg.payload))
        else:
            self.on_features(msg)

    def emit(self, batch: list[Waiting], scores: torch.Tensor, feats: torch.Tensor) -> None:
        predictions = scores.argmax(dim=1).tolist()
        now = self.wall()
        answers = []
        for w, pred in zip(batch, predictions, strict=True):
            r = w.request
            payload, mqtt = dict(r.device_payload), dict(r.device_mqtt)
            frames = dict(r.device_frames)
            edge_payload = dict(r.edge_payload)
            target = edge_payload if self.groups else payload
            for key, nbytes in w.payload.items():
                target[key] = target.get(key, 0) + nbytes
                if not self.groups:
                    frames[key] = frames.get(key, 0) + 1
                    mqtt[key] = mqtt.get(key, 0) + w.mqtt[key]
            answers.append(
                Answer(
                    sample=r.sample,
                    prediction=int(pred),
                    exit=CLOUD,
                    present=r.present,
                    device_payload=payload,
                    device_frames=frames,
                    device_mqtt=mqtt,
                    edge_payload=edge_payload,
                    captured=r.captured,
                    answered=now,
                    flags=r.flags,
                )
            )
        self.publish(self.topics.results, encode_answers(answers), qos=1)
        self.counters["answered"] += len(answers)


class EdgeNode(FeatureCollector):
    """Edge E: fuses its device group's features, reports its exit's scores, forwards on demand."""

    def __init__(
        self,
        run_dir: str | Path,
        edge: int,
        settings: BrokerSettings,
        topics: Topics,
        deadline: float = 0.5,
        cache_ttl: float = 30.0,
        qos: int = 1,
    ) -> None:
        section, config, version = load_section(run_dir, f"edge_{edge}")
        assert isinstance(section, UpperSection)
        group = list(config.edge.groups[edge])
        shapes = {k: device_feature_shape(config.device_shapes[k], config.device) for k in group}
        super().__init__(
            f"edge_{edge}",
            section,
            config,
            version,
            settings,
            topics,
            group,
            shapes,
            upper_input_shape(config),
            deadline,
            qos,
        )
        self.edge = edge
        self.emits_features = config.cloud.enabled
        self.cache: FeatureCache[np.ndarray] = FeatureCache(cache_ttl, self.counters, MAX_WAITING)

    def subscriptions(self) -> list[str]:
        topics = [self.topics.up]
        topics += [self.topics.device_features(k) for k in self.senders]
        if self.emits_features:
            topics.append(self.topics.forward)
        return topics

    def sender_of(self, topic: str) -> int | None:
        return Topics.index_in(topic, "device")

    def wanted(self, req: UpRequest) -> set[int]:
        return set(req.present)

    def handle(self, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.up:
            self.on_requests(parse_requests(msg.payload))
        elif msg.topic == self.topics.forward:
            for req in parse_requests(msg.payload):
                if self.edge in req.edges:
                    self._forward(req.sample)
        else:
            self.on_features(msg)

    def _forward(self, sample: int) -> None:
        features = self.cache.take(sample)
        if features is None:
            return
        frame = encode_features(
            features, sender_id=self.edge, sample_id=sample, model_version=self.model_version
        )
        self.publish(self.topics.edge_features(self.edge), frame)

    def emit(self, batch: list[Waiting], scores: torch.Tensor, feats: torch.Tensor) -> None:
        now = self.clock()
        receipts = {w.request.sample: Receipt(w.payload, w.mqtt, w.request.flags) for w in batch}
        # Receipts first: the aggregator books the device->edge bytes before it decides.
        self.publish(self.topics.edge_receipts(self.edge), encode_receipts(receipts), qos=1)

        topic = self.topics.edge_scores(self.edge)
        for b, w in enumerate(batch):
            if self.emits_features:
                self.cache.put(w.request.sample, feats[b].numpy(), now)
            frame = encode_scores(
                scores[b],
                sender_id=self.edge,
                sample_id=w.request.sample,
                model_version=self.model_version,
            )
            self.publish(topic, frame)
        self.cache.evict(now)
