"""``ddnn experiment NAME`` and ``ddnn reproduce``: the CLI side of the experiment suite."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ddnn.config import RunConfig
from ddnn.experiments.goals import goal_lines
from ddnn.experiments.registry import list_experiments
from ddnn.experiments.report import load_documents, markdown_table, write_report
from ddnn.experiments.suite import run_suite, suite_base


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``experiment`` and ``reproduce``."""
    p.add_argument("--data", default=None, help="data set name (default synthetic-mvmc)")
    p.add_argument("--data-path", default=None, help="file or folder for data sets read from disk")
    p.add_argument("--cameras", default=None, help="keep only these devices, e.g. 0,1,2")
    p.add_argument(
        "--seeds", type=int, default=None, help="number of seeds 0..N-1 (default 5; 1 with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="1 seed and fewer epochs")
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per model (overrides the suite's)"
    )
    p.add_argument("--jobs", type=int, default=0, help="parallel trainings (default: CPU count)")
    p.add_argument("--out", default=None, help="report folder (default reports/DATA[-quick])")
    p.add_argument("--config", default=None, help="YAML base config")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the base config")


def _bar(description: str, position: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=0,
        desc=description,
        unit="run",
        position=position,
        leave=True,
        disable=None,
        file=sys.stderr,
    )


def run_from_args(names: list[str], args: argparse.Namespace, config: RunConfig) -> int:
    """Run ``names`` as the flags say, write the report, print the tables."""
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 0:
        raise ValueError(f"--jobs must be >= 0 (0 = CPU count), got {args.jobs}")
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 5)))
    base = suite_base(config, args.quick, args.epochs is not None)
    out = Path(args.out or f"reports/{base.data.name}{'-quick' if args.quick else ''}")
    start = time.perf_counter()
    results = run_suite(names, base, seeds, args.quick, out, args.jobs, _bar)
    report = write_report(out)
    for result in results:
        print(f"\n## {result.experiment.name}: {result.experiment.title}\n")
        doc = json.loads((out / f"{result.experiment.name}.json").read_text())
        print(markdown_table(doc))
    goals = goal_lines(load_documents(out))
    print("\n## Goals\n\n" + "\n".join(goals))
    print(
        f"\n{len(results)} experiment(s), {len(seeds)} seed(s) in {time.perf_counter() - start:.0f} s; "
        f"report: {report}"
    )
    return 0


def experiment_names(name: str) -> list[str]:
    """Validate one experiment name (unknown names list the valid ones)."""
    valid = list_experiments()
    if name not in valid:
        raise ValueError(f"unknown experiment {name!r}; accepted: {', '.join(valid)}")
    return [name]
