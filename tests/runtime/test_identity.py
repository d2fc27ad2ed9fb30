"""Who may be whom and read what: client ids tied to logins, topics scoped per node, fencing."""

from __future__ import annotations

import queue
import shutil
import threading
import time
from pathlib import Path

import pytest

from ddnn.runtime.broker import LocalBroker, node_acl
from ddnn.runtime.mqtt import close_client, connect_client
from ddnn.runtime.node import Node, NodeFenced
from ddnn.runtime.protocol import Topics

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)",
)


def test_a_device_reads_only_what_it_needs():
    reads = [line.split()[-1] for line in node_acl("ns", "device_2", []) if " read" in line]
    assert sorted(reads) == [
        "ddnn/ns/ask",
        "ddnn/ns/control",
        "ddnn/ns/pos",
        "ddnn/ns/rollout",
        "ddnn/ns/rollout/b/device_2",
        "ddnn/ns/status/device_2",
    ]


def test_only_the_operator_login_may_roll_a_model_out():
    groups = [(0, 1), (2, 3), (4, 5)]
    for node in ("device_0", "aggregator", "edge_1", "cloud"):
        writes = [ln.split()[-1] for ln in node_acl("ns", node, groups) if "write" in ln]
        assert not any(t in ("ddnn/ns/rollout", "ddnn/ns/control") for t in writes), node
        assert not any(t.startswith("ddnn/ns/rollout/b/") for t in writes), node
        assert f"ddnn/ns/rollout/ok/{node}" in writes  # its own reply only
    operator = node_acl("ns", "client", groups)
    assert "topic write ddnn/ns/rollout" in operator
    assert "topic write ddnn/ns/rollout/b/+" in operator


def test_edges_and_the_cloud_read_the_context_not_the_device_asks():
    for node in ("edge_0", "cloud"):
        lines = node_acl("ns", node, [(0, 1)])
        assert "topic read ddnn/ns/up" in lines
        assert not any(line.endswith("/ask") for line in lines)


@needs_mosquitto
def test_a_login_cannot_take_over_another_nodes_session_nor_read_the_context():
    nodes = ["cloud", "aggregator", "device_0"]
    topics = Topics("sec")
    with LocalBroker("sec", nodes, [], secure=True) as broker:
        kicked = threading.Event()
        aggregator = connect_client(
            "ddnn-sec-aggregator",
            broker.settings("aggregator"),
            lambda m: None,
            [],
            on_taken_over=kicked.set,
        )
        seen: queue.SimpleQueue = queue.SimpleQueue()
        # device 0's login, claiming the aggregator's client id, listening to the context topic
        intruder = connect_client(
            "ddnn-sec-aggregator",
            broker.settings("device_0"),
            seen.put,
            [(topics.up, 1), (topics.request, 1)],
        )
        probe: queue.SimpleQueue = queue.SimpleQueue()
        cloud = connect_client("c", broker.settings("cloud"), probe.put, [(topics.up, 1)])
        delivered = False  # subscriptions settle asynchronously: publish until the cloud hears it
        for _ in range(40):
            aggregator.publish(topics.up, b"[]", qos=1).wait_for_publish(5)
            try:
                delivered = probe.get(timeout=0.5).payload == b"[]"
                break
            except queue.Empty:
                continue
        assert delivered
        aggregator.publish(topics.request, b"[]", qos=1).wait_for_publish(5)
        got = seen.get(timeout=10)  # what device_0 may read arrives, after `up` was sent ...
        assert got.topic == topics.request, "device_0 must not read the samples' context"
        while not seen.empty():
            assert seen.get_nowait().topic == topics.request
        assert not kicked.is_set() and aggregator.is_connected()
        for c in (intruder, cloud, aggregator):
            close_client(c)


@needs_mosquitto
def test_a_second_process_serving_the_same_node_fences_the_first():
    with LocalBroker("plain") as broker:
        first = Node("device_3", broker.settings(), Topics("x"), model_version=1)
        first.connect()
        second = Node("device_3", broker.settings(), Topics("x"), model_version=1)
        second.connect()
        deadline = time.monotonic() + 20  # paho reconnects within ~2 s; this is only a bound
        while not first.stopping and time.monotonic() < deadline:
            first.step(0.05)
            second.step(0.0)
        assert first.fenced and "another process started serving this node" in first.fenced
        for _ in range(40):  # the newer instance keeps serving (it may be kicked once, briefly)
            second.step(0.05)
        assert not second.stopping and not second.fenced
        first.close()
        with pytest.raises(NodeFenced, match="device_3"):
            first.serve()  # a fenced node refuses to serve again: it says why
        second.close()


@needs_mosquitto
def test_under_secure_a_node_login_cannot_announce_a_rollout_the_operator_can():
    nodes = ["aggregator", "device_0"]
    topics = Topics("sec")
    with LocalBroker("sec", nodes, [], secure=True) as broker:
        seen: queue.SimpleQueue = queue.SimpleQueue()
        aggregator = connect_client(
            "ddnn-sec-aggregator", broker.settings("aggregator"), seen.put, [(topics.rollout, 1)]
        )
        ignore = lambda m: None  # noqa: E731
        device = connect_client("ddnn-sec-device_0", broker.settings("device_0"), ignore, [])
        operator = connect_client("ddnn-sec-client", broker.settings("client"), ignore, [])
        # retained, as a real announce is: had the broker taken it, the aggregator's subscription
        # would deliver it however late that subscription settles
        for topic in (topics.rollout, topics.rollout_bundle("aggregator")):
            device.publish(topic, b"forged", qos=1, retain=True).wait_for_publish(5)
        got = None  # subscriptions settle asynchronously: the operator repeats until it is heard
        for _ in range(40):
            operator.publish(topics.rollout, b"operator", qos=1).wait_for_publish(5)
            try:
                got = seen.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        assert got is not None and got.payload == b"operator"  # the forged one never came
        while not seen.empty():
            assert seen.get_nowait().payload == b"operator"
        for c in (aggregator, device, operator):
            close_client(c)
