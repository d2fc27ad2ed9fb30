"""Model rollout without downtime: a running deployment switches to a new run's sections at a
sample boundary, and no sample is lost or served by a mix of the two models.

The protocol, driven by ``ddnn rollout --run NEW_RUN`` (the operator's login under ``--secure``;
the broker's ACLs let no node publish on these topics):

1. **Bundles.** For every node online, one retained ``rollout/b/NODE`` message: a zip holding the
   new run's ``manifest.json``, ``config.yaml`` and the section files that node serves.
2. **Announce.** The retained ``rollout`` message names the new model version and the sha256 of
   its manifest. A node that holds both checks the bundle: the manifest's hash and version, and
   every file against the manifest's sha256 and size. It then loads the sections next to the
   ones it serves (a C-engine device generates and compiles its new C code), checks that they
   fit the running hierarchy (shapes, classes, groups), and answers on ``rollout/ok/NODE``:
   prepared, or why not. Nothing switches yet; a node that fails keeps serving, and the
   operator is told which node refused and why.
3. **Switch.** Once every node is prepared, the operator sends ``switch VERSION`` on the control
   topic. The aggregator picks the switch point S: one window past every sample id any device
   may have captured (devices run at most a window ahead of the decided samples). From then on
   its progress messages carry ``(S, tag)``, and since a device only moves on when progress
   opens its window, every device learns S before it captures S. Samples below S are served by
   the old model everywhere, samples from S on by the new one: devices split a batch at S, the
   aggregator fuses and answers by the sample's model, and the edges and cloud run the model
   the request names. Every answer carries the version that produced it.

A node restarted after a rollout reads the retained announce and bundle and prepares the new
model again, and the retained progress tells it S. The received files live in a private
temporary folder of the node process.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

from ddnn.config import ModelConfig
from ddnn.runtime.messages import (
    MAX_TEXT,
    Announce,
    MessageError,
    Reply,
    encode_announce,
    parse_announce,
    parse_reply,
)
from ddnn.train.checkpoint import CONFIG, MANIFEST, verify_run
from ddnn.wire import model_tag

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # a node refuses a bigger bundle (the broker's limit too)
KEEP_MODELS = 3  # versions a node keeps loaded: the old, the current and one being prepared

M = TypeVar("M")


# ---------------------------------------------------------------------------------------------
# which files a node needs


def node_files(config: ModelConfig, node: str) -> list[str]:
    """The run files node ``node`` loads: the manifest, the config and its sections.

    Raises:
        ValueError: If the run has no such node (a rollout keeps the hierarchy).
    """
    kind, _, index = node.partition("_")
    groups = config.edge.groups
    if kind == "device" and index.isdigit() and int(index) < config.num_devices:
        sections = [node]
    elif node == "aggregator":
        sections = ["local"] + (["edge_exit"] if groups else [])
    elif kind == "edge" and index.isdigit() and int(index) < len(groups):
        sections = [node]
    elif node == "cloud" and config.cloud.enabled:
        sections = ["cloud"] + (["edge_0"] if groups else [])
    else:
        raise ValueError(
            f"the new run has no node {node!r} (it has {config.num_devices} devices, "
            f"{len(groups)} edges, {'a' if config.cloud.enabled else 'no'} cloud); a rollout "
            "keeps the hierarchy — deploy a different hierarchy anew"
        )
    return [MANIFEST, CONFIG, *(f"sections/{s}.pt" for s in sections)]


def make_bundle(run_dir: str | Path, files: list[str]) -> bytes:
    """A zip (stored, not compressed: weights do not compress) of ``files`` of a run."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in files:
            z.write(Path(run_dir) / name, name)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# a node's side


def unpack_bundle(payload: bytes, announce: Announce, dest: Path) -> Path:
    """Checks a bundle against its announce and extracts it into ``dest``; returns ``dest``.

    Raises:
        ValueError: naming what does not match (the run is then not used).
    """
    if len(payload) > MAX_BUNDLE_BYTES:
        raise ValueError(f"bundle of {len(payload)} bytes is over {MAX_BUNDLE_BYTES}")
    try:
        z = zipfile.ZipFile(io.BytesIO(payload))
        names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"bundle is not a zip file ({exc})") from None
    try:  # a damaged member (CRC, an unsupported method) is a refusal, not a node error
        with z:
            _extract(z, names, announce, dest)
    except (zipfile.BadZipFile, NotImplementedError, zlib.error, EOFError) as exc:
        raise ValueError(f"bundle is damaged ({type(exc).__name__}: {exc})") from None
    version = verify_run(dest, required=[n for n in names if n != MANIFEST])
    if version != announce.version:
        raise ValueError(
            f"the bundle's manifest is of model version {version}, the announce says "
            f"{announce.version}"
        )
    return dest


def _extract(z: zipfile.ZipFile, names: list[str], announce: Announce, dest: Path) -> None:
    """The checks that need the members, then the files written into ``dest``."""
    for name in names:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or "\\" in name or not parts:
            raise ValueError(f"bundle holds a file with an unsafe path {name[:60]!r}")
    if MANIFEST not in names:
        raise ValueError(f"bundle has no {MANIFEST}")
    total = sum(i.file_size for i in z.infolist())
    if total > MAX_BUNDLE_BYTES:
        raise ValueError(f"bundle unpacks to {total} bytes, over {MAX_BUNDLE_BYTES}")
    manifest = z.read(MANIFEST)
    if hashlib.sha256(manifest).hexdigest() != announce.manifest_sha256:
        raise ValueError("the bundle's manifest is not the one announced (sha256 differs)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(name))


class Versions(Generic[M]):
    """The models a node holds, by version, and which one serves a given sample.

    Before any rollout every sample is served by the version the node started with; after a
    switch ``(S, version)``, samples from S on are served by ``version``.
    """

    def __init__(self, version: int, model: M) -> None:
        self.models: dict[int, M] = {version: model}
        self.base = version  # serves samples below every switch point
        self.switches: list[tuple[int, int]] = []  # (first sample, version), increasing

    @property
    def newest(self) -> int:
        """The version serving the newest samples."""
        return self.switches[-1][1] if self.switches else self.base

    def version_for(self, sample: int) -> int:
        version = self.base
        for at, v in self.switches:
            if sample >= at:
                version = v
        return version

    def model_for(self, sample: int) -> M:
        return self.models[self.version_for(sample)]

    def by_tag(self, tag: int) -> int | None:
        """The version whose 16-bit frame tag is ``tag`` (``None`` if none held)."""
        for version in self.models:
            if model_tag(version) == tag:
                return version
        return None

    def add(self, version: int, model: M) -> None:
        """Holds ``version`` (prepared); the oldest versions beyond :data:`KEEP_MODELS` go."""
        clash = [v for v in self.models if v != version and model_tag(v) == model_tag(version)]
        if clash:
            raise ValueError(
                f"model version {version} has the same 16-bit frame tag as {clash[0]}, which "
                "this deployment serves; retrain (any change of the weights gives another)"
            )
        self.models[version] = model
        while len(self.models) > KEEP_MODELS:
            used = {version, self.base, *(v for _, v in self.switches)}
            old = next((v for v in self.models if v not in used), None)
            if old is None:
                break
            del self.models[old]

    def switch(self, at: int, version: int) -> bool:
        """Serve ``version`` from sample ``at`` on; ``False`` if it is not held. A repeated
        switch changes nothing; switches before the newest are settled and dropped."""
        if version not in self.models:
            return False
        if self.switches and self.switches[-1] == (at, version):
            return True
        if self.switches and at <= self.switches[-1][0]:
            return self.switches[-1] == (at, version)
        self.switches.append((at, version))
        return True

    def settle(self, below: int) -> None:
        """Samples below ``below`` are all done: switch points under it become the base."""
        while self.switches and self.switches[0][0] <= below:
            self.base = self.switches.pop(0)[1]


@dataclass
class _Pending:
    announce: Announce | None = None
    bundle: bytes | None = None


class RolloutParticipant:
    """A node's part in a rollout: pairs the announce with the node's bundle, unpacks and checks
    it, has the node prepare the model (``prepare(run_dir, version)``, which raises
    ``ValueError`` when it does not fit), and replies."""

    def __init__(
        self,
        node: str,
        prepare: Callable[[Path, int], None],
        reply: Callable[[Reply], None],
        prepared: Callable[[int], bool],
    ) -> None:
        self.node = node
        self._prepare = prepare
        self._reply = reply
        self._prepared = prepared
        self.pending = _Pending()
        self.folder: Path | None = None

    def on_announce(self, payload: bytes | bytearray) -> None:
        self.pending.announce = parse_announce(payload)
        self._try()

    def on_bundle(self, payload: bytes | bytearray) -> None:
        if len(payload) > MAX_BUNDLE_BYTES:
            raise MessageError(f"rollout bundle of {len(payload)} bytes", "oversized")
        self.pending.bundle = bytes(payload)
        self._try()

    def _try(self) -> None:
        a, bundle = self.pending.announce, self.pending.bundle
        if a is None:
            return
        if self._prepared(a.version):
            self._reply(Reply(self.node, a.version, True))
            return
        if bundle is None:
            return
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix=f"ddnn-{self.node}-rollout-"))
        dest = self.folder / f"v{a.version:08x}"
        try:
            shutil.rmtree(dest, ignore_errors=True)
            self._prepare(unpack_bundle(bundle, a, dest), a.version)
        except ValueError as exc:
            log.error("%s: cannot prepare model version %d: %s", self.node, a.version, exc)
            self._reply(
                Reply(
                    self.node,
                    a.version,
                    False,
                    str(exc)[: MAX_TEXT - 3] + "..." if len(str(exc)) > MAX_TEXT else str(exc),
                )
            )
            return
        log.info("%s: model version %d prepared", self.node, a.version)
        self.pending.bundle = None  # the files are on disk now
        self._reply(Reply(self.node, a.version, True))

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the operator's side: `ddnn rollout`


@dataclass
class RolloutResult:
    """What a rollout did."""

    version: int
    nodes: list[str]  # the nodes that prepared it
    switch_at: int  # the first sample the new model serves
    switched: bool  # the deployment decided a sample at or past the switch point


class RolloutError(RuntimeError):
    """A node refused the new model, or did not answer in time (nothing was switched)."""


def run_rollout(
    settings: Any,
    topics: Any,
    run_dir: str | Path,
    timeout: float = 120.0,
    settle: float = 30.0,
    say: Callable[[str], None] = lambda _: None,
) -> RolloutResult:
    """Rolls ``run_dir`` out to the deployment under ``topics`` (see the module docstring).

    Args:
        settings: The operator's :class:`~ddnn.runtime.mqtt.BrokerSettings`.
        topics: The deployment's :class:`~ddnn.runtime.protocol.Topics`.
        run_dir: The new run (checked against its manifest first).
        timeout: Seconds the nodes have to prepare (a C-engine device compiles), and the
            aggregator to set the switch point.
        settle: Seconds to wait for the deployment to pass the switch point (a deployment with
            no samples flowing switches when they come).
        say: Progress lines for the command line.

    Raises:
        ValueError: A bad run, or a deployment this run cannot replace (no node online, a node
            the run has no section for).
        RolloutError: A node refused or stayed silent, or no switch point came.
        BrokerError: The broker cannot be reached.
    """
    import queue
    import time

    from ddnn.runtime.deploy import read_run_config
    from ddnn.runtime.messages import parse_progress, parse_status
    from ddnn.runtime.mqtt import close_client, connect_client

    run = Path(run_dir)
    config = read_run_config(run).model  # also checks every file against the manifest
    version = verify_run(run)
    digest = hashlib.sha256((run / MANIFEST).read_bytes()).hexdigest()
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    subs = [(topics.status("+"), 1), (topics.rollout_reply("+"), 1), (topics.progress, 1)]
    client = connect_client(f"ddnn-{topics.namespace}-rollout", settings, inbox.put, subs)
    try:
        status: dict[str, str] = {}
        replies: dict[str, Reply] = {}
        progress: list[Any] = []

        def drain(until: float, done: Callable[[], bool]) -> None:
            while not done() and time.monotonic() < until:
                try:
                    msg = inbox.get(timeout=max(0.01, min(0.1, until - time.monotonic())))
                except queue.Empty:
                    continue
                try:
                    if msg.topic == topics.progress:
                        progress.append(parse_progress(msg.payload))
                    elif msg.topic.startswith(topics.rollout_reply("")):
                        r = parse_reply(msg.topic.rsplit("/", 1)[1], msg.payload)
                        if r.version == version:
                            replies[r.node] = r
                    else:
                        status[msg.topic.rsplit("/", 1)[1]] = parse_status(msg.payload)
                except MessageError:
                    continue

        drain(time.monotonic() + 1.0, lambda: False)  # the retained status of every node
        online = sorted(n for n, st in status.items() if st == "online")
        model_nodes = [n for n in online if n != "trigger"]
        if not model_nodes:
            raise ValueError(
                f"no node of namespace {topics.namespace!r} is online at {settings.url}"
            )
        bundles = {n: make_bundle(run, node_files(config, n)) for n in model_nodes}
        infos = [
            client.publish(topics.rollout_bundle(n), b, qos=1, retain=True)
            for n, b in bundles.items()
        ]
        infos.append(
            client.publish(
                topics.rollout, encode_announce(Announce(version, digest)), qos=1, retain=True
            )
        )
        for info in infos:
            info.wait_for_publish(timeout)
        size = sum(len(b) for b in bundles.values())
        say(f"sent model version {version} to {len(bundles)} nodes ({size} bytes); preparing")
        drain(time.monotonic() + timeout, lambda: all(n in replies for n in model_nodes))
        refused = [f"{r.node}: {r.error}" for r in replies.values() if not r.ok]
        silent = [n for n in model_nodes if n not in replies]
        if refused or silent:
            raise RolloutError(
                "nothing was switched: "
                + "; ".join(refused + [f"{n}: no answer within {timeout:g} s" for n in silent])
            )
        say(f"all {len(model_nodes)} nodes prepared it; switching")
        progress.clear()
        client.publish(topics.control, f"switch {version}".encode(), qos=1).wait_for_publish(
            timeout
        )
        tag = model_tag(version)

        def switch_at() -> int | None:
            for p in progress:
                if p.switch is not None and p.switch[1] == tag:
                    return int(p.switch[0])
            return None

        drain(time.monotonic() + timeout, lambda: switch_at() is not None)
        at = switch_at()
        if at is None:
            raise RolloutError(
                f"the aggregator did not set a switch point within {timeout:g} s (is it online?)"
            )
        say(f"samples from {at} on are served by model version {version}")
        drain(time.monotonic() + settle, lambda: any(p.decided >= at for p in progress))
        switched = any(p.decided >= at for p in progress)
        return RolloutResult(version, model_nodes, at, switched)
    finally:
        close_client(client)
