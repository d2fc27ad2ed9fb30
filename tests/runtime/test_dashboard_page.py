"""The operator dashboard page in a headless Chromium, against a fake gateway the test drives.

The fake serves the page's three static files and a state feed (``dashboard/state`` and the
``dashboard/events`` stream) from a tiny Starlette app on a free loopback port; the test decides
what the feed says, when it goes silent and when it answers 503. Set ``DDNN_DASHBOARD_SCREENSHOT``
to a path to keep the screenshot of the realistic state (``docs/img/dashboard-dev.png``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from browser import chromium_available, headless_chromium, node_health, wait_for, why_unavailable

import ddnn.runtime

pytestmark = pytest.mark.skipif(not chromium_available(), reason=why_unavailable() or "no browser")

PAGE = Path(ddnn.runtime.__file__).parent / "dashboard"
PREFIX = "/site/field-7/"  # the page must work under a path prefix: all its URLs are relative
FILES = {"": "index.html", "dashboard.js": "dashboard.js", "dashboard.css": "dashboard.css"}
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
CSP = "default-src 'self'; img-src 'self' data:"  # all from the gateway itself: works offline
RESEND_S = 0.3  # the fake's "about once per second", faster so that tests are short


def node(name: str, role: str, links: dict[str, str], **fields: Any) -> dict[str, Any]:
    row = {"name": name, "role": role, "health": "online", "stats_age_s": 0.5, "links": links}
    return row | {"memory_bytes": 50_000_000, "cache_samples": None} | fields


def link(sender: str, receiver: str, message: str, rate: float) -> dict[str, Any]:
    return {"from": sender, "to": receiver, "message": message, "bytes_per_s": rate}


def answer(
    sample: int, class_name: str, exit_: str, latency_ms: float, **fields: Any
) -> dict[str, Any]:
    row = {"sample": sample, "class_name": class_name, "exit": exit_, "confidence": 0.9}
    row |= {"missing": [], "latency_ms": latency_ms, "model_version": 0x12345678}
    return row | {"failed": False, "error": "", "flags": []} | fields


def realistic_state(**changes: Any) -> dict[str, Any]:
    """6 devices in two groups of three under edge_0 and edge_1, an aggregator, a cloud, a
    trigger, and a minute of answers; ``changes`` replace top-level keys."""
    nodes = [
        node(
            f"device_{k}",
            "device",
            {"scores": "aggregator", "features": f"edge_{k // 3}"},
            stats_age_s=0.3 + 0.1 * k,
            cache_samples=12 + k,
        )
        for k in range(6)
    ]
    nodes[4].update(health="late", stats_age_s=4.2)
    nodes += [
        node("aggregator", "aggregator", {"answers": "results"}, memory_bytes=90_000_000),
        node("edge_0", "edge", {"scores": "aggregator", "features": "cloud"}, cache_samples=3),
        node("edge_1", "edge", {"scores": "aggregator", "features": "cloud"}, cache_samples=5),
        node("cloud", "cloud", {}, memory_bytes=400_000_000),
        node("trigger", "trigger", {}, health="done", stats_age_s=None, memory_bytes=0),
    ]
    links = [link(f"device_{k}", "aggregator", "scores", 530.5 - 10 * k) for k in range(6)]
    links += [link(f"device_{k}", f"edge_{k // 3}", "features", 20.0 + 4 * k) for k in range(6)]
    links += [
        link("edge_0", "aggregator", "scores", 41.0),
        link("edge_1", "aggregator", "scores", 38.5),
    ]
    links += [link("edge_0", "cloud", "features", 80.0), link("edge_1", "cloud", "features", 64.0)]
    classes = ["car", "bus", "person", "car", "car", "bus", "person", "car", "bus", "car"]
    exits = ["local", "local", "edge", "local", "cloud", "local", "local", "edge", "local", "local"]
    answers = [
        answer(
            2417 - i,
            name,
            exit_,
            4.2 + (9.0 if exit_ != "local" else 0) + 0.7 * i,
            confidence=0.97 - 0.03 * i,
        )
        for i, (name, exit_) in enumerate(zip(classes, exits, strict=True))
    ]
    for degraded in (answers[1], answers[6]):
        degraded.update(missing=[4], flags=["degraded"])
    answers[3].update(failed=True, exit="cloud", class_name="", confidence=None, latency_ms=2000.0)
    answers[3]["error"] = "no cloud answer within 2.0 s"
    raw = {"sent_bytes_per_s": 550.5, "raw_bytes_per_s": 30720.0}
    absence = {"rate": 0.0, "absent": 0, "answers": 142}
    state = {
        "schema": 1,
        "time": time.time(),
        "namespace": "field-7",
        "broker": {"url": "mqtts://broker.site:8883", "connected": True, "error": ""},
        "nodes": nodes,
        "exits": {"window_s": 60, "local": 118, "edge": 14, "cloud": 9, "failed": 1, "degraded": 6},
        "links": links,
        "raw": [{"device": f"device_{k}"} | raw for k in range(6)],
        "latency_ms": {
            "local": {"p50": 4.1, "p99": 20.3, "count": 118},
            "edge": {"p50": 9.6, "p99": 31.0, "count": 14},
            "cloud": {"p50": 12.0, "p99": 40.1, "count": 9},
        },
        "answers": answers,
        "absence": [{"device": f"device_{k}"} | absence for k in range(6)],
    }
    state["absence"][4].update(rate=0.04, absent=6)
    for k, row in enumerate(state["raw"]):
        row["sent_bytes_per_s"] -= 6 * k
    return state | changes


def with_health(state: dict[str, Any], name: str, health: str) -> dict[str, Any]:
    changed = copy.deepcopy(state)
    for node in changed["nodes"]:
        if node["name"] == name:
            node.update(health=health, stats_age_s=None if health == "offline" else 0.1)
    return changed


class FakeGateway:
    """The page's files and a state feed the test drives, served by uvicorn in a thread.

    The stream sends the current state every ``RESEND_S`` and any raw ``data`` line queued by
    :meth:`inject` once; :meth:`fail` ends every open stream and answers 503 from then on,
    :meth:`silence` keeps streams open but sends only keep-alive comments.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = json.dumps(state)
        self.raw: queue.Queue[str] = queue.Queue()
        self.failing = threading.Event()
        self.silent = threading.Event()
        self.closing = threading.Event()
        self.refused = 0  # requests answered 503 while failing

    def publish(self, state: dict[str, Any]) -> None:
        self.state = json.dumps(state)

    def inject(self, data: str) -> None:
        self.raw.put(data)

    def fail(self) -> None:
        self.failing.set()

    def recover(self) -> None:
        self.failing.clear()
        self.silent.clear()

    def silence(self) -> None:
        self.silent.set()

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import Response, StreamingResponse
        from starlette.routing import Route

        def static(request: Any) -> Response:
            name = FILES[request.url.path.removeprefix(PREFIX)]
            body = (PAGE / name).read_bytes()
            headers = {"Content-Security-Policy": CSP}  # the page needs nothing looser
            return Response(body, media_type=TYPES[Path(name).suffix], headers=headers)

        def refused() -> Response:
            self.refused += 1
            return Response("gateway down", status_code=503, media_type="text/plain")

        def state(request: Any) -> Response:
            if self.failing.is_set():
                return refused()
            return Response(self.state, media_type="application/json")

        async def stream() -> Any:
            yield ": connected\n\n"
            last = 0.0
            while not (self.failing.is_set() or self.closing.is_set()):
                try:
                    yield f"event: state\ndata: {self.raw.get_nowait()}\n\n"
                    continue
                except queue.Empty:
                    pass
                if time.monotonic() - last >= RESEND_S:
                    last = time.monotonic()
                    yield (
                        ": keep-alive\n\n"
                        if self.silent.is_set()
                        else f"event: state\ndata: {self.state}\n\n"
                    )
                await asyncio.sleep(0.05)

        def events(request: Any) -> Response:
            if self.failing.is_set():
                return refused()
            return StreamingResponse(
                stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )

        routes = [Route(PREFIX + path, static) for path in FILES]
        routes += [
            Route(f"{PREFIX}dashboard/state", state),
            Route(f"{PREFIX}dashboard/events", events),
        ]
        return Starlette(routes=routes)

    @contextmanager
    def serve(self) -> Iterator[str]:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.started, "the fake gateway did not start"
            yield f"http://127.0.0.1:{sock.getsockname()[1]}{PREFIX}"
        finally:
            self.closing.set()
            server.should_exit = True
            thread.join(10)
            sock.close()
        assert not thread.is_alive(), "the fake gateway did not stop"


@contextmanager
def dashboard(state: dict[str, Any]) -> Iterator[tuple[FakeGateway, Any]]:
    """A fake gateway serving ``state`` and a browser showing its page (first state drawn)."""
    gateway = FakeGateway(state)
    with gateway.serve() as url, headless_chromium() as driver:
        driver.get(url)
        wait_for(
            driver,
            "document.querySelectorAll('[data-node]').length > 0",
            10,
            "the first state drawn",
        )
        yield gateway, driver


def banner(driver: Any) -> tuple[str, str]:
    return driver.execute_script(
        "const b = document.getElementById('connection'); return [b.dataset.state, b.textContent];"
    )


def text_of(driver: Any, selector: str) -> str:
    """The text of the first element matching ``selector``, read in one step (the page replaces
    its table rows on every update, so a held element reference can go stale)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector
    )


def console_errors(driver: Any) -> list[str]:
    """Errors the page logged: uncaught exceptions, refused loads (CSP, 404), failed requests."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_every_node_shows_its_health_and_follows_later_states(tmp_path):
    state = realistic_state()
    expected = {node["name"]: node["health"] for node in state["nodes"]}
    with dashboard(state) as (gateway, driver):
        wait_for(driver, lambda d: node_health(d) == expected, 5, f"node health {expected}")
        text = text_of(driver, "[data-node='edge_1']")
        assert "edge_1" in text and "online" in text, "name and health in words, not colour alone"
        answered = text_of(driver, "#answered-last-minute")
        assert answered == str(118 + 14 + 9 + 1), "local + edge + cloud + failed"
        assert banner(driver)[0] == "live"
        assert "56× less" in text_of(driver, "tr[data-device='device_0']")
        answers = text_of(driver, "#answer-rows")
        assert "0x12345678" in answers and "no cloud answer within 2.0 s" in answers

        driver.set_window_size(
            1280, driver.execute_script("return document.body.scrollHeight") + 20
        )
        shot = Path(os.environ.get("DDNN_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        gateway.publish(with_health(state, "device_2", "offline"))
        wait_for(
            driver, lambda d: node_health(d).get("device_2") == "offline", 5, "device_2 offline"
        )
        assert node_health(driver) == {**expected, "device_2": "offline"}
        assert console_errors(driver) == []


def test_nodes_that_come_and_go_are_drawn_and_removed():
    state = realistic_state()
    with dashboard(state) as (gateway, driver):
        later = copy.deepcopy(state)
        later["nodes"] = [n for n in later["nodes"] if n["name"] != "edge_1"]
        later["nodes"].append(
            {"name": "device_6", "role": "device", "health": "unknown", "links": {}}
        )
        gateway.publish(later)
        wait_for(driver, lambda d: node_health(d).get("device_6") == "unknown", 5, "device_6 drawn")
        assert "edge_1" not in node_health(driver)


def test_broker_down_shows_the_banner_and_clears_when_back():
    state = realistic_state()
    with dashboard(state) as (gateway, driver):
        wait_for(driver, lambda d: banner(d)[0] == "live", 5, "the live banner")
        down = realistic_state(
            broker={"url": "mqtt://x:1883", "connected": False, "error": "refused"}
        )
        gateway.publish(down)
        wait_for(driver, lambda d: banner(d)[0] == "broker-down", 5, "the broker-down banner")
        assert "Broker disconnected: refused" in banner(driver)[1]
        gateway.publish(state)
        wait_for(driver, lambda d: banner(d)[0] == "live", 5, "the live banner again")


def test_a_failed_or_silent_stream_shows_gateway_down_and_recovers():
    with dashboard(realistic_state()) as (gateway, driver):
        wait_for(driver, lambda d: banner(d)[0] == "live", 5, "the live banner")
        gateway.fail()  # streams end; reconnects are answered 503, which EventSource gives up on
        wait_for(driver, lambda d: banner(d)[0] == "gateway-down", 6, "gateway-down after a 503")
        assert "Gateway unreachable — retrying" in banner(driver)[1]
        wait_for(driver, lambda d: gateway.refused > 0, 6, "the page retrying into a 503")
        wait_for(driver, lambda d: "(HTTP 503)" in banner(d)[1], 3, "the refusal's status shown")
        gateway.recover()
        wait_for(driver, lambda d: banner(d)[0] == "live", 8, "live again after the 503s")

        gateway.silence()  # the stream stays open, but no state comes
        wait_for(driver, lambda d: banner(d)[0] == "gateway-down", 7, "gateway-down when stale")
        gateway.recover()
        wait_for(driver, lambda d: banner(d)[0] == "live", 3, "live once states come again")


def test_a_malformed_event_is_noted_and_later_updates_still_show():
    state = realistic_state()
    garbage = {
        "schema": 1,
        "nodes": "x",
        "exits": {"local": "many"},
        "links": [None, 5],
        "raw": "nope",
        "latency_ms": [],
        "answers": [None, 5, {"sample": "x"}],
        "absence": [{}],
        "broker": None,
    }
    with dashboard(state) as (gateway, driver):
        gateway.inject("{not json")
        wait_for(driver, "!document.getElementById('page-error').hidden", 5, "the error note")
        assert "malformed JSON" in text_of(driver, "#page-error")
        gateway.silence()  # so that the garbage below stays on the page to be looked at
        gateway.inject(json.dumps(garbage))  # well-formed JSON with every field wrong
        wait_for(driver, lambda d: node_health(d) == {}, 5, "the garbage state drawn")
        assert text_of(driver, "#answered-last-minute") == "0"
        assert text_of(driver, "#page-error").startswith("Ignored 1 update"), "drawn, not thrown"
        gateway.recover()
        gateway.publish(with_health(state, "device_0", "offline"))
        wait_for(driver, lambda d: node_health(d).get("device_0") == "offline", 5, "a later update")
        assert console_errors(driver) == []
