"""What a deployment measures about itself: per-node counts, their stats messages, and the
Prometheus metrics made from them.

Each node keeps plain counts in a :class:`NodeMetrics` (cheap on the hot path: integer adds
per published message and per answer). Every :data:`STATS_EVERY` seconds it publishes a
*snapshot* of them on ``stats/NODE`` (JSON, :func:`parse_snapshot` checks one), and
``ddnn serve … --metrics-port P`` serves its own snapshot as Prometheus metrics. The gateway
keeps the latest snapshot of every node and serves them all on one ``/metrics``: the same
function (:func:`metric_families`) renders one node or a whole deployment.

Metrics (every counter counts since the node started; Prometheus' ``rate()`` handles restarts):

=====================================  ==========================================================
``ddnn_node_up{node}``                 1 while the node is online (gateway: from its status)
``ddnn_samples_answered_total{exit}``  answers published, by exit (``local``/``edge``/``cloud``)
``ddnn_samples_failed_total{reason}``  samples reported failed, by reason (e.g. ``no_frames``)
``ddnn_samples_degraded_total``        answers that carry a degradation flag
``ddnn_wire_bytes_total{node,message,  bytes the node published: ``kind`` is ``payload``,
kind}``                                ``header`` (frame headers) or ``transport`` (MQTT fixed
                                       and variable headers); ``message`` is ``scores``,
                                       ``features``, ``control``, ``answers`` or ``status``
``ddnn_frames_rejected_total{node,     messages the node refused, by reason (``length``,
reason}``                              ``wrong_model``, ``out_of_window``, …)
``ddnn_answer_latency_seconds{exit}``  histogram of capture-to-answer latency
``ddnn_device_absent_total{device}``   answers that fused without the device
``ddnn_samples_captured_total{node}``  samples a device captured and scored
``ddnn_raw_bytes_total{node}``         what the device would have sent offloading raw input
``ddnn_feature_cache_samples{node}``   samples held in a node's feature cache
``ddnn_resident_memory_bytes{node}``   the node process's resident memory
``ddnn_stats_age_seconds{node}``       gateway only: seconds since the node's last snapshot
=====================================  ==========================================================
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ddnn.runtime.messages import Answer, MessageError, load_json

SNAPSHOT_SCHEMA = 1
STATS_EVERY = 1.0  # s between a node's stats messages
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # s, upper
MESSAGES = ("scores", "features", "control", "answers", "status")
WIRE_KINDS = ("payload", "header", "transport")
ROLES = ("device", "aggregator", "edge", "cloud", "trigger")
MAX_SNAPSHOT_BYTES = 64 * 1024
Snapshots = Mapping[str, Mapping[str, Any]]  # node -> its latest snapshot
MAX_LABELS = 256  # distinct reasons / exits / devices one snapshot may carry
REJECTED = "rejected_"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory_bytes() -> int:
    """This process's resident set size (Linux ``/proc``; 0 where unknown)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class LatencyHistogram:
    """Counts of latencies per :data:`LATENCY_BUCKETS` bucket (not cumulative) and their sum."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last bucket is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += seconds


class NodeMetrics:
    """One node's counts, and its snapshot for the stats message and Prometheus.

    Args:
        node: The node's name (``device_0``, ``aggregator``, ``edge_1``, ``cloud``).
        role: One of :data:`ROLES`.
        counters: The node's event counters; ``rejected_<reason>`` ones become
            ``ddnn_frames_rejected_total``, and the whole map travels in the snapshot.
        inputs: The nodes whose frames this node receives (an edge: its group's devices; the
            aggregator: every device and edge): the dashboard draws the topology from them.
    """

    def __init__(
        self,
        node: str,
        role: str,
        counters: Counter[str],
        inputs: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r}; accepted: {', '.join(ROLES)}")
        self.node = node
        self.role = role
        self.counters = counters
        self.inputs = list(inputs)
        self.clock = clock
        self.started = clock()
        self.wire: dict[str, list[int]] = {m: [0, 0, 0] for m in MESSAGES}  # payload/header/mqtt
        self.answered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.degraded = 0
        self.absent: Counter[str] = Counter()
        self.latency: dict[str, LatencyHistogram] = {}
        self.captured = 0
        self.raw_bytes_per_sample = 0  # a device: its input's size as raw uint8
        self.gauges: dict[str, Callable[[], float]] = {}  # extra per-node gauges, read at snapshot

    def sent(self, message: str, payload: int, header: int, transport: int) -> None:
        """One published message: its payload (less ``header``), header and MQTT overhead."""
        row = self.wire[message]
        row[0] += payload - header
        row[1] += header
        row[2] += transport

    def observe(self, answers: Iterable[Answer]) -> None:
        """Answers this node published."""
        for a in answers:
            if a.failed:
                self.failed[a.flags[0] if a.flags else "unknown"] += 1
                continue
            self.answered[a.exit] += 1
            if a.flags:
                self.degraded += 1
            for d in a.missing:
                self.absent[str(d)] += 1
            if a.captured > 0 and a.answered >= a.captured:
                hist = self.latency.get(a.exit)
                if hist is None:
                    hist = self.latency[a.exit] = LatencyHistogram()
                hist.observe(a.answered - a.captured)

    def snapshot(self) -> dict[str, Any]:
        """The JSON-able state (the stats message's body; :func:`parse_snapshot` reads it)."""
        gauges = {"resident_memory_bytes": float(resident_memory_bytes())}
        for name, read in self.gauges.items():
            gauges[name] = float(read())
        return {
            "schema": SNAPSHOT_SCHEMA,
            "node": self.node,
            "role": self.role,
            "time": self.clock(),
            "started": self.started,
            "inputs": self.inputs,
            "counters": dict(self.counters),
            "wire": {m: dict(zip(WIRE_KINDS, row, strict=True)) for m, row in self.wire.items()},
            "answered": dict(self.answered),
            "failed": dict(self.failed),
            "degraded": self.degraded,
            "absent": dict(self.absent),
            "latency": {e: {"counts": h.counts, "sum": h.sum} for e, h in self.latency.items()},
            "captured": self.captured,
            "raw_bytes_per_sample": self.raw_bytes_per_sample,
            "gauges": gauges,
        }


# -- reading a snapshot off the wire -------------------------------------------------------------


def _fail(what: str) -> MessageError:
    return MessageError(f"stats: {what}", "malformed_stats")


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _fail(f"{what} must be a non-negative integer, got {str(value)[:40]!r}")
    return value


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise _fail(f"{what} must be a finite non-negative number, got {str(value)[:40]!r}")
    return float(value)


def _label(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise _fail(f"{what} must be a printable name of 1-64 characters")
    return value


def _counts(value: Any, what: str) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > MAX_LABELS:
        raise _fail(f"{what} must be an object of at most {MAX_LABELS} counts")
    return {_label(k, f"{what} key"): _count(v, f"{what}[{k}]") for k, v in value.items()}


def parse_snapshot(payload: bytes | bytearray, node: str) -> dict[str, Any]:
    """A stats message from ``node`` (its topic's name), checked field by field.

    Raises:
        MessageError: With reason ``malformed_stats`` (or the JSON reasons), saying what is wrong.
    """
    if len(payload) > MAX_SNAPSHOT_BYTES:
        raise _fail(f"{len(payload)} bytes; at most {MAX_SNAPSHOT_BYTES}")
    doc = load_json(payload, "stats")
    if not isinstance(doc, dict):
        raise _fail("must be a JSON object")
    if doc.get("schema") != SNAPSHOT_SCHEMA:
        raise _fail(f"schema {str(doc.get('schema'))[:20]!r}; this gateway reads {SNAPSHOT_SCHEMA}")
    if doc.get("node") != node:
        raise _fail(f"node {str(doc.get('node'))[:40]!r} published on the topic of {node!r}")
    if doc.get("role") not in ROLES:
        raise _fail(f"role {str(doc.get('role'))[:20]!r}; accepted: {', '.join(ROLES)}")
    inputs = doc.get("inputs", [])
    if not isinstance(inputs, list) or len(inputs) > MAX_LABELS:
        raise _fail(f"inputs must be a list of at most {MAX_LABELS} node names")
    wire = doc.get("wire", {})
    if not isinstance(wire, dict) or not set(wire) <= set(MESSAGES):
        raise _fail(f"wire must map message kinds ({', '.join(MESSAGES)}) to byte counts")
    latency = doc.get("latency", {})
    if not isinstance(latency, dict) or len(latency) > MAX_LABELS:
        raise _fail("latency must map exits to histograms")
    hists = {}
    for exit_name, h in latency.items():
        counts = h.get("counts") if isinstance(h, dict) else None
        if not isinstance(counts, list) or len(counts) != len(LATENCY_BUCKETS) + 1:
            raise _fail(f"latency[{exit_name}] must hold {len(LATENCY_BUCKETS) + 1} bucket counts")
        hists[_label(exit_name, "exit")] = {
            "counts": [_count(c, "a bucket count") for c in counts],
            "sum": _number(h.get("sum"), "a latency sum"),
        }
    gauges = doc.get("gauges", {})
    if not isinstance(gauges, dict) or len(gauges) > MAX_LABELS:
        raise _fail("gauges must be an object of numbers")
    return {
        "schema": SNAPSHOT_SCHEMA,
        "node": node,
        "role": doc["role"],
        "time": _number(doc.get("time"), "time"),
        "started": _number(doc.get("started"), "started"),
        "inputs": [_label(n, "an input node") for n in inputs],
        "counters": _counts(doc.get("counters", {}), "counters"),
        "wire": {m: _counts(v, f"wire[{m}]") for m, v in wire.items()},
        "answered": _counts(doc.get("answered", {}), "answered"),
        "failed": _counts(doc.get("failed", {}), "failed"),
        "degraded": _count(doc.get("degraded", 0), "degraded"),
        "absent": _counts(doc.get("absent", {}), "absent"),
        "latency": hists,
        "captured": _count(doc.get("captured", 0), "captured"),
        "raw_bytes_per_sample": _count(doc.get("raw_bytes_per_sample", 0), "raw bytes"),
        "gauges": {_label(k, "a gauge"): _number(v, f"gauge {k}") for k, v in gauges.items()},
    }


# -- Prometheus ------------------------------------------------------------------------------------


def metric_families(
    snapshots: Mapping[str, Mapping[str, Any]],
    up: Mapping[str, bool],
    now: float | None = None,
) -> list[Any]:
    """Prometheus metric families for the nodes' latest snapshots (one node, or a deployment).

    Args:
        snapshots: node -> its latest snapshot.
        up: node -> whether it is online (nodes without a snapshot are listed too).
        now: Wall-clock time for ``ddnn_stats_age_seconds`` (omitted when ``None``).
    """
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    node_up = GaugeMetricFamily("ddnn_node_up", "1 while the node is online", labels=["node"])
    for node in sorted(set(up) | set(snapshots)):
        node_up.add_metric([node], 1.0 if up.get(node, False) else 0.0)

    answered: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    absent: Counter[str] = Counter()
    degraded = 0
    buckets: dict[str, list[int]] = {}
    sums: Counter[str] = Counter()
    wire = CounterMetricFamily(
        "ddnn_wire_bytes", "Bytes a node published", labels=["node", "message", "kind"]
    )
    rejected = CounterMetricFamily(
        "ddnn_frames_rejected", "Messages a node refused, by reason", labels=["node", "reason"]
    )
    captured = CounterMetricFamily(
        "ddnn_samples_captured", "Samples a device captured and scored", labels=["node"]
    )
    raw = CounterMetricFamily(
        "ddnn_raw_bytes", "Bytes a device would have sent offloading raw input", labels=["node"]
    )
    cache = GaugeMetricFamily(
        "ddnn_feature_cache_samples", "Samples in a node's feature cache", labels=["node"]
    )
    memory = GaugeMetricFamily(
        "ddnn_resident_memory_bytes", "Resident memory of a node's process", labels=["node"]
    )
    age = GaugeMetricFamily(
        "ddnn_stats_age_seconds", "Seconds since the node's last stats message", labels=["node"]
    )
    for node in sorted(snapshots):
        s = snapshots[node]
        answered.update(s["answered"])
        failed.update(s["failed"])
        absent.update(s["absent"])
        degraded += s["degraded"]
        for exit_name, h in s["latency"].items():
            acc = buckets.setdefault(exit_name, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, c in enumerate(h["counts"]):
                acc[i] += c
            sums[exit_name] += h["sum"]
        for message, kinds in sorted(s["wire"].items()):
            if not any(kinds.values()):  # a kind of message this node never sends
                continue
            for kind in WIRE_KINDS:
                wire.add_metric([node, message, kind], float(kinds.get(kind, 0)))
        for key, n in sorted(s["counters"].items()):
            if key.startswith(REJECTED):
                rejected.add_metric([node, key[len(REJECTED) :]], float(n))
        if s["role"] == "device":
            captured.add_metric([node], float(s["captured"]))
            raw.add_metric([node], float(s["captured"] * s["raw_bytes_per_sample"]))
        if "feature_cache_samples" in s["gauges"]:
            cache.add_metric([node], s["gauges"]["feature_cache_samples"])
        if "resident_memory_bytes" in s["gauges"]:
            memory.add_metric([node], s["gauges"]["resident_memory_bytes"])
        if now is not None:
            age.add_metric([node], max(0.0, now - s["time"]))

    answered_f = CounterMetricFamily(
        "ddnn_samples_answered", "Answers published, by exit", labels=["exit"]
    )
    for exit_name, n in sorted(answered.items()):
        answered_f.add_metric([exit_name], float(n))
    failed_f = CounterMetricFamily(
        "ddnn_samples_failed", "Samples reported failed, by reason", labels=["reason"]
    )
    for reason, n in sorted(failed.items()):
        failed_f.add_metric([reason], float(n))
    degraded_f = CounterMetricFamily(
        "ddnn_samples_degraded", "Answers that carry a degradation flag"
    )
    degraded_f.add_metric([], float(degraded))
    absent_f = CounterMetricFamily(
        "ddnn_device_absent", "Answers fused without the device", labels=["device"]
    )
    for device, n in sorted(absent.items(), key=lambda kv: (len(kv[0]), kv[0])):
        absent_f.add_metric([device], float(n))
    latency = HistogramMetricFamily(
        "ddnn_answer_latency_seconds", "Capture-to-answer latency, by exit", labels=["exit"]
    )
    for exit_name, counts in sorted(buckets.items()):
        cumulative, total = [], 0
        for bound, c in zip([*LATENCY_BUCKETS, math.inf], counts, strict=True):
            total += c
            cumulative.append(("+Inf" if math.isinf(bound) else repr(bound), float(total)))
        latency.add_metric([exit_name], cumulative, sums[exit_name])
    families = [node_up, answered_f, failed_f, degraded_f, wire, rejected, latency, absent_f]
    families += [captured, raw, cache, memory]
    if now is not None:
        families.append(age)
    return families


class SnapshotCollector:
    """A prometheus_client collector that renders ``source()`` -> (snapshots, up, now)."""

    def __init__(
        self,
        source: Callable[[], tuple[Snapshots, Mapping[str, bool], float | None]],
    ) -> None:
        self.source = source

    def collect(self) -> Iterable[Any]:
        snapshots, up, now = self.source()
        return metric_families(snapshots, up, now)


def render(
    snapshots: Mapping[str, Mapping[str, Any]], up: Mapping[str, bool], now: float | None = None
) -> bytes:
    """The Prometheus text exposition of :func:`metric_families`."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: (snapshots, up, now)))
    return generate_latest(registry)


def serve_node_metrics(nodes: Iterable[NodeMetrics], port: int, host: str = "127.0.0.1") -> Any:
    """Serves the metrics of a process's nodes on ``http://host:port/metrics``
    (prometheus_client's own threaded server); returns the server (``shutdown()`` stops it).

    Raises:
        OSError: The port is taken or cannot be bound.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    nodes = list(nodes)

    def source() -> tuple[Snapshots, Mapping[str, bool], float | None]:
        return {m.node: m.snapshot() for m in nodes}, {m.node: True for m in nodes}, None

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
