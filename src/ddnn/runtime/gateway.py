"""``ddnn gateway``: a deployment's answers, metrics and live dashboard over HTTP (Starlette +
uvicorn).

:class:`MqttBridge` subscribes to the results, status and stats topics and feeds an
:class:`~ddnn.runtime.gateway_app.AnswerHub` on paho's thread; the hub hands answers to the
event loop of the app (:func:`~ddnn.runtime.gateway_app.create_app`, endpoints documented
there), which uvicorn serves. A secure gateway (``--secure``, or an ``mqtts://`` broker)
refuses to start without a token. uvicorn is imported when the gateway starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ddnn.runtime.answers import connect_observer, disconnect_observer
from ddnn.runtime.gateway_app import AnswerHub, create_app

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    import uvicorn
    from starlette.applications import Starlette

    from ddnn.runtime.mqtt import BrokerSettings
    from ddnn.runtime.protocol import Topics

__all__ = [
    "AnswerHub",
    "MqttBridge",
    "add_gateway_parser",
    "check_token",
    "cmd_gateway",
    "create_app",
    "listen",
    "serve",
]

log = logging.getLogger(__name__)

MIN_TOKEN = 16
TOKEN_ENV = "DDNN_GATEWAY_TOKEN"


class MqttBridge:
    """Feeds an :class:`AnswerHub` from a deployment's results and status topics.

    Args:
        settings: Broker address, TLS and login (it must be allowed to read ``results`` and
            ``status/+``: the ``client`` login of a ``--secure`` deployment).
        topics: The deployment's topics.
        hub: What to feed.
        connect_timeout: Seconds to keep retrying an unreachable broker.

    Raises:
        BrokerError: The broker is unreachable or refused the login or the subscriptions.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        topics: Topics,
        hub: AnswerHub,
        connect_timeout: float = 10.0,
    ) -> None:
        self.topics = topics
        self.hub = hub
        self._status_prefix = topics.status("")
        self._stats_prefix = topics.stats("")
        self._closed = False
        hub.broker, hub.namespace = settings.url, topics.namespace
        self.client = connect_observer(
            settings,
            topics,
            "gateway",
            self.handle,
            [(topics.results, 1), (topics.status("+"), 1), (topics.stats("+"), 0)],
            on_taken_over=self._taken_over,
            connect_timeout=connect_timeout,
        )
        hub.connected = self.client.is_connected

    def handle(self, msg: paho.MQTTMessage) -> None:
        """One message (on paho's thread): parsed, counted if bad, never raised."""
        from ddnn.runtime.messages import MessageError, parse_answers, parse_status
        from ddnn.runtime.metrics import parse_snapshot

        try:
            if msg.topic == self.topics.results:
                try:
                    self.hub.feed(parse_answers(msg.payload))
                except MessageError as exc:
                    self.hub.count("malformed")
                    log.warning("malformed results message skipped: %s", exc)
            elif msg.topic.startswith(self._stats_prefix):
                node = msg.topic[len(self._stats_prefix) :]
                try:
                    self.hub.feed_stats(parse_snapshot(msg.payload, node))
                except MessageError as exc:
                    self.hub.count("malformed_stats")
                    log.warning("malformed stats of %r skipped: %s", node[:64], exc)
            elif msg.topic.startswith(self._status_prefix):
                node = msg.topic[len(self._status_prefix) :]
                if not msg.payload:  # a retained status was cleared
                    self.hub.feed_status(node, None)
                    return
                try:
                    self.hub.feed_status(node, parse_status(msg.payload))
                except MessageError as exc:
                    self.hub.count("malformed_status")
                    log.warning("malformed status of %r skipped: %s", node, exc)
        except Exception:  # an exception would end paho's network thread
            self.hub.count("handler_error")
            log.exception("error handling a message on %s", msg.topic)

    def _taken_over(self) -> None:
        self.hub.mqtt_error = (
            "another client logged in with this gateway's client id (a --secure broker uses "
            "the login as client id): give each gateway and watcher its own login"
        )
        log.error("ddnn gateway: %s", self.hub.mqtt_error)

    def close(self) -> None:
        """Disconnects and ends the broker session (idempotent)."""
        if not self._closed:
            self._closed = True
            disconnect_observer(self.client)


def check_token(token: str | None, secure: bool) -> str | None:
    """The token to enforce (``None``: none), or a ``ValueError`` saying what is required."""
    if not token:
        if secure:
            raise ValueError(
                "a secure gateway (--secure, or an mqtts:// broker) needs a token: give "
                f"--token T or set ${TOKEN_ENV}"
            )
        return None
    if len(token) < MIN_TOKEN or not (token.isascii() and token.isprintable()) or " " in token:
        raise ValueError(
            f"the gateway token must be at least {MIN_TOKEN} printable ASCII characters without "
            "spaces; make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return token


def listen(bind: str, port: int) -> socket.socket:
    """A TCP socket listening on ``bind:port`` (port 0: any free port), for :func:`serve`.

    Raises:
        ValueError: A bad port, an address that does not resolve, or one in use.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: give a TCP port in 0..65535 (0: any free port)")
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise ValueError(f"--bind {bind!r}: not an address of this machine ({exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    app: Starlette,
    hub: AnswerHub,
    sock: socket.socket,
    verbose: bool = False,
    on_stop: Callable[[], None] | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``sock``; run it with ``server.run(sockets=[sock])``.

    When it stops (SIGINT/SIGTERM, or ``server.should_exit = True``) it first ends every
    ``/answers`` stream, so that open streams do not hold the shutdown up, then calls
    ``on_stop`` (before uvicorn raises a caught SIGTERM again, which ends the process).
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            hub.close()
            await super().shutdown(sockets)
            if on_stop is not None:
                on_stop()

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info" if verbose else "warning",
        log_config=None,  # the CLI configures logging
        access_log=verbose,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return Server(config)


class RunningGateway:
    """A gateway served from a thread of this process (``ddnn deploy --local --dashboard``).

    Args:
        settings: How to reach the broker (a ``--secure`` deployment's ``observer`` login).
        topics: The deployment's topics.
        port: HTTP port on 127.0.0.1 (0: any free port).
        token: Required by every request when given (the page takes it once as ``/?token=``).

    Raises:
        ValueError: The port is taken or the broker is unreachable.
    """

    def __init__(
        self, settings: BrokerSettings, topics: Topics, port: int, token: str | None = None
    ) -> None:
        import threading

        from ddnn.runtime.mqtt import BrokerError

        self.sock = listen("127.0.0.1", port)
        self.hub = AnswerHub()
        try:
            self.bridge = MqttBridge(settings, topics, self.hub)
        except BrokerError as exc:
            self.sock.close()
            raise ValueError(str(exc)) from None
        self.port = self.sock.getsockname()[1]
        self.token = token
        self.server = serve(create_app(self.hub, token=token), self.hub, self.sock)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="gateway", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The dashboard's address (with the token to open it in a browser, if one is set)."""
        base = f"http://127.0.0.1:{self.port}/"
        return f"{base}?token={self.token}" if self.token else base

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.bridge.close()
        self.sock.close()


def _is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


def add_gateway_parser(sub: Any) -> None:
    """Adds ``ddnn gateway`` to the CLI's subparsers."""
    from ddnn.runtime.commands import _add_broker_arguments

    p = sub.add_parser(
        "gateway", help="serve a deployment's answers, metrics and live dashboard over HTTP"
    )
    _add_broker_arguments(p)
    for action in p._actions:
        if "--qos" in action.option_strings:  # the gateway publishes nothing
            action.help = argparse.SUPPRESS
    p.add_argument("--port", type=int, required=True, help="HTTP port")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--token",
        default=None,
        help=f"require Authorization: Bearer TOKEN (or ${TOKEN_ENV}, which ps does not show)",
    )
    p.add_argument(
        "--secure", action="store_true", help="require a token (implied by an mqtts:// broker)"
    )
    p.set_defaults(func=cmd_gateway)


def cmd_gateway(args: argparse.Namespace) -> int:
    """Serve the answers of ``--namespace`` over HTTP until interrupted.

    Raises:
        ValueError: No token where one is required, a bad port or address, an unreachable
            broker.
    """
    from ddnn.runtime.commands import _broker
    from ddnn.runtime.mqtt import BrokerError
    from ddnn.runtime.protocol import Topics

    settings = _broker(args)
    token = check_token(args.token or os.environ.get(TOKEN_ENV), args.secure or settings.tls)
    topics = Topics(args.namespace)
    sock = listen(args.bind, args.port)
    if not _is_loopback(args.bind):
        log.warning(
            "the gateway listens on %s over plain HTTP: %s",
            args.bind,
            "put a TLS proxy in front of it"
            if token
            else "anyone who reaches it reads the answers",
        )
    hub = AnswerHub()
    try:
        bridge = MqttBridge(settings, topics, hub)
    except BrokerError as exc:
        sock.close()
        raise ValueError(str(exc)) from None
    try:
        app = create_app(hub, token=token)
        server = serve(app, hub, sock, getattr(args, "verbose", False), on_stop=bridge.close)
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        print(
            f"ddnn gateway: dashboard http://{host}:{port}/ , answers /answers , metrics "
            f"/metrics for namespace {topics.namespace!r} from {settings.url}"
            f"{' (token required: open /?token=TOKEN in a browser)' if token else ''}",
            flush=True,
        )
        server.run(sockets=[sock])
    finally:
        bridge.close()
        sock.close()
    return 0
