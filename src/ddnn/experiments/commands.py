"""``ddnn experiment NAME`` and ``ddnn reproduce``: the CLI side of the experiment suite."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ddnn.config import RunConfig
from ddnn.experiments.arguments import add_suite_arguments  # noqa: F401  (re-exported)
from ddnn.experiments.goals import PREAMBLE, goal_lines
from ddnn.experiments.registry import list_experiments
from ddnn.experiments.report import load_documents, markdown_table, write_report
from ddnn.experiments.suite import run_suite, suite_base


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
    from ddnn.train.trainer import validate_train_config

    validate_train_config(config.train)  # e.g. --accelerator cuda without a GPU, before any run
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
    print(f"\n## Goals\n\n{PREAMBLE}\n\n" + "\n".join(goals))
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
