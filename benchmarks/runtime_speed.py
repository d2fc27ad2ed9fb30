"""The MQTT runtime on loopback: throughput, latency per exit, and scale-out to 60 devices.

Every node is a separate OS process talking to a local mosquitto; numbers come from the answers
the run client collects (latency = answer time - the capture time the first device stamped).

1. The paper's model (configuration c: 6 devices, device ConvP(4), MP-CC cloud, T = 0.8) on
   synthetic-mvmc: throughput with devices pipelining as fast as the flow-control window allows;
   latency at a moderate rate (one sample per device call), with and without TCP_NODELAY.
2. Scale-out, configuration f: 6, 12, 30 and 60 C devices in groups of 6, one edge per group
   (devices are copies of the 6 synthetic cameras; 6 devices share one process, each with its own
   MQTT client), as fast as possible: throughput, latency, the broker's CPU and where the CPU goes.

Run: python benchmarks/runtime_speed.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.cli import main as ddnn  # noqa: E402
from ddnn.config import resolve_config  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.runtime.deploy import finish_local, run_local, start_local  # noqa: E402
from ddnn.runtime.protocol import BATCH, WINDOW  # noqa: E402

RESULTS = Path(__file__).parent / "results_runtime_speed.txt"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def deploy(run_dir: Path, options: dict[str, Any], limit: int | None) -> dict[str, Any]:
    dep = start_local(run_dir, options, limit=limit)
    assert dep.broker.process is not None
    broker_pid = dep.broker.process.pid
    cpu0 = cpu_seconds(broker_pid)
    nodes0 = {n: cpu_seconds(p.pid) for n, p in dep.processes.procs.items()}
    try:
        wall = run_local(dep, grace=3.0, timeout=600)
        broker_cpu = cpu_seconds(broker_pid) - cpu0
        used = {n: cpu_seconds(p.pid) - nodes0[n] for n, p in dep.processes.procs.items()}
    finally:
        report = finish_local(dep, 0.0)
    doc = report.as_dict()
    doc["broker_cpu_percent"] = 100.0 * broker_cpu / wall if wall else 0.0
    device_samples = doc["samples"] * len(dep.devices)
    roles: dict[str, float] = {"broker": broker_cpu}
    for name, cpu in used.items():  # devices_0-5 (several devices in one process) are devices
        role = name.split("_")[0].rstrip("s") if name.startswith("device") else name.split("_")[0]
        roles[role] = roles.get(role, 0.0) + cpu
    doc["cpu_ms_by_role"] = {r: 1000.0 * c / device_samples for r, c in roles.items()}
    total = sum(used.values()) + broker_cpu
    doc["all_cpu_percent"] = 100.0 * total / wall if wall else 0.0
    top = sorted(used.items(), key=lambda kv: -kv[1])[:3]
    doc["busiest"] = ", ".join(f"{n} {100 * c / wall:.0f}" for n, c in top) if wall else ""
    doc["wall"] = wall
    return doc


def qos1_round_trip(broker_nodelay: bool, client_nodelay: bool, rounds: int = 200) -> float:
    """Median ms of a QoS 1 publish -> echo -> reply between two clients through mosquitto."""
    import queue

    from ddnn.runtime.broker import LocalBroker
    from ddnn.runtime.mqtt import close_client, connect_client

    os.environ["DDNN_MQTT_NODELAY"] = "1" if client_nodelay else "0"
    broker = LocalBroker("rtt")
    if not broker_nodelay:
        conf = broker.folder / "mosquitto.conf"
        conf.write_text(conf.read_text().replace("set_tcp_nodelay true", "set_tcp_nodelay false"))
    try:
        broker.start()
        echo: Any = None
        echo = connect_client(
            "echo",
            broker.settings(),
            lambda m: echo.publish("pong", m.payload, qos=1),
            [("ping", 1)],
        )
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        me = connect_client("me", broker.settings(), inbox.put, [("pong", 1)])
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            me.publish("ping", b"x" * 45, qos=1)
            inbox.get(timeout=5)
            times.append(1000 * (time.perf_counter() - t0))
            time.sleep(0.005)
        close_client(echo)
        close_client(me)
    finally:
        broker.close()
        os.environ.pop("DDNN_MQTT_NODELAY", None)
    return float(np.median(times))


def by_role(doc: dict[str, Any]) -> str:
    """CPU ms per device-sample of each kind of process (all devices together, all edges, …)."""
    order = ["device", "aggregator", "edge", "cloud", "broker"]
    parts = doc["cpu_ms_by_role"]
    return ", ".join(f"{r} {parts[r]:.3f}" for r in order if r in parts)


def latency(doc: dict[str, Any], exit_name: str) -> str:
    p = doc["latency_ms"].get(exit_name)
    return f"{p['p50']:.1f} / {p['p90']:.1f}" if p else "—"


def train_paper_model(folder: Path, num_test: int, epochs: int) -> Path:
    out = folder / "paper"
    assert (
        ddnn(["train", "--out", str(out), "--epochs", str(epochs), f"data.num_test={num_test}"])
        == 0
    )
    return out


def train_scaled_model(folder: Path, devices: int, num_test: int) -> Path:
    """Configuration f with ``devices`` cameras (copies of the 6 synthetic views), groups of 6."""
    base = load_dataset(resolve_config(overrides=[f"data.num_test={num_test}"]).data)
    reps = devices // 6
    path = folder / f"scaled-{devices}.npz"
    x = np.concatenate([base.train.x.numpy(), base.test.x.numpy()])
    y = np.concatenate([base.train.labels.numpy(), base.test.labels.numpy()])
    split = np.array([0] * len(base.train) + [1] * len(base.test))
    np.savez(path, X=np.tile(x, (1, reps, 1, 1, 1)), y=y, split=split)
    groups = [list(range(g * 6, g * 6 + 6)) for g in range(reps)]
    out = folder / f"run-{devices}"
    args = ["train", "--data", "npz", "--data-path", str(path), "--out", str(out), "--epochs", "2"]
    args += [f"model.edge.groups={groups}".replace(" ", ""), "model.edge.filters=[4]"]
    assert ddnn(args) == 0
    return out


def median_run(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose local-exit p50 is the median of the repeats (an odd count: a real run)."""
    ranked = sorted(docs, key=lambda d: d["latency_ms"].get("local", {}).get("p50", float("inf")))
    return ranked[(len(ranked) - 1) // 2]


def p50s(docs: list[dict[str, Any]], exit_name: str) -> str:
    values = [d["latency_ms"].get(exit_name, {}).get("p50", float("nan")) for d in docs]
    return " / ".join(f"{v:.1f}" for v in values)


def paper_model_tables(run: Path, n: int, log: Any, repeats: int = 3) -> None:
    """Parts 0 and 1: the QoS 1 round trip, and the paper's model with both device engines.
    A light-load row is the median of ``repeats`` runs (by local p50); every run's p50s follow
    the table, so the spread between runs on this shared machine is visible."""
    log("\n0. QoS 1 round trip between two clients through mosquitto on loopback (median ms)")
    log("| TCP_NODELAY on clients | on broker (set_tcp_nodelay) | round trip ms |")
    log("|---|---|---|")
    for client_nd, broker_nd in ((True, True), (False, True), (True, False), (False, False)):
        rtt = qos1_round_trip(broker_nd, client_nd)
        log(f"| {'yes' if client_nd else 'no'} | {'yes' if broker_nd else 'no'} | {rtt:.2f} |")
    log(f"\n1. paper model (configuration c), {n} test samples, T = 0.8, loopback mosquitto, QoS 1")
    log(
        "| device engine | mode | samples/s | answered | degraded | local exit % "
        "| local p50 / p90 ms | cloud p50 / p90 ms | payload B/dev | +frame hdr | +MQTT "
        "| +control | wire B/dev (x payload) | CPU ms per device-sample | broker CPU % |"
    )
    log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    modes = [
        (
            f"as fast as possible (defaults: batch ≤ {BATCH}, window {WINDOW})",
            {"deadline": 1.0},
            None,
        ),
        ("rate 20/s, batch 1", {"rate": 20.0, "batch": 1}, 300),
        ("rate 100/s, batch 1", {"rate": 100.0, "batch": 1}, 600),
    ]
    split, spread = [], []
    for engine in ("c", "torch"):
        for name, options, limit in modes:
            opts = {**options, "thresholds": "0.8", "engine": engine}
            if limit is None:
                doc = deploy(run, opts, limit)
                split.append(f"{engine}, {name.split(' (')[0]}: {by_role(doc)}")
            else:
                docs = [deploy(run, opts, limit) for _ in range(repeats)]
                doc = median_run(docs)
                spread.append(
                    f"- {engine}, {name}: local p50 {p50s(docs, 'local')} ms, "
                    f"cloud p50 {p50s(docs, 'cloud')} ms"
                )
            log(
                f"| {engine} | {name} | {doc['throughput_samples_per_s']:.0f} | "
                f"{doc['answered']}/{doc['samples']} | {doc['degraded_answers']} "
                f"| {100 * doc['local_exit_fraction']:.1f} | {latency(doc, 'local')} | "
                f"{latency(doc, 'cloud')} | {doc['bytes_per_device']:.1f} | "
                f"{doc['header_bytes_per_device']:.1f} | {doc['mqtt_overhead_per_device']:.1f} | "
                f"{doc['control_bytes_per_device']:.1f} | {doc['wire_bytes_per_device']:.1f} "
                f"({doc['wire_bytes_per_device'] / doc['bytes_per_device']:.2f}x) | "
                f"{doc['cpu_ms_per_device_sample']:.3f} | {doc['broker_cpu_percent']:.0f} |"
            )
    log(f"\nlight-load rows: the median of {repeats} runs by local p50; each run's p50s:")
    for line in spread:
        log(line)
    log(
        "\nwhere the CPU goes at full load, ms per device-sample by kind of process (all devices together):"
    )
    for line in split:
        log(f"- {line}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples, scale-out to 12 only")
    p.add_argument("--out", default=None)
    p.add_argument("--scale-only", action="store_true", help="only part 2 (scale-out)")
    p.add_argument(
        "--repeats", type=int, default=3, help="runs of each light-load row (odd; default 3)"
    )
    args = p.parse_args(argv)
    if args.repeats < 1 or args.repeats % 2 == 0:
        p.error(f"--repeats must be an odd number >= 1, got {args.repeats}")
    lines: list[str] = []

    def log(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    n = 600 if args.quick else 6000  # full load runs for a few seconds, not one
    log(f"machine: {machine()}")
    flags = (" --quick" if args.quick else "") + (
        f" --repeats {args.repeats}" if args.repeats != 3 else ""
    )
    log(f"command: python benchmarks/runtime_speed.py{flags}")
    with tempfile.TemporaryDirectory(prefix="ddnn-runtime-bench-") as tmp:
        folder = Path(tmp)
        run = None if args.scale_only else train_paper_model(folder, n, 20 if args.quick else 60)
        if run is None:
            log("(part 0 and 1 skipped: --scale-only)")
        else:
            paper_model_tables(run, n, log, args.repeats)
        counts = [6, 12] if args.quick else [6, 12, 30, 60]
        scale_n = 300 if args.quick else 1000
        log(
            f"\n2. scale-out, configuration f (groups of 6, one edge each), C devices, {scale_n} "
            "samples, as fast as possible, T = 0.8 local / 0.8 edge"
        )
        log(
            "| devices | edges | processes | samples/s | answered | degraded | exits local / edge / cloud % "
            "| local p50 ms | edge p50 ms | cloud p50 ms | broker CPU % | all processes CPU % (of 200) "
            "| CPU ms per device-sample | busiest nodes (CPU %) |"
        )
        log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = []
        for d in counts:
            run_d = train_scaled_model(folder, d, scale_n)
            options = {"devices_per_process": 6, "thresholds": "local=0.8,edge=0.8"}
            doc = deploy(run_d, {**options, "deadline": 1.0, "engine": "c"}, None)
            ex = doc["exit_fractions"]
            procs = d // 6 + d // 6 + 2
            log(
                f"| {d} | {d // 6} | {procs} | {doc['throughput_samples_per_s']:.0f} | "
                f"{doc['answered']}/{doc['samples']} | {doc['degraded_answers']} | {100 * ex['local']:.0f} / "
                f"{100 * ex['edge']:.0f} / {100 * ex['cloud']:.0f} | "
                f"{doc['latency_ms'].get('local', {}).get('p50', float('nan')):.0f} | "
                f"{doc['latency_ms'].get('edge', {}).get('p50', float('nan')):.0f} | "
                f"{doc['latency_ms'].get('cloud', {}).get('p50', float('nan')):.0f} | "
                f"{doc['broker_cpu_percent']:.0f} | {doc['all_cpu_percent']:.0f} | "
                f"{doc['cpu_ms_per_device_sample']:.3f} | {doc['busiest']} |"
            )
            rows.append((d, doc))
        for d, doc in rows:
            log(f"- {d} devices, CPU ms per device-sample by kind of process: {by_role(doc)}")
        plot = (
            Path(args.out).with_suffix(".png")
            if args.out
            else RESULTS.with_suffix(".png")
            if not args.quick
            else None
        )
        if plot is not None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
            ds = [d for d, _ in rows]
            ax[0].plot(ds, [doc["throughput_samples_per_s"] for _, doc in rows], "o-")
            ax[0].set(xlabel="devices", ylabel="samples/s", title="throughput")
            ax[1].plot(
                ds, [doc["broker_cpu_percent"] for _, doc in rows], "o-", label="broker CPU %"
            )
            ax[1].plot(
                ds, [doc["latency_ms_all"]["p50"] for _, doc in rows], "s-", label="p50 latency ms"
            )
            ax[1].set(xlabel="devices", title="broker CPU and latency")
            ax[1].legend()
            fig.tight_layout()
            fig.savefig(plot, dpi=100)
            log(f"\nplot: {plot.name}")
    out = Path(args.out) if args.out else (None if args.quick else RESULTS)
    if out is not None:
        out.write_text("\n".join(lines) + "\n")
        print(f"written to {out}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
