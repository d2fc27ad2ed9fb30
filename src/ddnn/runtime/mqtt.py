"""MQTT transport: broker addresses, credentials, TLS, and connected paho clients with TCP_NODELAY.

Every node talks MQTT 5 to one broker. Two details matter for latency and robustness:

* paho leaves Nagle's algorithm on; a small QoS 1 publish then waits for the delayed ACK of the
  previous one (~40 ms on Linux). ``connect_client`` sets ``TCP_NODELAY`` on every socket.
* a broker that is down at start is retried for a bounded time, then reported as one clear error;
  once connected, paho reconnects on its own with a capped back-off.

And one detail matters for CPU: paho builds the lookup tables of an MQTT 5 property set and reason
code anew for every packet it reads (each PUBLISH and each PUBACK), tens of microseconds a packet,
more than the rest of a message's handling. :func:`lean_paho` makes paho's packet decoder share
them (same classes, same behaviour); ``connect_client`` applies it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ddnn.wire.accounting import mqtt_publish_overhead

log = logging.getLogger(__name__)

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with our id


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to authenticate to it.

    Attributes:
        host: Broker host name or address.
        port: TCP port.
        tls: Connect over TLS (``mqtts://``).
        ca_file: CA certificate that signed the broker's certificate (TLS).
        cert_file: Client certificate, for brokers that require one (TLS).
        key_file: Key of the client certificate.
        username: Broker user name (``None``: anonymous).
        password: Broker password.
    """

    host: str
    port: int
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """``mqtt[s]://host:port`` without credentials (safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def with_credentials(self, username: str | None, password: str | None) -> BrokerSettings:
        """A copy logging in as ``username`` (``None`` keeps the current login)."""
        if username is None:
            return self
        return replace(self, username=username, password=password)


def parse_broker_url(url: str, **tls_and_login: Any) -> BrokerSettings:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://…`` -> :class:`BrokerSettings`.

    Args:
        url: The broker address.
        **tls_and_login: ``ca_file``, ``cert_file``, ``key_file``, ``username``, ``password``;
            ``None`` values are ignored. A user name here overrides one in the URL.

    Raises:
        ValueError: If the URL has another scheme, no host, a bad port or a path.
    """
    parts = urlsplit(url.strip())
    accepted = "mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (optionally USER:PASSWORD@HOST)"
    if parts.scheme not in SCHEMES:
        raise ValueError(f"broker URL {url!r} has scheme {parts.scheme!r}; accepted: {accepted}")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise ValueError(f"broker URL {url!r} has a bad port; accepted: {accepted}") from None
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host; accepted: {accepted}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r} must not have a path or query; accepted: {accepted}")
    options = {k: v for k, v in tls_and_login.items() if v is not None}
    unknown = set(options) - {"ca_file", "cert_file", "key_file", "username", "password"}
    if unknown:
        raise ValueError(f"unknown broker option(s) {sorted(unknown)}")
    settings = BrokerSettings(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
    settings = replace(settings, **options)
    if (settings.cert_file is None) != (settings.key_file is None):
        raise ValueError(
            "give both --cert-file and --key-file for a client certificate, or neither"
        )
    if (settings.ca_file or settings.cert_file) and not settings.tls:
        raise ValueError(f"certificates were given but {url!r} is not TLS; use mqtts://")
    return settings


class BrokerError(RuntimeError):
    """The broker could not be reached, or refused us (bad credentials, not authorised)."""


def _set_nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    if os.environ.get("DDNN_MQTT_NODELAY", "1") == "0":  # only to measure what Nagle costs
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # pragma: no cover - e.g. a websocket transport
        log.debug("could not set TCP_NODELAY on %r", sock)


MessageHandler = Callable[[paho.MQTTMessage], None]


_TABLES = Properties(PacketTypes.PUBLISH)  # paho's tables, the same for every packet type
_NAMES = frozenset(name.replace(" ", "") for name in _TABLES.names)  # attribute names of properties
_SUCCESS_CODE_TYPES = frozenset(ReasonCode.names[0]["Success"])


class LeanProperties(Properties):
    """paho's ``Properties`` sharing one copy of its lookup tables (paho rebuilds them per
    instance); a set property is an instance attribute, as in paho."""

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's signature
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", _TABLES.types)
        object.__setattr__(self, "names", _TABLES.names)
        object.__setattr__(self, "properties", _TABLES.properties)

    def isEmpty(self) -> bool:  # noqa: N802 - paho's name
        return _NAMES.isdisjoint(self.__dict__)

    def clear(self) -> None:
        d = self.__dict__
        for name in _NAMES.intersection(d):
            del d[name]

    def pack(self) -> bytes:
        return b"\x00" if self.isEmpty() else super().pack()  # b"\x00": no properties


class LeanReasonCode(ReasonCode):
    """paho's ``ReasonCode``, without copying its table of names for the usual "Success"."""

    def __init__(self, packetType: int, aName: str = "Success", identifier: int = -1) -> None:  # noqa: N803
        if identifier == -1 and aName == "Success" and packetType in _SUCCESS_CODE_TYPES:
            self.packetType = packetType
            self.value = 0  # the class's read-only ``names`` serves lookups
        else:
            super().__init__(packetType, aName, identifier)


def lean_paho() -> bool:
    """Makes paho's packet decoder build :class:`LeanProperties` and :class:`LeanReasonCode`
    (subclasses: every ``isinstance`` check and every value read stays as it was). Idempotent;
    returns whether paho has the decoder module this patches (paho >= 2.1)."""
    try:
        from paho.mqtt import _packet
    except ImportError:  # pragma: no cover - an older paho decodes inside the client
        return False
    if getattr(_packet, "Properties", None) in (Properties, LeanProperties):
        _packet.Properties = LeanProperties  # type: ignore[misc]
    if getattr(_packet, "ReasonCode", None) in (ReasonCode, LeanReasonCode):
        _packet.ReasonCode = LeanReasonCode  # type: ignore[misc]
    return _packet.Properties is LeanProperties and _packet.ReasonCode is LeanReasonCode


def connect_client(
    client_id: str,
    settings: BrokerSettings,
    on_message: MessageHandler,
    subscriptions: Sequence[tuple[str, int | SubscribeOptions]],
    will: tuple[str, bytes] | None = None,
    online: tuple[str, bytes] | None = None,
    connect_timeout: float = 10.0,
    on_taken_over: Callable[[], None] | None = None,
    instance: str | None = None,
) -> paho.Client:
    """A connected, looping MQTT 5 client that resubscribes and re-announces on every reconnect.

    Args:
        client_id: Unique id at the broker (a persistent session is kept under it).
        settings: Broker address, TLS and login.
        on_message: Called on paho's network thread for every message.
        subscriptions: ``(topic filter, qos or MQTT 5 subscribe options)`` to (re)subscribe on
            each connect.
        will: Retained Last Will ``(topic, payload)`` the broker publishes if we vanish.
        online: Retained ``(topic, payload)`` published after each (re)connect.
        connect_timeout: Seconds to keep retrying an unreachable broker before giving up.
        on_taken_over: Called (on paho's thread) when another client connected with our id and
            the broker closed our session (MQTT 5 reason 0x8E); the client then stops
            reconnecting, so two processes never fight over one identity.
        instance: Stamped as MQTT 5 user property ``instance`` on the Last Will and on the
            ``online`` message, so that two processes serving one node can tell each other apart.

    Raises:
        BrokerError: Broker unreachable within ``connect_timeout``, or the connection refused.
    """
    lean_paho()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    client.on_socket_open = _set_nodelay
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(
            ca_certs=settings.ca_file,
            certfile=settings.cert_file,
            keyfile=settings.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    if will is not None:
        client.will_set(
            will[0], will[1], qos=1, retain=True, properties=instance_properties(instance)
        )
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
            connected.set()
            return
        for topic, qos in subscriptions:
            if isinstance(qos, SubscribeOptions):
                c.subscribe(topic, options=qos)
            else:
                c.subscribe(topic, qos=qos)
        if online is not None:
            c.publish(
                online[0], online[1], qos=1, retain=True, properties=instance_properties(instance)
            )
        log.info("%s connected to %s", client_id, settings.url)
        connected.set()

    def on_disconnect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        log.info("%s disconnected from %s (%s)", client_id, settings.url, reason)
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER and on_taken_over is not None:
            c.disconnect()  # no automatic reconnect: that would take the session back
            on_taken_over()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = lambda _c, _u, msg: on_message(msg)
    # A persistent session: QoS 1 messages published to us while a broker restarts are kept.
    props = Properties(paho.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    deadline = time.monotonic() + connect_timeout
    last_error = ""
    while True:
        try:
            client.connect(
                settings.host, settings.port, keepalive=5, clean_start=False, properties=props
            )
            break
        except (OSError, ssl.SSLError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"cannot reach the MQTT broker at {settings.url} after {connect_timeout:g} s "
                    f"({last_error}); is it running, and is the address right?"
                ) from None
            time.sleep(0.2)
    client.loop_start()
    if not connected.wait(max(0.5, deadline - time.monotonic()) + 5.0) or refused:
        client.loop_stop()
        client.disconnect()
        why = refused[0] if refused else "no CONNACK"
        raise BrokerError(
            f"the MQTT broker at {settings.url} refused {client_id!r}: {why} "
            "(check the user name, password and certificates)"
        )
    return client


def instance_properties(instance: str | None) -> Properties | None:
    """MQTT 5 properties carrying ``instance`` (``None`` for no instance)."""
    if instance is None:
        return None
    props = Properties(paho.PacketTypes.PUBLISH)
    props.UserProperty = [("instance", instance)]
    return props


def instance_of(msg: paho.MQTTMessage) -> str | None:
    """The ``instance`` user property of a received message, if any."""
    props = getattr(msg, "properties", None)
    for key, value in getattr(props, "UserProperty", None) or []:
        if key == "instance":
            return str(value)
    return None


def close_client(client: paho.Client, offline: tuple[str, bytes] | None = None) -> None:
    """Announce ``offline`` (retained) if given, then disconnect cleanly and stop the loop."""
    try:
        if offline is not None and client.is_connected():
            client.publish(offline[0], offline[1], qos=1, retain=True).wait_for_publish(2.0)
    except (RuntimeError, ValueError):  # pragma: no cover - lost connection while closing
        pass
    client.disconnect()
    client.loop_stop()


def publish_overhead(topic: str, payload_len: int, qos: int, properties_len: int) -> int:
    """:func:`ddnn.wire.accounting.mqtt_publish_overhead` (kept under this name for callers)."""
    return mqtt_publish_overhead(topic, payload_len, qos, properties_len)


def properties_len(props: Properties | None) -> int:
    """Bytes of an MQTT 5 property block, its length prefix included (1 when empty)."""
    return 1 if props is None or props.isEmpty() else len(props.pack())


def message_overhead(msg: paho.MQTTMessage) -> int:
    """:func:`publish_overhead` of a received message."""
    props = getattr(msg, "properties", None)
    return mqtt_publish_overhead(msg.topic, len(msg.payload), msg.qos, properties_len(props))
