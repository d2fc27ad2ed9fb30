"""Answers out, for applications: a deployment's answers as typed objects, as they are published.

``for answer in ddnn.runtime.answers("mqtt://host:1883", namespace="plant-1"): …`` yields one
:class:`~ddnn.runtime.messages.Answer` per answer published on the namespace's results topic, in
arrival order. Results messages that do not parse are counted and logged, never raised.

An observer (this iterator, ``ddnn watch``, ``ddnn gateway``) connects under a client id of its
own (``ddnn-<namespace>-<role>-<random>``), so several can watch one deployment, and its
subscriptions are acknowledged by the broker before it is handed out, so nothing published after
that is missed. Its broker session survives a broker restart while it runs and ends when it is
closed. A broker that makes the login the client id (``use_username_as_clientid``, as
``--secure`` deployments do) lets only one client per login be connected: observers sharing a
login (or sharing one with ``run-client``) then keep knocking each other off, so give each its
own. Heavy modules (paho, the message parsers) are imported on first use, so that
``import ddnn.runtime`` stays light.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paho.mqtt.client as paho

    from ddnn.runtime.messages import Answer
    from ddnn.runtime.mqtt import BrokerSettings
    from ddnn.runtime.protocol import Topics

__all__ = [
    "AnswerStream",
    "answer_to_dict",
    "answer_to_json",
    "answers",
    "connect_observer",
    "disconnect_observer",
]

log = logging.getLogger(__name__)

MAX_PENDING = 1024  # results messages held for a slow reader; beyond it the oldest are dropped


def answer_to_dict(answer: Answer) -> dict[str, Any]:
    """An answer as the JSON object applications read: its fields plus ``latency_ms``."""
    return {**vars(answer), "latency_ms": answer.latency_ms}


def answer_to_json(answer: Answer) -> str:
    """:func:`answer_to_dict` as one line of compact JSON (what ``watch --json`` and the
    gateway send)."""
    return json.dumps(answer_to_dict(answer), separators=(",", ":"), allow_nan=False)


def connect_observer(
    settings: BrokerSettings,
    topics: Topics,
    role: str,
    on_message: Callable[[paho.MQTTMessage], None],
    filters: list[tuple[str, int]],
    on_taken_over: Callable[[], None] | None = None,
    connect_timeout: float = 10.0,
) -> paho.Client:
    """A connected client whose subscriptions the broker has acknowledged.

    Args:
        settings: Broker address, TLS and login.
        topics: The deployment's topics (the namespace goes into the client id).
        role: Part of the client id, e.g. ``watch`` or ``gateway``.
        on_message: Called on paho's network thread for every message.
        filters: ``(topic filter, qos)`` to subscribe to (again after every reconnect).
        on_taken_over: Called on paho's thread if another client took over our session (under
            ``use_username_as_clientid`` that is another observer with the same login).
        connect_timeout: Seconds to keep retrying an unreachable broker.

    Raises:
        BrokerError: The broker is unreachable, refused the login, or refused a subscription.
    """
    from ddnn.runtime.mqtt import BrokerError, connect_client

    client_id = f"ddnn-{topics.namespace}-{role}-{secrets.token_hex(4)}"
    client = connect_client(
        client_id,
        settings,
        on_message,
        filters,
        connect_timeout=connect_timeout,
        on_taken_over=on_taken_over,
    )
    try:
        _confirm_subscriptions(client, filters, connect_timeout + 5.0)
    except BrokerError:
        disconnect_observer(client)
        raise
    return client


def _confirm_subscriptions(
    client: paho.Client, filters: list[tuple[str, int]], timeout: float
) -> None:
    """Subscribes once more and waits for that SUBACK: after it, every filter is active.

    ``connect_client`` subscribes from its connect callback, whose SUBACK we cannot await; a
    repeated subscription replaces the first (no duplicates), and the broker answers in order.
    """
    import paho.mqtt.client as paho

    from ddnn.runtime.mqtt import BrokerError

    acks: dict[int, list[Any]] = {}
    done = threading.Condition()

    def on_subscribe(_c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        with done:
            acks[mid] = list(codes)
            done.notify_all()

    client.on_subscribe = on_subscribe
    result, mid = client.subscribe(filters)
    with done:
        acked = result == paho.MQTT_ERR_SUCCESS and done.wait_for(lambda: mid in acks, timeout)
    client.on_subscribe = None
    if not acked or mid is None:
        raise BrokerError(f"the MQTT broker did not acknowledge the subscription to {filters}")
    codes = acks[mid]  # one per filter, in order
    refused = [f"{f[0]} ({c})" for f, c in zip(filters, codes, strict=False) if c.is_failure]
    if refused:
        raise BrokerError(
            f"the MQTT broker refused this login the topic(s) {', '.join(refused)}; "
            "log in as a user allowed to read them (the 'client' login of a --secure deployment)"
        )


def disconnect_observer(client: paho.Client) -> None:
    """Disconnects and ends the broker session (nothing is queued for us any more)."""
    import paho.mqtt.client as paho
    from paho.mqtt.properties import Properties

    props = Properties(paho.PacketTypes.DISCONNECT)
    props.SessionExpiryInterval = 0
    client.disconnect(properties=props)
    client.loop_stop()


class _Inbox:
    """Raw results payloads from paho's thread, bounded: a reader that stalls loses the oldest.

    Kept apart from :class:`AnswerStream` so that paho's thread holds no reference to the
    stream, and a stream nobody holds is closed (and disconnected) by the garbage collector.
    """

    def __init__(self, limit: int) -> None:
        self.payloads: deque[bytes] = deque()
        self.limit = limit
        self.dropped = 0
        self.error = ""
        self.changed = threading.Condition()

    def put(self, msg: paho.MQTTMessage) -> None:
        with self.changed:
            if len(self.payloads) >= self.limit:
                self.payloads.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "answers: the reader is slow; %d results messages dropped", self.dropped
                    )
            self.payloads.append(bytes(msg.payload))
            self.changed.notify()

    def taken_over(self) -> None:
        with self.changed:
            self.error = (
                "another client logged in with this observer's client id (a --secure broker "
                "uses the login as client id): give each watcher and gateway its own login"
            )
            self.changed.notify()


class AnswerStream(Iterator["Answer"]):
    """An iterator over the answers published on a deployment's results topic.

    Created connected and subscribed (what :func:`answers` returns). Iterating yields every
    answer published from then on, failed ones included (``answer.failed``), in arrival order;
    after a reconnect (QoS 1) an answer may come twice. Closing it (``close()``, leaving a
    ``with`` block, or dropping the last reference, as ``break`` in a ``for`` loop over a call
    does) disconnects.

    Args:
        settings: Broker address, TLS and login.
        topics: The deployment's topics.
        timeout: Seconds to wait for the next answer before the iteration ends (``None``: wait
            for ever).
        connect_timeout: Seconds to keep retrying an unreachable broker.
        max_pending: Results messages held while the reader is busy; beyond it the oldest are
            dropped and counted in :attr:`dropped`.

    Attributes:
        received: Answers yielded so far.
        malformed: Results messages that did not parse (skipped, logged).

    Raises:
        ValueError: ``timeout`` is not a positive number or ``None``.
        BrokerError: The broker is unreachable or refused the login or the subscription.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        topics: Topics,
        timeout: float | None = None,
        connect_timeout: float = 10.0,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if timeout is not None and (
            isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0
        ):
            raise ValueError(f"timeout {timeout!r}: give a positive number of seconds, or None")
        self._client: paho.Client | None = None  # first: __del__ may run if connecting fails
        self.topics = topics
        self.timeout = timeout
        self.received = 0
        self.malformed = 0
        self._ready: deque[Answer] = deque()
        self._inbox = _Inbox(max_pending)
        self._client = connect_observer(
            settings,
            topics,
            "answers",
            self._inbox.put,
            [(topics.results, 1)],
            on_taken_over=self._inbox.taken_over,
            connect_timeout=connect_timeout,
        )

    @property
    def dropped(self) -> int:
        """Results messages dropped because the reader did not keep up."""
        return self._inbox.dropped

    @property
    def closed(self) -> bool:
        return self._client is None

    def __next__(self) -> Answer:
        from ddnn.runtime.messages import MessageError, parse_answers
        from ddnn.runtime.mqtt import BrokerError

        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not self._ready:
            inbox = self._inbox
            with inbox.changed:
                while not inbox.payloads and not inbox.error and self._client is not None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    inbox.changed.wait(left)
                payload = inbox.payloads.popleft() if inbox.payloads else None
            if inbox.error:
                self.close()
                raise BrokerError(inbox.error)
            if payload is None:  # timed out, or closed
                self.close()
                raise StopIteration
            try:
                self._ready.extend(parse_answers(payload))
            except MessageError as exc:
                self.malformed += 1
                log.warning("malformed results message on %s skipped: %s", self.topics.results, exc)
        self.received += 1
        return self._ready.popleft()

    def close(self) -> None:
        """Disconnects (idempotent); the iteration then ends."""
        client, self._client = self._client, None
        if client is not None:
            disconnect_observer(client)
            with self._inbox.changed:
                self._inbox.changed.notify_all()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def answers(
    broker_url: str,
    namespace: str = "ddnn",
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    connect_timeout: float = 10.0,
) -> AnswerStream:
    """A deployment's answers, as they are published, one typed :class:`Answer` at a time.

    Example::

        for answer in ddnn.runtime.answers("mqtt://10.0.0.5:1883", namespace="plant-1"):
            if not answer.failed:
                print(answer.sample, answer.class_name, answer.confidence)

    Args:
        broker_url: ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://…``.
        namespace: The deployment's namespace (``--namespace`` of its nodes).
        ca_file: CA certificate of the broker (TLS).
        cert_file: Client certificate, for brokers that require one (TLS).
        key_file: Key of the client certificate.
        username: Broker login (overrides one in the URL).
        password: Broker password.
        timeout: Seconds to wait for the next answer before the iteration ends (``None``: for
            ever).
        connect_timeout: Seconds to keep retrying an unreachable broker.

    Returns:
        An :class:`AnswerStream`, already connected and subscribed: answers published after
        this call returns are not missed.

    Raises:
        ValueError: A bad URL, namespace or timeout.
        BrokerError: The broker is unreachable or refused the login or the subscription.
    """
    from ddnn.runtime.mqtt import parse_broker_url
    from ddnn.runtime.protocol import Topics

    settings = parse_broker_url(
        broker_url,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        username=username,
        password=password,
    )
    return AnswerStream(settings, Topics(namespace), timeout, connect_timeout)
