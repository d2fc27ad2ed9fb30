"""Broker security (TLS, passwords, ACLs), the MQTT helpers, and bad input to the runtime CLI."""

from __future__ import annotations

import queue
import shutil
import time
from pathlib import Path

import pytest

from ddnn.cli import main
from ddnn.config import ModelConfig
from ddnn.runtime.broker import LocalBroker, node_acl
from ddnn.runtime.deploy import finish_local, hierarchy_nodes, run_local, start_local
from ddnn.runtime.mqtt import (
    BrokerError,
    close_client,
    connect_client,
    parse_broker_url,
    publish_overhead,
)
from ddnn.runtime.protocol import DEVICE, EDGE_NODE, Topics

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)",
)


# -- pure helpers ----------------------------------------------------------------------------------


def test_parse_broker_url():
    s = parse_broker_url("mqtt://alice:s%40cret@10.0.0.5:1884")
    assert (s.host, s.port, s.tls, s.username, s.password) == (
        "10.0.0.5",
        1884,
        False,
        "alice",
        "s@cret",
    )
    s = parse_broker_url("mqtts://broker.example", ca_file="/ca.crt", username="bob")
    assert (s.port, s.tls, s.ca_file, s.username) == (8883, True, "/ca.crt", "bob")
    assert "alice" not in parse_broker_url("mqtt://alice:pw@h").url


@pytest.mark.parametrize(
    "url",
    ["http://host:1883", "mqtt://", "mqtt://host:99999", "mqtt://host:1883/path", "host:1883"],
)
def test_bad_broker_urls_are_rejected(url):
    with pytest.raises(ValueError, match="accepted"):
        parse_broker_url(url)


def test_certificates_need_tls():
    with pytest.raises(ValueError, match="mqtts"):
        parse_broker_url("mqtt://h", ca_file="/ca.crt")


def test_publish_overhead_by_hand():
    # QoS 1, topic "a/b" (3 B), no properties (1 B for the empty property length), 45 B payload:
    # variable header 2 + 3 + 2 + 1 = 8, remaining length 53 (1 varint byte), fixed header 2.
    assert publish_overhead("a/b", 45, 1, 1) == 10
    # QoS 0 drops the packet id; a 200-byte remaining length needs a 2-byte varint.
    assert publish_overhead("a/b", 194, 0, 1) == 2 + 3 + 1 + 3 - 1 + 1  # 1 + 2 + (2 + 3 + 1)


def test_topics_reject_wildcards_and_find_indices():
    with pytest.raises(ValueError):
        Topics("a/b")
    t = Topics("x")
    assert t.device_scores(4) == "ddnn/x/d/4/s" and t.edge_receipts(1) == "ddnn/x/e/1/r"
    assert Topics.index_in(t.device_scores(4), DEVICE) == 4
    assert Topics.index_in(t.edge_features(12), EDGE_NODE) == 12
    assert Topics.index_in(t.results, DEVICE) is None
    assert t.is_edge_topic(t.edge_scores(0)) and not t.is_edge_topic(t.device_scores(0))


def test_acl_lets_a_device_write_only_its_own_topics():
    lines = node_acl("ns", "device_2", [])
    writes = [line for line in lines if line.startswith("topic write")]
    assert writes == [
        "topic write ddnn/ns/stats/device_2",  # its own counts, for the gateway's metrics
        "topic write ddnn/ns/rollout/ok/device_2",
        "topic write ddnn/ns/d/2/s",
        "topic write ddnn/ns/d/2/f",
    ]
    assert not any("results" in line for line in lines)


def test_hierarchy_nodes_of_configuration_f():
    mc = ModelConfig(num_devices=4)
    assert hierarchy_nodes(mc) == [
        "cloud",
        "aggregator",
        "device_0",
        "device_1",
        "device_2",
        "device_3",
    ]


# -- real broker -----------------------------------------------------------------------------------


def _messages(settings, topic):
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    client = connect_client(f"listener-{time.time_ns()}", settings, inbox.put, [(topic, 1)])
    return client, inbox


@needs_mosquitto
def test_secure_broker_refuses_wrong_password_and_enforces_acls():
    groups = [(0, 1)]
    nodes = ["cloud", "edge_0", "aggregator", "device_0", "device_1"]
    with LocalBroker("sec", nodes, groups, secure=True) as broker:
        good = broker.settings("device_0")
        with pytest.raises(BrokerError, match="refused"):
            connect_client(
                "x",
                good.with_credentials("device_0", "wrong"),
                lambda m: None,
                [],
                connect_timeout=2,
            )
        with pytest.raises(BrokerError):  # TLS is required: plain TCP gets no CONNACK
            connect_client(
                "y",
                parse_broker_url(f"mqtt://127.0.0.1:{broker.port}"),
                lambda m: None,
                [],
                connect_timeout=1,
            )
        topics = Topics("sec")
        listener, inbox = _messages(broker.settings("aggregator"), topics.device_scores("+"))
        device = connect_client("dev0", good, lambda m: None, [])
        device.publish(topics.device_scores(1), b"forged", qos=1).wait_for_publish(
            5
        )  # not its topic
        device.publish(topics.device_scores(0), b"mine", qos=1).wait_for_publish(5)
        got = inbox.get(timeout=5)
        assert (got.topic, got.payload) == (topics.device_scores(0), b"mine")
        time.sleep(0.3)
        assert inbox.empty(), "device_0 must not be able to publish as device_1"
        close_client(device)
        close_client(listener)


@needs_mosquitto
@pytest.mark.slow
def test_secure_local_deployment_answers_every_sample(run_c):
    dep = start_local(run_c, {"deadline": 2.0, "upper_timeout": 10.0}, secure=True, limit=40)
    try:
        run_local(dep, grace=2.0, timeout=60)
    finally:
        report = finish_local(dep, 0.0)
    assert len(report.answers) == 40 and not report.failed


# -- CLI bad input ---------------------------------------------------------------------------------


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_cli_bad_broker_url(capsys, run_c):
    msg = _error(capsys, ["serve", "cloud", "--run", str(run_c), "--broker", "tcp://x"])
    assert "accepted: mqtt://" in msg


def test_cli_unreachable_broker_fails_after_bounded_retry(capsys, run_c):
    from ddnn.runtime.broker import free_port

    t0 = time.monotonic()
    msg = _error(
        capsys,
        [
            "serve",
            "cloud",
            "--run",
            str(run_c),
            "--broker",
            f"mqtt://127.0.0.1:{free_port()}",
            "--connect-timeout",
            "1",
        ],
    )
    assert "cannot reach the MQTT broker" in msg and time.monotonic() - t0 < 20


def test_cli_run_without_sections(capsys, tmp_path, run_c):
    shutil.copytree(run_c, tmp_path / "run")
    (tmp_path / "run" / "sections" / "cloud.pt").unlink()
    msg = _error(capsys, ["deploy", "--run", str(tmp_path / "run"), "--local"])
    assert "lacks per-section checkpoints ['cloud']" in msg


def test_cli_device_id_not_in_model(capsys, run_c):
    msg = _error(
        capsys, ["serve", "device", "--run", str(run_c), "--id", "9", "--broker", "mqtt://h"]
    )
    assert "device id(s) [9] not in the model" in msg


def test_cli_deployment_file_errors(capsys, tmp_path, run_c):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: {cloud: {host: a}, edge_0: {host: b}}\n")
    msg = _error(capsys, ["deploy", "--run", str(run_c), "--file", str(bad), "--host", "a"])
    assert "does not have" in msg and "edge_0" in msg
    partial = tmp_path / "partial.yaml"
    partial.write_text("nodes: {cloud: {host: a}}\n")
    msg = _error(capsys, ["deploy", "--run", str(run_c), "--file", str(partial), "--host", "a"])
    assert "does not place" in msg and "aggregator" in msg


def test_cli_bad_thresholds(capsys, run_c):
    msg = _error(capsys, ["deploy", "--run", str(run_c), "--local", "--threshold", "1.5"])
    assert "outside [0, 1]" in msg


def test_the_observer_login_reads_answers_status_and_stats_and_writes_nothing():
    lines = node_acl("ns", "observer", [])
    assert not [line for line in lines if " write " in line or "readwrite" in line]
    assert sorted(line for line in lines if line.startswith("topic read")) == [
        "topic read ddnn/ns/results",
        "topic read ddnn/ns/stats/+",
        "topic read ddnn/ns/status/#",
    ]
