"""The runtime's MQTT protocol: topic names, and who publishes and reads each.

Data frames (class scores, bit-packed features) and the two control messages every device
receives (feature asks, progress) are binary (:mod:`ddnn.wire`); the rest — the context of the
samples that go up, results, receipts — is compact JSON whose schemas and validating parsers
live in :mod:`ddnn.runtime.messages`. Each node may read only what it needs (the broker's ACLs
enforce it under ``--secure``): devices learn which samples to send features for, not the
other devices' scores or the local predictions.

Topics, under ``ddnn/<namespace>/`` (one namespace per deployment, so runs never mix). The
topics on the data path are short, because MQTT repeats the topic name in every packet (a
long name cost a device more bytes than its frame header); those an operator or application
reads keep readable names:

==========================  ======================  ==========================================
topic                       publisher → subscriber  payload
==========================  ======================  ==========================================
``d/K/s``                   device K → aggregator   SCORES frame (phase one)
``d/K/f``                   device K → its edge     FEATURES frame (phase two)
                            or the cloud
``ask``                     aggregator → devices    ASKS: samples that go up and the devices
                                                    asked for their features
``up``                      aggregator → edges,     JSON: those samples' context (present
                            cloud                   devices, bytes so far, local exit)
``e/E/s``                   edge E → aggregator     SCORES frame, sender = E
``e/E/f``                   edge E → cloud          FEATURES frame, sender = E
``fw``                      aggregator → edges,     JSON: samples the edge exit sends on
                            cloud
``e/E/r``                   edge E → aggregator     JSON: feature bytes it received (receipts)
``pos``                     aggregator → devices    PROGRESS: samples decided (flow control),
                                                    retained
``results``                 aggregator, cloud →     JSON list of answers
                            client
``tick``                    trigger → devices       TICK: capture sample K now (synchronized
                                                    capture of live sources)
``status/NODE``             node → all (retained)   ``online`` / ``offline`` / ``done``
``stats/NODE``              node → gateway          JSON: the node's counts, every second
                                                    (:mod:`ddnn.runtime.metrics`)
``control``                 client → all            ``stop`` / ``start [TIME]`` /
                                                    ``switch VERSION`` (to the aggregator)
``rollout``                 operator → all          JSON: a model version to prepare and the
                            (retained)              sha256 of its run's manifest
``rollout/b/NODE``          operator → NODE         zip: the manifest, config and the NODE's
                            (retained)              section files of that version
``rollout/ok/NODE``         NODE → operator         JSON: prepared (or why not)
==========================  ======================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass

ONLINE, OFFLINE, DONE = b"online", b"offline", b"done"
# Flow control. Under load a device sends what is ready in one frame of up to BATCH samples and
# runs up to WINDOW samples ahead of the aggregator's decisions; at light load its frames hold one
# sample. Measured in benchmarks/runtime_speed.py (results_runtime_speed.txt): with 16 and 64, 60
# devices were limited to ~110 samples/s by per-frame costs; 64 and 256 amortize them.
BATCH = 64  # most samples per device inference call and frame
WINDOW = 256  # samples a device runs ahead of the decided ones; ids the aggregator accepts ahead

STOP = b"stop"

# The topic levels that name a device's or an edge's own topics: ddnn/<ns>/d/K/…, …/e/E/…
DEVICE, EDGE_NODE = "d", "e"

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
        return f"{self.root}/{DEVICE}/{k}/s"

    def device_features(self, k: int | str) -> str:
        return f"{self.root}/{DEVICE}/{k}/f"

    def edge_scores(self, e: int | str) -> str:
        return f"{self.root}/{EDGE_NODE}/{e}/s"

    def edge_features(self, e: int | str) -> str:
        return f"{self.root}/{EDGE_NODE}/{e}/f"

    def edge_receipts(self, e: int | str) -> str:
        return f"{self.root}/{EDGE_NODE}/{e}/r"

    @property
    def request(self) -> str:
        return f"{self.root}/ask"

    @property
    def up(self) -> str:
        return f"{self.root}/up"

    @property
    def forward(self) -> str:
        return f"{self.root}/fw"

    @property
    def results(self) -> str:
        return f"{self.root}/results"

    @property
    def progress(self) -> str:
        return f"{self.root}/pos"

    @property
    def tick(self) -> str:
        return f"{self.root}/tick"

    @property
    def control(self) -> str:
        return f"{self.root}/control"

    def status(self, node: str) -> str:
        return f"{self.root}/status/{node}"

    def stats(self, node: str) -> str:
        return f"{self.root}/stats/{node}"

    def message_kind(self, topic: str) -> str:
        """What a topic carries, as metrics label it: ``scores``, ``features``, ``answers``,
        ``status`` or ``control`` (everything else: requests, progress, ticks, receipts, …)."""
        if topic == self.results:
            return "answers"
        rest = topic[len(self.root) + 1 :]
        if rest.startswith(("status/", "stats/")):
            return "status"
        if rest.startswith((f"{DEVICE}/", f"{EDGE_NODE}/")):
            if rest.endswith("/s"):
                return "scores"
            if rest.endswith("/f"):
                return "features"
        return "control"

    @property
    def rollout(self) -> str:
        return f"{self.root}/rollout"

    def rollout_bundle(self, node: str) -> str:
        return f"{self.root}/rollout/b/{node}"

    def rollout_reply(self, node: str) -> str:
        return f"{self.root}/rollout/ok/{node}"

    def is_edge_topic(self, topic: str) -> bool:
        return topic.startswith(f"{self.root}/{EDGE_NODE}/")

    @staticmethod
    def index_in(topic: str, level: str) -> int | None:
        """The K of ``…/<level>/K/…`` in a topic (``level`` is :data:`DEVICE` or
        :data:`EDGE_NODE`), or ``None``."""
        parts = topic.split("/")
        for i, part in enumerate(parts[:-1]):
            if part == level and parts[i + 1].isascii() and parts[i + 1].isdigit():
                return int(parts[i + 1])
        return None
