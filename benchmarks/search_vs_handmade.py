"""What `ddnn search` finds against the hand-made configurations, in one table.

1. Runs ``ddnn search`` on a data set (NSGA-II; every trial trained for the same epochs, its
   thresholds calibrated on the validation split to the most local exits within ``--max-drop``
   points of cloud-only).
2. Trains each hand-made configuration through the search's own trial function with the same
   base overrides (data, epochs, validation split, training seed), so hand-made and searched
   configurations are trained, calibrated and measured in exactly the same way.
3. For each hand-made configuration, picks two frontier trials **on validation figures only**:
   the most accurate one that sends at most the hand-made's bytes, and the one with the fewest
   bytes that is at least as accurate. Then every chosen run is evaluated once on the test split
   at its validation thresholds.

Run: python benchmarks/search_vs_handmade.py --data synthetic-mvmc --trials 40 --epochs 100
     --jobs 2 --out reports/search-synthetic-mvmc [--keep-runs DIR] [key=value ...]
     python benchmarks/search_vs_handmade.py --out DIR --render-only  (the table again, from DIR)
(key=value pairs are fixed for every trial and every hand-made configuration.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from fashion_benchmark import DDNN_OVERRIDES  # noqa: E402

from ddnn.cli import build_parser  # noqa: E402
from ddnn.cli import main as ddnn  # noqa: E402
from ddnn.config import resolve_config  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.search.command import base_overrides  # noqa: E402
from ddnn.search.objective import Limits, run_trial  # noqa: E402
from ddnn.workflow import evaluate_calibrated_run  # noqa: E402

# The hand-made configurations: the paper's configuration c (the defaults), the same with int8
# scores, and, for fashion-mnist-6, the configuration benchmarks/fashion_benchmark.py chose.
HANDMADE: dict[str, dict[str, list[str]]] = {
    "*": {
        "paper (config c, defaults)": [],
        "paper + int8 scores": ["model.wire.scores=int8"],
    },
    "fashion-mnist-6": {"fashion benchmark DDNN": list(DDNN_OVERRIDES)},
}


def handmade_for(data: str) -> dict[str, list[str]]:
    return {**HANDMADE["*"], **HANDMADE.get(data, {})}


def test_figures(run_dir: Path, splits: Any) -> dict[str, float]:
    rows, _, _ = evaluate_calibrated_run(str(run_dir), splits=splits)
    test = rows[0]
    return {
        "accuracy": test.overall_accuracy,
        "bytes_per_device": test.bytes_per_device,
        "local_exit_fraction": test.local_exit_fraction,
    }


def pick(frontier: list[dict[str, Any]], hand: dict[str, Any]) -> dict[str, Any | None]:
    """Frontier trials chosen against one hand-made configuration, on validation figures."""
    cheaper = [r for r in frontier if r["validation_bytes_per_device"] <= hand["val_bytes"]]
    smaller = [r for r in cheaper if r["device_memory_bytes"] <= hand["device_memory"]]
    better = [r for r in frontier if r["validation_accuracy"] >= hand["val_accuracy"]]

    def accuracy_first(r: dict[str, Any]) -> tuple[float, float]:
        return r["validation_accuracy"], -r["validation_bytes_per_device"]

    def bytes_first(r: dict[str, Any]) -> tuple[float, float]:
        return r["validation_bytes_per_device"], -r["validation_accuracy"]

    return {
        "most accurate at <= its bytes": max(cheaper, key=accuracy_first, default=None),
        "most accurate at <= its bytes and device memory": max(
            smaller, key=accuracy_first, default=None
        ),
        "fewest bytes at >= its accuracy": min(better, key=bytes_first, default=None),
    }


def searched_keys(row: dict[str, Any], base: list[str]) -> str:
    return " ".join(o for o in row["overrides"] if o not in base)


def render(doc: dict[str, Any], log: Any) -> None:
    """The table: each hand-made configuration, then the frontier trials chosen against it."""
    base, frontier = doc["base_overrides"], doc["frontier"]
    log(
        "\n| configuration | chosen how (validation only) | val acc % | val B/dev | "
        "test acc % | test B/dev | test local exit % | device memory B | keys |"
    )
    log("|---|---|---|---|---|---|---|---|---|")
    for name, h in doc["handmade"].items():
        t = h["test"]
        log(
            f"| {name} | hand-made | {100 * h['val_accuracy']:.1f} | {h['val_bytes']:.2f} | "
            f"{100 * t['accuracy']:.1f} | {t['bytes_per_device']:.2f} | "
            f"{100 * t['local_exit_fraction']:.1f} | {h['device_memory']} | {h['keys']} |"
        )
        for how, row in pick(frontier, h).items():
            if row is None:
                log(f"| search | {how} | — | — | — | — | — | — | no frontier trial |")
                continue
            log(
                f"| search trial {row['trial']} | {how} | "
                f"{100 * row['validation_accuracy']:.1f} | "
                f"{row['validation_bytes_per_device']:.2f} | {100 * row['accuracy']:.1f} | "
                f"{row['bytes_per_device']:.2f} | {100 * row['local_exit_fraction']:.1f} | "
                f"{row['device_memory_bytes']} | {searched_keys(row, base)} |"
            )
    log(
        "\nval = the validation split the thresholds were calibrated on; test = evaluated "
        "once, afterwards, at those thresholds. B/dev = payload bytes per device per sample."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--data", default="synthetic-mvmc")
    p.add_argument("--data-path", default=None)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1, help="the search sampler's seed")
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--out", required=True, help="where the table and the frontier files go")
    p.add_argument("--keep-runs", default=None, help="keep every run directory here")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite OUT/results.md's table from OUT/search_vs_handmade.json (no training)",
    )
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    out = Path(args.out)
    if args.render_only and not (out / "search_vs_handmade.json").is_file():
        p.error(f"--render-only needs {out / 'search_vs_handmade.json'} from an earlier run")
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    if args.render_only:  # keep the header lines of the run, redo the table
        old = (out / "results.md").read_text().splitlines()
        lines.extend(old[: next(i for i, x in enumerate(old) if x.startswith("search: ")) + 1])
        render(json.loads((out / "search_vs_handmade.json").read_text()), log)
        (out / "results.md").write_text("\n".join(lines) + "\n")
        return

    search_args = ["search", "--data", args.data, "--trials", str(args.trials)]
    search_args += ["--epochs", str(args.epochs), "--jobs", str(args.jobs)]
    search_args += ["--seed", str(args.seed), "--max-drop", str(args.max_drop)]
    if args.data_path:
        search_args += ["--data-path", args.data_path]
    tmp = tempfile.mkdtemp(prefix="ddnn-search-vs-handmade-")
    work = Path(args.keep_runs) if args.keep_runs else Path(tmp)
    search_args += ["--out", str(work / "search"), *args.overrides]
    base = base_overrides(build_parser().parse_args(search_args))
    log(f"machine: {machine()}")
    log(f"command: python benchmarks/search_vs_handmade.py {' '.join(sys.argv[1:])}")
    log(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    log(f"base overrides of every trial and hand-made run: {' '.join(base)}")
    try:
        t0 = time.perf_counter()
        assert ddnn([*search_args, "--json"]) == 0
        search_s = time.perf_counter() - t0
        frontier = json.loads((work / "search" / "pareto.json").read_text())
        for name in ("pareto.json", "pareto.csv", "pareto.png"):
            shutil.copy(work / "search" / name, out / name)
        log(f"search: {args.trials} trials in {search_s:.0f} s, {len(frontier)} on the frontier")

        splits = load_dataset(resolve_config(overrides=base).data)
        limits = Limits(max_drop=args.max_drop)
        hands: dict[str, dict[str, Any]] = {}
        for i, (name, keys) in enumerate(handmade_for(args.data).items()):
            run_dir = work / "handmade" / f"hand-{i}"
            t0 = time.perf_counter()
            m = run_trial([*base, *keys], run_dir, splits, limits)
            hands[name] = {
                "keys": " ".join(keys) or "(defaults)",
                "val_accuracy": m.validation_accuracy,
                "val_bytes": m.bytes_per_device,
                "device_memory": m.device_memory_bytes,
                "thresholds": m.thresholds,
                "test": test_figures(run_dir, splits),
                "seconds": time.perf_counter() - t0,
            }

        doc = {"base_overrides": base, "handmade": hands, "frontier": frontier}
        (out / "search_vs_handmade.json").write_text(json.dumps(doc, indent=2) + "\n")
        render(doc, log)
    finally:
        if not args.keep_runs:
            shutil.rmtree(tmp, ignore_errors=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
