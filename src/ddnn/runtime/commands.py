"""CLI subcommands of the runtime: ``ddnn serve``, ``ddnn run-client`` and ``ddnn deploy``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from ddnn.config import ModelConfig
from ddnn.runtime.protocol import BATCH, WINDOW, Topics

log = logging.getLogger(__name__)

ROLES = ("device", "aggregator", "edge", "cloud", "trigger")


def _checked(key: str) -> Callable[[str], Any]:
    """An argparse ``type=`` applying deployment option rule ``key``: flags and files agree."""

    def check(text: str) -> Any:
        from ddnn.runtime.options import FLAG_RULES

        try:
            return FLAG_RULES[key](text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = key
    return check


def _broker(args: argparse.Namespace) -> Any:
    from ddnn.runtime.mqtt import parse_broker_url

    return parse_broker_url(
        args.broker,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        username=args.username or os.environ.get("DDNN_BROKER_USERNAME"),
        password=args.password or os.environ.get("DDNN_BROKER_PASSWORD"),
    )


def _add_broker_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--broker", required=required, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--namespace", default="ddnn", help="topic namespace of the deployment")
    p.add_argument("--ca-file", type=_checked("ca_file"), help="CA certificate of the broker (TLS)")
    p.add_argument("--cert-file", type=_checked("cert_file"), help="client certificate (TLS)")
    p.add_argument("--key-file", type=_checked("key_file"), help="client certificate key (TLS)")
    p.add_argument("--username", default=None, help="broker user (or $DDNN_BROKER_USERNAME)")
    p.add_argument("--password", default=None, help="broker password (or $DDNN_BROKER_PASSWORD)")
    p.add_argument("--qos", type=_checked("qos"), default=1, help="QoS of data frames (0 or 1)")


_SERVED: list[Any] = []


def _stop_on_sigterm(node: Any) -> None:
    """SIGTERM stops every node of this process cleanly (Last Will not needed)."""
    _SERVED.append(node)

    def handler(_sig: int, _frame: Any) -> None:
        for n in _SERVED:
            n.stopping = True

    signal.signal(signal.SIGTERM, handler)


def _device_ids(text: str | None, num_devices: int) -> list[int]:
    """``"3"``, ``"0,2"`` or ``"0-5"`` -> device indices, each checked against the model."""
    accepted = f"its devices are 0..{num_devices - 1}"
    if not text:
        raise ValueError(f"serve device needs --id K; {accepted}")
    ids: list[int] = []
    for part in text.split(","):
        lo, _, hi = (x.strip() for x in part.partition("-"))
        if not lo.isdigit() or not (hi or lo).isdigit():
            raise ValueError(f"--id {text!r} is not K, K,L,… or K-L; {accepted}")
        if int(hi or lo) < int(lo):
            raise ValueError(f"--id {text!r}: the range {part!r} is empty; give K-L with K <= L")
        ids += range(int(lo), int(hi or lo) + 1)
    bad = [k for k in ids if not 0 <= k < num_devices]
    if bad or len(set(ids)) != len(ids):
        raise ValueError(f"device id(s) {bad or ids} not in the model (or repeated); {accepted}")
    return ids


def _edge_id(text: str | None, num_edges: int) -> int:
    if text is None or not text.isdigit() or not 0 <= int(text) < num_edges:
        raise ValueError(f"edge id {text} is not in the model; its edges are 0..{num_edges - 1}")
    return int(text)


def _port(text: str) -> int:
    """An argparse ``type=`` for a TCP port to listen on."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port; give 1..65535")
    return port


_metrics_servers: list[Any] = []  # this process's metrics server (``--metrics-port``)


def _connect(nodes: list[Any], connect_timeout: float, metrics_port: int | None = None) -> None:
    """Connects the process's nodes; with ``metrics_port``, serves their metrics there first
    (so a taken port fails before anything joins the deployment). Then the process is set up
    to serve: see :func:`~ddnn.runtime.node.settle_memory`."""
    from ddnn.runtime.mqtt import BrokerError
    from ddnn.runtime.node import settle_memory

    if metrics_port is not None:
        from ddnn.runtime.metrics import serve_node_metrics

        try:
            server = serve_node_metrics([n.metrics for n in nodes], metrics_port)
        except OSError as exc:
            raise ValueError(
                f"--metrics-port {metrics_port}: cannot listen on 127.0.0.1 ({exc.strerror})"
            ) from None
        _metrics_servers.append(server)
        names = ", ".join(n.name for n in nodes)
        log.info("metrics of %s on http://127.0.0.1:%d/metrics", names, metrics_port)
    try:
        for node in nodes:
            node.connect(connect_timeout=connect_timeout)
    except BrokerError as exc:
        raise ValueError(str(exc)) from None
    for node in nodes:
        _stop_on_sigterm(node)
    settle_memory()


def _serve_devices(args: argparse.Namespace, mc: ModelConfig, settings: Any, topics: Topics) -> int:
    """One process serving device ids ``--id`` (one, a list or a range) until they are done."""
    ids = _device_ids(args.id, mc.num_devices)
    if args.input and args.source:
        raise ValueError("give --source or its alias --input (replay:FILE.npy), not both")
    specs = _source_specs(args.source, ids) if args.source else None
    inputs = args.input.split(",") if args.input else [None] * len(ids)
    if len(inputs) != len(ids):
        raise ValueError(f"--input names {len(inputs)} files for {len(ids)} device ids")
    replays = [spec.startswith("replay:") for spec in specs or []]
    if specs and all(replays):
        inputs, specs = [spec.removeprefix("replay:") for spec in specs], None
    elif any(replays):
        raise ValueError("the devices of one process replay files or read live sources, not both")
    from ddnn.runtime.device_node import DeviceNode, load_device_inputs, serve_devices
    from ddnn.runtime.engine import create_engine

    if args.engine == "torch":
        import torch

        torch.set_num_threads(1)
    if specs:
        return _serve_live_devices(args, mc, settings, topics, ids, specs)
    nodes = [
        DeviceNode(
            k,
            create_engine(args.engine, args.run, k),
            load_device_inputs(args.run, k, path, args.split, args.limit),
            settings,
            topics,
            rate=args.rate,
            batch=args.batch,
            window=args.window or WINDOW,
            score_encoding=mc.wire.scores,
            wait_for_start=args.wait_for_start,
            qos=args.qos,
        )
        for k, path in zip(ids, inputs, strict=True)
    ]
    for node in nodes:  # a rollout's sections are loaded with the same engine
        node.engine_factory = _engine_factory(args.engine, node.device)
    _connect(nodes, args.connect_timeout, args.metrics_port)
    serve_devices(nodes)
    for node in nodes:
        doc = {"node": node.name, "counters": dict(node.counters), "torch": "torch" in sys.modules}
        print(json.dumps(doc), file=sys.stderr)
    return 0


def _engine_factory(kind: str, device: int) -> Callable[[Any], Any]:
    from ddnn.runtime.engine import create_engine

    return lambda run_dir: create_engine(kind, run_dir, device)


def _source_specs(text: str, ids: list[int]) -> list[str]:
    """``--source``: one SPEC for every device, or one per device id separated by commas; a
    ``{id}`` in a SPEC stands for the device id (``folder:/data/cam{id}``)."""
    specs = text.split(",")
    if len(specs) == 1:
        specs = specs * len(ids)
    if len(specs) != len(ids):
        raise ValueError(f"--source names {len(specs)} sources for {len(ids)} device ids")
    return [spec.replace("{id}", str(k)) for spec, k in zip(specs, ids, strict=True)]


def _serve_live_devices(
    args: argparse.Namespace,
    mc: ModelConfig,
    settings: Any,
    topics: Topics,
    ids: list[int],
    specs: list[str],
) -> int:
    """Devices reading live sources (folder, pipe, MQTT topic) until stopped or their source
    ends."""
    from ddnn.runtime.device_node import serve_devices
    from ddnn.runtime.engine import create_engine
    from ddnn.runtime.live_device import LiveDeviceNode
    from ddnn.runtime.sources import open_source

    if sum(spec in ("pipe:-", "pipe:/dev/stdin") for spec in specs) > 1:
        raise ValueError("only one device of a process can read standard input (pipe:-)")
    nodes = []
    for k, spec in zip(ids, specs, strict=True):
        engine = create_engine(args.engine, args.run, k)
        source = open_source(spec, tuple(engine.input_shape), on_done=args.on_done)
        nodes.append(
            LiveDeviceNode(
                k,
                engine,
                source,
                settings,
                topics,
                triggered=args.trigger,
                tick_deadline=args.tick_deadline,
                batch=args.batch,
                score_encoding=mc.wire.scores,
                wait_for_start=args.wait_for_start,
                qos=args.qos,
            )
        )
    for node in nodes:  # a rollout's sections are loaded with the same engine
        node.engine_factory = _engine_factory(args.engine, node.device)
    _connect(nodes, args.connect_timeout, args.metrics_port)
    serve_devices(nodes)
    for node in nodes:
        print(json.dumps({"node": node.name, "counters": dict(node.counters)}), file=sys.stderr)
    return 0


def _serve_trigger(args: argparse.Namespace, settings: Any, topics: Topics) -> int:
    from ddnn.runtime.trigger import TriggerNode

    if not args.rate:
        raise ValueError("serve trigger needs --rate HZ > 0 (capture ticks per second)")
    node = TriggerNode(settings, topics, args.rate, count=args.count, first=args.first)
    _connect([node], args.connect_timeout, args.metrics_port)
    node.serve()
    print(json.dumps({"node": node.name, "counters": dict(node.counters)}), file=sys.stderr)
    return 0


def _upper_node(args: argparse.Namespace, mc: ModelConfig, settings: Any, topics: Topics) -> Any:
    """The aggregator, edge or cloud node ``args`` name, checked against the hierarchy."""
    from ddnn.runtime.options import thresholds_for

    thresholds = thresholds_for(args.thresholds, mc)  # before any heavy import: fail fast
    if args.role == "edge":
        if not mc.edge.groups:
            raise ValueError("this run's hierarchy has no edges (configurations c, a, b)")
        edge_id = _edge_id(args.id, len(mc.edge.groups))
    if args.role == "cloud" and not mc.cloud.enabled:
        raise ValueError("this run's hierarchy has no cloud (it ends at the edge)")
    import torch

    torch.set_num_threads(1)
    if args.role == "aggregator":
        from ddnn.runtime.aggregator_node import AggregatorNode

        return AggregatorNode(
            args.run,
            settings,
            topics,
            thresholds,
            deadline=args.deadline,
            upper_timeout=args.upper_timeout,
            window=args.window or WINDOW,
            qos=args.qos,
        )
    from ddnn.runtime.upper_nodes import CloudNode, EdgeNode

    if args.role == "edge":
        return EdgeNode(args.run, edge_id, settings, topics, deadline=args.deadline, qos=args.qos)
    return CloudNode(args.run, settings, topics, deadline=args.deadline, qos=args.qos)


def cmd_rollout(args: argparse.Namespace) -> int:
    """``ddnn rollout``: 0 switched (or set to switch), 1 a node refused or stayed silent."""
    from ddnn.runtime.mqtt import BrokerError
    from ddnn.runtime.rollout import RolloutError, run_rollout

    def say(line: str) -> None:
        if not args.json:
            print(f"rollout: {line}", flush=True)

    try:
        result = run_rollout(
            _broker(args), Topics(args.namespace), args.run, timeout=args.timeout, say=say
        )
    except BrokerError as exc:
        raise ValueError(str(exc)) from None
    except RolloutError as exc:
        print(f"ddnn rollout: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(vars(result)))
    elif result.switched:
        print(f"rollout: done; the deployment passed sample {result.switch_at}")
    else:
        print(f"rollout: set; the deployment switches when it reaches sample {result.switch_at}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one node until a stop command, SIGTERM or Ctrl-C."""
    settings = _broker(args)
    topics = Topics(args.namespace)
    if args.role == "trigger":
        return _serve_trigger(args, settings, topics)
    if args.run is None:
        raise ValueError(f"serve {args.role} needs --run RUN_DIR")
    from ddnn.runtime.deploy import read_run_config

    mc = read_run_config(args.run).model
    if args.role == "device":
        return _serve_devices(args, mc, settings, topics)
    node = _upper_node(args, mc, settings, topics)
    _connect([node], args.connect_timeout, args.metrics_port)
    node.serve()
    if node.counters:
        print(json.dumps({"node": node.name, "counters": dict(node.counters)}), file=sys.stderr)
    return 0


def _print_report(doc: dict[str, Any], as_json: bool) -> None:
    from ddnn.runtime.client import format_report

    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_report(doc))


def _add_formula(doc: dict[str, Any], mc: ModelConfig) -> None:
    """The SPEC §6 bytes at the measured local-exit fraction (mean over the devices, whose
    feature maps may differ), next to the measured ones."""
    import math

    from ddnn.models.sections import device_feature_shape
    from ddnn.wire import formula_bytes_per_device

    per_device = [
        formula_bytes_per_device(
            mc.num_classes,
            doc["local_exit_fraction"],
            math.prod(device_feature_shape(s, mc.device)),
            mc.wire.scores,
        )
        for s in mc.device_shapes
    ]
    doc["formula_bytes_per_device"] = sum(per_device) / len(per_device)


def cmd_run_client(args: argparse.Namespace) -> int:
    """Collect the answers of a running deployment and print the report."""
    from ddnn.runtime.client import ResultCollector
    from ddnn.runtime.deploy import exit_names, read_run_config, select_split
    from ddnn.runtime.device_node import start_command
    from ddnn.runtime.mqtt import BrokerError

    config = read_run_config(args.run)
    labels = select_split(config, args.split, args.limit).labels.numpy()
    try:
        collector = ResultCollector(_broker(args), Topics(args.namespace), samples=len(labels))
    except BrokerError as exc:
        raise ValueError(str(exc)) from None
    devices = [f"device_{k}" for k in range(config.model.num_devices)]
    t0 = time.perf_counter()
    if args.start:
        collector.send(start_command(time.time() + 0.05))
    reason = collector.collect(len(labels), devices, args.grace, args.timeout)
    report = collector.report(
        len(labels), labels, exit_names(config.model), time.perf_counter() - t0, reason
    )
    collector.close(stop_nodes=args.stop)
    doc = report.as_dict()
    _add_formula(doc, config.model)
    _print_report(doc, args.json)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from ddnn.runtime.deploy import (
        finish_local,
        load_deployment,
        read_run_config,
        run_local,
        serve_command,
        start_local,
    )
    from ddnn.runtime.options import thresholds_for

    config = read_run_config(args.run)
    options: dict[str, Any] = {
        "rate": args.rate,
        "batch": args.batch,
        "engine": args.engine,
        "deadline": args.deadline,
        "upper_timeout": args.upper_timeout,
        "thresholds": args.thresholds,
    }
    thresholds_for(args.thresholds, config.model)  # validate before starting anything
    if args.file and not args.local:
        dep_file = load_deployment(args.file, config.model)
        if not args.host:
            raise ValueError(
                "--file without --local needs --host NAME: the host whose nodes to start"
            )
        mine = [n for n, spec in dep_file.nodes.items() if spec.host == args.host]
        if not mine:
            hosts = sorted({s.host for s in dep_file.nodes.values()})
            raise ValueError(
                f"no node of the deployment runs on host {args.host!r}; hosts: {hosts}"
            )
        import subprocess

        from ddnn.runtime.processes import child_env

        procs = [
            subprocess.Popen(
                serve_command(
                    n,
                    args.run,
                    dep_file.broker,
                    dep_file.namespace,
                    {**options, **dep_file.options},
                    dep_file.nodes[n].input,
                ),
                env=child_env(),
            )
            for n in mine
        ]
        print(f"started {', '.join(mine)} on {args.host}; Ctrl-C stops them", file=sys.stderr)
        try:
            return max(p.wait() for p in procs)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            return 130
    if not args.local:
        raise ValueError("give --local (everything on this machine) or --file FILE --host NAME")
    if args.file:
        load_deployment(args.file, config.model)  # validates it against the run's hierarchy
    dep = start_local(
        args.run,
        options,
        secure=args.secure,
        split=args.split,
        limit=args.limit,
        source=args.source,
        trigger_rate=args.trigger_rate,
    )
    wall = 0.0
    gateway = None
    try:
        if args.dashboard is not None:
            gateway = _start_dashboard(dep, args.dashboard)
        wall = run_local(dep, grace=args.grace, timeout=args.timeout)
        if gateway is not None and args.linger:
            print(f"ddnn deploy: the dashboard stays up {args.linger:g} s", file=sys.stderr)
            time.sleep(args.linger)
    finally:  # whatever happens, stop every node and the broker
        report = finish_local(dep, wall)
        if gateway is not None:
            gateway.stop()
    doc = report.as_dict()
    _add_formula(doc, config.model)
    _print_report(doc, args.json)
    return 0


def _start_dashboard(dep: Any, port: int) -> Any:
    """The gateway with the live dashboard for a local deployment, on 127.0.0.1:``port``; a
    ``--secure`` deployment's page needs a fresh token, printed in its address."""
    import secrets

    from ddnn.runtime.gateway import RunningGateway

    token = secrets.token_urlsafe(24) if dep.broker.secure else None
    gateway = RunningGateway(dep.broker.settings("observer"), dep.topics, port, token)
    print(f"ddnn deploy: dashboard on {gateway.url}", file=sys.stderr, flush=True)
    return gateway


SPLIT_HELP = "split of the run's data set: test (default), train or validation"


def _add_wait_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grace",
        type=_checked("grace"),
        default=3.0,
        help="s without new answers, once the devices are done, before giving up (3)",
    )
    p.add_argument(
        "--timeout", type=_checked("timeout"), default=600.0, help="s to wait in all (600)"
    )


def add_runtime_parsers(sub: Any) -> None:
    """Adds ``serve``, ``run-client`` and ``deploy`` to the ``ddnn`` subcommands."""
    p = sub.add_parser("serve", help="run one node of a trained hierarchy (MQTT)")
    p.add_argument("role", choices=ROLES)
    p.add_argument("--run", help="run directory with per-section checkpoints (not for trigger)")
    p.add_argument(
        "--id",
        default=None,
        help="device or edge index; devices also take a list 0,1,2 or range 0-5",
    )
    _add_broker_arguments(p)
    p.add_argument(
        "--connect-timeout",
        type=_checked("connect_timeout"),
        default=10.0,
        help="s to retry the broker",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve this process's Prometheus metrics on http://127.0.0.1:PORT/metrics",
    )
    g = p.add_argument_group("device")
    g.add_argument(
        "--source",
        default=None,
        help="replay:FILE.npy | folder:DIR | pipe:PATH | pipe:- | mqtt:TOPIC; one for all "
        "devices or one per id (comma-separated); {id} stands for the device id",
    )
    g.add_argument("--input", default=None, help="alias of --source replay:FILE.npy")
    g.add_argument(
        "--on-done",
        choices=("keep", "move", "delete"),
        default="keep",
        help="folder sources: what to do with a file once read (keep)",
    )
    g.add_argument(
        "--trigger", action="store_true", help="capture on the trigger's ticks (live sources)"
    )
    g.add_argument(
        "--tick-deadline",
        type=_checked("deadline"),
        default=0.5,
        help="s a triggered device waits for a reading after a tick (0.5)",
    )
    g.add_argument("--split", type=_checked("split"), default="test", help=SPLIT_HELP)
    g.add_argument("--limit", type=_checked("limit"), help="replay only the first N samples")
    g.add_argument(
        "--rate", type=_checked("rate"), default=0.0, help="samples/s (0: as fast as possible)"
    )
    g.add_argument(
        "--batch",
        type=_checked("batch"),
        default=BATCH,
        help=f"most samples per device inference call and frame ({BATCH}; fewer when fewer are due)",
    )
    g.add_argument(
        "--window",
        type=_checked("window"),
        default=None,
        help=f"devices: samples a device runs ahead of the aggregator's decisions ({WINDOW}); "
        f"aggregator: sample ids accepted ahead of them, >= every device's window ({WINDOW})",
    )
    g.add_argument("--engine", choices=("torch", "c"), default="torch")
    g.add_argument("--wait-for-start", action="store_true", help="wait for a start command")
    g = p.add_argument_group("trigger (its rate is --rate, in ticks/s)")
    g.add_argument("--count", type=_checked("limit"), help="ticks to send, then stop (forever)")
    g.add_argument("--first", type=int, default=None, help="id of the first tick (continues)")
    g = p.add_argument_group("aggregator, edge, cloud")
    g.add_argument("--thresholds", type=_checked("thresholds"), help="T (local) or local=T,edge=T")
    g.add_argument(
        "--deadline",
        type=_checked("deadline"),
        default=0.5,
        help="s to wait for a sample's frames (0.5)",
    )
    g.add_argument(
        "--upper-timeout",
        type=_checked("upper_timeout"),
        default=3.0,
        help="s the aggregator waits for the tier above before answering itself",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("run-client", help="collect a deployment's answers and print the report")
    p.add_argument("--run", required=True)
    _add_broker_arguments(p)
    p.add_argument("--split", type=_checked("split"), default="test", help=SPLIT_HELP)
    p.add_argument("--limit", type=_checked("limit"), help="collect only the first N samples")
    p.add_argument("--start", action="store_true", help="send the devices the start command")
    p.add_argument("--stop", action="store_true", help="stop every node at the end")
    _add_wait_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run_client)

    p = sub.add_parser(
        "rollout", help="switch a running deployment to a new run's model, losing no sample"
    )
    p.add_argument("--run", required=True, help="the new run directory (same hierarchy)")
    _add_broker_arguments(p)
    p.add_argument(
        "--timeout",
        type=_checked("upper_timeout"),
        default=120.0,
        help="s the nodes have to prepare the model (120; C devices compile)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("deploy", help="start a hierarchy's nodes: all locally, or one host's")
    p.add_argument("--run", required=True)
    p.add_argument("--local", action="store_true", help="broker + every node on this machine")
    p.add_argument("--file", default=None, help="deployment file (YAML)")
    p.add_argument("--host", default=None, help="with --file: start this host's nodes")
    p.add_argument("--secure", action="store_true", help="TLS, per-node passwords and ACLs")
    p.add_argument(
        "--source",
        default=None,
        help="with --local: folder:ROOT, device K reads ROOT/device_K (files named by sample "
        "id, as `ddnn samples` writes them; ROOT/labels.csv scores the answers), or "
        "pipe:PATTERN or mqtt:PATTERN with {id} (one FIFO or sensor topic per device; "
        "needs --limit)",
    )
    p.add_argument(
        "--trigger-rate",
        type=_checked("rate"),
        default=None,
        help="with --source: a trigger sends --limit capture ticks at this rate (ticks/s)",
    )
    p.add_argument("--split", type=_checked("split"), default="test", help=SPLIT_HELP)
    p.add_argument("--limit", type=_checked("limit"), help="replay only the first N samples")
    p.add_argument(
        "--threshold",
        "--thresholds",
        dest="thresholds",
        type=_checked("thresholds"),
        help="T (local) or local=T,edge=T",
    )
    p.add_argument(
        "--rate", type=_checked("rate"), default=0.0, help="samples/s per device (0: at once)"
    )
    p.add_argument("--batch", type=_checked("batch"), default=BATCH)
    p.add_argument("--engine", choices=("torch", "c"), default="torch")
    p.add_argument("--deadline", type=_checked("deadline"), help="s (default: serve's)")
    p.add_argument("--upper-timeout", type=_checked("upper_timeout"), help="s (default: serve's)")
    _add_wait_arguments(p)
    p.add_argument(
        "--dashboard",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve the live dashboard on http://127.0.0.1:PORT/ while the run lasts",
    )
    p.add_argument(
        "--linger",
        type=_checked("rate"),  # seconds >= 0 (0: close with the run)
        default=0.0,
        help="with --dashboard: s to keep the deployment and its dashboard up after the run",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_deploy)
