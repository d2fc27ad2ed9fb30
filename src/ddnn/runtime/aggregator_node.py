"""The aggregator node: fuses device scores into the local exit, and edge scores into the edge exit.

For each sample it waits for the SCORES frames of every device not known to be dead (MQTT Last
Will), up to a deadline after the first frame; then it fuses what arrived with the presence mask
and applies the exit rule. Samples that go up are requested from the devices (phase two); with
edges, the edges' scores come back here for the edge exit. If the tier above is down or does not
answer in time, the sample is answered with the best exit below it and flagged — never dropped.

Sample ids are not taken on trust. A device may speak only for ids inside a window of
``window`` samples above the highest decided one (devices never run further ahead); frames
outside are counted as ``rejected_out_of_window``. Inside the window, the deadline of a sample
that not every device has sent runs only once most of the devices still speaking have reached it
(sent it or a later id): one forged or runaway frame ahead of the others waits for them, so it
cannot drag the deployment forward, and a straggling minority cannot hold it back. A sample that
a majority never reaches is decided (flagged) after ``STALE_DEADLINES`` deadlines, without
moving the position. A restarted aggregator takes up the position from its own retained
``progress`` message. Ids the position passes without any frame of theirs having arrived are
reported failed (with the reason) once the device deadline has passed, so nothing vanishes; what
is decided is remembered in bounded memory (:class:`~ddnn.runtime.window.FinishedIds`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import torch

from ddnn.models.sections import LocalAggregatorSection
from ddnn.nn.exits import confidences, exit_mask
from ddnn.runtime.messages import (
    Answer,
    Control,
    Progress,
    Receipt,
    UpRequest,
    encode_answers,
    encode_feature_asks,
    encode_progress,
    encode_requests,
    failure,
    parse_answer_samples,
    parse_progress,
    parse_receipts,
)
from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.node import Node
from ddnn.runtime.protocol import DEVICE, EDGE, EDGE_NODE, LOCAL, WINDOW, Topics
from ddnn.runtime.rollout import Versions
from ddnn.runtime.score_slots import Arrivals, ByteMaps, Costs, ScoreSlots
from ddnn.runtime.window import FinishedIds
from ddnn.train.checkpoint import load_section, run_class_names
from ddnn.wire import MAX_COUNT, Expect, FrameKind, model_tag

log = logging.getLogger(__name__)

STALE_DEADLINES = 10  # a sample most devices never reach is decided after this many deadlines
PROGRESS_EVERY = 0.25  # s: a moving position is published at least this often ...
PROGRESS_STEPS = 8  # ... and whenever it moved by window / PROGRESS_STEPS samples
PROGRESS_REPEAT = 0.01  # s: at most this often again for devices that missed it (late frames)


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
    fallback_exit: str  # the exit whose prediction (in the request) answers a silent cloud


@dataclass
class LocalModel:
    """What the aggregator serves of one model version."""

    local: LocalAggregatorSection
    edge_exit: LocalAggregatorSection | None
    class_names: list[str]
    device_expect: Expect
    edge_expect: Expect


def stack_scores(
    per_sample: list[dict[int, np.ndarray]], num_inputs: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score vectors by input index -> (B, N, C) scores with zeros where absent, (B, N) presence."""
    scores = np.zeros((len(per_sample), num_inputs, num_classes), dtype=np.float32)
    present = np.zeros((len(per_sample), num_inputs), dtype=bool)
    rows: list[int] = []
    inputs: list[int] = []
    vectors: list[np.ndarray] = []
    for b, arrived in enumerate(per_sample):  # gathered first, then written in one assignment
        rows += [b] * len(arrived)
        inputs += arrived.keys()
        vectors += arrived.values()
    if vectors:
        scores[rows, inputs] = np.stack(vectors)
        present[rows, inputs] = True
    return torch.from_numpy(scores), torch.from_numpy(present)


class AggregatorNode(Node):
    """Local exit (and edge exit, with edges) of a trained hierarchy."""

    role = "aggregator"

    def __init__(
        self,
        run_dir: str | Path,
        settings: BrokerSettings,
        topics: Topics,
        thresholds: dict[str, float] | None = None,
        deadline: float = 0.5,
        upper_timeout: float = 3.0,
        window: int = WINDOW,
        qos: int = 1,
    ) -> None:
        _, config, version = load_section(run_dir, "local")
        super().__init__("aggregator", settings, topics, version, qos)
        if not (deadline > 0 and upper_timeout > 0):
            raise ValueError("the device deadline and the upper-tier timeout must be > 0 s")
        if window < 1:
            raise ValueError(f"the sample window must be >= 1, got {window}")
        self.config = config
        self.num_devices = config.num_devices
        self.num_classes = config.num_classes
        self.groups = [tuple(g) for g in config.edge.groups]
        self.has_cloud = config.cloud.enabled
        thresholds = dict(thresholds or {})
        self.local_threshold = thresholds.get("local", 0.8)
        self.edge_threshold = thresholds.get("edge", 0.8)
        self.deadline = deadline
        self.upper_timeout = upper_timeout
        self.window = window
        self.stale_after = STALE_DEADLINES * deadline
        self.progress_step = max(1, window // PROGRESS_STEPS)
        # device -> (highest in-window sample id it has sent, monotonic time last heard)
        self.heard: dict[int, tuple[int, float]] = {}
        self.state: dict[str, str] = {}
        self.arrivals: dict[int, Arrivals] = {}
        self.slots = ScoreSlots(self.num_devices, self.num_classes)
        self.edge_waits: dict[int, EdgeWait] = {}
        self.receipts: dict[int, list[Receipt]] = {}
        self.up_waits: dict[int, UpWait] = {}
        self.finished = FinishedIds(keep=max(16 * window, 4096))
        self.gaps: dict[int, float] = {}  # ids passed without a frame -> when (monotonic)
        self.max_decided = -1
        self._last_progress = 0.0
        self._progress_sent: tuple[int, int] | None = (-1, -1)
        self.max_seen = -1  # newest in-window sample any device has sent
        self.models = Versions(version, self._load(Path(run_dir), version))
        self.switch_point: tuple[int, int] | None = None  # (first sample, tag) of the last rollout
        self._switch_heard: tuple[int, int] | None = None  # from retained progress, on restart
        devices = [f"device_{k}" for k in range(self.num_devices)]
        self.metrics.inputs = devices + [f"edge_{e}" for e in range(len(self.groups))]

    def _load(self, run_dir: Path, version: int) -> LocalModel:
        """The local (and edge) exit sections of a run, warmed up."""
        local, config, loaded = load_section(run_dir, "local")
        assert isinstance(local, LocalAggregatorSection)
        if loaded != version:
            raise ValueError(f"sections/local.pt is of model version {loaded}, not {version}")
        edge_exit = None
        if self.groups:
            module, _, _ = load_section(run_dir, "edge_exit")
            assert isinstance(module, LocalAggregatorSection)
            edge_exit = module
        scores_kind = {FrameKind.for_scores(config.wire.scores)}
        model = LocalModel(
            local,
            edge_exit,
            run_class_names(run_dir, config.num_classes),
            Expect(
                version,
                scores_kind,
                config.num_classes,
                senders=set(range(config.num_devices)),
                max_count=self.window,
            ),
            Expect(
                version,
                scores_kind,
                config.num_classes,
                senders=set(range(len(self.groups))),
                max_count=MAX_COUNT,
            ),
        )
        with torch.inference_mode():  # warm up before going online
            d, c = config.num_devices, config.num_classes
            local(torch.zeros(1, d, c), torch.ones(1, d, dtype=torch.bool))
        return model

    # -- rollout -------------------------------------------------------------------------------
    def prepare_model(self, run_dir: Path, version: int) -> None:
        _, new, _ = load_section(run_dir, "local")
        old = self.config
        for what, a, b in [
            ("devices", new.num_devices, old.num_devices),
            ("classes", new.num_classes, old.num_classes),
            ("edge groups", new.edge.groups, old.edge.groups),
            ("cloud", new.cloud.enabled, old.cloud.enabled),
            ("score encoding", new.wire.scores, old.wire.scores),
        ]:
            if a != b:
                raise ValueError(
                    f"the new run's {what} ({a}) differ from the running one's ({b}): a rollout "
                    "keeps the hierarchy"
                )
        self.models.add(version, self._load(run_dir, version))
        self._apply_heard_switch()

    def holds_model(self, version: int) -> bool:
        return version in self.models.models

    def on_control(self, control: Control) -> None:
        if control.command != "switch" or control.version is None:
            return
        version = control.version
        if version not in self.models.models:
            self.reject("switch_unprepared", f"switch to model version {version}: not prepared")
            return
        if self.models.newest == version:
            self._progress_sent = None  # repeat where it switched
            return
        # past every id a device may have captured: devices run at most a window ahead of
        # the decided samples (the aggregator's window is at least theirs), and learn the
        # switch from the progress that would let them go further
        at = max(self.max_decided, self.max_seen) + self.window + 1
        self.models.switch(at, version)
        self.switch_point = (at, model_tag(version))
        self._progress_sent = None  # tell the devices now
        log.info("aggregator: model version %d serves samples from %d on", version, at)
        self.counters["rollouts"] += 1

    def _apply_heard_switch(self) -> None:
        """A restarted aggregator learns an earlier switch from its retained progress."""
        if self._switch_heard is None:
            return
        at, tag = self._switch_heard
        version = self.models.by_tag(tag)
        if version is not None and self.models.switch(at, version):
            self.switch_point = self._switch_heard
            self._switch_heard = None

    def _expects(self, kind: str) -> list[Expect]:
        newest = self.models.newest  # tried first: after a switch, most frames are its
        order = [newest, *(v for v in self.models.models if v != newest)]
        return [getattr(self.models.models[v], kind) for v in order]

    def _by_version(self, samples: list[int]) -> list[tuple[int, list[int]]]:
        """``samples`` split by the model version that serves them (one group but in a switch)."""
        groups: dict[int, list[int]] = {}
        for s in samples:
            groups.setdefault(self.models.version_for(s), []).append(s)
        return list(groups.items())

    def subscriptions(self) -> list[str]:
        # progress first: a restarted aggregator resumes from it before frames come in
        topics = [self.topics.progress, self.topics.device_scores("+"), self.topics.status("+")]
        if self.groups:
            topics += [self.topics.edge_scores("+"), self.topics.edge_receipts("+")]
        if self.groups or self.has_cloud:
            topics.append(self.topics.results)
        return topics

    def echo_free(self) -> set[str]:
        return {self.topics.results}  # it reads the answers of the tiers above, not its own

    def alive(self, node: str) -> bool:
        return self.state.get(node) != "offline"

    # -- messages ------------------------------------------------------------------------------
    def handle(self, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if topic.startswith(self.topics.status("")):
            status = self.status_of(msg)
            if status is not None:
                self.state[status[0]] = status[1]
        elif topic == self.topics.results:  # the cloud answered these: no fallback needed
            for sample in parse_answer_samples(msg.payload):
                self.up_waits.pop(sample, None)
        elif topic == self.topics.progress:
            self._resume(parse_progress(msg.payload))
        elif topic == self.topics.edge_receipts(Topics.index_in(topic, EDGE_NODE) or 0):
            for sample, receipt in parse_receipts(msg.payload).items():
                if sample in self.edge_waits:  # bounded: only samples waiting for their edges
                    self.receipts.setdefault(sample, []).append(receipt)
                else:
                    self.counters["late_receipts"] += 1
        elif self.topics.is_edge_topic(topic):
            self._on_edge_scores(msg)
        else:
            self._on_device_scores(msg)

    def _resume(self, p: Progress) -> None:
        """Our own retained progress, on (re)connect: a restarted aggregator resumes there."""
        if p.switch is not None and self.switch_point is None:
            self._switch_heard = p.switch
            self._apply_heard_switch()
        if self.max_decided < 0 and not self.arrivals and p.decided > self.max_decided:
            self.max_decided = p.decided
            self.max_seen = max(self.max_seen, p.decided)
            self.finished.advance(p.decided)
            self._progress_sent = (p.decided, p.latest)
            log.info("aggregator resumes after sample %d", p.decided)

    def _on_device_scores(self, msg: paho.MQTTMessage) -> None:
        frame = self.decode(msg, self._expects("device_expect"), Topics.index_in(msg.topic, DEVICE))
        if frame is None:
            return
        cost = self.costs(msg, frame)  # the same for every sample of the frame
        sender, now = frame.sender, self.clock()
        captured = frame.captured if frame.captured is not None else self.wall()
        beyond, top = 0, self.heard.get(sender, (-1, now))[0]
        version = self.models.by_tag(frame.model_tag)
        # the per-sample checks, made cheap for the usual frame (one model, ids above every
        # finished one, inside the window)
        one_model = not self.models.switches and version == self.models.base
        finished, newest_finished = self.finished, self.finished.newest
        limit, arrivals, gaps = self.max_decided + self.window, self.arrivals, self.gaps
        taken, rows, slots = -1, [], []
        for i, sample in enumerate(frame.sample_ids):
            if not one_model and self.models.version_for(sample) != version:  # across a switch
                self.reject("wrong_model_for_sample", f"{msg.topic}: sample {sample}")
                continue
            if sample <= newest_finished and sample in finished:
                self.counters["late_frames"] += 1
                self._progress_sent = None  # the device may have missed progress: repeat it
                continue
            if sample > limit:
                beyond += 1
                continue
            taken = sample  # ids increase within a frame
            if gaps:
                gaps.pop(sample, None)
            a = arrivals.get(sample)
            if a is None:
                a = arrivals[sample] = Arrivals(now, captured, self.slots, self.slots.take())
            elif captured < a.captured:
                a.captured = captured
            a.costs[sender] = cost
            rows.append(i)
            slots.append(a.slot)
        if slots:  # the accepted rows, in one assignment
            self.slots.put(slots, sender, frame.rows[rows])
        if taken >= 0:
            self.max_seen = max(self.max_seen, taken)
            top = max(top, taken)
        if beyond < len(frame.sample_ids):
            self.heard[sender] = (top, now)
        if beyond:
            self.counters["rejected_out_of_window"] += beyond - 1
            self.reject(
                "out_of_window",
                f"{msg.topic}: {beyond} sample(s) from {frame.first_sample} beyond the window "
                f"({self.max_decided + 1}..{self.max_decided + self.window})",
            )

    def _on_edge_scores(self, msg: paho.MQTTMessage) -> None:
        frame = self.decode(
            msg, self._expects("edge_expect"), Topics.index_in(msg.topic, EDGE_NODE)
        )
        if frame is None:
            return
        version = self.models.by_tag(frame.model_tag)
        for sample, scores in zip(frame.sample_ids, frame.rows, strict=True):
            w = self.edge_waits.get(sample)
            if w is not None and self.models.version_for(sample) != version:
                self.reject("wrong_model_for_sample", f"{msg.topic}: sample {sample}")
            elif w is None:
                self.counters["late_frames"] += 1
            else:
                w.scores[frame.sender] = scores

    # -- decisions -----------------------------------------------------------------------------
    def next_wakeup(self) -> float | None:
        now = self.clock()
        times = [
            a.first + (self.deadline if now < a.first + self.deadline else self.stale_after)
            for a in self.arrivals.values()
        ]
        times += [w.deadline for w in self.edge_waits.values()]
        times += [w.deadline for w in self.up_waits.values()]
        times += [t + self.deadline for t in self.gaps.values()]
        return min(times, default=None)

    def reached_by_most(self, sample: int, expected: set[int], now: float) -> bool:
        """Whether most of the expected devices still speaking (heard within the stale time)
        have reached ``sample``: sent it or a later id."""
        speaking = [
            top
            for k, (top, heard) in self.heard.items()
            if k in expected and now - heard < self.stale_after
        ]
        return 2 * sum(1 for top in speaking if top >= sample) > len(speaking)

    def tick(self, now: float) -> None:
        expected = {k for k in range(self.num_devices) if self.alive(f"device_{k}")}
        ready: list[int] = []
        reached = self.max_decided  # the highest ready sample most devices have reached
        for s, a in self.arrivals.items():
            if expected <= a.costs.keys() or (
                now >= a.first + self.deadline and self.reached_by_most(s, expected, now)
            ):
                ready.append(s)
                reached = max(reached, s)
            elif now >= a.first + self.stale_after:  # most devices never came: not a position
                ready.append(s)
                self.counters["decided_stale"] += 1
        if ready:
            self._decide_local(sorted(ready), reached)
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
        self._fail_gaps(now)
        if self.models.switches:  # a switch point every open sample has passed is settled
            open_ids = [*self.arrivals, *self.edge_waits, *self.up_waits, self.max_decided + 1]
            self.models.settle(min(open_ids))
        position, sent, since = (self.max_decided, self.max_seen), self._progress_sent, now
        since -= self._last_progress
        if (sent is None and since >= PROGRESS_REPEAT) or (  # a device may have missed it
            sent is not None
            and position != sent
            and (self.max_decided - sent[0] >= self.progress_step or since >= PROGRESS_EVERY)
        ):
            self.publish(
                self.topics.progress,
                encode_progress(Progress(*position, self.switch_point)),
                qos=0,
                retain=True,  # a device that rejoins learns where the deployment is
            )
            self._progress_sent = position
            self._last_progress = now

    def _fail_gaps(self, now: float) -> None:
        """Ids the position passed with no frame at all: failed once the deadline is over (or
        at once if they fall below the finished horizon)."""
        lost = [
            s
            for s, t in self.gaps.items()
            if now >= t + self.deadline or s <= self.finished.horizon
        ]
        if not lost:
            return
        for s in lost:
            del self.gaps[s]
        wall = self.wall()
        reason = "no frame of this sample reached the aggregator (lost in transit or not captured)"
        self._answer([failure(s, reason, wall, "no_frames") for s in sorted(lost)])
        self.finished.add(lost)
        self.counters["failed_no_frames"] += len(lost)

    def _answer(self, answers: list[Answer]) -> None:
        if answers:
            self.publish(self.topics.results, encode_answers(answers), qos=1)
            self.counters["answered"] += sum(1 for a in answers if not a.failed)
            self.metrics.observe(answers)

    def _decide_local(self, samples: list[int], position: int) -> None:
        """Fuse and answer ``samples``; the position (highest decided sample that most devices
        reached) moves to ``position``, and ids it passes with no frame at all become gaps."""
        arrivals = [self.arrivals.pop(s) for s in samples]
        self.finished.add(samples)
        if position > self.max_decided:
            now = self.clock()
            for s in range(self.max_decided + 1, position):
                if s not in self.arrivals and s not in self.finished:
                    self.gaps[s] = now
            self.max_decided = position
        by_sample = dict(zip(samples, arrivals, strict=True))
        for version, group in self._by_version(samples):
            self._fuse_local(
                group, [by_sample[s] for s in group], self.models.models[version], version
            )

    def _fuse_local(
        self, samples: list[int], arrivals: list[Arrivals], model: LocalModel, version: int
    ) -> None:
        """The local exit of samples served by one model version."""
        d = self.num_devices
        scores, present = self.slots.gather([a.slot for a in arrivals])  # (B, D, C), (B, D)
        with torch.inference_mode():
            logits = model.local(torch.from_numpy(scores), torch.from_numpy(present))
        is_last = not self.groups and not self.has_cloud
        leaving = (
            torch.ones(len(samples), dtype=torch.bool)
            if is_last
            else exit_mask(logits, self.local_threshold)
        )
        confidence, predictions = confidences(logits)
        now = self.wall()
        answers, requests = [], []
        everyone = list(range(d))  # shared by the answers of complete samples (never changed)
        names = model.class_names
        shared: dict[tuple[tuple[int, Costs], ...], ByteMaps] = {}
        for sample, a, leaves, prediction, conf in zip(
            samples, arrivals, leaving.tolist(), predictions, confidence, strict=True
        ):
            complete = len(a.costs) == d
            ids = everyone if complete else sorted(a.costs)
            flags = [] if complete else [f"devices_missing:{self._missing(ids)}"]
            if leaves:  # answered here: its byte maps are only read, so equal ones are shared
                key = tuple(a.costs.items())
                maps = shared.get(key)
                if maps is None:
                    maps = shared[key] = a.byte_maps()
                answers.append(
                    Answer(
                        sample,
                        prediction,
                        LOCAL,
                        ids,
                        device_payload=maps[0],
                        device_header=maps[1],
                        device_mqtt=maps[2],
                        captured=a.captured,
                        answered=now,
                        flags=flags,
                        class_name=names[prediction],
                        confidence=conf,
                        missing=[] if complete else self._missing(ids),
                        model_version=version,
                    )
                )
                continue
            payload, header, mqtt = a.byte_maps()  # its own: the tiers above add to them
            requests.append(
                UpRequest(
                    sample,
                    ids,
                    payload,
                    header,
                    mqtt,
                    a.captured,
                    prediction,
                    flags=flags,
                    local_confidence=conf,
                    model_version=version,
                )
            )
        self._answer(answers)
        if requests:
            self._send_up(requests)

    def _answer_from(self, req: UpRequest, exit_name: str, now: float, extra: str = "") -> Answer:
        """The answer of ``req`` at ``exit_name`` (local or edge: predictions in the request)."""
        version = self.models.version_for(req.sample)
        prediction, confidence = (
            (req.edge_prediction, req.edge_confidence)
            if exit_name == EDGE
            else (req.local_prediction, req.local_confidence)
        )
        return Answer(
            sample=req.sample,
            prediction=prediction,
            exit=exit_name,
            present=req.present,
            device_payload=req.device_payload,
            device_header=req.device_header,
            device_mqtt=req.device_mqtt,
            edge_payload=req.edge_payload,
            captured=req.captured,
            answered=now,
            flags=req.flags + ([extra] if extra else []),
            class_name=self._class_name(version, prediction),
            confidence=confidence,
            missing=[] if len(req.present) == self.num_devices else self._missing(req.present),
            model_version=version,
        )

    def _missing(self, present: list[int]) -> list[int]:
        return sorted(set(range(self.num_devices)) - set(present))

    def _class_name(self, version: int, prediction: int) -> str:
        model = self.models.models.get(version)
        return model.class_names[prediction] if model is not None else f"class_{prediction}"

    def _send_up(self, requests: list[UpRequest]) -> None:
        """Phase two: ask the present devices for their features, towards the edges or cloud."""
        now, wall = self.clock(), self.wall()
        asks: list[tuple[int, list[int]]] = []
        if self.groups:
            keep, stranded = [], []
            for req in requests:
                present = set(req.present)
                reached = [e for e, g in enumerate(self.groups) if set(g) & present]
                edges = {e for e in reached if self.alive(f"edge_{e}")}
                dead = sorted(set(reached) - edges)
                if dead:  # their devices' features cannot go up: say so on the answer
                    lost = sorted(k for e in dead for k in self.groups[e] if k in present)
                    req.flags.append(f"edges_unreachable:{dead}:devices_not_fused:{lost}")
                if edges:
                    self.edge_waits[req.sample] = EdgeWait(req, edges, now + self.upper_timeout)
                    keep.append(req)
                    asks.append(
                        (
                            req.sample,
                            sorted(k for e in edges for k in self.groups[e] if k in present),
                        )
                    )
                else:
                    stranded.append(req)
            self._answer([self._answer_from(r, LOCAL, wall, "edge_unreachable") for r in stranded])
            requests = keep
        elif not self.alive("cloud"):
            self._answer([self._answer_from(r, LOCAL, wall, "cloud_unreachable") for r in requests])
            return
        else:
            for req in requests:
                self.up_waits[req.sample] = UpWait(req, now + self.upper_timeout, LOCAL)
                asks.append((req.sample, req.present))
        if requests:
            # The tier above learns the context first, then the devices are asked for features.
            # edges read no byte counts (the forward to the cloud carries them)
            self.publish(self.topics.up, encode_requests(requests, counts=not self.groups), qos=1)
            self.publish(self.topics.request, encode_feature_asks(asks), qos=1)

    def _decide_edge(self, samples: list[int]) -> None:
        waits_all = {s: self.edge_waits.pop(s) for s in samples}
        groups: dict[int, list[EdgeWait]] = {}
        for s in samples:
            groups.setdefault(self.models.version_for(s), []).append(waits_all[s])
        for version, waits in groups.items():
            self._fuse_edge(waits, self.models.models[version])

    def _fuse_edge(self, waits: list[EdgeWait], model: LocalModel) -> None:
        """The edge exit of samples served by one model version."""
        assert model.edge_exit is not None
        samples = [w.request.sample for w in waits]
        scores, present = stack_scores(
            [w.scores for w in waits], len(self.groups), self.num_classes
        )
        for w in waits:
            for receipt in self.receipts.pop(w.request.sample, []):
                for key, nbytes in receipt.payload.items():
                    r = w.request
                    r.device_payload[key] = r.device_payload.get(key, 0) + nbytes
                    r.device_header[key] = r.device_header.get(key, 0) + receipt.header.get(key, 0)
                    r.device_mqtt[key] = r.device_mqtt.get(key, 0) + receipt.mqtt.get(key, 0)
                w.request.flags.extend(f for f in receipt.flags if f not in w.request.flags)
            if not w.expected <= set(w.scores):
                w.request.flags.append(f"edges_missing:{sorted(w.expected - set(w.scores))}")
        with torch.inference_mode():
            logits = model.edge_exit(scores, present)
        leaving = (
            exit_mask(logits, self.edge_threshold)
            if self.has_cloud
            else torch.ones(len(samples), dtype=torch.bool)
        )
        confidence, predictions = confidences(logits)
        now = self.wall()
        answers, forward = [], []
        for b, w in enumerate(waits):
            req = w.request
            req.edge_prediction, req.edge_confidence = predictions[b], confidence[b]
            req.edges = sorted(w.scores)
            if not w.scores:  # no edge answered: the local exit is the best we have
                answers.append(self._answer_from(req, LOCAL, now, "edge_timeout"))
            elif bool(leaving[b]):
                answers.append(self._answer_from(req, EDGE, now))
            elif not self.alive("cloud"):
                answers.append(self._answer_from(req, EDGE, now, "cloud_unreachable"))
            else:
                forward.append(req)
        self._answer(answers)
        mono = self.clock()
        for req in forward:
            self.up_waits[req.sample] = UpWait(req, mono + self.upper_timeout, EDGE)
        if forward:
            self.publish(self.topics.forward, encode_requests(forward), qos=1)

    def _fallback(self, samples: list[int], why: str) -> None:
        now = self.wall()
        answers = []
        for s in samples:
            w = self.up_waits.pop(s)
            answers.append(self._answer_from(w.request, w.fallback_exit, now, why))
        self._answer(answers)
