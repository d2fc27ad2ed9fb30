"""Deployments: which nodes a trained hierarchy has, where they run, and the local launcher.

A deployment file (YAML) names the broker and, for every node, the host it runs on::

    broker: mqtt://10.0.0.5:1883     # or mqtts://… with ca_file
    namespace: plant-1               # topic namespace (default: "ddnn")
    options: {rate: 10, deadline: 1.0}   # optional; the keys of OPTIONS, checked like the flags
    nodes:
      cloud: {host: server}
      aggregator: {host: gateway}
      device_0: {host: cam0, input: /data/cam0.npy}
      …

``ddnn deploy --run RUN --file FILE --host cam0`` starts the nodes of host ``cam0`` (each a
``ddnn serve …`` process); ``ddnn deploy --run RUN --local`` starts a broker and every node here,
replays the test split and reports.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddnn.config import ModelConfig, RunConfig, from_dict, parse_yaml
from ddnn.runtime.broker import LocalBroker
from ddnn.runtime.client import ResultCollector, RunReport
from ddnn.runtime.options import COMMON_FLAGS, OPTIONS, SERVE_FLAGS, check_options
from ddnn.runtime.processes import Processes, child_env, cpu_seconds
from ddnn.runtime.protocol import CLOUD, EDGE, LOCAL, Topics
from ddnn.train.checkpoint import verify_run

if TYPE_CHECKING:
    from ddnn.data.dataset import AnyDataset

log = logging.getLogger(__name__)


def hierarchy_nodes(mc: ModelConfig) -> list[str]:
    """Every node of a hierarchy, upper tiers first (the order they must start in)."""
    nodes = ["cloud"] if mc.cloud.enabled else []
    nodes += [f"edge_{e}" for e in range(len(mc.edge.groups))]
    nodes.append("aggregator")
    nodes += [f"device_{k}" for k in range(mc.num_devices)]
    return nodes


def exit_names(mc: ModelConfig) -> tuple[str, ...]:
    names = [LOCAL] + ([EDGE] if mc.edge.groups else []) + ([CLOUD] if mc.cloud.enabled else [])
    return tuple(names)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The run's config, after checking the sections the runtime serves against the run.

    Reads ``config.yaml`` and checks every file against the run's manifest (``verify_run``): no
    torch needed, so a device node on the C engine does not import it.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run directory {str(path)!r} does not exist")
    if not (path / "checkpoint.pt").is_file() or not (path / "config.yaml").is_file():
        raise ValueError(
            f"{str(path)!r} is not a run directory (no checkpoint.pt and config.yaml); "
            "make one with `ddnn train`"
        )
    what = f"run config {str(path / 'config.yaml')!r}"
    try:
        values = parse_yaml((path / "config.yaml").read_text(), what)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what}: {exc}") from None
    if not isinstance(values, dict):
        got = "empty" if values is None else f"a {type(values).__name__}"
        raise ValueError(
            f"{what} is {got}, not a mapping of data, model, train and eval; "
            "retrain the run with `ddnn train`"
        )
    try:
        config = from_dict(RunConfig, values)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{what} is not valid: {exc.args[0] if exc.args else exc}") from None
    mc = config.model
    if not mc.device.filters:
        raise ValueError(
            "this run's devices are raw sensors (configuration a, no local exit); the runtime "
            "serves hierarchies with device sections (b-f)"
        )
    needed = [n for n in hierarchy_nodes(mc) if n != "aggregator"] + ["local"]
    needed += ["edge_exit"] if mc.edge.groups else []
    missing = [n for n in needed if not (path / "sections" / f"{n}.pt").is_file()]
    if missing:
        raise ValueError(
            f"run directory {str(path)!r} lacks per-section checkpoints {missing} "
            "(sections/<name>.pt); retrain it with `ddnn train`"
        )
    verify_run(path)
    return config


@dataclass
class NodeSpec:
    name: str
    host: str
    input: str | None = None


@dataclass
class Deployment:
    """A parsed deployment file."""

    broker: str
    namespace: str
    nodes: dict[str, NodeSpec]
    options: dict[str, Any] = field(default_factory=dict)


def load_deployment(path: str | Path, mc: ModelConfig) -> Deployment:
    """Parse and check a deployment file against the run's hierarchy."""
    what = f"deployment file {str(path)!r}"
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what}: {exc}") from None
    doc = parse_yaml(text, what)
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), dict):
        raise ValueError(f"{what} must be a mapping with a 'nodes' mapping")
    unknown_keys = set(doc) - {"broker", "namespace", "nodes", "options"}
    if unknown_keys:
        raise ValueError(
            f"{what}: unknown key(s) {sorted(map(str, unknown_keys))}; accepted: broker, "
            "namespace, nodes, options"
        )
    expected = hierarchy_nodes(mc)
    names = list(doc["nodes"])
    unknown = [n for n in names if n not in expected]
    if unknown:
        raise ValueError(
            f"{what} names node(s) {unknown} that this run's hierarchy does not have; "
            f"its nodes are {', '.join(expected)}"
        )
    absent = [n for n in expected if n not in names]
    if absent:
        raise ValueError(
            f"{what} does not place node(s) {absent}; the run's hierarchy needs "
            f"{', '.join(expected)}"
        )
    nodes = {}
    for name, spec in doc["nodes"].items():
        accepted = "{host: NAME} or {host: NAME, input: FILE.npy}"
        if not isinstance(spec, dict) or set(spec) - {"host", "input"}:
            raise ValueError(f"{what}: node {name!r} is {spec!r}; accepted: {accepted}")
        host = spec.get("host")
        if not isinstance(host, str | int) or isinstance(host, bool) or not str(host).strip():
            raise ValueError(
                f"{what}: node {name!r} has no host (got {host!r}); every node needs one: "
                f"{accepted}"
            )
        source = spec.get("input")
        nodes[name] = NodeSpec(name, str(host), None if source is None else str(source))
    options = doc.get("options")
    if options is not None and not isinstance(options, dict):
        raise ValueError(
            f"{what}: options is {options!r}, not a mapping; accepted keys: {', '.join(OPTIONS)}"
        )
    return Deployment(
        str(doc.get("broker", "mqtt://127.0.0.1:1883")),
        str(doc.get("namespace", "ddnn")),
        nodes,
        check_options(options or {}, mc, what),
    )


def serve_command(
    node: str,
    run_dir: str | Path,
    broker_url: str,
    namespace: str,
    options: dict[str, Any],
    input_path: str | None = None,
    source: str | None = None,
) -> list[str]:
    """The ``ddnn serve …`` command line of one node (a device replays ``input_path``, or reads
    the live ``source``)."""
    kind, _, index = node.partition("_")
    cmd = [sys.executable, "-m", "ddnn.cli", "serve", kind, "--run", str(run_dir)]
    cmd += ["--broker", broker_url, "--namespace", namespace]
    if index:
        cmd += ["--id", index]
    for key in (*SERVE_FLAGS[kind], *COMMON_FLAGS):
        if options.get(key) is not None:
            cmd += [f"--{key.replace('_', '-')}", str(options[key])]
    if kind == "device":
        if source:
            cmd += ["--source", source]
        elif input_path:
            cmd += ["--input", input_path]
        if options.get("wait_for_start"):
            cmd.append("--wait-for-start")
        if options.get("trigger"):
            cmd.append("--trigger")
    return cmd


@dataclass
class LocalDeployment:
    """Everything ``deploy_local`` started, for callers (tests) that act on it mid-run."""

    broker: LocalBroker
    processes: Processes
    topics: Topics
    collector: ResultCollector
    nodes: list[str]
    samples: int
    labels: np.ndarray | None
    config: RunConfig
    folder: Path
    own_folder: bool
    live: bool = False  # devices read a live source (they never finish on their own)
    trigger: list[str] | None = None  # the trigger's command line, started by run_local
    stop_reason: str = ""  # why collecting ended before every sample was answered, if it did
    cpu_seconds: float = 0.0  # CPU every node process and the broker used during the run

    def pids(self) -> list[int]:
        """The deployment's processes: every node and the broker."""
        pids = [p.pid for p in self.processes.procs.values()]
        return pids + ([self.broker.process.pid] if self.broker.process is not None else [])

    @property
    def devices(self) -> list[str]:
        """The device nodes' names (their status topics)."""
        return [n for n in self.nodes if n.startswith("device_")]


def select_split(config: RunConfig, split: str, limit: int | None) -> AnyDataset:
    """The run's data set ``split`` (``test``, ``train`` or ``validation``), first ``limit`` samples."""
    from ddnn.data.registry import load_dataset

    splits = load_dataset(config.data)
    data = {"test": splits.test, "train": splits.train, "validation": splits.validation}.get(split)
    if data is None:
        raise ValueError(f"split {split!r} is not available; accepted: test, train, validation")
    if limit is not None:
        import torch

        data = data.subset(torch.arange(min(limit, len(data))))
    return data


def write_device_inputs(
    config: RunConfig, folder: Path, split: str, limit: int | None
) -> tuple[list[str], np.ndarray]:
    """Each device's view of a split as ``device_K.npy``; returns the paths and the labels."""
    data = select_split(config, split, limit)
    paths = []
    for k in range(data.num_devices):
        path = folder / f"device_{k}.npy"
        np.save(path, data.device_input(k).numpy().astype(np.float32))
        paths.append(str(path))
    return paths, data.labels.numpy()


def live_sources(
    source: str, num_devices: int, limit: int | None
) -> tuple[list[str | None], np.ndarray | None, int]:
    """Each device's live source, the labels to score the answers with (None if unknown), and
    the number of samples N to collect (ids 0..N-1).

    ``folder:ROOT``: device K reads ``ROOT/device_K``; the labels come from ``ROOT/labels.csv``
    (N = its rows), else N = ``limit``, else the files named by a sample id in
    ``ROOT/device_0``.
    ``pipe:PATTERN`` / ``mqtt:PATTERN``: device K reads the FIFO or file, or the sensor topic on
    the deployment's broker, ``PATTERN`` with ``{id}`` replaced by K; N = ``limit`` (required),
    no labels.

    Raises:
        ValueError: On another scheme, a missing device folder, labels that do not name
            samples 0..N-1, or a pipe or MQTT pattern without ``{id}`` or without a limit.
    """
    from ddnn.runtime.samples import read_labels

    scheme, _, arg = source.partition(":")
    if scheme in ("pipe", "mqtt"):
        if "{id}" not in arg or limit is None:
            raise ValueError(
                f"deploy --local --source {scheme}:PATTERN needs {{id}} in PATTERN (one "
                f"{scheme} source per device) and --limit N (the samples to collect), "
                f"got {source!r}"
            )
        specs: list[str | None] = [
            f"{scheme}:{arg.replace('{id}', str(k))}" for k in range(num_devices)
        ]
        return specs, None, limit
    if scheme != "folder" or not arg:
        raise ValueError(
            "deploy --local --source takes folder:ROOT (ROOT/device_K/ per device), "
            f"pipe:PATTERN or mqtt:PATTERN (with {{id}}), got {source!r}"
        )
    root = Path(arg)
    missing = [k for k in range(num_devices) if not (root / f"device_{k}").is_dir()]
    if missing:
        raise ValueError(
            f"{root} has no device_K folder for device(s) {missing}; write them with "
            "`ddnn samples RUN --out ROOT` or by hand"
        )
    by_sample = read_labels(root)
    labels: np.ndarray | None
    if by_sample is None:  # the samples to come (--limit), else the files there now
        n = (
            limit
            if limit is not None
            else sum(1 for f in (root / "device_0").iterdir() if f.stem.isdigit())
        )
        labels = None
    else:
        n = len(by_sample)
        if sorted(by_sample) != list(range(n)):
            raise ValueError(f"{root}/labels.csv must list samples 0..N-1 once each")
        labels = np.array([by_sample[i] for i in range(n)], dtype=np.int64)
    if limit is not None:
        n = min(n, limit)
        labels = labels[:n] if labels is not None else None
    return [f"folder:{root / f'device_{k}'}" for k in range(num_devices)], labels, n


def start_local(
    run_dir: str | Path,
    options: dict[str, Any],
    secure: bool = False,
    split: str = "test",
    limit: int | None = None,
    workdir: Path | None = None,
    startup_timeout: float = 60.0,
    source: str | None = None,
    trigger_rate: float | None = None,
) -> LocalDeployment:
    """Start a broker and every node of the run's hierarchy on this machine; devices wait.

    ``source`` makes the devices read live sources instead of replaying a split:
    ``folder:ROOT`` or ``pipe:PATTERN`` (see :func:`live_sources`). With ``trigger_rate`` they
    capture on the ticks of a trigger process (started by :func:`run_local`), which sends one
    tick per sample to collect, ids 0..N-1.
    """
    config = read_run_config(run_dir)
    mc = config.model
    nodes = hierarchy_nodes(mc)
    namespace = f"r{uuid.uuid4().hex[:6]}"  # short: every packet repeats it in its topic
    folder = workdir or Path(tempfile.mkdtemp(prefix="ddnn-deploy-"))
    broker = LocalBroker(
        namespace,
        nodes,
        [tuple(g) for g in mc.edge.groups],
        secure=secure,
        folder=folder / "broker",
    )
    broker.start()
    processes = Processes(folder)
    collector: ResultCollector | None = None
    try:
        if options.get("engine") == "c":  # build once here, so device processes need no torch
            from ddnn.runtime.engine import create_engine

            for k in range(mc.num_devices):
                create_engine("c", run_dir, k)
        labels: np.ndarray | None
        if source is None:
            paths, labels = write_device_inputs(config, folder, split, limit)
            sources: list[str | None] = [None] * mc.num_devices
            count = len(labels)
        else:
            sources, labels, count = live_sources(source, mc.num_devices, limit)
            paths = [""] * mc.num_devices
        topics = Topics(namespace)
        collector = ResultCollector(broker.settings("client"), topics, samples=count)
        if secure and source is not None and source.startswith("mqtt:"):
            raise ValueError("mqtt sensor topics are outside a --secure deployment's ACLs")
        opts = {**options, "wait_for_start": True, "trigger": trigger_rate is not None}
        if trigger_rate is not None and (source is None or secure or not trigger_rate > 0):
            raise ValueError(
                "a trigger drives live sources (--source), without --secure, at a rate > 0 "
                f"ticks/s (got {trigger_rate})"
            )
        if secure:
            assert broker.security is not None
            opts["ca_file"] = str(broker.security.ca_file)
        per_process = int(options.get("devices_per_process") or 1)
        if per_process > 1 and source is not None:
            raise ValueError("devices_per_process > 1 replays splits; not with a live source")
        if per_process > 1 and secure:
            raise ValueError("devices_per_process > 1 shares one login; not with --secure")
        devices = [n for n in nodes if n.startswith("device_")]
        for first in range(0, len(devices) if per_process > 1 else 0, per_process):
            ids = list(range(first, min(first + per_process, len(devices))))
            name = f"devices_{ids[0]}-{ids[-1]}"
            cmd = serve_command(
                "device_" + f"{ids[0]}-{ids[-1]}",
                run_dir,
                broker.url,
                namespace,
                opts,
                ",".join(paths[k] for k in ids),
            )
            processes.start(name, cmd, child_env())
        for name in nodes:
            if per_process > 1 and name.startswith("device_"):
                continue
            env_extra = {}
            url = broker.url
            if secure:
                assert broker.security is not None
                env_extra = {
                    "DDNN_BROKER_USERNAME": name,
                    "DDNN_BROKER_PASSWORD": broker.security.passwords[name],
                }
            device = int(name[7:]) if name.startswith("device_") else None
            device_input = paths[device] if device is not None else None
            device_source = sources[device] if device is not None else None
            cmd = serve_command(name, run_dir, url, namespace, opts, device_input, device_source)
            processes.start(name, cmd, child_env(env_extra))
        collector.wait_online(nodes, startup_timeout, processes.check_alive)
        return LocalDeployment(
            broker,
            processes,
            topics,
            collector,
            nodes,
            count,
            labels,
            config,
            folder,
            workdir is None,
            live=source is not None,
            trigger=None
            if trigger_rate is None
            else [
                *[sys.executable, "-m", "ddnn.cli", "serve", "trigger", "--broker", broker.url],
                *["--namespace", namespace, "--rate", str(trigger_rate)],
                *["--count", str(count), "--first", "0"],
            ],
        )
    except BaseException:
        if collector is not None:
            collector.close()
        processes.stop_all(timeout=0.0)
        broker.close()
        if workdir is None:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        raise


def finish_local(dep: LocalDeployment, wall_seconds: float) -> RunReport:
    """Build the report, stop every node and the broker.

    The report's ``node_exits`` names every node process that did not end with status 0 (a
    node killed on purpose shows its signal, e.g. -9).
    """
    report = dep.collector.report(
        dep.samples, dep.labels, exit_names(dep.config.model), wall_seconds, dep.stop_reason
    )
    dep.collector.close(stop_nodes=True)
    dep.processes.stop_all()
    device_samples = dep.samples * len(dep.devices)
    report.extra["cpu_seconds"] = dep.cpu_seconds
    report.extra["cpu_ms_per_device_sample"] = (
        1000.0 * dep.cpu_seconds / device_samples if device_samples else None
    )
    report.extra["node_exits"] = {
        name: p.returncode for name, p in dep.processes.procs.items() if p.returncode != 0
    }
    dep.broker.close()
    if dep.own_folder:
        import shutil

        shutil.rmtree(dep.folder, ignore_errors=True)
    return report


def run_local(
    dep: LocalDeployment,
    grace: float = 3.0,
    timeout: float = 600.0,
    progress: Any = None,
    during: Callable[[LocalDeployment], None] | None = None,
) -> float:
    """Start the devices' replay and collect the answers; returns the wall time in seconds.

    ``during`` runs right after the start, before collecting (e.g. to kill a node mid-run).
    """
    from ddnn.runtime.device_node import start_command

    before = {pid: cpu_seconds(pid) for pid in dep.pids()}
    t0 = time.perf_counter()
    dep.collector.send(start_command(time.time() + 0.05))
    if dep.trigger is not None:
        dep.processes.start("trigger", dep.trigger, child_env())
    if during is not None:
        during(dep)
    dep.stop_reason = dep.collector.collect(
        dep.samples, dep.devices, grace, timeout, progress, live=dep.live
    )
    wall = time.perf_counter() - t0
    for pid, start in before.items():  # a process killed mid-run counts until its last reading
        end = cpu_seconds(pid)
        if start is not None and end is not None:
            dep.cpu_seconds += end - start
    return wall
