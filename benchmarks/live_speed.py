"""Live sources under a sustained rate: p99 latency and CPU with 6 devices (issue 13).

The paper's threshold model (6 devices, T = 0.8), C engine, a local deployment (mosquitto on
loopback, every node a process). Each device reads a live source fed by this script at a fixed
rate: ``pipe`` — a FIFO receiving raw rgb24 frames (the test split's images); ``folder`` — a
folder receiving PNG files (written to a temporary name, then renamed). For each rate the script
reports the answers' latency (the answering node's clock minus the time the device got the
reading) and the CPU of every node process and the broker per device-sample; the sustained
rate is the highest at which p99 stays under 50 ms with every sample answered.

Run: python benchmarks/live_speed.py [--rates 25,50,100,200] [--seconds 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from runtime_speed import train_paper_model  # noqa: E402

from ddnn.runtime.deploy import (  # noqa: E402
    finish_local,
    read_run_config,
    run_local,
    select_split,
    start_local,  # noqa: E402
)
from ddnn.runtime.samples import image_pixels  # noqa: E402

RESULTS = Path(__file__).with_name("results_live_speed.txt")
P99_GOAL_MS = 50.0


def device_frames(run: Path, n: int) -> list[list[np.ndarray]]:
    """Per device, ``n`` test images as (H, W, 3) uint8."""
    data = select_split(read_run_config(run), "test", n)
    out = []
    for k in range(data.num_devices):
        frames = [image_pixels(x) for x in data.device_input(k).numpy()]
        assert all(f is not None for f in frames)
        out.append(frames)  # type: ignore[arg-type]
    return out


def feed(kind: str, target: Path, frames: list[np.ndarray], rate: float, t0: float) -> None:
    """Writes frame i at ``t0 + i / rate`` into a FIFO (raw) or a folder (PNG, renamed)."""
    from PIL import Image

    fifo = open(target, "wb") if kind == "pipe" else None  # noqa: SIM115 - closed below
    try:
        for i, frame in enumerate(frames):
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            if fifo is not None:
                fifo.write(frame.tobytes())
                fifo.flush()
            else:
                tmp = target / f".{i}.png.tmp"
                Image.fromarray(frame).save(tmp, format="PNG")
                os.rename(tmp, target / f"{i}.png")
    finally:
        if fifo is not None:
            fifo.close()


def measure(
    run: Path, kind: str, rate: float, seconds: float, images: list[list[np.ndarray]]
) -> dict[str, Any]:
    n = int(rate * seconds)
    work = Path(tempfile.mkdtemp(prefix="ddnn-live-"))
    targets = []
    for k in range(6):
        if kind == "pipe":
            os.mkfifo(work / f"cam{k}.fifo")
            targets.append(work / f"cam{k}.fifo")
        else:
            (work / f"device_{k}").mkdir()
            targets.append(work / f"device_{k}")
    source = f"pipe:{work}/cam{{id}}.fifo" if kind == "pipe" else f"folder:{work}"
    options = {"engine": "c", "thresholds": "0.8", "deadline": 0.5, "batch": 8}
    dep = start_local(run, options, limit=n, source=source)
    t0 = time.time() + 0.5
    frames = [[imgs[i % len(imgs)] for i in range(n)] for imgs in images]
    feeders = [
        threading.Thread(target=feed, args=(kind, targets[k], frames[k], rate, t0), daemon=True)
        for k in range(6)
    ]
    wall = 0.0
    try:
        for t in feeders:
            t.start()
        wall = run_local(dep, grace=3.0, timeout=seconds + 60)
    finally:
        report = finish_local(dep, wall)
        for t in feeders:
            t.join(timeout=10)
    doc = report.as_dict()
    doc["rate"] = rate
    doc["kind"] = kind
    return doc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--rates", default="25,50,100,200", help="samples/s per device")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of input per rate")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    lines: list[str] = []

    def log(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    log(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    log(f"command: python benchmarks/live_speed.py --rates {args.rates} --seconds {args.seconds:g}")
    folder = Path(tempfile.mkdtemp(prefix="ddnn-live-bench-"))
    run = train_paper_model(folder, 200, 60)
    images = device_frames(run, 200)
    log(
        "\n| source | rate /s per device | samples | answered | failed | degraded | local exit % "
        "| p50 / p99 ms (all) | local p99 ms | cloud p99 ms | CPU ms per device-sample |"
    )
    log("|---|---|---|---|---|---|---|---|---|---|---|")
    best: dict[str, float] = {}
    for kind in ("pipe", "folder"):
        for rate in rates:
            doc = measure(run, kind, rate, args.seconds, images)
            lat = doc.get("latency_ms_all") or {}
            per = doc.get("latency_ms", {})
            ok = doc["answered"] == doc["samples"] and lat.get("p99", 1e9) < P99_GOAL_MS
            if ok:
                best[kind] = max(best.get(kind, 0.0), rate)
            log(
                f"| {kind} | {rate:g} | {doc['samples']} | {doc['answered']} | "
                f"{doc['samples'] - doc['answered']} | {doc['degraded_answers']} | "
                f"{100 * doc['local_exit_fraction']:.1f} | "
                f"{lat.get('p50', float('nan')):.1f} / {lat.get('p99', float('nan')):.1f} | "
                f"{per.get('local', {}).get('p99', float('nan')):.1f} | "
                f"{per.get('cloud', {}).get('p99', float('nan')):.1f} | "
                f"{doc['cpu_ms_per_device_sample']:.3f} |"
            )
    log("")
    for kind in ("pipe", "folder"):
        log(
            f"sustained rate with p99 < {P99_GOAL_MS:g} ms and every sample answered, {kind}: "
            f"{best.get(kind, 0):g} samples/s per device (of the rates tried)"
        )
    log(f"\ndate: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    out = Path(args.out) if args.out else RESULTS
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
