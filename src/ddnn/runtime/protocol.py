"""The runtime's MQTT protocol: topic names, and who publishes and reads each.

Data frames (class scores, bit-packed features) are the codec's binary frames. Everything else —
feature requests, results, flow control — is compact JSON whose schemas and validating parsers
live in :mod:`ddnn.runtime.messages`. Each node may read only what it needs (the broker's ACLs
enforce it under ``--secure``): devices learn which samples to send features for, not the
other devices' scores or the local predictions.

Topics, under ``ddnn/<namespace>/`` (one namespace per deployment, so runs never mix):

=============================  ======================  ==================================
topic                          publisher → subscriber  payload
=============================  ======================  ==================================
``device/K/scores``            device K → aggregator   SCORES frame (phase one)
``device/K/features``          device K → its edge     FEATURES frame (phase two)
                               or the cloud
``request``                    aggregator → devices    JSON: samples that go up and the
                                                       devices asked for their features
``up``                         aggregator → edges,     JSON: those samples' context (present
                               cloud                   devices, bytes so far, local exit)
``edge/E/scores``              edge E → aggregator     SCORES frame, sender = E
``edge/E/features``            edge E → cloud          FEATURES frame, sender = E
``forward``                    aggregator → edges,     JSON: samples the edge exit sends on
                               cloud
``results``                    aggregator, cloud →     JSON list of answers
                               client
``edge/E/receipts``            edge E → aggregator     JSON: feature bytes it received
``progress``                   aggregator → devices    JSON: samples decided (flow control)
``status/NODE``                node → all (retained)   ``online`` / ``offline`` / ``done``
``control``                    client → all            ``stop`` / ``start [TIME]``
=============================  ======================  ==================================
"""

from __future__ import annotations

from dataclasses import dataclass

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
    def up(self) -> str:
        return f"{self.root}/up"

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
            if part == kind and parts[i + 1].isascii() and parts[i + 1].isdigit():
                return int(parts[i + 1])
        return None
