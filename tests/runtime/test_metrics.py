"""Metrics: a node's counts, its stats message, the Prometheus text and the gateway's view of a
deployment, against hand-computed values."""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson
import paho.mqtt.client as paho
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from ddnn.runtime.deployment_view import LATE_AFTER_S, DeploymentView
from ddnn.runtime.gateway import AnswerHub, MqttBridge, create_app
from ddnn.runtime.messages import Answer, MessageError, encode_answers, failure
from ddnn.runtime.metrics import NodeMetrics, parse_snapshot, render
from ddnn.runtime.node import Node
from ddnn.runtime.protocol import Topics
from ddnn.wire import encode_scores_frame

TOPICS = Topics("m")
TOKEN = "t0ken-of-twenty-chars"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answer(sample: int, exit_name: str, latency: float, missing=(), flags=()) -> Answer:
    present = [d for d in range(3) if d not in missing]
    return Answer(
        sample,
        1,
        exit_name,
        present,
        captured=500.0,
        answered=500.0 + latency,
        missing=list(missing),
        flags=list(flags),
    )


def series(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from Prometheus' text format."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_node_counts_what_it_sends_and_answers():
    m = NodeMetrics("aggregator", "aggregator", Counter({"rejected_length": 2, "answered": 4}))
    m.sent("scores", payload=34, header=9, transport=19)
    m.sent("scores", payload=10, header=6, transport=17)
    m.sent("answers", payload=300, header=0, transport=22)
    m.observe(
        [
            answer(0, "local", 0.004),  # <= 5 ms: first bucket
            answer(1, "local", 0.030, missing=[2]),  # <= 50 ms: fourth bucket
            answer(2, "cloud", 20.0, flags=["cloud_timeout"]),  # beyond 10 s: +Inf
            failure(3, "no frame arrived", 1.0, "no_frames"),
        ]
    )
    s = m.snapshot()
    assert s["wire"]["scores"] == {"payload": 44 - 15, "header": 15, "transport": 36}
    assert s["wire"]["answers"] == {"payload": 300, "header": 0, "transport": 22}
    assert s["answered"] == {"local": 2, "cloud": 1} and s["failed"] == {"no_frames": 1}
    assert s["degraded"] == 1 and s["absent"] == {"2": 1}
    assert s["latency"]["local"]["counts"] == [1, 0, 0, 1] + [0] * 8
    assert s["latency"]["cloud"]["counts"] == [0] * 11 + [1]
    assert s["latency"]["local"]["sum"] == pytest.approx(0.034)
    assert s["gauges"]["resident_memory_bytes"] > 1_000_000  # this test process, from /proc
    # what goes on the wire reads back the same
    assert parse_snapshot(orjson.dumps(s), "aggregator")["answered"] == s["answered"]


def test_the_prometheus_text_sums_answers_over_nodes_and_keeps_bytes_per_node():
    agg = NodeMetrics("aggregator", "aggregator", Counter({"rejected_out_of_window": 5}))
    agg.observe([answer(0, "local", 0.004), answer(1, "local", 0.2, missing=[1])])
    cloud = NodeMetrics("cloud", "cloud", Counter())
    cloud.observe([answer(2, "cloud", 0.02)])
    dev = NodeMetrics("device_0", "device", Counter())
    dev.sent("scores", payload=34, header=9, transport=19)
    dev.captured, dev.raw_bytes_per_sample = 3, 3072
    snaps = {m.node: m.snapshot() for m in (agg, cloud, dev)}
    got = series(render(snaps, {"aggregator": True, "cloud": True, "device_0": False}))
    assert got[("ddnn_node_up", (("node", "device_0"),))] == 0.0
    assert got[("ddnn_node_up", (("node", "cloud"),))] == 1.0
    assert got[("ddnn_samples_answered_total", (("exit", "local"),))] == 2.0
    assert got[("ddnn_samples_answered_total", (("exit", "cloud"),))] == 1.0
    assert got[("ddnn_device_absent_total", (("device", "1"),))] == 1.0
    assert (
        got[("ddnn_frames_rejected_total", (("node", "aggregator"), ("reason", "out_of_window")))]
        == 5
    )
    wire = (("kind", "header"), ("message", "scores"), ("node", "device_0"))
    assert got[("ddnn_wire_bytes_total", wire)] == 9.0
    assert got[("ddnn_raw_bytes_total", (("node", "device_0"),))] == 3 * 3072
    # latency: cumulative buckets; 0.004 and 0.2 s local answers
    assert got[("ddnn_answer_latency_seconds_bucket", (("exit", "local"), ("le", "0.005")))] == 1
    assert got[("ddnn_answer_latency_seconds_bucket", (("exit", "local"), ("le", "0.1")))] == 1
    assert got[("ddnn_answer_latency_seconds_bucket", (("exit", "local"), ("le", "0.25")))] == 2
    assert got[("ddnn_answer_latency_seconds_bucket", (("exit", "local"), ("le", "+Inf")))] == 2
    assert got[("ddnn_answer_latency_seconds_count", (("exit", "local"),))] == 2
    assert got[("ddnn_answer_latency_seconds_sum", (("exit", "local"),))] == pytest.approx(0.204)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"node": "cloud"}, "published on the topic of"),
        ({"schema": 2}, "schema"),
        ({"role": "toaster"}, "role"),
        ({"answered": {"local": -1}}, "non-negative integer"),
        ({"answered": {"local": 1.5}}, "non-negative integer"),
        ({"counters": {f"r{i}": 1 for i in range(300)}}, "at most 256"),
        ({"latency": {"local": {"counts": [1, 2], "sum": 0.1}}}, "12 bucket counts"),
        ({"inputs": "device_0"}, "inputs must be a list"),
        ({"gauges": {"x": "big"}}, "finite non-negative number"),
        ({"wire": {"gossip": {}}}, "wire must map"),
    ],
)
def test_a_malformed_stats_message_is_refused_with_its_reason(change, why):
    doc = NodeMetrics("device_0", "device", Counter()).snapshot() | change
    with pytest.raises(MessageError, match=why) as info:
        parse_snapshot(orjson.dumps(doc), "device_0")
    assert info.value.reason == "malformed_stats"
    with pytest.raises(MessageError):
        parse_snapshot(b"x" * 70_000, "device_0")


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, **_kw: object) -> None:
        self.sent.append((topic, payload, qos))


def test_node_publish_books_payload_frame_header_and_mqtt_overhead():
    node = Node("device_0", None, TOPICS, model_version=1)  # type: ignore[arg-type]
    node.client = FakeClient()  # type: ignore[assignment]
    frame = encode_scores_frame(
        np.array([[0.1, 0.2, 0.7]], np.float32),
        sender=0,
        first_sample=5,
        model_version=1,
        captured=1.5,
        encoding="float32",
    )
    assert len(frame) == 9 + 12  # 9-byte header (sender, first, count < 128), 3 float32
    node.publish(TOPICS.device_scores(0), frame, qos=1, header=9)  # the sender knows its header
    # MQTT 5 PUBLISH, QoS 1: fixed header 1 + remaining length 1 (< 128) + topic length 2 +
    # topic "ddnn/m/d/0/s" 12 + packet id 2 + empty properties 1 = 19
    assert node.metrics.wire["scores"] == [12, 9, 19]
    node.publish(TOPICS.request, b"\x05\x01", qos=0)  # control: no header; QoS 0, no packet id
    assert node.metrics.wire["control"] == [2, 0, 1 + 1 + 2 + len(TOPICS.request) + 1]
    node.publish_stats()
    topic, payload, qos = node.client.sent[-1]
    assert topic == "ddnn/m/stats/device_0" and qos == 0
    assert parse_snapshot(payload, "device_0")["wire"]["scores"]["header"] == 9


def stats(node: str, role: str, t: float, **fields: object) -> dict:
    m = NodeMetrics(node, role, Counter(), clock=lambda: t)
    m.started = 1.0
    doc = m.snapshot() | fields
    return parse_snapshot(orjson.dumps(doc), node)


def test_the_view_tells_online_late_offline_and_done():
    clock = Clock()
    view = DeploymentView(clock)
    view.feed_status("device_0", "online")
    view.feed_snapshot(stats("device_0", "device", clock.now))
    view.feed_status("device_1", "online")
    view.feed_snapshot(stats("device_1", "device", clock.now))
    view.feed_status("device_2", "done")
    view.feed_status("cloud", "online")  # online, never a stats message: late
    clock.now += LATE_AFTER_S - 0.5
    view.feed_snapshot(stats("device_1", "device", clock.now))
    clock.now += 1.0  # device_0's stats are now LATE_AFTER_S + 0.5 s old
    view.feed_status("device_1", "offline")  # killed: the broker published its will
    health = {n["name"]: n["health"] for n in view.state({}, "m")["nodes"]}
    assert health == {
        "device_0": "late",
        "device_1": "offline",
        "device_2": "done",
        "cloud": "late",
    }
    _, up, _ = view.metrics_source()
    assert up == {"device_0": True, "device_1": False, "device_2": False, "cloud": True}


def test_the_view_s_window_rates_and_percentiles():
    clock = Clock()
    view = DeploymentView(clock)
    wire = {"scores": {"payload": 1000, "header": 90, "transport": 190}}
    view.feed_snapshot(stats("device_0", "device", clock.now, wire=wire, captured=10))
    old = answer(0, "local", 0.001)
    view.feed_answers([old])
    clock.now += 61.0  # that answer leaves the 60 s window
    wire2 = {"scores": {"payload": 2000, "header": 180, "transport": 380}}
    view.feed_snapshot(
        stats(
            "device_0",
            "device",
            clock.now,
            wire=wire2,
            captured=20,
            raw_bytes_per_sample=3072,
        )
    )
    view.feed_snapshot(stats("aggregator", "aggregator", clock.now, inputs=["device_0"]))
    latencies = [0.001 * k for k in range(1, 101)]  # 1..100 ms
    view.feed_answers(
        [
            answer(k, "local", lat, missing=[2] if k % 4 == 0 else [])
            for k, lat in enumerate(latencies)
        ]
    )
    view.feed_answers([failure(200, "lost", clock.now, "no_frames")])
    state = view.state({"connected": True}, "m")
    assert state["exits"] == {
        "window_s": 60.0,
        "local": 100,
        "edge": 0,
        "cloud": 0,
        "failed": 1,
        "degraded": 0,
    }
    # nearest rank: p50 of 1..100 ms is the 50th value, p99 the 99th
    assert state["latency_ms"]["local"]["p50"] == pytest.approx(50.0)
    assert state["latency_ms"]["local"]["p99"] == pytest.approx(99.0)
    # 1280 bytes of scores and 10 samples in 61 s between the two snapshots
    [link] = state["links"]
    assert link["from"] == "device_0" and link["to"] == "aggregator"
    assert link["bytes_per_s"] == pytest.approx(1280 / 61)
    [raw] = state["raw"]
    assert raw["raw_bytes_per_s"] == pytest.approx(10 / 61 * 3072)
    absence = {a["device"]: a["rate"] for a in state["absence"]}
    assert absence["device_2"] == pytest.approx(25 / 100) and absence["device_0"] == 0.0
    assert [a["sample"] for a in state["answers"]][:2] == [200, 99]  # newest first
    nodes = {n["name"]: n for n in state["nodes"]}
    assert nodes["device_0"]["links"] == {"scores": "aggregator"}


def test_the_gateway_serves_metrics_the_page_and_the_state_behind_its_token():
    hub = AnswerHub(broker="mqtt://127.0.0.1:1", namespace="m")
    bridge = object.__new__(MqttBridge)  # its handler alone, without a broker
    bridge.topics, bridge.hub = TOPICS, hub
    bridge._status_prefix, bridge._stats_prefix = TOPICS.status(""), TOPICS.stats("")
    agg = NodeMetrics("aggregator", "aggregator", Counter())
    agg.observe([answer(0, "local", 0.004)])
    for topic, payload in [
        (TOPICS.stats("aggregator"), orjson.dumps(agg.snapshot())),
        (TOPICS.stats("cloud"), orjson.dumps(agg.snapshot())),  # claims another node's name
        (TOPICS.stats("edge_0"), b"{not json"),
        (TOPICS.status("aggregator"), b"online"),
        (TOPICS.results, encode_answers([answer(0, "local", 0.004)])),
    ]:
        msg = paho.MQTTMessage(topic=topic.encode())
        msg.payload = payload
        bridge.handle(msg)
    assert hub.health()["counters"]["malformed_stats"] == 2
    with TestClient(create_app(hub, token=TOKEN), follow_redirects=False) as http:
        assert http.get("/metrics").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        text = http.get("/metrics", headers=auth).content
        assert series(text)[("ddnn_samples_answered_total", (("exit", "local"),))] == 1.0
        bad = http.get("/metrics?node=device_9", headers=auth)
        assert bad.status_code == 400
        assert bad.json()["error"] == "unknown node 'device_9'; known nodes: aggregator"
        one = series(http.get("/metrics?node=aggregator", headers=auth).content)
        assert ("ddnn_node_up", (("node", "aggregator"),)) in one
        # a browser: /?token= sets the cookie and sends the token out of the address bar
        assert http.get("/?token=wrong-token-of-twenty").status_code == 401
        first = http.get(f"/?token={TOKEN}")
        assert first.status_code == 303 and first.headers["location"] == "./"
        cookie = first.headers["set-cookie"]
        assert (
            "ddnn_token=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        )
        page = http.get("/", cookies={"ddnn_token": TOKEN})
        assert page.status_code == 200 and "dashboard.js" in page.text
        state = http.get("/dashboard/state", cookies={"ddnn_token": TOKEN}).json()
        assert state["schema"] == 1 and state["exits"]["local"] == 1
        # the bridge is not connected (no broker here): the page is told, not left frozen
        assert state["broker"] == {
            "url": "mqtt://127.0.0.1:1",
            "connected": False,
            "error": "not connected",
        }
        hub.connected = lambda: True
        live = http.get("/dashboard/state", cookies={"ddnn_token": TOKEN}).json()["broker"]
        assert live["connected"] is True and live["error"] == ""
        health = {n["name"]: n["health"] for n in state["nodes"]}
        # devices only named by the answer are shown, as never heard of
        assert health == {"aggregator": "online"} | dict.fromkeys(
            ["device_0", "device_1", "device_2"], "unknown"
        )


def test_the_grafana_dashboard_queries_only_metrics_the_gateway_serves():
    import json
    import re
    from pathlib import Path

    agg = NodeMetrics("aggregator", "aggregator", Counter({"rejected_length": 1}))
    agg.observe([answer(0, "local", 0.01, missing=[1], flags=["x"])])
    agg.observe([failure(1, "lost", 1.0, "no_frames")])
    agg.gauges["feature_cache_samples"] = lambda: 3
    dev = NodeMetrics("device_0", "device", Counter())
    dev.sent("scores", 10, 2, 5)
    text = render({m.node: m.snapshot() for m in (agg, dev)}, {"aggregator": True}, now=2e9)
    served = {name for name, _labels in series(text)}
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bddnn_[a-z_]+", e)}
    assert len(used) >= 10 and not used - served, f"not served: {sorted(used - served)}"


def test_a_node_that_went_quiet_sends_nothing_per_second():
    clock = Clock()
    view = DeploymentView(clock)
    for i in range(2):  # two snapshots 2 s apart: 1000 B more in the second
        wire = {"scores": {"payload": 1000 * i, "header": 0, "transport": 0}}
        view.feed_snapshot(stats("device_0", "device", clock.now, wire=wire, captured=10 * i))
        clock.now += 2.0
    clock.now -= 2.0
    assert view.state({}, "m")["raw"][0]["sent_bytes_per_s"] == pytest.approx(500.0)
    clock.now += LATE_AFTER_S + 0.1  # killed: its last rate must not stay on the page
    assert view.state({}, "m")["raw"][0]["sent_bytes_per_s"] == 0.0


def test_a_process_serves_its_nodes_metrics_over_http():
    import httpx

    from ddnn.runtime.broker import free_port
    from ddnn.runtime.metrics import serve_node_metrics

    a = NodeMetrics("device_0", "device", Counter({"rejected_length": 3}))
    b = NodeMetrics("device_1", "device", Counter())
    b.captured = 7
    port = free_port()
    server = serve_node_metrics([a, b], port)
    try:
        got = series(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).content)
    finally:
        server.shutdown()
    assert got[("ddnn_frames_rejected_total", (("node", "device_0"), ("reason", "length")))] == 3
    assert got[("ddnn_samples_captured_total", (("node", "device_1"),))] == 7
    assert got[("ddnn_node_up", (("node", "device_1"),))] == 1.0
