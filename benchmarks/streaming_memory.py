"""Memory held and read speed with ``data.in_memory=false`` against loading a large ``.npz``.

Writes an uncompressed npz of MVMC-shaped samples (6 devices x 3x32x32 float32, 72 KiB each),
then, each in a fresh process: load the splits, and walk the training split once in batches of
64 through ``iter_batches``. Reports the process's peak anonymous memory (what it holds itself;
pages of a memory-mapped file are page cache the kernel can drop, counted apart as file RSS),
load seconds and samples read per second. The file was just written, so reads hit the page
cache: the speeds are an upper bound for a cold disk.

Run: python benchmarks/streaming_memory.py [--mb 512]   (results_streaming_memory.txt)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

SAMPLE_BYTES = 6 * 3 * 32 * 32 * 4


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(path: str, in_memory: bool, workers: int) -> dict[str, float]:
    """One mode, in this process: peak anonymous / file RSS while loading and reading."""
    import torch

    from ddnn.config import DataConfig
    from ddnn.data.registry import load_dataset
    from ddnn.data.streaming import iter_batches

    peak = {"anon": 0, "file": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["anon"] = max(peak["anon"], _status_kib("RssAnon"))
            peak["file"] = max(peak["file"], _status_kib("RssFile"))
            time.sleep(0.01)

    base = _status_kib("RssAnon")
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    splits = load_dataset(DataConfig(name="npz", path=path, in_memory=in_memory))
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    n = 0
    for batch in iter_batches(splits.train, torch.arange(len(splits.train)), 64, workers=workers):
        n += len(batch)
    read = time.perf_counter() - start
    done.set()
    watcher.join()
    return {
        "load_s": loaded,
        "samples_per_s": n / read,
        "peak_anon_mib": (peak["anon"] - base) / 1024,
        "peak_file_mib": peak["file"] / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="size of X in MiB")
    parser.add_argument(
        "--one", nargs=3, metavar=("PATH", "IN_MEMORY", "WORKERS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        path, in_memory, workers = args.one
        print(json.dumps(measure(path, in_memory == "1", int(workers))))
        return
    n = (args.mb << 20) // SAMPLE_BYTES
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "big.npz")
        x = np.lib.format.open_memmap(Path(tmp) / "x.npy", "w+", np.float32, (n, 6, 3, 32, 32))
        for begin in range(0, n, 1024):
            x[begin : begin + 1024] = rng.random(x[begin : begin + 1024].shape, np.float32)
        np.savez(path, X=x, y=rng.integers(0, 3, n))
        del x
        print(f"machine: {machine()}")
        print(
            f"X: {n} samples x 6 x 3x32x32 float32 = {n * SAMPLE_BYTES / 2**20:.0f} MiB, uncompressed npz"
        )
        print(
            "mode | load s | samples/s (one pass, batches of 64) | peak anon MiB | peak file RSS MiB"
        )
        for in_memory, workers in ((True, 0), (False, 0), (False, 2)):
            out = subprocess.run(
                [sys.executable, __file__, "--one", path, str(int(in_memory)), str(workers)],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(out.stdout)
            mode = "in memory" if in_memory else f"streamed, {workers} workers"
            print(
                f"{mode} | {r['load_s']:.2f} | {r['samples_per_s']:.0f} | "
                f"{r['peak_anon_mib']:.0f} | {r['peak_file_mib']:.0f}"
            )


if __name__ == "__main__":
    main()
