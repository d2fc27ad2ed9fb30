"""The runtime's non-frame messages: their schemas, encoders and validating parsers.

Every message a node receives passes through one parser here before any node looks at it. A
parser returns typed values or raises :class:`MessageError` (a ``ValueError``) naming what was
wrong; nodes count and log that and carry on. The checks are the schema, not best effort: sizes
are bounded before parsing, JSON constants ``NaN``/``Infinity`` are refused, nesting that would
overflow the parser's recursion is refused, every number is an integer or a finite float in its
range, every list and mapping is bounded.

Messages (JSON, UTF-8, compact, except the two every device receives, which are binary):

============  =====================================================================================
message       schema
============  =====================================================================================
control       ``stop`` | ``start`` | ``start <unix time>`` (plain ASCII, not JSON)
status        ``online`` | ``offline`` | ``done`` (plain ASCII)
progress      binary PROGRESS (:mod:`ddnn.wire.control`): highest sample id decided, newest
              in-window id seen
tick          binary TICK on ``tick`` (trigger -> devices): capture sample K now
feature ask   binary ASKS on ``request``: which devices send which features (sample ids and
              device bit masks); all a device may read about the samples that go up
up / forward  list of :class:`UpRequest` objects (aggregator -> edges / cloud)
receipts      ``{"<sample>": {"payload": {...}, "mqtt": {...}, "flags": [...]}, …}`` (edge -> agg.)
results       list of :class:`Answer` objects
============  =====================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from ddnn.wire import FrameDecodeError, control

__all__ = [
    "ANSWER_SCHEMA",
    "ROLLOUT_SCHEMA",
    "Announce",
    "Reply",
    "encode_announce",
    "encode_reply",
    "parse_announce",
    "parse_reply",
    "MAX_SAMPLE_ID",
    "Answer",
    "Control",
    "MessageError",
    "Progress",
    "Receipt",
    "UpRequest",
    "encode_answers",
    "encode_feature_asks",
    "encode_progress",
    "encode_receipts",
    "encode_requests",
    "parse_answer_samples",
    "parse_answers",
    "parse_control",
    "parse_feature_asks",
    "parse_progress",
    "parse_receipts",
    "parse_requests",
    "parse_routes",
    "parse_status",
    "parse_tick",
    "encode_tick",
    "samples_asked_of",
]

ANSWER_SCHEMA = 1  # version of the answers on the results topic (documented in docs/deploying.md, "Answers out")
MAX_SAMPLE_ID = 2**53 - 1  # exact in every JSON reader (IEEE double), and in int64
MAX_NODE_ID = 0xFFFF  # device and edge ids (the frame header's sender field)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a results message of 512 answers is ~150 KB
MAX_ITEMS = 4096  # entries in one message (samples, answers, receipts)
MAX_FLAGS = 32
MAX_TEXT = 256  # characters of one flag or error string

STATUSES = ("online", "offline", "done")
EXITS = ("local", "edge", "cloud", "none")


class MessageError(ValueError):
    """A message that does not match its schema; ``reason`` is the counter it is booked under."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# primitive checks


def load_json(payload: bytes | bytearray | memoryview, what: str) -> Any:
    """Parses a JSON message: bounded size, no NaN/Infinity, no recursion overflow."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MessageError(
            f"{what} message of {len(payload)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
            "oversized",
        )
    try:  # orjson: strict RFC 8259 (no NaN / Infinity), UTF-8 checked, nesting limited
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"{what} message is not valid JSON: {exc}") from None


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{what} must be an integer in [{lo}, {hi}], got {_show(value)}")
    if not lo <= value <= hi:
        raise MessageError(f"{what} must be in [{lo}, {hi}], got {value}")
    return value


def _float(value: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageError(f"{what} must be a finite number, got {_show(value)}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise MessageError(f"{what} must be a finite number in [{lo}, {hi}], got {value}")
    return v


def _list(value: Any, what: str, max_len: int = MAX_ITEMS) -> list[Any]:
    if not isinstance(value, list):
        raise MessageError(f"{what} must be a list, got {_show(value)}")
    if len(value) > max_len:
        raise MessageError(f"{what} has {len(value)} entries, at most {max_len} are accepted")
    return value


def _dict(value: Any, what: str, max_len: int = MAX_ITEMS) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError(f"{what} must be an object, got {_show(value)}")
    if len(value) > max_len:
        raise MessageError(f"{what} has {len(value)} entries, at most {max_len} are accepted")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise MessageError(f"{what} must be a string of at most {MAX_TEXT} characters")
    return value


def _sample(value: Any, what: str = "sample") -> int:
    return _int(value, what, 0, MAX_SAMPLE_ID)


def _ids(value: Any, what: str) -> list[int]:
    items = _list(value, what, MAX_NODE_ID)
    if not items:
        return []
    if set(map(type, items)) == {int} and 0 <= min(items) and max(items) <= MAX_NODE_ID:
        ids = items  # the usual case, checked at C speed (bools are not of type int)
    else:
        ids = [_int(v, f"{what} entry", 0, MAX_NODE_ID) for v in items]
    if len(set(ids)) != len(ids):
        raise MessageError(f"{what} repeats an id: {ids}")
    return sorted(ids)


def _byte_counts(value: Any, what: str) -> dict[str, int]:
    """``{"<node id>": bytes}``; keys are decimal node ids."""
    return {k: int(v) for k, v in _byte_shares(value, what, integer=True).items()}


def _byte_shares(value: Any, what: str, integer: bool = False) -> dict[str, float]:
    """``{"<node id>": bytes}``, where a sample's share of a batched frame may be fractional."""
    out: dict[str, float] = {}
    for key, n in _dict(value, what, MAX_NODE_ID).items():
        if not (key.isdigit() and key.isascii()) or int(key) > MAX_NODE_ID:
            raise MessageError(f"{what} key {_show(key)} is not a node id")
        kind = type(n)
        if integer:  # the usual values pass the first test; _int / _float say what is wrong
            out[key] = (
                n if kind is int and 0 <= n < 2**31 else _int(n, f"{what}[{key}]", 0, 2**31 - 1)
            )
        elif (kind is float or kind is int) and 0.0 <= n <= 2.0**31:  # NaN fails the range test
            out[key] = float(n)
        else:
            out[key] = _float(n, f"{what}[{key}]", 0.0, 2.0**31)
    return out


def _flags(value: Any, what: str = "flags") -> list[str]:
    return [_text(f, f"{what} entry") for f in _list(value, what, MAX_FLAGS)]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields(item: Any, what: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    d = _dict(item, what, len(required) + len(optional))
    missing = required - set(d)
    unknown = set(d) - required - optional
    if missing or unknown:
        raise MessageError(
            f"{what} has missing field(s) {sorted(missing)} / unknown field(s) {sorted(unknown)}; "
            f"fields: {sorted(required | optional)}"
        )
    return d


def _dump(doc: Any) -> bytes:
    """Compact JSON (orjson; our encoders put only finite numbers in)."""
    return orjson.dumps(doc)


# ---------------------------------------------------------------------------------------------
# control and status (plain ASCII)


@dataclass(frozen=True)
class Control:
    """A command on the control topic: ``stop``, ``start`` at an optional wall-clock time, or
    ``switch VERSION`` (the aggregator switches the deployment to a prepared rollout)."""

    command: str
    at: float | None = None
    version: int | None = None


def parse_control(payload: bytes | bytearray) -> Control:
    raw = bytes(payload)
    if len(raw) > 64:
        raise MessageError(
            f"control message of {len(raw)} bytes; accepted: stop, start [TIME], switch VERSION"
        )
    word, _, arg = raw.partition(b" ")
    if word == b"stop" and not arg:
        return Control("stop")
    if word == b"switch":
        text = arg.decode("ascii", errors="replace")
        if not (text.isascii() and text.isdigit() and int(text) <= 0xFFFFFFFF):
            raise MessageError(
                f"control 'switch {_show(text)}': the model version must be 0..2**32-1"
            )
        return Control("switch", version=int(text))
    if word == b"start":
        if not arg:
            return Control("start")
        try:
            at = float(arg.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            at = math.nan
        if not math.isfinite(at) or at < 0:
            raise MessageError(f"control 'start {_show(arg)}': the time must be a finite Unix time")
        return Control("start", at)
    raise MessageError(
        f"unknown control message {_show(raw)}; accepted: stop, start [TIME], switch VERSION"
    )


def parse_status(payload: bytes | bytearray) -> str:
    text = bytes(payload).decode("ascii", errors="replace")
    if text not in STATUSES:
        raise MessageError(f"status {_show(text)}; accepted: {', '.join(STATUSES)}")
    return text


# ---------------------------------------------------------------------------------------------
# progress (aggregator -> devices, retained)


@dataclass(frozen=True)
class Progress:
    """Flow control: the highest sample decided, and the newest sample seen inside the window;
    after a rollout, ``switch`` = (first sample of the new model, its 16-bit frame tag)."""

    decided: int
    latest: int
    switch: tuple[int, int] | None = None


def encode_progress(p: Progress) -> bytes:
    return control.encode_progress(p.decided, p.latest, p.switch)


def parse_progress(payload: bytes | bytearray) -> Progress:
    decided, latest, switch = _binary(control.decode_progress, payload, "progress")
    return Progress(decided, max(decided, latest), switch)


# ---------------------------------------------------------------------------------------------
# feature asks (aggregator -> devices): only what a device needs


def encode_feature_asks(asks: list[tuple[int, list[int]]]) -> bytes:
    return control.encode_asks(sorted(asks))


def parse_feature_asks(payload: bytes | bytearray) -> list[tuple[int, list[int]]]:
    return _binary(control.decode_asks, payload, "request")


def samples_asked_of(payload: bytes | bytearray, device: int) -> list[int]:
    """The samples a feature-ask message asks ``device`` for (what a device reads)."""
    return _binary(lambda b: control.samples_asked_of(b, device), payload, "request")


def encode_tick(sample: int, at: float) -> bytes:
    return control.encode_tick(sample, at)


def parse_tick(payload: bytes | bytearray) -> tuple[int, float]:
    """(sample id to capture, the trigger's Unix time) of a capture tick."""
    return _binary(control.decode_tick, payload, "tick")


T = TypeVar("T")


def _binary(decode: Callable[[bytes | bytearray], T], payload: bytes | bytearray, what: str) -> T:
    """A binary control message (:mod:`ddnn.wire.control`), bounded and checked."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MessageError(
            f"{what} message of {len(payload)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
            "oversized",
        )
    try:
        return decode(payload)
    except FrameDecodeError as exc:
        raise MessageError(f"{what} message: {exc}", exc.reason) from None


# ---------------------------------------------------------------------------------------------
# up requests (aggregator -> edges, cloud)


@dataclass
class UpRequest:
    """A sample that goes up: which devices were present and what they sent so far.

    The aggregator publishes these on ``up`` (edges / the cloud then collect the devices'
    features) and on ``forward`` (edges then send theirs); the tier above uses them to know whom
    to wait for and to carry the byte counts into the final answer.
    """

    sample: int
    present: list[int]
    device_payload: dict[str, int]
    device_header: dict[str, float]
    device_mqtt: dict[str, float]
    captured: float
    local_prediction: int
    edge_prediction: int = -1
    edges: list[int] = field(default_factory=list)
    edge_payload: dict[str, int] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    local_confidence: float = 0.0
    edge_confidence: float = 0.0
    model_version: int | None = None  # the model serving the sample (None: the node's own)


_REQUEST_REQUIRED = {
    "sample",
    "present",
    "device_payload",
    "device_header",
    "device_mqtt",
    "captured",
    "local_prediction",
}
_REQUEST_OPTIONAL = {
    "edge_prediction",
    "edges",
    "edge_payload",
    "flags",
    "local_confidence",
    "edge_confidence",
    "model_version",
}


_COUNTS = ("device_payload", "device_header", "device_mqtt", "edge_payload")


def encode_requests(requests: list[UpRequest], counts: bool = True) -> bytes:
    """The requests as JSON; ``counts=False`` leaves out the byte counts, which only the
    cloud reads (to put them in its answers): what the aggregator sends its edges."""
    if counts:
        return _dump([vars(r) for r in requests])  # shallow: orjson walks the nested values
    return _dump([{k: v for k, v in vars(r).items() if k not in _COUNTS} for r in requests])


def parse_requests(payload: bytes | bytearray) -> list[UpRequest]:
    out = []
    for item in _list(load_json(payload, "up request"), "up request"):
        d = _fields(item, "up request", _REQUEST_REQUIRED, _REQUEST_OPTIONAL)
        out.append(
            UpRequest(
                sample=_sample(d["sample"]),
                present=_ids(d["present"], "present"),
                device_payload=_byte_counts(d["device_payload"], "device_payload"),
                device_header=_byte_shares(d["device_header"], "device_header"),
                device_mqtt=_byte_shares(d["device_mqtt"], "device_mqtt"),
                captured=_float(d["captured"], "captured", 0.0),
                local_prediction=_int(d["local_prediction"], "local_prediction", 0, MAX_NODE_ID),
                edge_prediction=_int(
                    d.get("edge_prediction", -1), "edge_prediction", -1, MAX_NODE_ID
                ),
                edges=_ids(d.get("edges", []), "edges"),
                edge_payload=_byte_counts(d.get("edge_payload", {}), "edge_payload"),
                flags=_flags(d.get("flags", [])),
                local_confidence=_float(d.get("local_confidence", 0.0), "confidence", 0.0, 1.0),
                edge_confidence=_float(d.get("edge_confidence", 0.0), "confidence", 0.0, 1.0),
                model_version=None
                if d.get("model_version") is None
                else _int(d["model_version"], "model_version", 0, 0xFFFFFFFF),
            )
        )
    return out


def parse_routes(payload: bytes | bytearray) -> list[UpRequest]:
    """Up or forward requests as an edge reads them: sample, present devices, edges, model
    version and flags, each checked; the byte counts (there or not) are neither checked nor
    kept, since only the cloud uses them."""
    out = []
    for item in _list(load_json(payload, "up request"), "up request"):
        d = _fields(item, "up request", _ROUTE_REQUIRED, _REQUEST_REQUIRED | _REQUEST_OPTIONAL)
        out.append(
            UpRequest(
                sample=_sample(d["sample"]),
                present=_ids(d["present"], "present"),
                device_payload={},
                device_header={},
                device_mqtt={},
                captured=0.0,
                local_prediction=0,
                edges=_ids(d.get("edges", []), "edges"),
                flags=_flags(d.get("flags", [])),
                model_version=None
                if d.get("model_version") is None
                else _int(d["model_version"], "model_version", 0, 0xFFFFFFFF),
            )
        )
    return out


_ROUTE_REQUIRED = {"sample", "present"}


# ---------------------------------------------------------------------------------------------
# receipts (edge -> aggregator): the device -> edge bytes of the samples an edge ran


@dataclass(frozen=True)
class Receipt:
    """The bytes each device sent an edge for one sample (payload, its share of frame headers
    and of MQTT overhead), and the flags the edge raised."""

    payload: dict[str, int]
    header: dict[str, float]
    mqtt: dict[str, float]
    flags: list[str]


def encode_receipts(receipts: dict[int, Receipt]) -> bytes:
    return _dump({str(s): r for s, r in receipts.items()})  # orjson writes dataclasses itself


def parse_receipts(payload: bytes | bytearray) -> dict[int, Receipt]:
    out = {}
    for key, item in _dict(load_json(payload, "receipts"), "receipts").items():
        if not (key.isdigit() and key.isascii()):
            raise MessageError(f"receipt key {_show(key)} is not a sample id")
        d = _fields(item, "receipt", {"payload", "header", "mqtt", "flags"}, set())
        out[_sample(int(key))] = Receipt(
            _byte_counts(d["payload"], "receipt payload"),
            _byte_shares(d["header"], "receipt header"),
            _byte_shares(d["mqtt"], "receipt mqtt"),
            _flags(d["flags"]),
        )
    return out


# ---------------------------------------------------------------------------------------------
# answers (aggregator, cloud -> results)


@dataclass
class Answer:
    """One sample's outcome as published on the results topic.

    Attributes:
        sample: Sample id (its index in the replayed split).
        prediction: Class index; -1 when the sample failed.
        exit: ``local``, ``edge`` or ``cloud``; ``none`` when the sample failed.
        present: Devices whose frames were fused.
        device_payload: Payload bytes each device sent for this sample (scores + features).
        device_header: Each device's share of frame-header bytes for this sample (a batched
            frame's header is shared by the samples it carries).
        device_mqtt: Each device's share of MQTT packet overhead (fixed header, topic, packet
            id, properties) of those frames.
        edge_payload: Payload bytes each edge sent to the cloud.
        captured: Wall-clock time the first device captured the sample (seconds since epoch).
        answered: Wall-clock time the answer was published.
        flags: Why an answer is degraded, e.g. ``cloud_unreachable``, ``features_missing``.
        error: Why the sample could not be answered at all (then ``prediction`` is -1).
        schema: Version of this answer format (:data:`ANSWER_SCHEMA`); applications check it.
        class_name: Name of the predicted class ("" when failed).
        confidence: Softmax probability of the predicted class at the answering exit, in [0, 1].
        missing: Devices of the hierarchy whose frames were not fused.
        model_version: 32-bit version of the run whose sections produced the answer.
    """

    sample: int
    prediction: int
    exit: str
    present: list[int]
    device_payload: dict[str, int] = field(default_factory=dict)
    device_header: dict[str, float] = field(default_factory=dict)
    device_mqtt: dict[str, float] = field(default_factory=dict)
    edge_payload: dict[str, int] = field(default_factory=dict)
    captured: float = 0.0
    answered: float = 0.0
    flags: list[str] = field(default_factory=list)
    error: str = ""
    schema: int = ANSWER_SCHEMA
    class_name: str = ""
    confidence: float = 0.0
    missing: list[int] = field(default_factory=list)
    model_version: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def latency_ms(self) -> float:
        """Milliseconds from the first device's capture to the answer."""
        return 1000.0 * (self.answered - self.captured)


def failure(
    sample: int, error: str, now: float, code: str, present: list[int] | None = None
) -> Answer:
    """The answer of a sample no exit could answer: reported failed, with the reason (``error``,
    for people) and its short ``code`` (in ``flags``, for counting: ``no_frames``)."""
    return Answer(
        sample, -1, "none", present or [], captured=now, answered=now, flags=[code], error=error
    )


_ANSWER_REQUIRED = {"sample", "prediction", "exit", "present"}
_ANSWER_OPTIONAL = set(Answer.__dataclass_fields__) - _ANSWER_REQUIRED


def encode_answers(answers: list[Answer]) -> bytes:
    return _dump([vars(a) for a in answers])


def parse_answer_samples(payload: bytes | bytearray) -> list[int]:
    """Only the sample ids of a results message (what the aggregator needs to know that the
    cloud answered), each checked; the rest of each answer is not validated or built."""
    out = []
    for item in _list(load_json(payload, "results"), "results"):
        if not isinstance(item, dict) or "sample" not in item:
            raise MessageError(f"answer must be an object with a sample id, got {_show(item)}")
        out.append(_sample(item["sample"]))
    return out


def parse_answers(payload: bytes | bytearray) -> list[Answer]:
    out = []
    for item in _list(load_json(payload, "results"), "results"):
        d = _fields(item, "answer", _ANSWER_REQUIRED, _ANSWER_OPTIONAL)
        exit_name = d["exit"]
        if exit_name not in EXITS:
            raise MessageError(f"answer exit {_show(exit_name)}; accepted: {', '.join(EXITS)}")
        error = _text(d.get("error", ""), "answer error")
        prediction = _int(d["prediction"], "prediction", -1 if error else 0, MAX_NODE_ID)
        out.append(
            Answer(
                sample=_sample(d["sample"]),
                prediction=prediction,
                exit=exit_name,
                present=_ids(d["present"], "present"),
                device_payload=_byte_counts(d.get("device_payload", {}), "device_payload"),
                device_header=_byte_shares(d.get("device_header", {}), "device_header"),
                device_mqtt=_byte_shares(d.get("device_mqtt", {}), "device_mqtt"),
                edge_payload=_byte_counts(d.get("edge_payload", {}), "edge_payload"),
                captured=_float(d.get("captured", 0.0), "captured", 0.0),
                answered=_float(d.get("answered", 0.0), "answered", 0.0),
                flags=_flags(d.get("flags", [])),
                error=error,
                schema=_int(d.get("schema", ANSWER_SCHEMA), "schema", 1, ANSWER_SCHEMA),
                class_name=_text(d.get("class_name", ""), "class_name"),
                confidence=_float(d.get("confidence", 0.0), "confidence", 0.0, 1.0),
                missing=_ids(d.get("missing", []), "missing"),
                model_version=_int(d.get("model_version", 0), "model_version", 0, 2**32 - 1),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# rollout (operator <-> nodes; the protocol is in ddnn.runtime.rollout)


ROLLOUT_SCHEMA = 1


@dataclass(frozen=True)
class Announce:
    """The retained ``rollout`` message: prepare ``version``, whose manifest hashes to
    ``manifest_sha256``."""

    version: int
    manifest_sha256: str


def encode_announce(a: Announce) -> bytes:
    return _dump(
        {"schema": ROLLOUT_SCHEMA, "version": a.version, "manifest_sha256": a.manifest_sha256}
    )


def parse_announce(payload: bytes | bytearray) -> Announce:
    d = _dict(load_json(payload, "rollout"), "rollout", 3)
    if set(d) != {"schema", "version", "manifest_sha256"} or d["schema"] != ROLLOUT_SCHEMA:
        raise MessageError(
            f"rollout message must be {{schema: {ROLLOUT_SCHEMA}, version, manifest_sha256}}, "
            f"got fields {sorted(d)[:5]}"
        )
    digest = _text(d["manifest_sha256"], "manifest_sha256")
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise MessageError("manifest_sha256 must be 64 lowercase hex digits")
    return Announce(_int(d["version"], "version", 0, 0xFFFFFFFF), digest)


@dataclass(frozen=True)
class Reply:
    """A node's answer to an announce."""

    node: str
    version: int
    ok: bool
    error: str = ""


def encode_reply(r: Reply) -> bytes:
    return _dump({"version": r.version, "ok": r.ok, "error": r.error})


def parse_reply(node: str, payload: bytes | bytearray) -> Reply:
    d = _dict(load_json(payload, "rollout reply"), "rollout reply", 3)
    if set(d) != {"version", "ok", "error"} or not isinstance(d["ok"], bool):
        raise MessageError("rollout reply must be {version, ok: bool, error}")
    return Reply(
        node, _int(d["version"], "version", 0, 0xFFFFFFFF), d["ok"], _text(d["error"], "error")
    )
