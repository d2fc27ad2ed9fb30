"""What the gateway knows of a running deployment, for its metrics and its dashboard.

A :class:`DeploymentView` is fed, from any thread, the nodes' retained statuses, their stats
snapshots (:mod:`ddnn.runtime.metrics`) and the answers; it serves

* :meth:`DeploymentView.metrics_source` — the latest snapshot and up/down of every node, which
  :func:`ddnn.runtime.metrics.metric_families` turns into the gateway's ``/metrics``;
* :meth:`DeploymentView.state` — the dashboard's JSON (schema :data:`STATE_SCHEMA`): each node's
  health, the exit mix, latency percentiles and absence rates over the last
  :data:`WINDOW_S` seconds of answers, bytes per second per link next to raw offloading, and
  the last answers.

Health of a node: ``offline`` when its status says so (the broker publishes a dead node's will
at once when its connection drops, or after 1.5 keep-alives when it hangs); ``done`` when a
replay device finished; ``online`` while its stats arrive (one a second); ``late`` when it is
online but its stats are over :data:`LATE_AFTER_S` seconds old (a stuck process); ``unknown``
when only an answer or a link named it. Nothing here blocks on the network.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ddnn.runtime.messages import Answer
from ddnn.runtime.metrics import Snapshots

STATE_SCHEMA = 1
WINDOW_S = 60.0  # s of answers behind the exit mix, latencies and absence rates
LATE_AFTER_S = 3.0  # s without stats before an online node shows as late
RATE_SPAN_S = 5.0  # s of snapshots behind a bytes-per-second figure
MAX_NODES = 1024  # nodes tracked (stats and status topics are open to every node login)
MAX_WINDOW_ANSWERS = 50_000  # answers kept for the window (the oldest go first)
LAST_ANSWERS = 20
DATA_MESSAGES = ("scores", "features")


def _percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..100) of a sorted, non-empty list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _wire_total(snapshot: Mapping[str, Any], messages: Iterable[str]) -> int:
    wire = snapshot["wire"]
    return sum(sum(wire.get(m, {}).values()) for m in messages)


def _sort_key(name: str) -> tuple[str, int, str]:
    """device_2 before device_10."""
    base, _, index = name.rpartition("_")
    return (base, int(index), "") if index.isdigit() else (name, -1, name)


class DeploymentView:
    """Statuses, stats and answers of one deployment (thread-safe; see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._status: dict[str, str] = {}
        self._snapshots: dict[str, deque[tuple[float, Mapping[str, Any]]]] = {}
        self._heard: dict[str, float] = {}  # node -> when its last snapshot arrived
        self._answers: deque[tuple[float, Answer]] = deque(maxlen=MAX_WINDOW_ANSWERS)
        self._last: deque[Answer] = deque(maxlen=LAST_ANSWERS)
        self.ignored = 0  # statuses or snapshots beyond MAX_NODES

    # -- feeding (any thread) ---------------------------------------------------------------------

    def feed_status(self, node: str, status: str | None) -> None:
        with self._lock:
            if status is None:
                self._status.pop(node, None)
            elif self._room_for(node):
                self._status[node] = status

    def feed_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """A checked snapshot (:func:`ddnn.runtime.metrics.parse_snapshot`)."""
        now = self.clock()
        node = snapshot["node"]
        with self._lock:
            if not self._room_for(node):
                return
            history = self._snapshots.setdefault(node, deque())
            if history and snapshot["started"] != history[-1][1]["started"]:
                history.clear()  # a restarted node counts from zero again
            history.append((now, snapshot))
            while len(history) > 2 and history[1][0] <= now - RATE_SPAN_S:
                history.popleft()
            self._heard[node] = now

    def feed_answers(self, answers: Iterable[Answer]) -> None:
        now = self.clock()
        with self._lock:
            for a in answers:
                self._answers.append((now, a))
                self._last.append(a)

    def _room_for(self, node: str) -> bool:
        known = node in self._status or node in self._snapshots
        if known or len(set(self._status) | set(self._snapshots)) < MAX_NODES:
            return True
        self.ignored += 1
        return False

    # -- reading ----------------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        with self._lock:
            return sorted(set(self._status) | set(self._snapshots), key=_sort_key)

    def metrics_source(self) -> tuple[Snapshots, dict[str, bool], float]:
        """(latest snapshot per node, whether each node is up, now) for ``metric_families``."""
        with self._lock:
            snapshots = {n: h[-1][1] for n, h in self._snapshots.items() if h}
            up = {n: s == "online" for n, s in self._status.items()}
        for node in snapshots:
            up.setdefault(node, False)
        return snapshots, up, self.clock()

    def health(self, node: str, now: float) -> str:
        """``online``, ``late``, ``offline``, ``done`` or ``unknown`` (module docstring)."""
        status = self._status.get(node)
        if status in ("offline", "done"):
            return status
        heard = self._heard.get(node)
        if status == "online":
            return "online" if heard is not None and now - heard <= LATE_AFTER_S else "late"
        if heard is not None:  # stats without a status (a broker that lost retained ones)
            return "online" if now - heard <= LATE_AFTER_S else "late"
        return "unknown"

    def state(self, broker: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """The dashboard's JSON (schema :data:`STATE_SCHEMA`)."""
        now = self.clock()
        with self._lock:
            histories = {n: list(h) for n, h in self._snapshots.items() if h}
            statuses = dict(self._status)
            answers = [a for t, a in self._answers if t >= now - WINDOW_S]
            last = list(self._last)[::-1]
            health = {n: self.health(n, now) for n in set(statuses) | set(histories)}
        latest = {n: h[-1][1] for n, h in histories.items()}
        inputs = {n: s["inputs"] for n, s in latest.items()}
        names = set(health)
        for ins in inputs.values():
            names.update(ins)
        names.update(f"device_{d}" for a in last for d in (*a.present, *a.missing))
        links: dict[str, dict[str, str]] = {}  # sender -> {message kind: receiver}
        for receiver, senders in inputs.items():
            for sender in senders:
                message = "scores" if receiver == "aggregator" else "features"
                links.setdefault(sender, {})[message] = receiver
        for node, snap in latest.items():
            if snap["answered"] or snap["failed"]:
                links.setdefault(node, {})["answers"] = "results"
        nodes = []
        for name in sorted(names, key=_sort_key):
            s = latest.get(name)
            gauges = s["gauges"] if s else {}
            role = s["role"] if s else name.rpartition("_")[0] or name
            nodes.append(
                {
                    "name": name,
                    "role": role,
                    "health": health.get(name, "unknown"),
                    "stats_age_s": round(now - histories[name][-1][0], 2) if s else None,
                    "links": links.get(name, {}),
                    "memory_bytes": gauges.get("resident_memory_bytes"),
                    "cache_samples": gauges.get("feature_cache_samples"),
                }
            )
        return {
            "schema": STATE_SCHEMA,
            "time": now,
            "namespace": namespace,
            "broker": dict(broker),
            "nodes": nodes,
            "exits": self._exits(answers),
            "links": self._links(histories, inputs),
            "raw": self._raw(histories),
            "latency_ms": self._latency(answers),
            "answers": [_answer_row(a) for a in last],
            "absence": self._absence(answers),
        }

    def _rate(
        self, history: list[tuple[float, Mapping[str, Any]]], value: Callable[..., float]
    ) -> float:
        """Per second, over the snapshots kept; 0 with fewer than two, or when the last is over
        :data:`LATE_AFTER_S` old (a dead or stuck node sends nothing now)."""
        if len(history) < 2 or self.clock() - history[-1][0] > LATE_AFTER_S:
            return 0.0
        (t0, s0), (t1, s1) = history[0], history[-1]
        return max(0.0, (value(s1) - value(s0)) / (t1 - t0)) if t1 > t0 else 0.0

    def _links(
        self, histories: Mapping[str, list[Any]], inputs: Mapping[str, list[str]]
    ) -> list[dict[str, Any]]:
        """One row per sender -> receiver: the sender's bytes of the message kind that link
        carries (scores to the aggregator, features up to an edge or the cloud)."""
        out = []
        for receiver in sorted(inputs, key=_sort_key):
            message = "scores" if receiver == "aggregator" else "features"
            for sender in inputs[receiver]:
                history = histories.get(sender)
                kinds = [message]
                rate = self._rate(history, lambda s, k=kinds: _wire_total(s, k)) if history else 0.0
                out.append(
                    {"from": sender, "to": receiver, "message": message, "bytes_per_s": rate}
                )
        return out

    def _raw(self, histories: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
        out = []
        for node in sorted(histories, key=_sort_key):
            history = histories[node]
            if history[-1][1]["role"] != "device":
                continue
            raw = history[-1][1]["raw_bytes_per_sample"]
            out.append(
                {
                    "device": node,
                    "sent_bytes_per_s": self._rate(
                        history, lambda s: _wire_total(s, DATA_MESSAGES)
                    ),
                    "raw_bytes_per_s": self._rate(history, lambda s: s["captured"]) * raw,
                    "samples_per_s": self._rate(history, lambda s: s["captured"]),
                }
            )
        return out

    @staticmethod
    def _exits(answers: list[Answer]) -> dict[str, Any]:
        exits: dict[str, Any] = {"window_s": WINDOW_S, "local": 0, "edge": 0, "cloud": 0}
        exits.update(failed=0, degraded=0)
        for a in answers:
            if a.failed:
                exits["failed"] += 1
                continue
            exits[a.exit] = exits.get(a.exit, 0) + 1
            exits["degraded"] += bool(a.flags)
        return exits

    @staticmethod
    def _latency(answers: list[Answer]) -> dict[str, dict[str, float]]:
        by_exit: dict[str, list[float]] = {}
        for a in answers:
            if not a.failed and a.captured > 0 and a.answered >= a.captured:
                by_exit.setdefault(a.exit, []).append(1000.0 * (a.answered - a.captured))
        out = {}
        for exit_name, values in by_exit.items():
            values.sort()
            out[exit_name] = {
                "p50": _percentile(values, 50),
                "p99": _percentile(values, 99),
                "count": len(values),
            }
        return out

    @staticmethod
    def _absence(answers: list[Answer]) -> list[dict[str, Any]]:
        fused = [a for a in answers if not a.failed]
        devices = sorted({d for a in fused for d in (*a.present, *a.missing)})
        out = []
        for d in devices:
            absent = sum(d in a.missing for a in fused)
            out.append(
                {
                    "device": f"device_{d}",
                    "absent": absent,
                    "answers": len(fused),
                    "rate": absent / len(fused),
                }
            )
        return out


def _answer_row(a: Answer) -> dict[str, Any]:
    latency = 1000.0 * (a.answered - a.captured) if a.captured > 0 else None
    return {
        "sample": a.sample,
        "class_name": a.class_name,
        "exit": a.exit,
        "confidence": a.confidence,
        "missing": list(a.missing),
        "latency_ms": latency,
        "model_version": a.model_version,
        "failed": a.failed,
        "error": a.error,
        "flags": list(a.flags),
    }
