"""A/B of two commits at a light load: one local deployment at 100 samples/s, batch 1.

Run it from each commit's worktree in turn, alternating (its node processes import that
worktree's code): ``PYTHONPATH=WORKTREE/src python benchmarks/runtime_ab.py RUN_DIR WORKTREE
c|torch``; prints the local and cloud p50 latency and the CPU per device-sample.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    run, worktree, engine = Path(argv[0]), Path(argv[1]), argv[2]
    sys.path.insert(0, str(worktree / "benchmarks"))
    import runtime_speed

    options = {"rate": 100.0, "batch": 1, "thresholds": "0.8", "engine": engine}
    doc = runtime_speed.deploy(run, options, 600)
    lat = doc["latency_ms"]
    print(
        f"{worktree.name} {engine} local p50 {lat['local']['p50']:.1f} "
        f"cloud p50 {lat['cloud']['p50']:.1f} cpu {doc['cpu_ms_per_device_sample']:.3f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
