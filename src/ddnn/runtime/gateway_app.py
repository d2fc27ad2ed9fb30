"""The gateway's HTTP side (Starlette): what ``ddnn gateway`` serves, testable without a broker.

==========================  ===================================================================
endpoint                    what it returns
==========================  ===================================================================
``GET /answers``            Server-Sent Events: a ``: connected`` comment at once (from then
                            on nothing is missed), then ``event: answer`` with one answer's
                            JSON per answer as it arrives; a ``: keep-alive`` comment every
                            15 s; an ``event: dropped`` (``{"dropped": N}``) when this client
                            was too slow and its N oldest answers were dropped; 503 beyond 64
                            clients
``GET /answers/latest``     the most recent answer (JSON); 404 before the first
``GET /health``             node statuses (retained ``status/NODE``), the gateway's MQTT link
                            and counters; 503 while the link is down
``GET /metrics``            the whole deployment's Prometheus metrics (every node's latest
                            ``stats/NODE``, :mod:`ddnn.runtime.metrics`); ``?node=NAME``
                            (repeatable) keeps the per-node series of those nodes (400 for a
                            node never heard of)
``GET /``                   the live dashboard (static page, plain JavaScript, no CDN)
``GET /dashboard/state``    the dashboard's JSON (:mod:`ddnn.runtime.deployment_view`)
``GET /dashboard/events``   Server-Sent Events: ``event: state`` with that JSON every second
==========================  ===================================================================

:class:`AnswerHub` is fed from any thread (the MQTT bridge feeds it on paho's) and hands answers
to the event loop with ``call_soon_threadsafe``. Each ``/answers`` client has a bounded queue
(the oldest answers go first, counted), so a slow client cannot make the gateway's memory grow.
With a token, every request must carry ``Authorization: Bearer <token>`` or the cookie
``ddnn_token`` (401 otherwise); a browser opens ``/?token=TOKEN`` once, which sets the cookie
(HttpOnly, SameSite=Strict) and redirects to ``/`` so the token leaves the address bar.
Starlette is imported when the app is created, not when the CLI is built.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from ddnn.runtime.answers import answer_to_json
from ddnn.runtime.deployment_view import DeploymentView

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

    from ddnn.runtime.messages import Answer

__all__ = ["AnswerHub", "BearerAuth", "create_app"]

KEEPALIVE_S = 15.0  # proxies close idle connections; a comment keeps the stream open
STREAM_QUEUE = 256  # answers held per /answers client before its oldest are dropped
MAX_STREAMS = 64  # concurrent /answers clients
MAX_NODES = 1024  # node statuses kept (the status topic is open to every node)
MAX_NODE_NAME = 128
STATE_EVERY_S = 1.0  # s between dashboard states on /dashboard/events
TOKEN_COOKIE = "ddnn_token"
PAGE_POLICY = "default-src 'self'; img-src 'self' data:"  # the page runs nothing from elsewhere
PAGE_FILES = {  # path -> (file in ddnn/runtime/dashboard, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
COUNTERS = (  # always in /health, zero or not
    "answers",
    "malformed",
    "malformed_status",
    "malformed_stats",
    "status_ignored",
    "handler_error",
    "dropped",
    "streams_refused",
)


class _Stream:
    """One ``/answers`` client: a bounded queue of encoded events (``None`` ends the stream)."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: bytes | None) -> int:
        """Queues ``event``, dropping the oldest when full; returns how many were dropped."""
        dropped = 0
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
            dropped = 1
        self.queue.put_nowait(event)
        return dropped


class AnswerHub:
    """What the gateway serves: the latest answer, node statuses, counters and live streams.

    :meth:`feed`, :meth:`feed_status`, :meth:`count` and :meth:`close` may be called from any
    thread (the MQTT bridge calls them on paho's); streams are served on the event loop the app
    attaches at start-up.

    Args:
        broker: Broker URL shown by ``/health`` (without credentials).
        namespace: Deployment namespace shown by ``/health``.
        queue_size: Answers held per ``/answers`` client before its oldest are dropped.
        max_streams: Concurrent ``/answers`` clients (more get 503).
    """

    def __init__(
        self,
        broker: str = "",
        namespace: str = "",
        queue_size: int = STREAM_QUEUE,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.broker = broker
        self.namespace = namespace
        self.queue_size = queue_size
        self.max_streams = max_streams
        self.latest: Answer | None = None
        self.nodes: dict[str, str] = {}
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.connected: Callable[[], bool] = lambda: False  # set by the MQTT bridge
        self.mqtt_error = ""
        self.closed = False
        self._lock = threading.Lock()
        self._streams: set[_Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.view = DeploymentView()  # for /metrics and the dashboard

    # -- any thread ------------------------------------------------------------------------------

    def feed(self, answers: list[Answer]) -> None:
        """Publishes answers (in order) to the latest slot and to every open stream."""
        if not answers:
            return
        events = [b"event: answer\ndata: " + answer_to_json(a).encode() + b"\n\n" for a in answers]
        self.view.feed_answers(answers)
        with self._lock:
            self.counters["answers"] += len(answers)
            self.latest = answers[-1]
            loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._fan_out, events)
            except RuntimeError:  # the loop has closed: the gateway is stopping
                pass

    def feed_status(self, node: str, status: str | None) -> None:
        """Records a node's status (``None``: its retained status was cleared)."""
        self.view.feed_status(node, status)
        with self._lock:
            if status is None:
                self.nodes.pop(node, None)
            elif node in self.nodes or (
                len(self.nodes) < MAX_NODES and 0 < len(node) <= MAX_NODE_NAME
            ):
                self.nodes[node] = status
            else:
                self.counters["status_ignored"] += 1

    def feed_stats(self, snapshot: dict[str, Any]) -> None:
        """A node's checked stats snapshot (:func:`ddnn.runtime.metrics.parse_snapshot`)."""
        self.view.feed_snapshot(snapshot)

    def dashboard_state(self) -> dict[str, Any]:
        broker = {
            "url": self.broker,
            "connected": bool(self.connected()),
            "error": self.mqtt_error or ("" if self.connected() else "not connected"),
        }
        return self.view.state(broker, self.namespace)

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def close(self) -> None:
        """Ends every stream (the server is stopping); new streams end at once."""
        self.closed = True
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._end_streams)
        except RuntimeError:
            pass

    def health(self) -> dict[str, Any]:
        """The ``/health`` document: node statuses, the MQTT link, counters."""
        with self._lock:
            counters = {**self.counters, "streams": len(self._streams)}
            nodes = dict(sorted(self.nodes.items()))
        mqtt = {
            "broker": self.broker,
            "namespace": self.namespace,
            "connected": bool(self.connected()),
            "error": self.mqtt_error or None,
        }
        return {"nodes": nodes, "mqtt": mqtt, "counters": counters}

    # -- the event loop --------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Streams are served on ``loop`` from now on (the app's lifespan calls this)."""
        self._loop = loop

    def detach(self) -> None:
        self._end_streams()
        self._loop = None

    def open_stream(self) -> _Stream | None:
        """A new client's queue, or ``None`` when there are ``max_streams`` already."""
        if len(self._streams) >= self.max_streams:
            self.count("streams_refused")
            return None
        stream = _Stream(self.queue_size)
        if self.closed:
            stream.offer(None)
        with self._lock:
            self._streams.add(stream)
        return stream

    def close_stream(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _fan_out(self, events: list[bytes]) -> None:
        dropped = 0
        for stream in list(self._streams):
            for event in events:
                dropped += stream.offer(event)
        if dropped:
            with self._lock:
                self.counters["dropped"] += dropped

    def _end_streams(self) -> None:
        for stream in list(self._streams):
            stream.offer(None)


class BearerAuth:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``.

    The token is compared in constant time (:func:`hmac.compare_digest`); a request without it
    or with another gets 401 and a JSON error.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            from starlette.responses import JSONResponse

            error = {"error": "missing or wrong token: send Authorization: Bearer <token>"}
            auth = {"WWW-Authenticate": 'Bearer realm="ddnn"'}
            await JSONResponse(error, 401, headers=auth)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        headers = scope.get("headers", [])
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if len(values) == 1:
            scheme, _, given = bytes(values[0]).strip().partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        if values:
            return False
        for k, v in headers:  # a browser: the cookie set by /?token=…
            if k.lower() == b"cookie":
                for part in bytes(v).split(b";"):
                    name, _, given = part.strip().partition(b"=")
                    if name == TOKEN_COOKIE.encode() and hmac.compare_digest(given, self.token):
                        return True
        if scope.get("path") == "/":  # the dashboard's first visit carries ?token=…
            for part in bytes(scope.get("query_string", b"")).split(b"&"):
                name, _, given = part.partition(b"=")
                if name == b"token" and hmac.compare_digest(unquote_to_bytes(given), self.token):
                    return True
        return False


class _CloseAfter:
    """An ASGI response that runs ``on_close`` however it ends (done, disconnect, cancel)."""

    def __init__(self, response: Response, on_close: Callable[[], None]) -> None:
        self.response = response
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.on_close()


async def _events(stream: _Stream, keepalive: float) -> AsyncIterator[bytes]:
    yield b": connected\n\n"  # sends the headers at once; after it, no answer is missed
    reported = 0
    while True:
        try:
            event = await asyncio.wait_for(stream.queue.get(), keepalive)
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        if event is None:
            return
        if stream.dropped > reported:
            yield b'event: dropped\ndata: {"dropped":%d}\n\n' % (stream.dropped - reported)
            reported = stream.dropped
        yield event


async def _states(source: AnswerHub, every: float) -> AsyncIterator[bytes]:
    """The dashboard's stream: a state at once, then one every ``every`` seconds, until the
    gateway stops."""
    import orjson

    while not source.closed:
        yield b"event: state\ndata: " + orjson.dumps(source.dashboard_state()) + b"\n\n"
        await asyncio.sleep(every)


def create_app(
    source: AnswerHub, *, token: str | None = None, keepalive: float = KEEPALIVE_S
) -> Starlette:
    """The gateway's HTTP application, serving what ``source`` is fed.

    Its lifespan attaches ``source`` to the serving event loop (uvicorn runs it; with
    Starlette's ``TestClient``, enter it as a context manager). Errors are JSON
    ``{"error": …}``.

    Args:
        source: The hub the MQTT bridge feeds (tests feed it directly).
        token: When given, every request needs ``Authorization: Bearer <token>``.
        keepalive: Seconds between keep-alive comments on an idle ``/answers`` stream.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def stream_answers(_request: Request) -> Any:
        stream = source.open_stream()
        if stream is None:
            return JSONResponse({"error": f"too many streams (at most {source.max_streams})"}, 503)
        response = StreamingResponse(
            _events(stream, keepalive),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        return _CloseAfter(response, lambda: source.close_stream(stream))

    async def latest(_request: Request) -> Response:
        answer = source.latest
        if answer is None:
            return JSONResponse({"error": "no answer yet"}, 404)
        return Response(answer_to_json(answer), media_type="application/json")

    async def health(_request: Request) -> Response:
        doc = source.health()
        ok = doc["mqtt"]["connected"] and not doc["mqtt"]["error"]
        return JSONResponse(doc, 200 if ok else 503)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        from ddnn.runtime.metrics import render

        snapshots, up, now = source.view.metrics_source()
        wanted = request.query_params.getlist("node")
        if wanted:
            known = set(snapshots) | set(up)
            unknown = [n for n in wanted if n not in known]
            if unknown:
                listed = ", ".join(sorted(known)) or "none yet"
                return JSONResponse(
                    {"error": f"unknown node {unknown[0]!r}; known nodes: {listed}"}, 400
                )
            snapshots = {n: s for n, s in snapshots.items() if n in wanted}
            up = {n: u for n, u in up.items() if n in wanted}
        body = render(snapshots, up, now)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        name, media = PAGE_FILES[request.url.path]
        body = resources.files("ddnn.runtime").joinpath("dashboard", name).read_bytes()
        if request.url.path == "/" and token and "token" in request.query_params:
            response: Response = RedirectResponse("./", 303)  # the token leaves the address bar
            response.set_cookie(
                TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=request.url.is_secure
            )
            return response
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}
        return Response(body, media_type=media, headers=headers)

    async def dashboard_state(_request: Request) -> Response:
        return JSONResponse(source.dashboard_state())

    async def dashboard_events(_request: Request) -> Any:
        return StreamingResponse(
            _states(source, STATE_EVERY_S),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        source.attach(asyncio.get_running_loop())
        try:
            yield
        finally:
            source.detach()

    return Starlette(
        routes=[
            Route("/answers", stream_answers),
            Route("/answers/latest", latest),
            Route("/health", health),
            Route("/metrics", metrics),
            *(Route(path, page) for path in PAGE_FILES),
            Route("/dashboard/state", dashboard_state),
            Route("/dashboard/events", dashboard_events),
        ],
        middleware=[Middleware(BearerAuth, token=token)] if token else [],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
