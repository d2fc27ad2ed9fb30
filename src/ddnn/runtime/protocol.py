"""The runtime's MQTT protocol: topic names and the small JSON control messages.

Data frames (class scores, bit-packed features) are the codec's binary frames. Everything else —
feature requests, results, flow control — is compact JSON, off the data path's byte count.

Topics, under ``ddnn/<namespace>/`` (one namespace per deployment, so runs never mix):

=============================  ======================  ==================================
topic                          publisher → subscriber  payload
=============================  ======================  ==================================
``device/K/scores``            device K → aggregator   SCORES frame (phase one)
``device/K/features``          device K → its edge     FEATURES frame (phase two)
                               or the cloud
``request``                    aggregator → devices,   JSON: samples that go up, with the
                               edges / cloud           devices present for each
``edge/E/scores``              edge E → aggregator     SCORES frame, sender = E
``edge/E/features``            edge E → cloud          FEATURES frame, sender = E
``forward``                    aggregator → edges,     JSON: samples the edge exit sends on
                               cloud
``results``                    aggregator, cloud →     JSON list of answers
                               client
``edge/E/receipts``            edge E → aggregator     JSON: feature bytes it received
``progress``                   aggregator → devices    JSON: samples decided (flow control)
``status/NODE``                node → all (retained)   ``online`` / ``offline`` / ``done``
``control``                    client → all            ``stop``
=============================  ======================  ==================================
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

ONLINE, OFFLINE, DONE = b"online", b"offline", b"done"
STOP = b"stop"

# Exits of the runtime's answers, in the model's order.
LOCAL, EDGE, CLOUD = "local", "edge", "cloud"


@dataclass(frozen=True)
class Topics:
    """Topic names of one deployment namespace."""

    namespace: str

    def __post_init__(self) -> None:
        bad = set("/+#\0") & set(self.namespace)
        if not self.namespace or bad:
            raise ValueError(
                f"namespace {self.namespace!r} must be non-empty without '/', '+', '#' or NUL"
            )

    @property
    def root(self) -> str:
        return f"ddnn/{self.namespace}"

    def device_scores(self, k: int | str) -> str:
        return f"{self.root}/device/{k}/scores"

    def device_features(self, k: int | str) -> str:
        return f"{self.root}/device/{k}/features"

    def edge_scores(self, e: int | str) -> str:
        return f"{self.root}/edge/{e}/scores"

    def edge_features(self, e: int | str) -> str:
        return f"{self.root}/edge/{e}/features"

    def edge_receipts(self, e: int | str) -> str:
        return f"{self.root}/edge/{e}/receipts"

    @property
    def request(self) -> str:
        return f"{self.root}/request"

    @property
    def forward(self) -> str:
        return f"{self.root}/forward"

    @property
    def results(self) -> str:
        return f"{self.root}/results"

    @property
    def progress(self) -> str:
        return f"{self.root}/progress"

    @property
    def control(self) -> str:
        return f"{self.root}/control"

    def status(self, node: str) -> str:
        return f"{self.root}/status/{node}"

    @staticmethod
    def index_in(topic: str, kind: str) -> int | None:
        """The K of ``…/<kind>/K/…`` in a topic, or ``None``."""
        parts = topic.split("/")
        for i, part in enumerate(parts[:-1]):
            if part == kind and parts[i + 1].isdigit():
                return int(parts[i + 1])
        return None


@dataclass
class Answer:
    """One sample's outcome as published on the results topic.

    Attributes:
        sample: Sample id (its index in the replayed split).
        prediction: Class index.
        exit: ``local``, ``edge`` or ``cloud``.
        present: Devices whose frames were fused.
        device_payload: Codec payload bytes each device sent for this sample (scores + features).
        device_frames: Frames each device sent for this sample.
        device_mqtt: MQTT packet overhead of those frames (fixed header, topic, packet id, props).
        edge_payload: Payload bytes each edge sent to the cloud.
        captured: Wall-clock time the first device captured the sample (seconds since epoch).
        answered: Wall-clock time the answer was published.
        flags: Why an answer is degraded, e.g. ``cloud_unreachable``, ``features_missing``.
    """

    sample: int
    prediction: int
    exit: str
    present: list[int]
    device_payload: dict[str, int] = field(default_factory=dict)
    device_frames: dict[str, int] = field(default_factory=dict)
    device_mqtt: dict[str, int] = field(default_factory=dict)
    edge_payload: dict[str, int] = field(default_factory=dict)
    captured: float = 0.0
    answered: float = 0.0
    flags: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Answer:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def encode_answers(answers: list[Answer]) -> bytes:
    return json.dumps([asdict(a) for a in answers], separators=(",", ":")).encode()


def decode_answers(payload: bytes | bytearray) -> list[Answer]:
    """Parses a results message; raises ``ValueError`` on anything malformed."""
    items = json.loads(payload)
    if not isinstance(items, list):
        raise ValueError("a results message must be a JSON list")
    return [Answer.from_dict(item) for item in items]


@dataclass
class UpRequest:
    """A sample that goes up: which devices were present and what they sent so far.

    The aggregator publishes these on ``request`` (devices then send their features) and on
    ``forward`` (edges then send theirs); the tier above uses them to know whom to wait for and
    to carry the byte counts into the final answer.
    """

    sample: int
    present: list[int]
    device_payload: dict[str, int]
    device_frames: dict[str, int]
    device_mqtt: dict[str, int]
    captured: float
    local_prediction: int
    edge_prediction: int = -1
    edges: list[int] = field(default_factory=list)
    edge_payload: dict[str, int] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


def encode_requests(requests: list[UpRequest]) -> bytes:
    return json.dumps([asdict(r) for r in requests], separators=(",", ":")).encode()


def decode_requests(payload: bytes | bytearray) -> list[UpRequest]:
    items = json.loads(payload)
    if not isinstance(items, list):
        raise ValueError("a request message must be a JSON list")
    fields = UpRequest.__dataclass_fields__
    return [UpRequest(**{k: item[k] for k in fields if k in item}) for item in items]
