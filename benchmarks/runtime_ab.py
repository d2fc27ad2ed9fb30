"""A/B of two commits: one local deployment of a trained run, from each commit's worktree in turn.

Run it with each worktree's code, alternating (the node processes import the code on
``PYTHONPATH``; the measuring harness is this script's ``runtime_speed``, the same for both):
``PYTHONPATH=WORKTREE/src python benchmarks/runtime_ab.py RUN_DIR WORKTREE c|torch [light|full]``.

- ``light`` (default): 600 samples at 100 samples/s, batch 1; prints the local and cloud p50
  latency and the CPU per device-sample.
- ``full``: every test sample as fast as possible (runtime_speed's full-load row); prints the
  throughput, the answers, the CPU per device-sample and where it goes, by kind of process.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    run, worktree, engine = Path(argv[0]), Path(argv[1]), argv[2]
    mode = argv[3] if len(argv) > 3 else "light"
    if mode not in ("light", "full"):
        raise SystemExit(f"mode {mode!r}: light or full")
    sys.path.insert(0, str(Path(__file__).parent))
    import runtime_speed

    import ddnn

    if not Path(ddnn.__file__).resolve().is_relative_to(worktree.resolve()):
        raise SystemExit(f"ddnn is imported from {ddnn.__file__}: set PYTHONPATH={worktree}/src")

    if mode == "light":
        options = {"rate": 100.0, "batch": 1, "thresholds": "0.8", "engine": engine}
        doc = runtime_speed.deploy(run, options, 600)
        lat = doc["latency_ms"]
        print(
            f"{worktree.name} {engine} local p50 {lat['local']['p50']:.1f} "
            f"cloud p50 {lat['cloud']['p50']:.1f} cpu {doc['cpu_ms_per_device_sample']:.3f}"
        )
        return
    options = {"deadline": 1.0, "thresholds": "0.8", "engine": engine}
    doc = runtime_speed.deploy(run, options, None)
    print(
        f"{worktree.name} {engine} full {doc['throughput_samples_per_s']:.0f}/s answered "
        f"{doc['answered']}/{doc['samples']} degraded {doc['degraded_answers']} cpu "
        f"{doc['cpu_ms_per_device_sample']:.3f} ms ({runtime_speed.by_role(doc)})",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
