"""What every runtime node shares: an MQTT client, a bounded inbox, status, counters, a main loop.

paho delivers messages on its network thread; a node only queues them there and handles them on
its own thread, so a slow section never stalls keep-alives or acknowledgements. No message can
stop a node: frames and messages are validated before use (a bad one is counted under
``rejected_<reason>`` and logged), and an unexpected error in a handler or a tick is counted as
``handler_error`` / ``tick_error`` and logged with its traceback, never fatal.

Identity: a node's MQTT client id is its name (under ``--secure``, the broker ties it to the
node's login). Every process stamps an *instance* id (its start time and a random part) on its
retained ``online`` status and listens to its own status topic. When a second process starts
serving the same node, the older one sees the newer instance there and stops (it is *fenced*,
and says so), so exactly one instance serves each node — the newest, as after a restart.
"""

from __future__ import annotations

import gc
import logging
import queue
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.subscribeoptions import SubscribeOptions

from ddnn.runtime.messages import (
    Control,
    MessageError,
    Reply,
    encode_reply,
    parse_control,
    parse_status,
)
from ddnn.runtime.metrics import STATS_EVERY, NodeMetrics
from ddnn.runtime.mqtt import (
    BrokerSettings,
    close_client,
    connect_client,
    instance_of,
    instance_properties,
    message_overhead,
    properties_len,
)
from ddnn.runtime.protocol import DONE, OFFLINE, ONLINE, Topics
from ddnn.runtime.rollout import RolloutParticipant
from ddnn.wire import Expect, Frame, FrameDecodeError, decode_frame
from ddnn.wire.accounting import mqtt_fixed_header_bytes, mqtt_variable_header_bytes

log = logging.getLogger(__name__)

# s another host's clock may run ahead of ours: a newer instance started further in the future
# is forged and fences nobody (so a forged one can hold a node off for at most this long)
MAX_CLOCK_AHEAD = 10.0

MAX_PER_STEP = 512  # messages handled between two ticks
INBOX_BYTES = 64 * 1024 * 1024  # queued payload bytes before new messages are dropped (counted)


def settle_memory() -> None:
    """Once a node process has loaded what it serves (torch, sections, inputs) and before it
    serves: collect, then move every object alive into the garbage collector's permanent
    generation. Full collections then walk only what the node creates while serving, not the
    hundreds of thousands of objects torch and the model hold (they took ~20 % of a node's CPU
    at full load)."""
    gc.collect()
    gc.freeze()


class NodeFenced(ValueError):
    """Another process took over this node's identity; this instance stopped."""


_NUDGE: Any = object()  # in the inbox: wake up, nothing to handle


class Inbox:
    """Messages from paho's thread, bounded in bytes: a flood is dropped and counted, not hoarded."""

    def __init__(self, counters: Counter[str], max_bytes: int = INBOX_BYTES) -> None:
        self._q: queue.SimpleQueue[paho.MQTTMessage] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.bytes = 0
        self.max_bytes = max_bytes
        self.counters = counters
        self.wake: threading.Event | None = None  # also set on each message (shared wake-up)

    def put(self, msg: paho.MQTTMessage) -> None:
        n = len(msg.payload)
        with self._lock:
            if self.bytes + n > self.max_bytes:
                self.counters["rejected_inbox_full"] += 1
                return
            self.bytes += n
        self._q.put(msg)
        if self.wake is not None:
            self.wake.set()

    def nudge(self) -> None:
        """Ends a ``get`` that is waiting (from any thread), e.g. when a live source has a
        reading; the waiting ``get`` then returns ``None``."""
        self._q.put(_NUDGE)
        if self.wake is not None:
            self.wake.set()

    def get(self, timeout: float | None) -> paho.MQTTMessage | None:
        try:
            msg = self._q.get(timeout=timeout) if timeout else self._q.get_nowait()
        except queue.Empty:
            return None
        if msg is _NUDGE:
            return None
        with self._lock:
            self.bytes -= len(msg.payload)
        return msg


class Node:
    """Base of device, aggregator, edge and cloud nodes.

    Subclasses set ``name`` and ``subscriptions``, and implement ``handle`` (one message) and
    optionally ``tick`` (time-driven work such as deadlines) and ``next_wakeup``. ``clock`` (the
    monotonic time of deadlines) and ``wall`` (Unix time stamped on answers) can be replaced,
    so deadline logic is tested with a fake clock.
    """

    def __init__(
        self,
        name: str,
        settings: BrokerSettings,
        topics: Topics,
        model_version: int,
        qos: int = 1,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos}")
        self.name = name
        self.settings = settings
        self.topics = topics
        self.model_version = model_version
        self.qos = qos
        self.counters: Counter[str] = Counter()
        self.inbox = Inbox(self.counters)
        self.client: paho.Client | None = None
        self.stopping = False
        self.fenced = ""
        self.instance = f"{time.time_ns():020d}-{secrets.token_hex(4)}"  # orders by start time
        self.clock: Callable[[], float] = time.monotonic
        self.wall: Callable[[], float] = time.time
        self.rollout = RolloutParticipant(
            name, self.prepare_model, self._rollout_reply, self.holds_model
        )
        self.metrics = NodeMetrics(name, self.role or "device", self.counters)
        # (topic, qos) -> (message kind, MQTT variable header bytes), for the byte counts
        self._topic_costs: dict[tuple[str, int], tuple[str, int]] = {}
        self._next_stats = 0.0  # monotonic time of the next stats message

    role = ""  # subclasses: their entry of ddnn.runtime.metrics.ROLES

    # -- wiring --------------------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """Topic filters this node listens to (besides ``control``)."""
        return []

    def echo_free(self) -> set[str]:
        """Of :meth:`subscriptions`, the topics this node also publishes on but needs only the
        others' messages of: subscribed with MQTT 5 *No Local*, so the broker does not send
        this node's own messages back to it."""
        return set()

    def connect(self, connect_timeout: float = 10.0) -> None:
        status = self.topics.status(self.name)
        rollout = [self.topics.rollout, self.topics.rollout_bundle(self.name)]
        no_local = self.echo_free()
        subs = [
            (t, SubscribeOptions(qos=1, noLocal=True) if t in no_local else 1)
            for t in [*self.subscriptions(), self.topics.control, status, *rollout]
        ]
        self.client = connect_client(
            f"ddnn-{self.topics.namespace}-{self.name}",
            self.settings,
            self.inbox.put,
            subs,
            will=(status, OFFLINE),
            online=(status, ONLINE),
            connect_timeout=connect_timeout,
            on_taken_over=self._taken_over,
            instance=self.instance,
        )

    def _taken_over(self, by: str = "") -> None:
        """Another process serves this node now: stop, and do not reconnect."""
        if self.fenced:
            return
        self.fenced = (
            f"{self.name}: another process started serving this node"
            + (f" (instance {by})" if by else "")
            + "; this instance stopped so that only one serves it (two nodes with the same id?)"
        )
        log.error("%s", self.fenced)
        self.stopping = True
        if self.client is not None:
            self.client.disconnect()

    def _own_status(self, msg: paho.MQTTMessage) -> None:
        """Our retained status topic: a newer instance there means we were superseded."""
        other = instance_of(msg)
        if other is None or other == self.instance or bytes(msg.payload) not in (ONLINE, DONE):
            return
        started, _, rest = other.partition("-")
        if len(started) != 20 or not (started.isascii() and started.isdigit()):
            self.reject("implausible_instance", f"{msg.topic}: instance {other[:40]!r}")
            return
        if int(started) / 1e9 > self.wall() + MAX_CLOCK_AHEAD:
            # a start time in the future is forged (or a clock far off): it fences nobody
            self.reject("implausible_instance", f"{msg.topic}: instance {other[:40]!r}")
            return
        mine, _, my_rest = self.instance.partition("-")
        if (int(started), rest) > (int(mine), my_rest):  # compared as numbers, not text
            self._taken_over(other)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int | None = None,
        *,
        header: int = 0,
        retain: bool = False,
        properties: Any = None,
    ) -> None:
        """Publish, and count the bytes in :attr:`metrics`: ``header`` of the payload's bytes are
        its frame header (the sender knows it; nothing is parsed here), the rest payload, and
        the MQTT packet around it."""
        assert self.client is not None, "connect() first"
        qos = self.qos if qos is None else qos
        self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        cost = self._topic_costs.get((topic, qos)) if properties is None else None
        if cost is None:
            props = properties_len(properties)
            cost = (self.topics.message_kind(topic), mqtt_variable_header_bytes(topic, qos, props))
            if properties is None:
                self._topic_costs[(topic, qos)] = cost
        n = len(payload)
        kind, variable = cost
        self.metrics.sent(kind, n, header, variable + mqtt_fixed_header_bytes(variable, n))

    def publish_stats(self) -> None:
        """The metrics snapshot on ``stats/NODE`` (QoS 0: the next one follows in a second)."""
        if self.client is not None:
            self.publish(self.topics.stats(self.name), orjson.dumps(self.metrics.snapshot()), 0)

    def announce_done(self) -> None:
        # stamped like `online`: a retained `done` must not hide which instance serves the node
        props = instance_properties(self.instance)
        self.publish(self.topics.status(self.name), DONE, qos=1, retain=True, properties=props)

    # -- rollout -------------------------------------------------------------------------------
    def prepare_model(self, run_dir: Path, version: int) -> None:
        """Load (and check) the sections of ``version`` from ``run_dir`` next to the ones
        served (subclasses with a model); raises ``ValueError`` if they do not fit."""

    def holds_model(self, version: int) -> bool:
        """Whether ``version`` is loaded (nodes without a model hold every version)."""
        return True

    def _rollout_reply(self, reply: Reply) -> None:
        self.counters["rollout_prepared" if reply.ok else "rollout_refused"] += 1
        self.publish(self.topics.rollout_reply(self.name), encode_reply(reply), qos=1)

    # -- validation ----------------------------------------------------------------------------
    def reject(self, reason: str, detail: str) -> None:
        """Count and log a message we cannot use; never raises."""
        self.counters[f"rejected_{reason}"] += 1
        n = self.counters[f"rejected_{reason}"]
        if n <= 5 or n % 1000 == 0:
            log.warning("%s rejected a message (%s, %d so far): %s", self.name, reason, n, detail)

    def decode(
        self, msg: paho.MQTTMessage, expect: Expect | Sequence[Expect], topic_sender: int | None
    ) -> Frame | None:
        """The v2 frame in ``msg`` if it is what ``expect`` accepts (one of them, during a
        rollout: one per model version held) and comes from the sender its topic names; else
        ``None``, counted as ``rejected_<reason>`` (e.g. ``version_1``, ``length``,
        ``wrong_model``, ``non_finite``).

        Sizes are checked from the header before the payload is touched, so an oversized or
        foreign frame costs no allocation.
        """
        expects = [expect] if isinstance(expect, Expect) else list(expect)
        for i, e in enumerate(expects):
            try:
                frame = decode_frame(msg.payload, e, now=self.wall())
                break
            except FrameDecodeError as exc:
                if exc.reason == "wrong_model" and i + 1 < len(expects):
                    continue  # another model version's frame
                self.reject(exc.reason, f"{msg.topic}: {exc}")
                return None
        if topic_sender != frame.sender:
            self.reject("topic_mismatch", f"{msg.topic}: frame from sender {frame.sender}")
            return None
        return frame

    @staticmethod
    def costs(msg: paho.MQTTMessage, frame: Frame) -> tuple[int, float, float]:
        """Per sample of a frame: payload bytes, its share of the frame header, and its share of
        the MQTT packet overhead."""
        payload = (len(msg.payload) - frame.header_len) // frame.count
        header = frame.header_len / frame.count
        return payload, header, message_overhead(msg) / frame.count

    def status_of(self, msg: paho.MQTTMessage) -> tuple[str, str] | None:
        """(node, status) of a status message, or ``None`` (counted) if malformed."""
        node = msg.topic.rsplit("/", 1)[1]
        try:
            return node, parse_status(msg.payload)
        except MessageError as exc:
            self.reject(exc.reason, f"{msg.topic}: {exc}")
            return None

    # -- loop ----------------------------------------------------------------------------------
    def handle(self, msg: paho.MQTTMessage) -> None:
        """Handle one message (subclasses). May raise ``MessageError`` for a bad message."""

    def on_control(self, control: Control) -> None:
        """A control command other than ``stop`` (subclasses)."""

    def tick(self, now: float) -> None:
        """Time-driven work, called after every batch of messages and at ``next_wakeup``."""

    def next_wakeup(self) -> float | None:
        """Monotonic time ``tick`` must run by, or ``None``."""
        return None

    def dispatch(self, msg: paho.MQTTMessage) -> None:
        """Handles one message; whatever it holds, it never raises."""
        try:
            if msg.topic == self.topics.status(self.name):
                self._own_status(msg)
            elif msg.topic == self.topics.rollout:
                self.rollout.on_announce(msg.payload)
            elif msg.topic == self.topics.rollout_bundle(self.name):
                self.rollout.on_bundle(msg.payload)
            elif msg.topic == self.topics.control:
                control = parse_control(msg.payload)
                if control.command == "stop":
                    self.stopping = True
                else:
                    self.on_control(control)
            else:
                self.handle(msg)
        except MessageError as exc:
            self.reject(exc.reason, f"{msg.topic}: {exc}")
        except Exception:  # a bug must not take the node down with it; count and show it
            self._error("handler_error", f"handling a message on {msg.topic}")

    def _error(self, counter: str, what: str) -> None:
        self.counters[counter] += 1
        if self.counters[counter] <= 5 or self.counters[counter] % 1000 == 0:
            log.exception(
                "%s: unexpected error %s (%d so far)", self.name, what, self.counters[counter]
            )

    def safe_tick(self) -> None:
        try:
            self.tick(self.clock())
        except Exception:
            self._error("tick_error", "in tick")

    def step(self, max_wait: float) -> None:
        """Waits up to ``max_wait`` s for messages, handles all that are queued, then ticks."""
        msg = self.inbox.get(timeout=max(0.0, max_wait))
        handled = 0
        while msg is not None:
            self.dispatch(msg)
            handled += 1
            if handled == MAX_PER_STEP:  # tick now, so deadlines run under load too; the rest
                break  # stays queued (taking one more here would drop it)
            msg = self.inbox.get(timeout=None)
        self.safe_tick()
        now = self.clock()
        if now >= self._next_stats:
            self._next_stats = now + STATS_EVERY
            try:
                self.publish_stats()
            except Exception:
                self._error("stats_error", "publishing stats")

    def serve(self, idle_poll: float = 0.05) -> None:
        """Run until a ``stop`` arrives on the control topic.

        Raises:
            NodeFenced: Another process took over this node's identity.
        """
        if self.fenced:
            raise NodeFenced(self.fenced)
        if self.client is None:
            self.connect()
        try:
            while not self.stopping:
                wake = self.next_wakeup()
                wait = idle_poll if wake is None else min(idle_poll, wake - self.clock())
                self.step(wait)
        finally:
            self.close()
        if self.fenced:
            raise NodeFenced(self.fenced)

    def close(self) -> None:
        if self.client is not None:
            try:  # the last counts, so a stopped node's totals are complete
                self.publish_stats()
            except Exception:
                self._error("stats_error", "publishing the last stats")
            close_client(
                self.client, None if self.fenced else (self.topics.status(self.name), OFFLINE)
            )
            self.client = None
        self.rollout.close()
        if self.counters:
            log.info("%s counters: %s", self.name, dict(self.counters))
