"""Answers out: the Python iterator, ``ddnn watch`` and the HTTP gateway, against a real broker.

Every wait is bounded and ends as soon as its condition holds; nothing depends on how fast the
machine is (a timeout is only ever tested with nothing left to arrive).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest

import ddnn.runtime
from ddnn.runtime.answers import answer_to_dict, answers
from ddnn.runtime.broker import LocalBroker, free_port
from ddnn.runtime.gateway import (
    AnswerHub,
    MqttBridge,
    add_gateway_parser,
    check_token,
    create_app,
    listen,
    serve,
)
from ddnn.runtime.messages import Answer, encode_answers
from ddnn.runtime.mqtt import BrokerError, close_client, connect_client
from ddnn.runtime.protocol import Topics
from ddnn.runtime.watch import add_watch_parser, answer_line

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)",
)

NS = "plant-1"
TOPICS = Topics(NS)
TOKEN = "t0ken-of-twenty-chars"
WAIT = 30.0  # upper bound of every wait; each ends as soon as its condition holds


def make_answer(sample: int, **changes: object) -> Answer:
    fields: dict[str, object] = {
        "prediction": 2,
        "exit": "cloud",
        "present": [0, 1],
        "device_payload": {"0": 12, "1": 12},
        "device_header": {"0": 1.5, "1": 1.5},
        "device_mqtt": {"0": 4.25, "1": 4.25},
        "edge_payload": {},
        "captured": 1000.0,
        "answered": 1000.0123,
        "flags": ["cloud_timeout"],
        "class_name": "cat",
        "confidence": 0.93,
        "missing": [3],
        "model_version": 7,
    }
    fields.update(changes)
    return Answer(sample=sample, **fields)  # type: ignore[arg-type]


FAILED = Answer(9, -1, "none", [], captured=5.0, answered=5.0, error="aggregator offline")


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    with LocalBroker(NS) as b:
        yield b


@pytest.fixture
def publisher(broker: LocalBroker) -> Iterator[paho.Client]:
    client = connect_client("ddnn-test-publisher", broker.settings(), lambda _m: None, [])
    yield client
    close_client(client)


def publish(client: paho.Client, payload: bytes, topic: str = TOPICS.results) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


# -- the Python API --------------------------------------------------------------------------


@needs_mosquitto
def test_answers_are_typed_in_order_and_malformed_messages_are_skipped(broker, publisher):
    first, second, third = make_answer(1), make_answer(2, exit="local", flags=[]), FAILED
    watchers = [answers(broker.url, namespace=NS, timeout=WAIT) for _ in range(2)]
    publish(publisher, encode_answers([first]))
    publish(publisher, b'{"not": "a list of answers"}')
    publish(publisher, b"[{]")
    publish(publisher, encode_answers([second, third]))
    for stream in watchers:  # two observers at once: each has its own client id
        assert [next(stream) for _ in range(3)] == [first, second, third]
        assert stream.malformed == 2 and stream.received == 3 and stream.dropped == 0
        stream.close()
        assert stream.closed
        with pytest.raises(StopIteration):
            next(stream)


@needs_mosquitto
def test_the_timeout_ends_the_iteration(broker, publisher):
    stream = answers(broker.url, namespace=NS, timeout=WAIT)
    publish(publisher, encode_answers([make_answer(4)]))
    assert next(stream).sample == 4
    stream.timeout = 0.1  # nothing more is published: the iteration ends after 0.1 s
    start = time.monotonic()
    assert list(stream) == []
    assert time.monotonic() - start >= 0.1
    assert stream.closed


@needs_mosquitto
def test_a_stream_nobody_holds_disconnects(broker):
    stream = answers(broker.url, namespace=NS)
    client = stream._client
    assert client is not None and client.is_connected()
    del stream
    gc.collect()
    assert not client.is_connected()


def test_bad_arguments_and_an_unreachable_broker():
    with pytest.raises(ValueError, match="timeout"):
        answers("mqtt://127.0.0.1:1", timeout=0)  # refused before connecting
    with pytest.raises(ValueError, match="scheme"):
        answers("http://127.0.0.1:1883")
    with pytest.raises(ValueError, match="namespace"):
        answers("mqtt://127.0.0.1:1", namespace="a/b")
    with pytest.raises(BrokerError, match="cannot reach"):
        answers(f"mqtt://127.0.0.1:{free_port()}", connect_timeout=0.3)


def test_ddnn_runtime_exports_answers_without_importing_torch_or_paho():
    assert ddnn.runtime.answers is answers and ddnn.runtime.Answer is Answer
    code = (
        "import sys, ddnn.runtime; "
        "print(sorted(m for m in ('torch', 'paho', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- ddnn watch -------------------------------------------------------------------------------


def watch_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ddnn")
    add_watch_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["watch", *argv])


def run_watch(broker: LocalBroker, publisher: paho.Client, payload: bytes, *argv: str) -> int:
    """Runs ``ddnn watch`` while ``payload`` is published over and over, until the watch ends.

    The watcher subscribes on its own schedule; whichever copy it gets first, one message holds
    all the answers, so what it prints does not depend on timing.
    """
    stop = threading.Event()

    def keep_publishing() -> None:
        deadline = time.monotonic() + WAIT
        while not stop.is_set() and time.monotonic() < deadline:
            publish(publisher, payload)
            stop.wait(0.05)

    thread = threading.Thread(target=keep_publishing)
    thread.start()
    try:
        args = watch_args("--broker", broker.url, "--namespace", NS, *argv)
        return int(args.func(args))
    finally:
        stop.set()
        thread.join()


@needs_mosquitto
def test_watch_prints_one_line_per_answer(broker, publisher, capsys):
    payload = encode_answers([make_answer(123), FAILED, make_answer(5)])
    assert run_watch(broker, publisher, payload, "--count", "2", "--timeout", str(WAIT)) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sample 123  cloud  cat (2)  0.93  missing [3]  12.3 ms  flags: cloud_timeout",
        "sample 9  FAILED  aggregator offline",
    ]


@needs_mosquitto
def test_watch_json_prints_one_object_per_line(broker, publisher, capsys):
    payload = encode_answers([make_answer(123), FAILED])
    assert run_watch(broker, publisher, payload, "--json", "--count", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    docs = [json.loads(line) for line in lines]
    assert docs[0] == {**vars(make_answer(123)), "latency_ms": pytest.approx(12.3)}
    assert docs[1]["error"] == "aggregator offline" and docs[1]["prediction"] == -1
    assert all(line == json.dumps(json.loads(line), separators=(",", ":")) for line in lines)


@needs_mosquitto
def test_watch_ends_with_status_1_when_the_timeout_comes_first(broker, capsys):
    args = watch_args("--broker", broker.url, "--namespace", NS, "--count", "3", "--timeout", "0.1")
    assert args.func(args) == 1
    assert "0 of 3 answers within a 0.1 s timeout" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "0"], "--count 0"),
        (["--timeout", "-1"], "--timeout -1"),
        (["--timeout", "nan"], "--timeout nan"),
    ],
)
def test_watch_refuses_bad_arguments_before_connecting(argv, message):
    args = watch_args("--broker", "mqtt://127.0.0.1:1", *argv)
    with pytest.raises(ValueError, match=message):
        args.func(args)


def test_answer_line_without_a_class_name_or_capture_time():
    answer = Answer(7, 4, "local", [0, 1], confidence=0.5)
    assert answer_line(answer) == "sample 7  local  class 4  0.50"


# -- the gateway's app, fed by hand (served by uvicorn on a free loopback port) ----------------
# Starlette's TestClient buffers a streamed body until the app ends in versions before 1.8, and
# an event stream never ends: a real server keeps these tests independent of that.


def wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {WAIT} s"
        time.sleep(0.01)


@contextmanager
def served(hub: AnswerHub, token: str | None = None, keepalive: float = 0.2) -> Iterator[str]:
    """``create_app(hub)`` served by uvicorn in a thread; yields its base URL."""
    sock = listen("127.0.0.1", 0)
    server = serve(create_app(hub, token=token, keepalive=keepalive), hub, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn started")
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()
    assert not thread.is_alive()


def sse_events(lines: Iterator[str], count: int) -> list[tuple[str, dict]]:
    """The next ``count`` events of an SSE stream (comments skipped); bounded by the stream's
    keep-alive comments and ``WAIT``."""
    events: list[tuple[str, dict]] = []
    name = ""
    deadline = time.monotonic() + WAIT
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: ") :])))
            if len(events) == count:
                break
        assert time.monotonic() < deadline, f"only {events} within {WAIT} s"
    return events


def as_json(answer: Answer) -> dict:
    return json.loads(json.dumps(answer_to_dict(answer)))


def test_latest_is_404_before_any_answer_then_the_newest():
    hub = AnswerHub()
    with served(hub) as url, httpx.Client(base_url=url, timeout=WAIT) as http:
        response = http.get("/answers/latest")
        assert response.status_code == 404 and response.json() == {"error": "no answer yet"}
        hub.feed([make_answer(1), make_answer(2)])
        response = http.get("/answers/latest")
        assert response.status_code == 200 and response.json() == as_json(make_answer(2))
        assert http.get("/nowhere").json() == {"error": "Not Found"}


def test_health_lists_node_statuses_the_link_and_counters():
    hub = AnswerHub("mqtt://broker:1883", NS)
    hub.feed_status("aggregator", "online")
    hub.feed_status("device_0", "done")
    hub.feed_status("device_1", "online")
    hub.feed_status("device_1", None)  # its retained status was cleared
    hub.feed([make_answer(1)])
    hub.count("malformed")
    with served(hub) as url, httpx.Client(base_url=url, timeout=WAIT) as http:
        response = http.get("/health")
        assert response.status_code == 503  # the MQTT link is down
        doc = response.json()
        assert doc["nodes"] == {"aggregator": "online", "device_0": "done"}
        assert doc["mqtt"] == {
            "broker": "mqtt://broker:1883",
            "namespace": NS,
            "connected": False,
            "error": None,
        }
        assert doc["counters"]["answers"] == 1 and doc["counters"]["malformed"] == 1
        assert doc["counters"]["dropped"] == 0 and doc["counters"]["streams"] == 0
        hub.connected = lambda: True
        assert http.get("/health").status_code == 200


def test_a_token_is_required_on_every_request_when_set():
    hub = AnswerHub()
    hub.connected = lambda: True
    with served(hub, token=TOKEN) as url, httpx.Client(base_url=url, timeout=WAIT) as http:
        for path in ("/health", "/answers/latest", "/answers", "/nowhere"):
            response = http.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
        for wrong in (
            f"Bearer {TOKEN}x",
            f"Basic {TOKEN}",
            TOKEN,
            "Bearer",
            f"Bearer {TOKEN[:-1]}",
        ):
            assert http.get("/health", headers={"Authorization": wrong}).status_code == 401
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/health", headers=ok).status_code == 200
        assert http.get("/answers/latest", headers=ok).status_code == 404


def test_the_stream_delivers_answers_fed_after_the_client_connected():
    hub = AnswerHub()
    with served(hub) as url, httpx.Client(base_url=url, timeout=WAIT) as http:
        with http.stream("GET", "/answers") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            assert next(lines) == ": connected"  # subscribed: nothing fed from now on is missed
            hub.feed([make_answer(1), FAILED])
            hub.feed([make_answer(2)])
            events = sse_events(lines, 3)
            assert [name for name, _ in events] == ["answer"] * 3
            assert [doc for _, doc in events] == [
                as_json(a) for a in (make_answer(1), FAILED, make_answer(2))
            ]
            assert events[0][1]["latency_ms"] == pytest.approx(12.3)
            assert hub.health()["counters"]["streams"] == 1
            hub.close()  # the server is stopping: the stream ends
            assert [line for line in lines if line and not line.startswith(":")] == []
        wait_until(lambda: hub.health()["counters"]["streams"] == 0, "the stream closed")


def test_a_slow_client_loses_its_oldest_answers_and_is_told():
    hub = AnswerHub(queue_size=2)
    with served(hub) as url, httpx.Client(base_url=url, timeout=WAIT) as http:
        with http.stream("GET", "/answers") as response:
            lines = response.iter_lines()
            assert next(lines) == ": connected"
            hub.feed([make_answer(s) for s in range(5)])  # one batch: 3 do not fit the queue
            events = sse_events(lines, 3)
    assert events[0] == ("dropped", {"dropped": 3})
    assert [doc["sample"] for _, doc in events[1:]] == [3, 4]
    assert hub.health()["counters"]["dropped"] == 3


def test_streams_beyond_the_limit_are_refused():
    hub = AnswerHub(max_streams=1)
    with served(hub) as url, httpx.Client(base_url=url, timeout=WAIT) as http:
        with http.stream("GET", "/answers") as response:
            lines = response.iter_lines()  # held: dropping it would close the connection
            assert next(lines) == ": connected"
            refused = http.get("/answers")
            assert refused.status_code == 503 and "too many" in refused.json()["error"]
        assert hub.health()["counters"]["streams_refused"] == 1
        wait_until(lambda: hub.health()["counters"]["streams"] == 0, "the stream closed")
        with http.stream("GET", "/answers") as response:  # its place is free again
            lines = response.iter_lines()
            assert next(lines) == ": connected"


def test_the_bridge_counts_bad_messages_and_never_raises():
    hub = AnswerHub()
    bridge = object.__new__(MqttBridge)  # its handler alone, without a broker
    bridge.topics, bridge.hub, bridge._status_prefix = TOPICS, hub, TOPICS.status("")
    bridge._stats_prefix = TOPICS.stats("")
    for topic, payload in [
        (TOPICS.results, encode_answers([make_answer(3)])),
        (TOPICS.results, b"[1, 2"),
        (TOPICS.status("cloud"), b"online"),
        (TOPICS.status("edge_0"), b"rebooting"),
    ]:
        msg = paho.MQTTMessage(topic=topic.encode())
        msg.payload = payload
        bridge.handle(msg)
    doc = hub.health()
    assert hub.latest == make_answer(3) and doc["nodes"] == {"cloud": "online"}
    assert doc["counters"]["malformed"] == 1 and doc["counters"]["malformed_status"] == 1


def test_a_secure_gateway_needs_a_strong_token(monkeypatch):
    assert check_token(None, secure=False) is None
    assert check_token(TOKEN, secure=True) == TOKEN
    with pytest.raises(ValueError, match="needs a token"):
        check_token("", secure=True)
    with pytest.raises(ValueError, match="at least 16"):
        check_token("short", secure=False)
    parser = argparse.ArgumentParser(prog="ddnn")
    add_gateway_parser(parser.add_subparsers(dest="command", required=True))
    monkeypatch.delenv("DDNN_GATEWAY_TOKEN", raising=False)
    for argv in (["--secure"], ["--broker", "mqtts://127.0.0.1:1"]):
        args = parser.parse_args(
            ["gateway", "--broker", "mqtt://127.0.0.1:1", "--port", "1", *argv]
        )
        with pytest.raises(ValueError, match="needs a token"):  # before connecting or binding
            args.func(args)


def test_listen_refuses_a_port_in_use():
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(ValueError, match="cannot listen on 127.0.0.1"):
            listen("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    with pytest.raises(ValueError, match="--port"):
        listen("127.0.0.1", 70000)


# -- the gateway end to end --------------------------------------------------------------------


@needs_mosquitto
def test_gateway_end_to_end_over_uvicorn_and_mosquitto(broker, publisher):
    retained = publisher.publish(TOPICS.status("aggregator"), b"online", qos=1, retain=True)
    retained.wait_for_publish(5)
    hub = AnswerHub()
    bridge = MqttBridge(broker.settings(), TOPICS, hub)  # subscribed when it returns
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with served(hub, token=TOKEN, keepalive=15) as url:
            assert httpx.get(f"{url}/health").status_code == 401
            with httpx.Client(base_url=url, headers=auth, timeout=WAIT) as http:
                health = http.get("/health")
                assert health.status_code == 200, health.text
                assert health.json()["nodes"] == {"aggregator": "online"}
                assert health.json()["mqtt"]["connected"] is True
                with http.stream("GET", "/answers") as response:
                    lines = response.iter_lines()
                    assert next(lines) == ": connected"
                    publish(publisher, encode_answers([make_answer(42)]))
                    assert sse_events(lines, 1) == [("answer", as_json(make_answer(42)))]
                assert http.get("/answers/latest").json() == as_json(make_answer(42))
    finally:
        bridge.close()
