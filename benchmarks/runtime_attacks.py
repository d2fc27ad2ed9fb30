"""Hostile checks of the MQTT runtime (issue 11): each attack class against a real local deployment.

Every scenario starts its own ``start_local`` deployment (mosquitto on loopback, every node a
process), starts a paced replay, lands its attack mid-run from a separate MQTT client (or by
killing / duplicating processes), collects, and measures what issue 11 asks of the runtime:

* every sample answered or failed with a reason (``lost`` = samples - answered - failed = 0;
  failures the run client filled in itself because no node reported the sample begin with
  "no answer" and are counted as ``unaccounted``);
* no node process dies (exits non-zero, or before the final stop) unless the scenario killed it
  on purpose, and every node acts on the final STOP (within 30 s);
* the resident memory (VmRSS) of each node process stays bounded (growth < 30 MB);
* each class's own check (a counter in the node logs, a flag, a time bound): the ``verdict``.

Scenarios (keys for ``--only``): 0 baseline; 1a-1c forged sample ids (far ahead, inside the
window, through ``progress``); 2 lost window; 3 malformed messages (configuration f); 4 session
takeover under ``--secure``; 5 the aggregator dies; 6a-6d memory (huge frame, orphan and scores
floods, tiny-message flood); 7 NaN/inf scores; 8 a dead edge (configuration f); 9, 9c a
duplicate device mid-run / after its replay; 9b a forged retained status.

Frames are built by hand from the documented layout (``ddnn.runtime.codec``, v1; ``ddnn.wire``
v2 if the runtime speaks it), so NaN payloads and huge shapes carry valid checksums, and the
script runs against older versions too (features are detected; a scenario that crashes the
harness or the run client is reported as such): ``PYTHONPATH=/path/to/old/src python …``.

Run: python benchmarks/runtime_attacks.py [--run RUN_C] [--run-f RUN_F] [--only 1a,3,…]
[--keep DIR] (without --run/--run-f it trains the tiny runs of tests/runtime/conftest.py first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ddnn.runtime.deploy import finish_local, run_local, start_local

try:  # the validated messages of issue 11 (JSON progress, binary since frame format v2's control)
    from ddnn.runtime.messages import Progress, encode_progress, parse_progress
except ImportError:  # the runtime as issue 11 reported it: JSON, no parser module
    from collections import namedtuple

    Progress = namedtuple("Progress", "decided latest")  # type: ignore[misc]

    def encode_progress(p: Any) -> bytes:  # type: ignore[misc]
        return json.dumps({"decided": p.decided, "latest": p.latest}).encode()

    def parse_progress(payload: bytes) -> Any:  # type: ignore[misc]
        try:
            doc = json.loads(payload)
            return Progress(int(doc["decided"]), int(doc.get("latest", -1)))
        except (KeyError, TypeError, OverflowError) as exc:
            raise ValueError(str(exc)) from None


from ddnn.runtime.mqtt import close_client, connect_client
from ddnn.runtime.protocol import WINDOW

PACED = {"rate": 40.0, "deadline": 0.5, "thresholds": "0.5"}
RSS_LIMIT_MB = 30.0
STOP_WAIT = 30.0  # s a node may take to act on the final STOP (generous: loaded machines)
CATCH_ALL = "no answer"  # how the run client's own failure reasons begin (no node reported them)

# -- frames, by hand (codec.py's docstring: "<2sBBHQIB3HII", CRC-32 over header[:29] + payload) --

HEADER = struct.Struct("<2sBBHQIB3HII")
SCORES, FEATURES = 1, 2


def frame(
    kind: int, sender: int, sample: int, version: int, dims: tuple[int, ...], payload: bytes
) -> bytes:
    """A frame with a correct CRC whatever its content (NaN scores, a huge declared shape, …)."""
    padded = tuple(dims) + (0,) * (3 - len(dims))
    head = HEADER.pack(b"DN", 1, kind, sender, sample, version, len(dims), *padded, len(payload), 0)
    head = head[:29]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


def scores_frame(sender: int, sample: int, version: int, values: list[float] | np.ndarray) -> bytes:
    payload = np.asarray(values, dtype="<f4").tobytes()
    return frame(SCORES, sender, sample, version, (len(values),), payload)


def features_frame(sender: int, sample: int, version: int, dims: tuple[int, ...]) -> bytes:
    """A valid FEATURES frame of ``dims`` (all bits 0: every feature -1)."""
    return frame(FEATURES, sender, sample, version, dims, bytes(-(-math.prod(dims) // 8)))


def runtime_wire() -> str:
    """The frame format the runtime under test speaks: ``"v1"`` (``ddnn.runtime.codec``, the
    33-byte header with a CRC) or ``"v2"`` (``ddnn.wire``: varint header, batched rows)."""
    from ddnn.runtime import device_node

    return "v2" if hasattr(device_node, "encode_scores_frame") else "v1"


def scores_frame_v2(
    sender: int, sample: int, version: int, values: list[float], encoding: str
) -> bytes:
    """A v2 SCORES frame of one row; non-finite values are patched in after encoding (v2 has no
    CRC), as all-ones bytes: NaN in float32 and float16."""
    from ddnn.wire import encode_scores_frame, score_bytes

    finite = [v if math.isfinite(v) else 0.0 for v in values]
    data = encode_scores_frame(
        np.asarray([finite], dtype=np.float32),
        sender=sender,
        first_sample=sample,
        model_version=version,
        encoding=encoding,
        captured=time.time(),
    )
    if all(math.isfinite(v) for v in values):
        return data
    row = score_bytes(len(values), encoding)
    return data[:-row] + b"\xff" * row


def features_frame_v2(
    sender: int, sample: int, version: int, dims: tuple[int, ...], rows: int = 1
) -> bytes:
    """A valid v2 FEATURES frame of ``rows`` samples from ``sample`` on (all bits 0)."""
    from ddnn.wire import encode_features_frame

    packed = np.zeros((rows, -(-math.prod(dims) // 8)), dtype=np.uint8)
    return encode_features_frame(
        packed, sender=sender, first_sample=sample, model_version=version, shape=dims
    )


# -- watching the node processes -----------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Watch(threading.Thread):
    """Samples VmRSS of every node process of a deployment (and extras the scenario started),
    and notes each process that ends before the final stop."""

    def __init__(self, ctx: Ctx, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.ctx = ctx
        self.period = period
        self.halt = threading.Event()
        self.stopping = False  # set just before the final stop: exits after it are no deaths
        self.procs: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self.first: dict[int, float] = {}
        self.peak: dict[int, float] = {}
        self.early_exit: dict[int, tuple[str, int | None]] = {}
        self.restarted: set[int] = set()  # node processes started again (rejoin)
        self.late: set[int] = set()  # processes started after the deployment was up
        self.ended: dict[int, float] = {}  # pid -> monotonic time its exit was noticed
        self.sample(initial=True)

    def sample(self, initial: bool = False) -> None:
        nodes = list(self.ctx.dep.processes.procs.items())
        for name, p in nodes + list(self.ctx.extra.items()):
            if p.pid not in self.procs:
                self.procs[p.pid] = (name, p)
                if not initial:  # no growth figure for a process started mid-run
                    self.late.add(p.pid)
                    if (name, p) in nodes:
                        self.restarted.add(p.pid)
            if p.poll() is not None:
                self.ended.setdefault(p.pid, time.monotonic())
                if not self.stopping and p.pid not in self.early_exit:
                    self.early_exit[p.pid] = (name, p.returncode)
                continue
            mb = rss_mb(p.pid)
            if mb is None:
                continue
            self.first.setdefault(p.pid, mb)
            self.peak[p.pid] = max(self.peak.get(p.pid, 0.0), mb)

    def run(self) -> None:
        while not self.halt.wait(self.period):
            self.sample()

    def wait_ended(self, timeout: float) -> None:
        """Until every watched process has ended (or ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sample()
            if all(p.poll() is not None for _, p in self.procs.values()):
                return
            time.sleep(self.period)

    def growth(self) -> dict[str, float]:
        """Peak - first VmRSS per node, for the processes present at the start."""
        out: dict[str, float] = {}
        for pid, (name, _) in self.procs.items():
            if pid in self.late or pid not in self.first:
                continue
            out[name] = max(out.get(name, 0.0), self.peak[pid] - self.first[pid])
        return out


# -- one deployment under attack ----------------------------------------------------------------


@dataclass
class Ctx:
    """What the attacks of one deployment share."""

    dep: Any
    run_dir: Path
    version: int
    num_classes: int
    feature_shapes: list[tuple[int, ...]]
    secure: bool
    t0: float = 0.0  # wall time the replay was started
    expected_exit: set[int] = field(default_factory=set)  # pids the scenario ended on purpose
    extra: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # event -> time.monotonic()
    notes: list[str] = field(default_factory=list)
    wire: str = "v1"  # frame format of the runtime under test
    score_encoding: str = "float32"  # v2: the run's score encoding
    position: list[int] = field(default_factory=lambda: [-1, -1])  # progress (decided, latest)
    client: Any = None
    got: dict[str, list[bytes]] = field(default_factory=dict)  # attacker's received messages
    events: list[tuple[float, str, bytes]] = field(default_factory=list)  # (time, topic, payload)
    stuck: set[int] = field(default_factory=set)  # pids still running long after the STOP

    @property
    def topics(self) -> Any:
        return self.dep.topics

    def scores(self, sender: int, sample: int, values: list[float]) -> bytes:
        """A SCORES frame in the runtime's format, with a valid checksum whatever ``values``."""
        if self.wire == "v2":
            return scores_frame_v2(sender, sample, self.version, values, self.score_encoding)
        return scores_frame(sender, sample, self.version, values)

    def features(self, sender: int, sample: int) -> bytes:
        """A valid FEATURES frame of ``sender``'s shape."""
        dims = self.feature_shapes[sender]
        if self.wire == "v2":
            return features_frame_v2(sender, sample, self.version, dims)
        return features_frame(sender, sample, self.version, dims)

    def huge_features(self, megabytes: float) -> tuple[str, bytes]:
        """A FEATURES frame of about ``megabytes`` MB, valid but for its size: v1 declares a
        huge shape (and carries the payload to match), v2 a huge batch of rows."""
        size = int(megabytes * 2**20)
        if self.wire == "v2":
            row = -(-math.prod(self.feature_shapes[0]) // 8)
            rows = min(0xFFFF, size // row)
            what = f"{rows} rows of {self.feature_shapes[0]}"
            return what, features_frame_v2(0, 3 * 10**7, self.version, self.feature_shapes[0], rows)
        dims = (int(size * 8 // (256 * 256)), 256, 256)
        payload = bytes(math.prod(dims) // 8)
        return f"shape {dims}", frame(FEATURES, 0, 3 * 10**7, self.version, dims, payload)

    def attacker(self) -> Any:
        """An anonymous MQTT client that follows the deployment's progress (insecure runs)."""
        if self.client is None:

            def on_message(msg: Any) -> None:
                self.events.append((time.monotonic(), msg.topic, bytes(msg.payload)))
                if msg.topic == self.topics.progress:
                    try:  # JSON before frame format v2's control messages, binary since
                        p = parse_progress(msg.payload)
                        self.position[:] = [p.decided, p.latest]
                    except ValueError:
                        pass

            self.client = connect_client(
                f"attacker-{uuid.uuid4().hex[:6]}",
                self.dep.broker.settings(),
                on_message,
                [(self.topics.progress, 0)],
            )
        return self.client

    def publish(
        self,
        messages: list[tuple[str, bytes]],
        retain: bool = False,
        timeout: float = 60.0,
        qos: int = 1,
    ) -> None:
        """Publish (QoS 1: and wait until the broker has the last one)."""
        client = self.attacker()
        info = None
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=qos, retain=retain)
        if info is not None and qos:
            info.wait_for_publish(timeout)

    def wait_running(self, decided: int = 8, timeout: float = 15.0) -> None:
        """Until the aggregator has decided ``decided`` samples (the replay is under way)."""
        self.attacker()
        deadline = time.monotonic() + timeout
        while self.position[0] < decided and time.monotonic() < deadline:
            time.sleep(0.02)

    def wait_message(
        self, topic: str, after: float, timeout: float, payload: bytes | None = None
    ) -> bytes | None:
        """The first message on ``topic`` (recorded: see ``follow``) received after ``after``,
        or the first that is ``payload``; ``None`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, top, got in list(self.events):
                if top == topic and t > after and payload in (None, got):
                    return got
            time.sleep(0.02)
        return None

    def follow(self, topic: str) -> None:
        """Also record the messages on ``topic`` (its retained message first)."""
        now = time.monotonic()
        self.attacker().subscribe(topic, qos=1)
        self.wait_message(topic, now, 5.0)  # the retained one, if any

    def kill(self, node: str) -> None:
        p = self.dep.processes.procs[node]
        self.expected_exit.add(p.pid)
        self.dep.processes.kill(node)
        self.marks[f"kill {node}"] = time.monotonic()

    def close(self) -> None:
        if self.client is not None:
            close_client(self.client)
            self.client = None


@dataclass
class Outcome:
    name: str
    samples: int = 0
    answered: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    deaths: list[str] = field(default_factory=list)
    exits: dict[str, int | None] = field(default_factory=dict)
    rss_growth: dict[str, float] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list, repr=False)
    checks: dict[str, bool] = field(default_factory=dict)
    report: Any = field(default=None, repr=False)
    ctx: Ctx | None = field(
        default=None, repr=False
    )  # the deployment's attack state (marks, received messages, …)
    error: str = ""
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return self.samples - self.answered - len(self.failed)

    @property
    def unaccounted(self) -> int:
        return sum(1 for r in self.failed.values() if r.startswith(CATCH_ALL))

    @property
    def ok(self) -> bool:
        """Issue 11's invariants and the class's own checks."""
        return (
            not self.error
            and self.lost == 0
            and not self.deaths
            and all(v < RSS_LIMIT_MB for v in self.rss_growth.values())
            and all(self.checks.values())
        )


def last_counters(text: str) -> dict[str, int] | None:
    """The counters a node printed as its last JSON line when it stopped cleanly."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "counters" in doc:
                return {str(k): int(v) for k, v in doc["counters"].items()}
    return None


def new_ctx(dep: Any, run_dir: Path, secure: bool) -> Ctx:
    """The attack state of a started deployment (model version, shapes, frame format)."""
    from ddnn.models.sections import device_feature_shape
    from ddnn.train.checkpoint import run_model_version

    mc = dep.config.model
    ctx = Ctx(
        dep,
        Path(run_dir),
        run_model_version(run_dir),
        mc.num_classes,
        [tuple(device_feature_shape(s, mc.device)) for s in mc.device_shapes],
        secure,
    )
    ctx.wire = runtime_wire()
    ctx.score_encoding = str(getattr(getattr(mc, "wire", None), "scores", "float32"))
    return ctx


def run_steps(ctx: Ctx, out: Outcome, steps: list[Callable[[Ctx], None]]) -> None:
    """Run attacks in order; one that raises is a harness failure, reported, and the rest go on."""
    for attack in steps:
        try:
            attack(ctx)
        except Exception as exc:
            out.error = f"attack {attack.__name__} raised {type(exc).__name__}: {exc}"
            ctx.notes.append(traceback.format_exc(limit=3))


def stop_and_report(ctx: Ctx, watch: Watch, out: Outcome, wall: float) -> None:
    """The final STOP, sent here first (finish_local sends it again) to see that every node acts
    on it: finish_local's launcher would SIGTERM one that does not, after 10 s."""
    from ddnn.runtime.protocol import STOP

    ctx.marks["collected"] = time.monotonic()
    watch.sample()
    watch.stopping = True
    ctx.dep.collector.send(STOP)
    watch.wait_ended(STOP_WAIT)
    ctx.stuck = {p.pid for _, p in watch.procs.values() if p.poll() is None}
    report = finish_local(ctx.dep, wall)
    out.report = report
    out.answered = len(report.answers)
    out.failed = dict(report.failed)


def measure(ctx: Ctx, watch: Watch, out: Outcome, folder: Path) -> None:
    """Exit codes, deaths (with each one's last log line), memory growth, and node counters."""
    watch.sample()
    out.rss_growth = watch.growth()
    for pid, (node, p) in watch.procs.items():
        code = p.poll()
        label = node + (" (restarted)" if pid in watch.restarted else "")
        out.exits[label] = code
        if pid in ctx.stuck:
            out.deaths.append(f"{label} did not stop on STOP ({STOP_WAIT:g} s)")
        elif pid in ctx.expected_exit:
            continue
        elif pid in watch.early_exit:
            out.deaths.append(f"{label} exited {watch.early_exit[pid][1]} before the stop")
        elif code not in (0, None):
            out.deaths.append(f"{label} exited {code}")
    for log in sorted(folder.glob("*.log")):
        text = log.read_text(errors="replace")
        out.logs[log.stem] = text
        counters = last_counters(text)
        if counters is not None:
            out.counters[log.stem] = counters
    for i, death in enumerate(out.deaths):
        lines = [ln for ln in out.logs.get(death.split()[0], "").splitlines() if ln.strip()]
        if lines:
            out.deaths[i] = f"{death}: {lines[-1][:160]}"
    out.notes += ctx.notes


def deploy(
    name: str,
    run_dir: Path,
    attacks: list[Callable[[Ctx], None]],
    check: Callable[[Ctx, Outcome], None] | None = None,
    before: list[Callable[[Ctx], None]] | None = None,
    options: dict[str, Any] | None = None,
    secure: bool = False,
    grace: float = 3.0,
    timeout: float = 90.0,
    split: str = "test",
    limit: int | None = None,
    workdir: Path | None = None,
) -> Outcome:
    """Start a deployment of ``run_dir``, run ``before`` (before the replay starts), then
    ``attacks`` in order once it has started; collect, stop, and measure. Never raises: a harness
    failure is ``Outcome.error``."""
    out = Outcome(name)
    t_begin = time.monotonic()
    folder = workdir or Path(tempfile.mkdtemp(prefix="ddnn-attack-"))
    dep = ctx = watch = None
    try:
        opts = dict(options or PACED)
        dep = start_local(run_dir, opts, secure=secure, split=split, limit=limit, workdir=folder)
        out.ctx = ctx = new_ctx(dep, Path(run_dir), secure)
        watch = Watch(ctx)
        watch.start()
        out.samples = dep.samples
        run_steps(ctx, out, before or [])
        steps = partial(run_steps, ctx, out, attacks)
        try:
            wall = run_local(dep, grace=grace, timeout=timeout, during=lambda _: steps())
        except Exception as exc:  # the runtime's own run client failed: measure the rest
            out.error = f"the run client (run_local) raised {type(exc).__name__}: {exc}"
            out.notes.append(traceback.format_exc(limit=4))
            wall = 0.0
        stop_and_report(ctx, watch, out, wall)
        dep = None
    except Exception as exc:
        out.error = out.error or f"harness: {type(exc).__name__}: {exc}"
        out.notes.append(traceback.format_exc(limit=4))
    finally:
        if watch is not None:
            watch.stopping = True
            watch.halt.set()
        if ctx is not None:
            ctx.close()
            for p in ctx.extra.values():  # a duplicate the scenario started: finish_local's
                try:  # second STOP may still reach one that missed the first
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if dep is not None:  # finish_local did not run: stop what is left
            try:
                finish_local(dep, 0.0)
            except Exception:
                dep.processes.stop_all(timeout=0.0)
                dep.broker.close()
    if watch is not None and ctx is not None:
        measure(ctx, watch, out, folder)
        if check is not None and not out.error:
            try:
                check(ctx, out)
            except Exception as exc:
                out.error = f"check raised {type(exc).__name__}: {exc}"
                out.notes.append(traceback.format_exc(limit=3))
    if workdir is None:
        shutil.rmtree(folder, ignore_errors=True)
    out.seconds = time.monotonic() - t_begin
    return out


# -- attacks --------------------------------------------------------------------------------------


def far_ahead_and_phantom_ids(ctx: Ctx) -> None:
    """Class 1: one valid SCORES frame a window and 51 samples ahead; 400 frames with ids >= 10**6.

    "Ahead" of the newest position seen and of the run's last sample: the position the attacker
    saw may lag the aggregator's (progress goes out every few decisions), and the frame must be
    beyond the aggregator's window (``WINDOW`` samples) whenever it arrives."""
    ctx.wait_running()
    ahead = max(*ctx.position, ctx.dep.samples - 1) + WINDOW + 51
    ctx.marks["forged_ahead"] = ahead
    ctx.publish(
        [
            (
                ctx.topics.device_scores(0),
                ctx.scores(0, ahead, [0.0] * ctx.num_classes),
            )
        ]
    )
    phantom = [
        (
            ctx.topics.device_scores(i % 6),
            ctx.scores(i % 6, 10**6 + i, [1.0] * ctx.num_classes),
        )
        for i in range(400)
    ]
    ctx.publish(phantom)


def in_window_forgery(ctx: Ctx) -> None:
    """Class 1, inside the window: single valid frames 40 ids past the newest sample seen, one
    every 0.6 s (beyond where the devices are, but within the aggregator's window)."""
    ctx.wait_running()
    for _ in range(4):
        ahead = max(ctx.position) + 40
        frame_ = ctx.scores(0, ahead, [0.0] * ctx.num_classes)
        ctx.publish([(ctx.topics.device_scores(0), frame_)])
        ctx.notes.append(f"forged sample {ahead} at progress {ctx.position}")
        time.sleep(0.6)


def forged_progress(ctx: Ctx) -> None:
    """Class 1 through flow control: a well-formed progress message far ahead (anyone may write
    ``progress`` on an insecure broker, as anyone may write ``control``)."""
    ctx.wait_running()
    doc = encode_progress(Progress(10**6, 10**6))  # in the format of the version under test
    ctx.publish([(ctx.topics.progress, doc)])


def nan_scores(ctx: Ctx) -> None:
    """Class 7: SCORES frames with NaN / ±inf (correct CRC) from every sender, for ids just ahead
    of the replay (so some arrive first), repeated for a second."""
    ctx.wait_running()
    bad = [math.nan, math.inf, -math.inf]
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        base = max(ctx.position) + 1
        msgs = []
        for s in range(base, base + 30, 3):
            for k in range(6):
                values = [0.0] * ctx.num_classes
                values[(s + k) % ctx.num_classes] = bad[(s + k) % 3]
                msgs.append((ctx.topics.device_scores(k), ctx.scores(k, s, values)))
        ctx.publish(msgs)
        time.sleep(0.1)


def scores_flood(ctx: Ctx, n: int = 20_000) -> None:
    """Class 6: ``n`` valid SCORES frames for new ids (10**7 + i) to the aggregator."""
    ctx.wait_running()
    ones = [1.0] * ctx.num_classes
    ctx.publish(
        [(ctx.topics.device_scores(i % 6), ctx.scores(i % 6, 10**7 + i, ones)) for i in range(n)]
    )


def features_flood(ctx: Ctx, n: int = 20_000) -> None:
    """Class 6: ``n`` valid FEATURES frames for new ids (cloud orphans)."""
    ctx.wait_running()
    ctx.publish(
        [
            (
                ctx.topics.device_features(i % 6),
                ctx.features(i % 6, 2 * 10**7 + i),
            )
            for i in range(n)
        ]
    )


def tiny_flood(ctx: Ctx, n: int = 100_000) -> None:
    """Class 6, the inbox: ``n`` one-byte messages (QoS 0, as fast as they go) on a topic the
    cloud reads; each is rejected at once, but queued first."""
    ctx.wait_running()
    ctx.publish([(ctx.topics.device_features(i % 6), b"\x00") for i in range(n)], qos=0)
    time.sleep(1.0)


def huge_features(ctx: Ctx) -> None:
    """Class 6: FEATURES frames of 5 MB and 3.5 MB (the latter under the broker's packet limit)
    declaring a huge shape (v1) or batch (v2): decoded, each would be ~30-40 M float32."""
    ctx.wait_running()
    for megabytes in (5.0, 3.5):
        what, payload = ctx.huge_features(megabytes)
        client = connect_client(
            f"attacker-big-{uuid.uuid4().hex[:6]}", ctx.dep.broker.settings(), lambda m: None, []
        )
        try:  # a broker may drop the connection of a client sending an oversized packet
            client.publish(ctx.topics.device_features(0), payload, qos=1).wait_for_publish(10)
            ctx.notes.append(f"huge frame ({what}, {len(payload)} B): published")
        except (RuntimeError, ValueError) as exc:
            ctx.notes.append(f"huge frame ({what}, {len(payload)} B): publish failed ({exc})")
        finally:
            close_client(client)


def malformed_messages(ctx: Ctx) -> None:
    """Class 3: malformed JSON and control messages on every topic a node parses."""
    ctx.wait_running()
    t = ctx.topics
    asks_old = b'[{"sample":Infinity,"present":[0,1,2,3,4,5],"device_payload":{},"device_frames":{},"device_mqtt":{},"captured":1.0,"local_prediction":0}]'
    asks_new = b"[[Infinity,[0,1,2,3,4,5]]]"
    samples_old = (
        b'[{"sample":"a","present":[0,1,2,3,4,5],"device_payload":{},"device_frames":{},'
        b'"device_mqtt":{},"captured":1.0,"local_prediction":0},'
        b'{"sample":10000000,"present":[0,1,2,3,4,5],"device_payload":{},"device_frames":{},'
        b'"device_mqtt":{},"captured":1.0,"local_prediction":0}]'
    )
    samples_new = b'[["a",[0,1]],[10000000,[0,1,2,3,4,5]]]'
    up = getattr(t, "up", None)
    bodies = [b"[" * 100_000, asks_old, asks_new, samples_old, samples_new, b"\xff\xfe", b"{}"]
    msgs = []
    for topic in [t.request, t.forward] + ([up] if up else []):
        msgs += [(topic, b) for b in bodies]
    receipts = [
        b'[{"payload":{},"mqtt":{},"flags":[]}]',  # a list instead of a dict
        b'{"5":[1,2]}',
        b'{"x":{"payload":{},"mqtt":{},"flags":[]}}',
        b'{"7":{"payload":{"0":Infinity},"mqtt":{},"flags":[]}}',
        b"[" * 100_000,
    ]
    if ctx.dep.config.model.edge.groups:
        msgs += [(t.edge_receipts(0), b) for b in receipts]
    msgs += [(t.results, b"[" * 100_000), (t.results, b'[{"sample":Infinity}]')]
    msgs += [(t.control, b"start nan"), (t.control, b"\x00" * 70_000)]
    ctx.publish(msgs)
    # retained: every later subscriber to progress gets it too (a rejoining device)
    ctx.publish([(t.progress, b'{"decided": 1, "latest": Infinity}')], retain=True)
    ctx.publish([(t.progress, b'{"decided": "x", "latest": []}')])
    ctx.marks["malformed_sent"] = time.monotonic()


def malformed_start(ctx: Ctx) -> None:
    """Class 3, before the replay: ``start nan`` / ``start inf`` while the devices wait to start."""
    t = ctx.topics
    ctx.publish(
        [(t.control, b"start nan"), (t.control, b"start inf"), (t.control, b"start -1e309")]
    )
    time.sleep(0.5)  # handled before the real start


def kill_aggregator_during_broker_restart(ctx: Ctx) -> None:
    """Class 2: frames in flight lost: the aggregator SIGKILLed while the broker restarts, then
    restarted (rejoin); the run goes on."""
    ctx.wait_running(decided=10)
    ctx.kill("aggregator")
    ctx.close()  # the attacker's client would only reconnect noisily
    ctx.dep.broker.restart()
    ctx.dep.processes.rejoin("aggregator")
    ctx.marks["rejoined"] = time.monotonic()
    # Wait until the new aggregator is online, so the client's grace does not run out while it
    # starts (collect ends a run whose aggregator stays offline longer than the grace).
    collector = ctx.dep.collector
    old = collector.status.get("aggregator")
    collector.status["aggregator"] = b"offline" if isinstance(old, bytes) else "offline"
    if hasattr(collector, "offline_since"):
        collector.offline_since.pop("aggregator", None)
    collector.wait_online(["aggregator"], 60.0)
    if hasattr(collector, "offline_since"):
        collector.offline_since.pop("aggregator", None)


def session_takeover(ctx: Ctx) -> None:
    """Class 4 (secure broker): device 0's login connecting with the aggregator's client id, and
    subscribing to what a device must not read."""
    time.sleep(0.8)
    t = ctx.topics
    subs = [t.request, t.results, t.device_scores("+"), t.progress]
    if getattr(t, "up", None):
        subs.append(t.up)
    got: dict[str, list[bytes]] = {}

    def on_message(msg: Any) -> None:
        got.setdefault(msg.topic, []).append(bytes(msg.payload))

    ctx.got = got
    ctx.marks["takeover"] = time.monotonic()
    client = connect_client(
        f"ddnn-{t.namespace}-aggregator",
        ctx.dep.broker.settings("device_0"),
        on_message,
        [(s, 1) for s in subs],
    )
    time.sleep(2.0)
    close_client(client)


def kill_aggregator(ctx: Ctx) -> None:
    """Class 5: the aggregator dies mid-run and is not restarted."""
    ctx.wait_running(decided=10)
    ctx.kill("aggregator")


def kill_edge(ctx: Ctx) -> None:
    """Class 8: edge 0 dies mid-run (configuration f)."""
    ctx.wait_running(decided=10)
    ctx.marks["edge_killed_wall"] = time.time()
    ctx.kill("edge_0")


def start_duplicate(ctx: Ctx, k: int, late: bool) -> None:
    """A second ``ddnn serve device --id K`` (the same command, without waiting for the start)
    in the same namespace: mid-run, or once device K has finished its replay (``late``).
    Returns once it is online (its status message), so the final STOP reaches it."""
    node = f"device_{k}"
    status = ctx.topics.status(node)
    ctx.follow(status)
    if late:  # device K announced "done": the replay is over for it
        ctx.wait_message(status, 0.0, 120.0, b"done")
    else:
        ctx.wait_running()
    cmd, env = ctx.dep.processes.commands[node]
    cmd = [a for a in cmd if a != "--wait-for-start"]
    log = open(ctx.dep.folder / f"{node}-duplicate.log", "ab")  # noqa: SIM115 - the child's
    started = time.monotonic()
    ctx.extra[f"{node}-duplicate"] = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
    )
    log.close()
    old = ctx.dep.processes.procs[node]
    ctx.expected_exit.add(old.pid)  # if fenced, judged by the check rather than as a death
    online = ctx.wait_message(status, started, 60.0, b"online")
    ctx.notes.append(
        f"{node} duplicate ({'after the replay' if late else 'mid-run'}) "
        f"{'online' if online else 'not seen online'} {time.monotonic() - started:.1f} s after start; "
        f"first instance {'running' if old.poll() is None else f'exited {old.returncode}'}"
    )
    time.sleep(1.0)  # the first instance learns of it


def duplicate_device(ctx: Ctx) -> None:
    """Class 9: a second ``ddnn serve device --id 3`` mid-run."""
    start_duplicate(ctx, 3, late=False)


def duplicate_device_late(ctx: Ctx) -> None:
    """Class 9: a second ``ddnn serve device --id 4`` after device 4 finished its replay."""
    start_duplicate(ctx, 4, late=True)


def forged_instance(ctx: Ctx) -> None:
    """Class 9 through the fencing itself: a retained ``online`` status for device 2 stamped with
    an instance id that outranks any real one (a well-formed start time 30 s in the future, as
    text "~" before v2's numeric ids); then device 2 is restarted if it stopped."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    ctx.wait_running()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("instance", f"{time.time_ns() + 30 * 10**9:020d}-ffffffff")]
    client = ctx.attacker()
    client.publish(
        ctx.topics.status("device_2"), b"online", qos=1, retain=True, properties=props
    ).wait_for_publish(10)
    first = ctx.dep.processes.procs["device_2"]
    ctx.expected_exit.add(first.pid)  # judged by the check
    try:
        first.wait(5)
    except subprocess.TimeoutExpired:
        ctx.notes.append("device_2 still serving 5 s after the forged status")
        return
    ctx.notes.append(f"device_2 exited {first.returncode} after the forged status; restarting it")
    ctx.dep.processes.rejoin("device_2")
    again = ctx.dep.processes.procs["device_2"]
    ctx.expected_exit.add(again.pid)
    try:
        again.wait(20)
        ctx.notes.append(f"restarted device_2 exited {again.returncode} at once")
    except subprocess.TimeoutExpired:
        ctx.notes.append("restarted device_2 serves")


def check_forged_instance(ctx: Ctx, out: Outcome) -> None:
    codes = {k: v for k, v in out.exits.items() if k.startswith("device_2")}
    out.notes.append(f"device_2 exits: {codes}")
    out.checks["device_2 keeps serving (or serves again after a restart)"] = any(
        v == 0 for v in codes.values()
    )


# -- class checks ---------------------------------------------------------------------------------


def reference(
    ctx: Ctx, split: str = "test", limit: int | None = None
) -> tuple[list[int], list[str]]:
    """``model.infer`` on the replayed data, at the paced options' local threshold:
    (predictions, exit names)."""
    import torch

    from ddnn.data.registry import load_dataset
    from ddnn.train.checkpoint import load_run

    model, config, _ = load_run(ctx.run_dir)
    splits = load_dataset(config.data)
    data = {"test": splits.test, "train": splits.train}[split]
    if limit is not None:
        data = data.subset(torch.arange(min(limit, len(data))))
    result = model.infer(data.x, {"local": float(PACED["thresholds"])})
    exits = [result.exit_names[i] for i in result.exit_index.tolist()]
    return result.predictions.tolist(), exits


def counter(out: Outcome, node: str, name: str) -> int:
    return out.counters.get(node, {}).get(name, 0)


def check_far_ahead(ctx: Ctx, out: Outcome) -> None:
    rejected = counter(out, "aggregator", "rejected_out_of_window")
    skipped = sum(counter(out, f"device_{k}", "skipped_behind") for k in range(6))
    foreign = out.report.as_dict().get("foreign_answers")
    out.notes.append(
        f"forged id {ctx.marks.get('forged_ahead')}: aggregator rejected_out_of_window={rejected}; "
        f"devices skipped_behind={skipped}; phantom answers seen by the client: {foreign}"
    )
    out.checks["forged frames rejected (>= 401)"] = rejected >= 401
    out.checks["every sample answered"] = out.answered == out.samples


def check_in_window(ctx: Ctx, out: Outcome) -> None:
    skipped = sum(counter(out, f"device_{k}", "skipped_behind") for k in range(6))
    out.notes.append(
        f"devices skipped_behind={skipped}; aggregator failed_no_frames="
        f"{counter(out, 'aggregator', 'failed_no_frames')}"
    )
    out.checks["every sample answered"] = out.answered == out.samples


def check_forged_progress(ctx: Ctx, out: Outcome) -> None:
    skipped = sum(counter(out, f"device_{k}", "skipped_behind") for k in range(6))
    resent = sum(counter(out, f"device_{k}", "resent") for k in range(6))
    late = counter(out, "aggregator", "late_frames")
    out.notes.append(
        f"devices skipped_behind={skipped}, resent={resent}; aggregator late_frames={late}"
    )
    out.checks["every sample answered"] = out.answered == out.samples
    out.checks["device flow control unaffected (no resends)"] = resent == 0


def check_nan(ctx: Ctx, out: Outcome) -> None:
    preds, exits = reference(ctx)
    full = [a for a in out.report.answers.values() if len(a.present) == 6 and not a.flags]
    wrong = [a.sample for a in full if (a.prediction, a.exit) != (preds[a.sample], exits[a.sample])]
    rejected = sum(  # under whichever reason the frame format gives (undecodable, non_finite)
        v
        for k, v in out.counters.get("aggregator", {}).items()
        if k.startswith("rejected_") and k != "rejected_out_of_window"
    )
    out.notes.append(
        f"aggregator rejected (in window)={rejected}; {len(full)} answers fused from all 6 "
        f"devices without flags, {len(wrong)} differ from model.infer {wrong[:10]}"
    )
    out.checks["NaN/inf frames rejected"] = rejected > 0
    out.checks["fusion equals model.infer"] = not wrong and len(full) > 0


def check_memory(ctx: Ctx, out: Outcome) -> None:
    for node in ("aggregator", "cloud"):
        interesting = {
            k: v
            for k, v in out.counters.get(node, {}).items()
            if k.startswith("rejected") or "orphan" in k or k in ("late_frames", "answered")
        }
        out.notes.append(f"{node} counters: {interesting}")
    out.checks["every sample answered"] = out.answered == out.samples


def check_malformed(ctx: Ctx, out: Outcome) -> None:
    rejected = {
        node: {k: v for k, v in c.items() if k.startswith("rejected") or k.endswith("_error")}
        for node, c in out.counters.items()
    }
    out.notes.append(f"rejections per node: {rejected}")
    silent = [n for n in out.exits if n.split()[0] not in out.counters]
    if silent:
        out.notes.append(f"no counters line at exit from: {silent}")
    errors = {
        n: {k: v for k, v in c.items() if k.endswith("_error")} for n, c in out.counters.items()
    }
    out.checks["no handler/tick/poll errors"] = not any(errors.values())
    out.checks["every sample answered"] = out.answered == out.samples


def check_lost_window(ctx: Ctx, out: Outcome) -> None:
    resent = sum(counter(out, f"device_{k}", "resent") for k in range(6))
    agg = out.counters.get("aggregator (restarted)", out.counters.get("aggregator", {}))
    out.notes.append(
        f"devices resent={resent}; restarted aggregator: failed_no_frames="
        f"{agg.get('failed_no_frames', 0)}, late_frames={agg.get('late_frames', 0)}; "
        f"unaccounted (client catch-all) failures: {out.unaccounted}"
    )
    out.checks["no sample left to the client's catch-all"] = out.unaccounted == 0
    out.checks["the replay finished (last sample resolved by a node)"] = (
        out.samples - 1 in out.report.answers
        or not out.failed.get(out.samples - 1, CATCH_ALL).startswith(CATCH_ALL)
    )


def check_takeover(ctx: Ctx, out: Outcome) -> None:
    got = ctx.got
    t = ctx.topics
    leaked_up = len(got.get(getattr(t, "up", "") or "-", []))
    leaked_request = sum(1 for p in got.get(t.request, []) if b"local_prediction" in p)
    other_scores = sum(len(got.get(t.device_scores(k), [])) for k in range(6))
    results = len(got.get(t.results, []))
    agg_log = out.logs.get("aggregator", "")
    broker_log = ctx.dep.folder / "broker" / "broker.log"
    broker = broker_log.read_text(errors="replace") if broker_log.is_file() else ""
    # mosquitto: "Client <id> already connected, closing old connection" on a session takeover
    kicked_agg = broker.count(f"Client ddnn-{t.namespace}-aggregator already connected")
    kicked_dev0 = broker.count("Client device_0 already connected")
    kicked = kicked_agg > 0 or any(m in agg_log for m in FENCED)
    dev0 = out.exits.get("device_0")
    dev0_log = [ln for ln in out.logs.get("device_0", "").splitlines() if ln.strip()]
    out.notes.append(
        f"attacker (device_0 login, aggregator's client id) received: up={leaked_up}, "
        f"request with local predictions={leaked_request}, results={results}, "
        f"device scores={other_scores}; aggregator's session taken over {kicked_agg}x, "
        f"device_0's {kicked_dev0}x (broker log); "
        f"device_0 exit {dev0}: {dev0_log[-1][:140] if dev0_log else ''}"
    )
    out.checks["aggregator not taken over"] = not kicked
    out.checks["device login reads no local predictions"] = leaked_up == 0 and leaked_request == 0
    out.checks["device login reads no results / scores"] = results == 0 and other_scores == 0
    out.checks["every sample answered or failed by a node"] = out.unaccounted == 0


def check_aggregator_loss(ctx: Ctx, out: Outcome) -> None:
    after = ctx.marks["collected"] - ctx.marks["kill aggregator"]
    reasons = Counter(out.failed.values())
    out.notes.append(f"collection ended {after:.1f} s after the kill; reasons {dict(reasons)}")
    out.checks["ended within grace + 5 s"] = after < 3.0 + 5.0
    out.checks["reason names the aggregator's loss"] = bool(reasons) and all(
        "aggregator" in r and any(w in r for w in ("offline", "died", "down", "dead"))
        for r in reasons
    )


def check_dead_edge(ctx: Ctx, out: Outcome) -> None:
    t_kill = ctx.marks["edge_killed_wall"]
    # Captured after the kill, edge 0 cannot have taken part: whatever went beyond the local
    # exit (or wanted to) must say that edge 0 was missing.
    went_up = [
        a
        for a in out.report.answers.values()
        if a.captured > t_kill and (a.exit != "local" or any("edge" in f for f in a.flags))
    ]
    unflagged = [
        a.sample
        for a in went_up
        if not any(f.startswith(("edges_unreachable:[0", "edges_missing:[0")) for f in a.flags)
    ]
    flags = Counter(f.split(":")[0] for a in went_up for f in a.flags)
    out.notes.append(
        f"{len(went_up)} answers captured after the kill went beyond the local exit; "
        f"flags {dict(flags)}; without a flag naming edge 0: {unflagged[:10]} ({len(unflagged)})"
    )
    out.checks["answers that wanted the cloud name the dead edge"] = bool(went_up) and not unflagged
    out.checks["every sample answered"] = out.answered == out.samples


FENCED = ("took over its session", "only one serves it")  # what a fenced node says (versions)


def check_duplicate(ctx: Ctx, out: Outcome) -> None:
    for name in ctx.extra:
        node = name.removesuffix("-duplicate")
        first = out.exits.get(node)
        dup = ctx.extra[name].returncode
        fenced_first = any(m in out.logs.get(node, "") for m in FENCED)
        fenced_dup = any(m in out.logs.get(name, "") for m in FENCED)
        out.notes.append(
            f"{node}: first instance exit {first} (fenced message: {fenced_first}); duplicate "
            f"exit {dup} (fenced message: {fenced_dup})"
        )
        out.checks[f"{node}: the first instance fenced, with the message"] = (
            fenced_first and first == 2
        )
        out.checks[f"{node}: the duplicate serves, stops on STOP (exit 0)"] = (
            not fenced_dup and dup == 0 and not any(name in d for d in out.deaths)
        )


# -- scenarios -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    config: str  # "c" or "f"
    attacks: tuple[Callable[[Ctx], None], ...]
    check: Callable[[Ctx, Outcome], None] | None = None
    before: tuple[Callable[[Ctx], None], ...] = ()
    secure: bool = False
    grace: float = 3.0
    timeout: float = 60.0
    split: str = "test"
    limit: int | None = None


SCENARIOS = [
    Scenario("0", "baseline, no attack", "c", ()),
    Scenario(
        "1a",
        f"forged ids: +{WINDOW + 51} ahead, 400 >= 10**6",
        "c",
        (far_ahead_and_phantom_ids,),
        check_far_ahead,
    ),
    Scenario(
        "1b", "forged ids inside the window (+40)", "c", (in_window_forgery,), check_in_window
    ),
    Scenario(
        "1c",
        "forged progress (decided 10**6)",
        "c",
        (forged_progress,),
        check_forged_progress,
        split="train",
        limit=400,
    ),
    Scenario(
        "2",
        "lost window: agg SIGKILL + broker restart",
        "c",
        (kill_aggregator_during_broker_restart,),
        check_lost_window,
        grace=5.0,
        timeout=90.0,
    ),
    Scenario(
        "3",
        "malformed JSON / control (config f)",
        "f",
        (malformed_messages,),
        check_malformed,
        before=(malformed_start,),
    ),
    Scenario(
        "4",
        "session takeover + ACL (secure)",
        "c",
        (session_takeover,),
        check_takeover,
        secure=True,
    ),
    Scenario(
        "5",
        "aggregator dies, not restarted",
        "c",
        (kill_aggregator,),
        check_aggregator_loss,
        timeout=45.0,
    ),
    Scenario(
        "6a",
        "huge FEATURES shape to the cloud",
        "c",
        (huge_features,),
        check_memory,
        split="train",
        limit=400,
    ),
    Scenario(
        "6b",
        "20000 FEATURES for new ids (cloud)",
        "c",
        (features_flood,),
        check_memory,
        split="train",
        limit=400,
    ),
    Scenario(
        "6c",
        "20000 SCORES for new ids (aggregator)",
        "c",
        (scores_flood,),
        check_memory,
        split="train",
        limit=400,
    ),
    Scenario(
        "6d",
        "100000 one-byte messages (cloud inbox)",
        "c",
        (tiny_flood,),
        check_memory,
        split="train",
        limit=400,
    ),
    Scenario("7", "NaN/inf in SCORES payloads", "c", (nan_scores,), check_nan),
    Scenario("8", "dead edge (config f, kill edge_0)", "f", (kill_edge,), check_dead_edge),
    Scenario(
        "9",
        "duplicate device id 3 mid-run",
        "c",
        (duplicate_device,),
        check_duplicate,
        timeout=60.0,
        split="train",
        limit=400,
    ),
    Scenario(
        "9c",
        "duplicate device id 4 after its replay",
        "c",
        (duplicate_device_late,),
        check_duplicate,
        timeout=60.0,
    ),
    Scenario(
        "9b",
        "forged retained status (instance id)",
        "c",
        (forged_instance,),
        check_forged_instance,
        split="train",
        limit=600,
    ),
]


def run_scenario(s: Scenario, runs: dict[str, Path], keep: Path | None = None) -> Outcome:
    workdir = None
    if keep is not None:
        workdir = keep / f"scenario-{s.key}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
    return deploy(
        f"{s.key} {s.title}",
        runs[s.config],
        list(s.attacks),
        s.check,
        list(s.before),
        secure=s.secure,
        grace=s.grace,
        timeout=s.timeout,
        split=s.split,
        limit=s.limit,
        workdir=workdir,
    )


# -- report ----------------------------------------------------------------------------------------

NOTABLE = (
    "rejected",
    "failed_no_frames",
    "resent",
    "skipped_behind",
    "late_frames",
    "orphan_frames_dropped",
    "_error",
    "deadline_expired",
)


def short_node(name: str) -> str:
    return name.replace("aggregator", "agg").replace("device_", "d").replace("edge_", "e")


def summarize(out: Outcome) -> list[str]:
    reasons = Counter(out.failed.values())
    failed = f"{len(out.failed)}"
    if reasons:
        failed += " (" + "; ".join(f"{n}x {r[:48]}" for r, n in reasons.most_common(3)) + ")"
    deaths = str(len(out.deaths)) + (
        f" {[d.split(':')[0] for d in out.deaths]}" if out.deaths else ""
    )
    upper = {k: v for k, v in out.rss_growth.items() if not k.startswith("device_")}
    devices = [v for k, v in out.rss_growth.items() if k.startswith("device_")]
    rss = ", ".join(f"{short_node(k)} {v:.1f}" for k, v in sorted(upper.items()))
    if devices:
        rss += f", dev<= {max(devices):.1f}"
    totals: Counter[str] = Counter()
    for node, counters in out.counters.items():
        for k, v in counters.items():
            if v and any(n in k for n in NOTABLE):
                totals[
                    f"{short_node(node.split()[0]) if not node.startswith('device_') else 'dev'}.{k}"
                ] += v
    notable = ", ".join(f"{k}={v}" for k, v in sorted(totals.items()))
    if out.error:
        verdict = ("CLIENT CRASH: " if "run client" in out.error else "HARNESS: ") + out.error[:60]
    else:
        verdict = "PASS" if out.ok else "FAIL"
    return [
        out.name,
        str(out.samples),
        str(out.answered),
        failed,
        str(out.lost),
        deaths,
        rss,
        notable or "-",
        verdict,
    ]


def table(outcomes: list[Outcome]) -> str:
    head = [
        "scenario",
        "samples",
        "answered",
        "failed (reasons)",
        "lost",
        "node deaths",
        "max RSS growth MB",
        "notable counters",
        "verdict",
    ]
    rows = [head] + [summarize(o) for o in outcomes]
    lines = []
    for row in rows:
        lines.append(" | ".join(row))
    return "\n".join(lines)


def details(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        lines.append(f"\n[{o.name}] {o.seconds:.0f} s; exits {o.exits}")
        for name, ok in o.checks.items():
            lines.append(f"  check {'ok  ' if ok else 'FAIL'} {name}")
        for d in o.deaths:
            lines.append(f"  death: {d}")
        flags: Counter[str] = Counter()
        if o.report is not None:
            flags = Counter(f.split(":")[0] for a in o.report.answers.values() for f in a.flags)
        if flags:
            lines.append(f"  flags: {dict(flags)}")
        for r, n in Counter(o.failed.values()).most_common():
            lines.append(f"  failed {n}x: {r}")
        for note in o.notes:
            lines.append("  " + note.strip().replace("\n", "\n  "))
        if o.error:
            lines.append(f"  HARNESS ERROR: {o.error}")
    return "\n".join(lines)


def train_tiny(out: Path, *overrides: str) -> Path:
    from ddnn.cli import main

    args = ["train", "--data", "synthetic-mvmc", "--out", str(out), "--epochs", "8", "--seed", "2"]
    args += ["data.num_train=600", "data.num_test=96", "model.cloud.filters=[8]", *overrides]
    if main(args) != 0:
        raise SystemExit(f"training {out} failed")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="configuration-c run (default: train one)")
    parser.add_argument("--run-f", type=Path, help="configuration-f run (default: train one)")
    parser.add_argument("--only", default=None, help="comma-separated scenario keys, e.g. 1a,3")
    parser.add_argument("--keep", type=Path, help="keep each scenario's logs under this folder")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if args.only is None or s.key in args.only.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="ddnn-attack-runs-"))
    try:
        runs = {"c": args.run, "f": args.run_f}
        if runs["c"] is None and any(s.config == "c" for s in chosen):
            runs["c"] = train_tiny(scratch / "run-c")
        if runs["f"] is None and any(s.config == "f" for s in chosen):
            runs["f"] = train_tiny(
                scratch / "run-f", "model.edge.groups=[[0,1],[2,3],[4,5]]", "model.edge.filters=[8]"
            )
        import ddnn

        print(f"ddnn from {Path(ddnn.__file__).parent}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        print(f"options {PACED}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        outcomes = []
        for s in chosen:
            out = run_scenario(s, runs, args.keep)
            print(f"... {out.name}: {summarize(out)[-1]} ({out.seconds:.0f} s)", flush=True)
            outcomes.append(out)
        print()
        print(table(outcomes))
        print(details(outcomes))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
