"""The Pareto frontier of a `ddnn search` study and its outputs: pareto.json, pareto.csv, pareto.png.

The frontier is chosen on validation objectives only (accuracy ↑, bytes per device ↓, device
memory ↓, among feasible trials); each frontier run is then evaluated once on the test split at
its calibrated thresholds, and both are reported, side by side and apart.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ddnn.data.dataset import DataSplits
from ddnn.workflow import evaluate_calibrated_run

log = logging.getLogger(__name__)

TEST_SPLIT = "test"
COLUMNS = (
    "trial",
    "accuracy",
    "bytes_per_device",
    "device_memory_bytes",
    "local_exit_fraction",
    "validation_accuracy",
    "validation_bytes_per_device",
    "validation_local_exit_fraction",
    "thresholds",
    "threshold_split",
    "accuracy_split",
    "overrides",
    "run_dir",
    "host",
)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` on every objective (accuracy ↑, bytes ↓, memory ↓) and better on one."""
    no_worse = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
    return no_worse and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that keep every limit."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in trials if t.values is not None and t.user_attrs.get("feasible") is True]


def pareto_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The non-dominated trials, fewest bytes first (then higher accuracy, less memory)."""
    front = [
        t
        for t in trials
        if not any(_dominates(o.values, t.values) for o in trials if o is not t)  # type: ignore[arg-type]
    ]
    return sorted(front, key=lambda t: (t.values[1], -t.values[0], t.values[2], t.number))


def pareto_row(trial: FrozenTrial, splits: DataSplits | None) -> dict[str, Any]:
    """One frontier trial: test-split figures at its calibrated thresholds, validation beside them.

    ``accuracy`` (and the test bytes and exit fraction) are None when the trial's run directory is
    not on this machine (a worker elsewhere ran it).
    """
    attrs = trial.user_attrs
    run_dir = str(attrs["run_dir"])
    row: dict[str, Any] = {
        "trial": trial.number,
        "accuracy": None,
        "bytes_per_device": None,
        "device_memory_bytes": int(attrs["device_memory_bytes"]),
        "local_exit_fraction": None,
        "validation_accuracy": attrs["validation_accuracy"],
        "validation_bytes_per_device": attrs["bytes_per_device"],
        "validation_local_exit_fraction": attrs["local_exit_fraction"],
        "thresholds": attrs["thresholds"],
        "threshold_split": attrs["threshold_split"],
        "accuracy_split": TEST_SPLIT,
        "overrides": list(attrs["overrides"]),
        "run_dir": run_dir,
        "host": attrs.get("host"),
    }
    if not Path(run_dir).is_dir():
        log.warning("trial %d: run directory %s is not on this machine", trial.number, run_dir)
        return row
    rows, _, _ = evaluate_calibrated_run(run_dir, splits=splits)
    test = rows[0]
    row["accuracy"] = test.overall_accuracy
    row["bytes_per_device"] = test.bytes_per_device
    row["local_exit_fraction"] = test.local_exit_fraction
    return row


def _write_atomic(path: Path, text: str) -> None:
    """Write whole or not at all: several workers may finish into one folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV with ``COLUMNS``; lists and mappings as JSON, None as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: json.dumps(v) if isinstance(v, list | dict) else ("" if v is None else v)
                for k, v in row.items()
            }
        )
    return buffer.getvalue()


def plot_frontier(
    rows: Sequence[dict[str, Any]], feasible: Sequence[FrozenTrial], path: Path
) -> None:
    """Accuracy vs bytes per device: every feasible trial (validation) in grey, the frontier
    coloured and sized by device memory, and the frontier's test accuracy as crosses.

    No line joins the frontier: with three objectives a frontier point may have more bytes and
    less accuracy than another (it needs less device memory).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if feasible:
        ax.scatter(
            [t.values[1] for t in feasible],
            [100 * t.values[0] for t in feasible],
            s=12,
            c="0.75",
            label="feasible trials (validation)",
        )
    if rows:
        x = [r["validation_bytes_per_device"] for r in rows]
        y = [100 * r["validation_accuracy"] for r in rows]
        memory = [r["device_memory_bytes"] for r in rows]
        top = max(memory) or 1
        points = ax.scatter(
            x,
            y,
            s=[40 + 200 * m / top for m in memory],
            c=memory,
            cmap="viridis",
            edgecolors="black",
            linewidths=0.5,
            label="Pareto frontier (validation)",
            zorder=3,
        )
        fig.colorbar(points, ax=ax, label="device memory (bytes)")
        tested = [r for r in rows if r["accuracy"] is not None]
        for r in tested:  # each frontier run from validation to test
            ax.plot(
                [r["validation_bytes_per_device"], r["bytes_per_device"]],
                [100 * r["validation_accuracy"], 100 * r["accuracy"]],
                color="crimson",
                linestyle=":",
                linewidth=0.8,
                alpha=0.6,
            )
        ax.scatter(
            [r["bytes_per_device"] for r in tested],
            [100 * r["accuracy"] for r in tested],
            marker="x",
            c="crimson",
            label="frontier on the test split",
            zorder=4,
        )
    xs = [t.values[1] for t in feasible if t.values[1] > 0]
    if xs and max(xs) > 20 * min(xs):  # bytes span orders of magnitude (scores only vs features)
        ax.set_xscale("log")
    ax.set_xlabel("bytes per device per sample")
    ax.set_ylabel("overall accuracy (%)")
    ax.set_title("ddnn search: accuracy vs communication")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_pareto(
    study: optuna.Study, out_dir: str | Path, splits: DataSplits | None
) -> list[dict[str, Any]]:
    """Compute the frontier, evaluate it on test, write pareto.json/.csv/.png; returns the rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feasible = feasible_trials(study)
    rows = [pareto_row(t, splits) for t in pareto_trials(feasible)]
    if not rows:
        log.warning("the study has no completed feasible trial yet: the frontier is empty")
    _write_atomic(out / "pareto.json", json.dumps(rows, indent=2) + "\n")
    _write_atomic(out / "pareto.csv", to_csv(rows))
    plot_frontier(rows, feasible, out / "pareto.png")
    return rows
