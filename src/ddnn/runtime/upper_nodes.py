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
from ddnn.nn.exits import confidences
from ddnn.runtime.device_node import consecutive_runs
from ddnn.runtime.feature_cache import FeatureCache
from ddnn.runtime.messages import (
    Answer,
    Receipt,
    UpRequest,
    encode_answers,
    encode_receipts,
    parse_requests,
    parse_routes,
)
from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.node import Node
from ddnn.runtime.protocol import CLOUD, DEVICE, EDGE_NODE, Topics
from ddnn.runtime.rollout import Versions
from ddnn.runtime.window import FinishedIds
from ddnn.train.checkpoint import load_section, run_class_names
from ddnn.wire import (
    Expect,
    FrameKind,
    encode_features_frame_ids,
    encode_scores_frame,
    feature_payload_bytes,
    score_bytes,
    unpack_bits_batch,
)

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
    version: int  # the model version serving the sample
    features: dict[int, np.ndarray] = field(default_factory=dict)  # sender -> packed row
    payload: dict[str, int] = field(default_factory=dict)
    header: dict[str, float] = field(default_factory=dict)
    mqtt: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Arrived:
    """One sender's feature map for one sample, packed (1 bit per value), and what it cost on
    the wire: kept while it waits for its request."""

    sender: int
    features: np.ndarray
    payload: int
    header: float
    mqtt: float
    version: int  # of the model that computed the features


@dataclass
class UpperModel:
    """What an edge or the cloud serves of one model version."""

    section: UpperSection
    expect: Expect
    class_names: list[str]


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
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__(name, settings, topics, version, qos)
        if deadline <= 0:
            raise ValueError(f"deadline must be > 0 s, got {deadline}")
        self.config = config
        self.senders = senders  # in the order of the section's input slots
        self.slot = {s: i for i, s in enumerate(senders)}
        kind = "edge" if name == "cloud" and config.edge.groups else "device"
        self.metrics.inputs = [f"{kind}_{s}" for s in senders]
        self.sender_shapes = sender_shapes
        self.input_shape = input_shape
        self.deadline = deadline
        self.waiting: dict[int, Waiting] = {}
        self.orphans: dict[int, tuple[float, list[Arrived]]] = {}
        self.orphan_count = 0
        self.done = FinishedIds(keep=4 * MAX_WAITING)
        names = class_names or [f"class_{k}" for k in range(config.num_classes)]
        self.models = Versions(version, self._model(section, version, names))

    def _model(self, section: UpperSection, version: int, class_names: list[str]) -> UpperModel:
        """One version's section, warmed up (the first calls allocate) and checked to take
        this node's inputs."""
        n = len(self.senders)
        with torch.inference_mode():
            try:
                section(torch.zeros(1, n, *self.input_shape), torch.ones(1, n, dtype=torch.bool))
            except RuntimeError as exc:
                raise ValueError(
                    f"the section does not take this node's inputs ({n} x {self.input_shape}): "
                    f"{str(exc)[:200]}"
                ) from None
        expect = Expect(
            version,
            {FrameKind.FEATURES, FrameKind.FEATURES_IDS},
            feature_shapes=self.sender_shapes,
            senders=set(self.senders),
            max_count=MAX_WAITING,
        )
        return UpperModel(section, expect, class_names)

    # -- rollout -------------------------------------------------------------------------------
    def prepare_model(self, run_dir: Path, version: int) -> None:
        section, config, loaded = load_section(run_dir, self.name)
        assert isinstance(section, UpperSection)
        if loaded != version:
            raise ValueError(f"sections/{self.name}.pt is of model version {loaded}")
        if config.num_classes != self.config.num_classes:
            raise ValueError(
                f"the new run has {config.num_classes} classes, the running one "
                f"{self.config.num_classes}: a rollout keeps the hierarchy"
            )
        self.models.add(
            version, self._model(section, version, run_class_names(run_dir, config.num_classes))
        )

    def holds_model(self, version: int) -> bool:
        return version in self.models.models

    def _expects(self) -> list[Expect]:
        return [m.expect for m in reversed(self.models.models.values())]  # newest first

    # -- hooks -----------------------------------------------------------------------------------
    def sender_of(self, topic: str) -> int | None:
        raise NotImplementedError

    def wanted(self, req: UpRequest) -> set[int]:
        raise NotImplementedError

    def emit(
        self, batch: list[Waiting], scores: torch.Tensor, feats: torch.Tensor, version: int
    ) -> None:
        raise NotImplementedError

    # -- joining ---------------------------------------------------------------------------------
    def on_requests(self, requests: list[UpRequest]) -> None:
        now = self.clock()
        for req in requests:
            expected = self.wanted(req) & set(self.senders)
            if not expected or req.sample in self.done or req.sample in self.waiting:
                continue
            version = self.models.base if req.model_version is None else req.model_version
            if version not in self.models.models:  # the aggregator's timeout answers it instead
                self.reject("unknown_model", f"sample {req.sample}: model version {version}")
                continue
            if len(self.waiting) >= MAX_WAITING:  # the aggregator's timeout answers it instead
                self.reject("overloaded", f"sample {req.sample}: {MAX_WAITING} samples waiting")
                continue
            w = Waiting(req, expected, now + self.deadline, version)
            self.waiting[req.sample] = w
            entry = self.orphans.pop(req.sample, None)
            if entry is not None:
                self.orphan_count -= len(entry[1])
                for a in entry[1]:
                    if a.version != version:
                        self.reject("wrong_model_for_sample", f"sample {req.sample}")
                        continue
                    self._attach(w, a.sender, a.features, (a.payload, a.header, a.mqtt))

    def on_features(self, msg: paho.MQTTMessage) -> None:
        frame = self.decode(msg, self._expects(), self.sender_of(msg.topic))
        if frame is None:
            return
        version = self.models.by_tag(frame.model_tag)
        assert version is not None  # it decoded with that version's expectation
        cost = self.costs(msg, frame)
        sender, waiting = frame.sender, self.waiting
        # rows stay packed (1 bit per value) until the section runs: unpacked then, per batch
        for sample, row in zip(frame.sample_ids, frame.rows, strict=True):
            w = waiting.get(sample)
            if w is not None and w.version != version:
                self.reject("wrong_model_for_sample", f"{msg.topic}: sample {sample}")
            elif w is not None:
                self._attach(w, sender, row, cost)
            elif sample in self.done:
                self.counters["late_frames"] += 1
            else:  # kept until its request comes (or its time is up)
                orphan = Arrived(sender, row, *cost, version)
                self._keep_orphan(sample, orphan)

    @staticmethod
    def _attach(
        w: Waiting, sender: int, packed: np.ndarray, cost: tuple[int, float, float]
    ) -> None:
        key = str(sender)
        w.features[sender] = packed
        w.payload[key] = w.payload.get(key, 0) + cost[0]
        w.header[key] = w.header.get(key, 0.0) + cost[1]
        w.mqtt[key] = w.mqtt.get(key, 0.0) + cost[2]

    def _keep_orphan(self, sample: int, arrived: Arrived) -> None:
        """Features ahead of their request: kept briefly, within a count bound (oldest out)."""
        while self.orphan_count >= MAX_ORPHANS:
            dropped = len(self.orphans.pop(next(iter(self.orphans)))[1])
            self.orphan_count -= dropped
            self.counters["orphan_frames_dropped"] += dropped
        entry = self.orphans.setdefault(sample, (self.clock(), []))
        if len(entry[1]) >= len(self.senders):  # one per sender is all a sample can have
            self.counters["orphan_frames_dropped"] += 1
            return
        entry[1].append(arrived)
        self.orphan_count += 1

    def next_wakeup(self) -> float | None:
        return min((w.deadline for w in self.waiting.values()), default=None)

    def tick(self, now: float) -> None:
        ready = [
            s
            for s, w in self.waiting.items()
            if w.expected <= w.features.keys() or now >= w.deadline
        ]
        if ready:
            self._run(sorted(ready))
        stale = [s for s, (t, _) in self.orphans.items() if t < now - ORPHAN_TTL]
        for s in stale:
            dropped = len(self.orphans.pop(s)[1])
            self.orphan_count -= dropped
            self.counters["orphan_frames_dropped"] += dropped

    def _place(self, x: np.ndarray, rows: list[int], sender: int, packed: list[np.ndarray]) -> None:
        """Unpacks one sender's packed maps (one per entry of ``rows``) into its input slot of
        ``x`` (B, N, *input_shape), padded when its maps are smaller than the input."""
        maps = unpack_bits_batch(np.stack(packed), self.sender_shapes[sender])  # (n, *shape) ±1
        slot = self.slot[sender]
        if maps.shape[1:] == self.input_shape:
            x[rows, slot] = maps
            return
        # devices of different shapes: flattened, zero-padded to the input (the widest)
        flat = maps.reshape(len(rows), -1)
        x[rows, slot] = np.pad(
            flat, ((0, 0), (0, math.prod(self.input_shape) - flat.shape[1]))
        ).reshape(len(rows), *self.input_shape)

    def _run(self, samples: list[int]) -> None:
        groups: dict[int, list[Waiting]] = {}
        for s in samples:
            w = self.waiting.pop(s)
            groups.setdefault(w.version, []).append(w)
        for version, batch in groups.items():  # one group but across a rollout's switch
            self._run_model(batch, version)

    def _run_model(self, batch: list[Waiting], version: int) -> None:
        samples = [w.request.sample for w in batch]
        n = len(self.senders)
        x = np.zeros((len(batch), n, *self.input_shape), dtype=np.float32)
        present = np.zeros((len(batch), n), dtype=bool)
        by_sender: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        for b, w in enumerate(batch):
            for sender, packed in w.features.items():
                rows, maps = by_sender.setdefault(sender, ([], []))
                rows.append(b)
                maps.append(packed)
                present[b, self.slot[sender]] = True
            if not w.expected <= w.features.keys():
                missing = sorted(w.expected - set(w.features))
                w.request.flags.append(f"features_missing:{self.name}:{missing}")
                self.counters["deadline_expired"] += 1
        for sender, (rows, maps) in by_sender.items():  # one unpacking per sender, not per map
            self._place(x, rows, sender, maps)
        with torch.inference_mode():
            scores, feats = self.models.models[version].section(
                torch.from_numpy(x), torch.from_numpy(present)
            )
        self.done.add(samples)
        self.emit(batch, scores, feats, version)


class CloudNode(FeatureCollector):
    """The cloud: answers every sample that reaches it."""

    role = "cloud"

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
        self.class_names = run_class_names(run_dir, config.num_classes)
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
            self.class_names,
        )

    def subscriptions(self) -> list[str]:
        if self.groups:
            return [self.topics.forward, self.topics.edge_features("+")]
        return [self.topics.up, self.topics.device_features("+")]

    def sender_of(self, topic: str) -> int | None:
        return Topics.index_in(topic, EDGE_NODE if self.groups else DEVICE)

    def wanted(self, req: UpRequest) -> set[int]:
        return set(req.edges) if self.groups else set(req.present)

    def handle(self, msg: paho.MQTTMessage) -> None:
        if msg.topic in (self.topics.up, self.topics.forward):
            self.on_requests(parse_requests(msg.payload))
        else:
            self.on_features(msg)

    def emit(
        self, batch: list[Waiting], scores: torch.Tensor, feats: torch.Tensor, version: int
    ) -> None:
        class_names = self.models.models[version].class_names
        confidence, predictions = confidences(scores)
        now = self.wall()
        answers = []
        everyone = set(range(self.config.num_devices))
        for w, pred, conf in zip(batch, predictions, confidence, strict=True):
            r = w.request
            payload, mqtt = dict(r.device_payload), dict(r.device_mqtt)
            header = dict(r.device_header)
            edge_payload = dict(r.edge_payload)
            for key, nbytes in w.payload.items():
                if self.groups:  # the frames came from the edges
                    edge_payload[key] = edge_payload.get(key, 0) + nbytes
                else:
                    payload[key] = payload.get(key, 0) + nbytes
                    header[key] = header.get(key, 0.0) + w.header[key]
                    mqtt[key] = mqtt.get(key, 0.0) + w.mqtt[key]
            answers.append(
                Answer(
                    sample=r.sample,
                    prediction=int(pred),
                    exit=CLOUD,
                    present=r.present,
                    device_payload=payload,
                    device_header=header,
                    device_mqtt=mqtt,
                    edge_payload=edge_payload,
                    captured=r.captured,
                    answered=now,
                    flags=r.flags,
                    class_name=class_names[pred],
                    confidence=conf,
                    missing=sorted(everyone - set(r.present)),
                    model_version=version,
                )
            )
        self.publish(self.topics.results, encode_answers(answers), qos=1)
        self.counters["answered"] += len(answers)
        self.metrics.observe(answers)


class EdgeNode(FeatureCollector):
    """Edge E: fuses its device group's features, reports its exit's scores, forwards on demand."""

    role = "edge"

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
        self.feature_shape = tuple(section.feature_shape)
        self._feature_row = feature_payload_bytes(self.feature_shape)  # payload per sample
        self._score_row = score_bytes(config.num_classes, config.wire.scores)
        self.emits_features = config.cloud.enabled
        self.cache: FeatureCache[tuple[int, np.ndarray]] = FeatureCache(
            cache_ttl, self.counters, MAX_WAITING
        )
        self.metrics.gauges["feature_cache_samples"] = lambda: len(self.cache)

    def subscriptions(self) -> list[str]:
        topics = [self.topics.up]
        topics += [self.topics.device_features(k) for k in self.senders]
        if self.emits_features:
            topics.append(self.topics.forward)
        return topics

    def sender_of(self, topic: str) -> int | None:
        return Topics.index_in(topic, DEVICE)

    def wanted(self, req: UpRequest) -> set[int]:
        return set(req.present)

    def handle(self, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.up:  # an edge reads what routes a sample, not its bytes
            self.on_requests(parse_routes(msg.payload))
        elif msg.topic == self.topics.forward:
            samples = [r.sample for r in parse_routes(msg.payload) if self.edge in r.edges]
            self._forward(sorted(set(samples)))
        else:
            self.on_features(msg)

    def _forward(self, samples: list[int]) -> None:
        """Our features of the samples the edge exit sends on, in one frame."""
        maps = {s: f for s in samples if (f := self.cache.take(s)) is not None}
        by_version: dict[int, list[int]] = {}
        for s in sorted(maps):  # one frame per model version (two only across a rollout)
            by_version.setdefault(maps[s][0], []).append(s)
        for version, ids in by_version.items():
            frame = encode_features_frame_ids(
                np.stack([maps[s][1] for s in ids]),
                sender=self.edge,
                sample_ids=ids,
                model_version=version,
                shape=self.feature_shape,
            )
            header = len(frame) - len(ids) * self._feature_row
            self.publish(self.topics.edge_features(self.edge), frame, header=header)

    def emit(
        self, batch: list[Waiting], scores: torch.Tensor, feats: torch.Tensor, version: int
    ) -> None:
        now = self.clock()
        receipts = {
            w.request.sample: Receipt(w.payload, w.header, w.mqtt, w.request.flags) for w in batch
        }
        # Receipts first: the aggregator books the device->edge bytes before it decides.
        self.publish(self.topics.edge_receipts(self.edge), encode_receipts(receipts), qos=1)
        samples = [w.request.sample for w in batch]
        if self.emits_features:
            for b, sample in enumerate(samples):
                self.cache.put(sample, (version, feats[b].numpy()), now)
        row = {sample: b for b, sample in enumerate(samples)}
        scores_np = scores.numpy()
        for run in consecutive_runs(samples):
            rows = scores_np[[row[s] for s in run]]
            frame = encode_scores_frame(
                rows,
                sender=self.edge,
                first_sample=run[0],
                model_version=version,
                encoding=self.config.wire.scores,
                captured=self.wall(),
            )
            header = len(frame) - len(run) * self._score_row
            self.publish(self.topics.edge_scores(self.edge), frame, header=header)
        self.cache.evict(now)
