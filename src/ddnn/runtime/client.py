"""The run client: collects every sample's answer from the results topic and builds the report.

A sample is *answered* (by some exit, possibly flagged as degraded) or *failed* with a reason;
samples no node ever reported are failed by the client at the end, so none vanish. Only answers
for the sample ids the client asked for count; a node whose loss means no more answers can come
(the aggregator) is watched through its status (MQTT Last Will), so its loss is reported within
seconds, naming it, not at the timeout.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from ddnn.runtime.messages import Answer, MessageError, parse_answers, parse_status
from ddnn.runtime.mqtt import BrokerSettings, close_client, connect_client, message_overhead
from ddnn.runtime.protocol import STOP, Topics

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What a distributed run did, sample by sample and in total."""

    samples: int
    answers: dict[int, Answer]
    failed: dict[int, str]
    labels: np.ndarray | None
    exit_names: tuple[str, ...]
    duplicates: int = 0
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    control_bytes: int = 0  # requests and progress as delivered to one device, MQTT included

    def predictions(self) -> np.ndarray:
        """(N,) predicted class per sample, -1 where failed."""
        out = np.full(self.samples, -1, dtype=np.int64)
        for s, a in self.answers.items():
            out[s] = a.prediction
        return out

    def exits(self) -> list[str]:
        """Exit taken per sample ('' where failed)."""
        out = [""] * self.samples
        for s, a in self.answers.items():
            out[s] = a.exit
        return out

    def as_dict(self) -> dict[str, Any]:
        answered = list(self.answers.values())
        n = len(answered)
        correct = None
        if self.labels is not None and n:
            correct = sum(int(a.prediction == int(self.labels[a.sample])) for a in answered)
        device_slots = sum(len(a.present) for a in answered)
        payload = sum(sum(a.device_payload.values()) for a in answered)
        header = sum(sum(a.device_header.values()) for a in answered)
        mqtt = sum(sum(a.device_mqtt.values()) for a in answered)
        per_slot = 1.0 / device_slots if device_slots else 0.0
        control = self.control_bytes / self.samples if self.samples else 0.0
        edge = sum(sum(a.edge_payload.values()) for a in answered)
        latencies: dict[str, list[float]] = {name: [] for name in self.exit_names}
        for a in answered:
            latencies.setdefault(a.exit, []).append(1000.0 * (a.answered - a.captured))
        flags = Counter(f.split(":")[0] for a in answered for f in a.flags)
        first = min((a.captured for a in answered), default=0.0)
        last = max((a.answered for a in answered), default=0.0)
        doc: dict[str, Any] = {
            "samples": self.samples,
            "answered": n,
            "failed": len(self.failed),
            "failure_reasons": dict(Counter(self.failed.values())),
            "duplicate_answers": self.duplicates,
            "degraded_answers": sum(1 for a in answered if a.flags),
            "flags": dict(flags),
            "overall_accuracy": None if correct is None or not n else correct / n,
            "accuracy_counting_failures_wrong": (
                None if correct is None or not self.samples else correct / self.samples
            ),
            "exit_fractions": {
                name: (sum(1 for a in answered if a.exit == name) / n if n else 0.0)
                for name in self.exit_names
            },
            "local_exit_fraction": (
                sum(1 for a in answered if a.exit == "local") / n if n else 0.0
            ),
            "bytes_per_device": payload * per_slot,
            "header_bytes_per_device": header * per_slot,
            "mqtt_overhead_per_device": mqtt * per_slot,
            "control_bytes_per_device": control,
            # every byte a device's link carries per sample: its frames (payload, headers, MQTT)
            # and its share of the control messages every device receives
            "wire_bytes_per_device": (payload + header + mqtt) * per_slot + control,
            "edge_to_cloud_bytes_per_sample": edge / n if n else 0.0,
            "latency_ms": {
                name: _percentiles(values) for name, values in latencies.items() if values
            },
            "latency_ms_all": _percentiles([v for vs in latencies.values() for v in vs]),
            "throughput_samples_per_s": n / (last - first) if n and last > first else 0.0,
            "wall_seconds": self.wall_seconds,
        }
        doc.update(self.extra)
        return doc


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


class ResultCollector:
    """Subscribes to the results and node statuses of one namespace.

    Args:
        settings: Broker address and login (``None``: not connected; messages are fed to
            :meth:`handle`, as tests do).
        topics: The deployment's topics.
        client_id: Suffix of the MQTT client id.
        samples: The sample ids asked for are ``0 .. samples - 1`` (``None``: any id counts).
    """

    def __init__(
        self,
        settings: BrokerSettings | None,
        topics: Topics,
        client_id: str = "client",
        samples: int | None = None,
    ) -> None:
        self.topics = topics
        self.samples = samples
        self.inbox: queue.SimpleQueue[paho.MQTTMessage] = queue.SimpleQueue()
        self.answers: dict[int, Answer] = {}
        self.failures: dict[int, str] = {}  # failed samples as reported by the nodes
        self.duplicates = 0
        self.foreign = 0  # answers for ids nobody asked for (counted, ignored)
        self.status: dict[str, str] = {}
        self.offline_since: dict[str, float] = {}
        self.malformed = 0
        self.control_bytes = 0  # request + progress messages seen, as each device receives them
        self.clock = time.monotonic
        self.client: paho.Client | None = None
        if settings is not None:
            self.client = connect_client(
                f"ddnn-{topics.namespace}-{client_id}",
                settings,
                self.inbox.put,
                [
                    (topics.results, 1),
                    (topics.status("+"), 1),
                    (topics.request, 1),
                    (topics.progress, 1),
                ],
            )

    def asked(self, sample: int) -> bool:
        return self.samples is None or 0 <= sample < self.samples

    @property
    def resolved(self) -> int:
        """Samples answered or reported failed."""
        return len(self.answers) + len(self.failures)

    def poll(self, timeout: float) -> int:
        """Handle queued messages (waiting up to ``timeout`` for the first); returns how many
        samples were newly answered or reported failed."""
        new = 0
        try:
            msg: paho.MQTTMessage | None = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return 0
        while msg is not None:
            new += self.handle(msg)
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                msg = None
        return new

    def handle(self, msg: paho.MQTTMessage) -> int:
        if msg.topic in (self.topics.request, self.topics.progress):
            if not getattr(msg, "retain", False):  # a retained copy is not on the devices' wire
                self.control_bytes += len(msg.payload) + message_overhead(msg)
            return 0
        if msg.topic != self.topics.results:
            try:
                state = parse_status(msg.payload)
            except MessageError as exc:
                self.malformed += 1
                log.warning("malformed status message on %s: %s", msg.topic, exc)
                return 0
            node = msg.topic.rsplit("/", 1)[1]
            self.status[node] = state
            if state == "offline":
                self.offline_since.setdefault(node, self.clock())
            else:
                self.offline_since.pop(node, None)
            return 0
        try:
            answers = parse_answers(msg.payload)
        except MessageError as exc:
            self.malformed += 1
            log.warning("malformed results message: %s", exc)
            return 0
        new = 0
        for a in answers:
            if not self.asked(a.sample):
                self.foreign += 1
            elif a.sample in self.answers or a.sample in self.failures:
                self.duplicates += 1
            elif a.failed:
                self.failures[a.sample] = a.error
                new += 1
            else:
                self.answers[a.sample] = a
                new += 1
        return new

    def wait_online(self, nodes: list[str], timeout: float, alive: Any = None) -> None:
        """Wait until every node announced itself; ``alive()`` may raise if a process died."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [n for n in nodes if self.status.get(n) not in ("online", "done")]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ValueError(f"node(s) {missing} did not come online within {timeout:g} s")
            if alive is not None:
                alive()
            self.poll(0.1)

    def send(self, command: bytes) -> None:
        if self.client is None:
            raise ValueError("this result collector is not connected to a broker")
        self.client.publish(self.topics.control, command, qos=1).wait_for_publish(5)

    def collect(
        self,
        samples: int,
        devices: list[str],
        grace: float,
        timeout: float,
        progress: Any = None,
        critical: tuple[str, ...] = ("aggregator",),
        live: bool = False,
    ) -> str:
        """Collect answers until every sample is answered or failed, or no more can come: the
        devices finished (or died) and nothing new arrived for ``grace`` s, or a ``critical``
        node stayed offline for ``grace`` s, or ``timeout`` s passed. ``live`` devices (reading
        a live source) never finish: then nothing new for ``grace`` s after the first answer
        ends it.

        Returns:
            Why collection ended early (the reason the samples left get), or ``""``.
        """
        if self.samples is None:  # from now on only ids 0..samples-1 count
            self.samples = samples
            for book in (self.answers, self.failures):
                for s in [s for s in book if not self.asked(s)]:
                    del book[s]
                    self.foreign += 1
        deadline = self.clock() + timeout
        quiet_since = self.clock()
        while self.resolved < samples:
            now = self.clock()
            if now >= deadline:
                return f"no answer within the --timeout of {timeout:g} s"
            new = self.poll(0.05)
            now = self.clock()
            if new:
                quiet_since = now
                if progress is not None:
                    progress(new)
            for node in critical:
                since = self.offline_since.get(node)
                if since is not None and now - since > grace:
                    return (
                        f"{node} offline (its Last Will came {now - since:.1f} s ago) and not back"
                    )
            finished = (
                self.resolved > 0
                if live
                else all(self.status.get(d) in ("done", "offline") for d in devices)
            )
            if finished and now - quiet_since > grace:
                gone = [d for d in devices if self.status.get(d) == "offline"]
                if gone:
                    return f"no answer: device(s) {gone} went offline and nothing else came"
                return "no answer: the devices finished and nothing came for it"
        return ""

    def report(
        self,
        samples: int,
        labels: np.ndarray | None,
        exit_names: tuple[str, ...],
        wall_seconds: float,
        reason: str = "",
    ) -> RunReport:
        # A sample with no answer and no failure report is failed here, with the reason.
        why = reason or "no answer: no device frame of it reached the aggregator, or it was lost"
        failed = {s: self.failures[s] for s in self.failures if 0 <= s < samples}
        failed.update({s: why for s in range(samples) if s not in self.answers and s not in failed})
        extra = {"foreign_answers": self.foreign, "malformed_messages": self.malformed}
        return RunReport(
            samples,
            dict(self.answers),
            failed,
            labels,
            exit_names,
            self.duplicates,
            wall_seconds,
            extra,
            self.control_bytes,
        )

    def close(self, stop_nodes: bool = True) -> None:
        if stop_nodes:
            try:
                self.send(STOP)
            except (RuntimeError, ValueError):  # pragma: no cover - broker already gone
                pass
        if self.client is not None:
            close_client(self.client)


def format_report(doc: dict[str, Any]) -> str:
    """The human-readable report of :meth:`RunReport.as_dict`."""
    acc = doc["overall_accuracy"]
    lines = [
        f"samples {doc['samples']}: answered {doc['answered']}, failed {doc['failed']}"
        + (f" ({doc['failure_reasons']})" if doc["failed"] else "")
        + (
            f", degraded {doc['degraded_answers']} {doc['flags']}"
            if doc["degraded_answers"]
            else ""
        ),
        "overall accuracy " + ("n/a" if acc is None else f"{100 * acc:.2f}%"),
        "exits: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in doc["exit_fractions"].items()),
        f"bytes per device per sample: payload {doc['bytes_per_device']:.1f} B "
        f"(+ frame headers {doc['header_bytes_per_device']:.1f} B, "
        f"MQTT {doc['mqtt_overhead_per_device']:.1f} B, "
        f"control {doc['control_bytes_per_device']:.1f} B: "
        f"{doc['wire_bytes_per_device']:.1f} B on the wire)",
    ]
    if doc["edge_to_cloud_bytes_per_sample"]:
        lines.append(
            f"edge -> cloud payload per sample: {doc['edge_to_cloud_bytes_per_sample']:.1f} B"
        )
    for name, p in doc["latency_ms"].items():
        lines.append(
            f"latency {name:5s} p50 {p['p50']:.2f} ms, p90 {p['p90']:.2f} ms, p99 {p['p99']:.2f} ms"
        )
    lines.append(
        f"throughput {doc['throughput_samples_per_s']:.0f} samples/s; wall {doc['wall_seconds']:.1f} s"
    )
    if "formula_bytes_per_device" in doc:
        lines.append(
            f"SPEC §6 formula at the measured local-exit fraction: "
            f"{doc['formula_bytes_per_device']:.1f} B per device"
        )
    return "\n".join(lines)
