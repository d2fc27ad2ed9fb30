"""Run experiments over seeds into a report folder: per-seed rows, mean ± std, CSV and JSON.

The folder remembers the base configuration it was made for (``manifest.json``); asking it to
hold results for another data set or config is an error rather than a silent mix. Every run holds
out a validation split: experiments choose thresholds and best rows there and report the test split.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ddnn.config import RunConfig, to_dict
from ddnn.experiments.measure import CHOOSE_ON, REPORT_ON
from ddnn.experiments.registry import Experiment, Row, get_experiment
from ddnn.experiments.runner import ExperimentContext, RunCache, config_key, fit_trial

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
QUICK_EPOCHS = 15
FULL_EPOCHS = 30
VALIDATION_FRACTION = 0.2  # of the training split, unless data.validation_fraction is given

BarFactory = Callable[[str, int], Any]  # (description, position) -> a tqdm-like bar


@dataclass
class ExperimentResult:
    """Rows of every seed and their summary (mean ± std per key)."""

    experiment: Experiment
    seeds: list[int]
    rows: list[Row]
    summary: list[Row]
    trials: list[dict[str, Any]]
    seconds: float


def suite_base(config: RunConfig, quick: bool, epochs_given: bool) -> RunConfig:
    """The base config of a suite: the user's config, with the suite's epochs unless given and
    a validation split (``VALIDATION_FRACTION`` of the training split) unless one was given."""
    if not epochs_given:
        epochs = QUICK_EPOCHS if quick else FULL_EPOCHS
        config = replace(config, train=replace(config.train, epochs=epochs))
    if config.data.validation_fraction == 0 and "data.validation_fraction" not in config.given:
        config = replace(config, data=replace(config.data, validation_fraction=VALIDATION_FRACTION))
    return config


def check_validation(base: RunConfig) -> None:
    """Experiments choose on a validation split; a base config without one is refused."""
    if base.data.validation_fraction <= 0:
        raise ValueError(
            "experiments choose thresholds on a validation split and report the test split, so "
            "data.validation_fraction must be > 0 (the suite's default is "
            f"{VALIDATION_FRACTION:g}), got {base.data.validation_fraction:g}"
        )


def git_revision() -> str:
    """The source tree's git revision (with ``+dirty`` for uncommitted changes), or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def _comparable(config: RunConfig) -> dict[str, Any]:
    """The parts of a base config that must match for two suites to share a folder."""
    values = to_dict(config)
    values["data"].pop("seed")
    values["train"].pop("seed")
    return values


def check_manifest(out: Path, base: RunConfig, quick: bool) -> None:
    """Create the folder's manifest, or fail if the folder belongs to another data set/config."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    mine = {"quick": quick, "base": _comparable(base)}
    if path.is_file():
        theirs = json.loads(path.read_text())
        if theirs != mine:
            diffs = _differences(theirs, mine)
            raise ValueError(
                f"report folder {str(out)!r} holds results for another setup ({'; '.join(diffs[:4])}); "
                "use another --out, or delete the folder to start over"
            )
        return
    path.write_text(json.dumps(mine, indent=2))


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return out
    return [] if old == new else [f"{where}: {old!r} there, {new!r} now"]


def summarize(rows: Sequence[Row], keys: Sequence[str]) -> list[Row]:
    """Group rows by ``keys`` (first-seen order); numeric columns -> ``col`` (mean), ``col_std``."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        summary: Row = dict(zip(keys, key, strict=True))
        summary["n"] = len(members)
        for col in members[0]:
            if col in keys or col == "seed":
                continue
            values = [m[col] for m in members]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                finite = [float(v) for v in values if math.isfinite(float(v))]
                mean = sum(finite) / len(finite) if finite else math.nan
                var = (
                    sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
                    if len(finite) > 1
                    else 0.0
                )
                summary[col] = mean
                summary[f"{col}_std"] = math.sqrt(var)
            else:
                summary[col] = values[0] if len(set(map(str, values))) == 1 else "varies"
        out.append(summary)
    return out


def run_experiment(
    experiment: Experiment,
    base: RunConfig,
    seeds: Sequence[int],
    quick: bool,
    cache: RunCache,
    bar: BarFactory | None = None,
) -> ExperimentResult:
    """Run ``experiment`` for every seed (concurrently; training is shared through ``cache``)."""
    import time

    start = time.perf_counter()
    trials: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one_seed(position: int, seed: int) -> list[Row]:
        progress = bar(f"{experiment.name} seed {seed}", position) if bar else None
        ctx = ExperimentContext(
            base=base,
            seed=seed,
            quick=quick,
            cache=cache,
            on_trial_done=(lambda: progress.update(1)) if progress else (lambda: None),
            on_trials_planned=((lambda n: _grow(progress, n)) if progress else (lambda n: None)),
        )
        try:
            rows = experiment.run(ctx)
        finally:
            if progress:
                progress.close()
        with lock:
            trials.extend(
                {"seed": seed, "overrides": list(t.overrides), "run": t.key} for t in ctx.history
            )
        return [{"seed": seed, **r} for r in rows]

    with ThreadPoolExecutor(max_workers=max(1, len(seeds))) as pool:
        per_seed = list(pool.map(one_seed, range(len(seeds)), seeds))
    rows = [r for seed_rows in per_seed for r in seed_rows]
    return ExperimentResult(
        experiment=experiment,
        seeds=list(seeds),
        rows=rows,
        summary=summarize(rows, experiment.keys),
        trials=trials,
        seconds=time.perf_counter() - start,
    )


def _grow(progress: Any, n: int) -> None:
    progress.total = (progress.total or 0) + n
    progress.refresh()


def write_result(out: Path, result: ExperimentResult, base: RunConfig) -> None:
    """``NAME.csv`` (one line per seed and row), ``NAME.json`` (everything, with configs)."""
    name = result.experiment.name
    fitted = fit_trial(base)
    columns: list[str] = []
    for row in result.rows:
        columns += [c for c in row if c not in columns]
    with (out / f"{name}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.rows)
    document = {
        "experiment": name,
        "title": result.experiment.title,
        "description": result.experiment.description,
        "keys": list(result.experiment.keys),
        "seeds": result.seeds,
        "seconds": result.seconds,
        "git_revision": git_revision(),
        "command": " ".join(["ddnn", *sys.argv[1:]]) if sys.argv else "",
        # The model's devices, input shape and classes as fitted to the data, as trained.
        "base_config": to_dict(fitted),
        "base_config_key": config_key(fitted),  # hashed as the trials' run directories are
        "choose_on": CHOOSE_ON,
        "report_on": REPORT_ON,
        "trials": result.trials,
        "rows": result.rows,
        "summary": result.summary,
        "paper": result.experiment.paper,
    }
    (out / f"{name}.json").write_text(json.dumps(document, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")


def run_suite(
    names: Sequence[str],
    base: RunConfig,
    seeds: Sequence[int],
    quick: bool,
    out: Path,
    jobs: int = 0,
    bar: BarFactory | None = None,
) -> list[ExperimentResult]:
    """Run the named experiments in order into ``out`` and write each one's CSV and JSON."""
    experiments = [get_experiment(n) for n in names]  # unknown names fail before any work
    if not seeds:
        raise ValueError("need at least one seed (--seeds N with N >= 1)")
    check_validation(base)
    fit_trial(base)  # a config the data contradicts is refused before the folder is claimed
    check_manifest(out, base, quick)
    cache = RunCache(out / "runs", jobs)
    results = []
    try:
        for experiment in experiments:
            result = run_experiment(experiment, base, seeds, quick, cache, bar)
            write_result(out, result, base)
            log.info("%s: %d rows in %.1f s", experiment.name, len(result.rows), result.seconds)
            results.append(result)
    finally:
        cache.close()
    return results
