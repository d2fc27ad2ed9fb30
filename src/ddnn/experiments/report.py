"""The report folder's human side: PNG figures (matplotlib, headless) and ``REPORT.md``.

Everything is rendered from the experiments' JSON files in the folder, so the report can be
rebuilt at any time and always shows what was measured, next to the paper's numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ddnn.experiments.goals import PREAMBLE, goal_lines
from ddnn.experiments.registry import PlotSpec, get_experiment, list_experiments

Doc = dict[str, Any]

LABELS = {
    "local_acc": "local acc %",
    "cloud_acc": "cloud acc %",
    "edge_acc": "edge acc %",
    "overall_acc": "overall acc %",
    "individual_acc": "individual acc %",
    "local_exit_pct": "local exit %",
    "edge_exit_pct": "edge exit %",
    "cloud_exit_pct": "cloud exit %",
    "bytes_per_device": "B/dev measured",
    "bytes_formula": "B/dev formula",
    "edge_to_cloud_bytes": "edge→cloud B/sample",
    "reduction": "× less than raw",
    "drop": "drop (pts)",
    "device_memory_bytes": "device memory B",
    "device_unfolded_bytes": "unfolded B",
    "device_binary_params": "binary params",
    "added_device": "added device",
    "T_local": "T local",
    "val_overall_acc": "val overall %",
    "val_cloud_acc": "val cloud-only %",
    "val_local_exit_pct": "val local exit %",
    "val_bytes_per_device": "val B/dev",
    "test_overall_acc": "test overall %",
    "test_cloud_acc": "test cloud-only %",
    "test_local_exit_pct": "test local exit %",
    "test_bytes_per_device": "test B/dev",
}


def load_documents(out: Path) -> list[Doc]:
    """The experiments' JSON documents in ``out``, in the registry's order."""
    docs = []
    for name in list_experiments():
        path = out / f"{name}.json"
        if path.is_file():
            docs.append(json.loads(path.read_text()))
    return docs


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value == 0 or abs(value) >= 1:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.005 else f"{value:.3f}"
    return str(value)


def _cell(row: Doc, col: str) -> str:
    mean = row.get(col)
    std = row.get(f"{col}_std")
    if isinstance(mean, float) and isinstance(std, float) and row.get("n", 1) > 1 and std > 1e-9:
        return f"{_fmt(mean)} ± {_fmt(std)}"
    return _fmt(mean)


def _paper_value(doc: Doc, row: Doc, col: str) -> Any:
    keys = doc["keys"]
    for paper in doc.get("paper") or []:
        if all(str(paper.get(k)) == str(row.get(k)) for k in keys) and col in paper:
            return paper[col]
    return None


def markdown_table(doc: Doc) -> str:
    """The summary as a Markdown table: keys, then mean ± std per column, paper beside it."""
    experiment = get_experiment(doc["experiment"])
    keys = doc["keys"]
    columns = list(experiment.columns)
    with_paper = {
        c for c in columns if any(_paper_value(doc, r, c) is not None for r in doc["summary"])
    }
    header = [*keys]
    for c in columns:
        header.append(LABELS.get(c, c))
        if c in with_paper:
            header.append("paper")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    shown = [r for r in doc["summary"] if all(r.get(k) == v for k, v in experiment.table_where)]
    for row in shown:
        cells = [_fmt(row.get(k)) for k in keys]
        for c in columns:
            cells.append(_cell(row, c))
            if c in with_paper:
                cells.append(_fmt(_paper_value(doc, row, c)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rows_for(spec: PlotSpec, summary: Sequence[Doc]) -> list[Doc]:
    return [r for r in summary if all(r.get(k) == v for k, v in spec.where)]


def plot_experiment(doc: Doc, out: Path) -> list[Path]:
    """Draw the experiment's figures into ``out``; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiment = get_experiment(doc["experiment"])
    paths = []
    for i, spec in enumerate(experiment.plots):
        rows = _rows_for(spec, doc["rows"] if spec.source == "rows" else doc["summary"])
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        series = (
            {
                v: [r for r in rows if r[spec.split_by] == v]
                for v in dict.fromkeys(r[spec.split_by] for r in rows)
            }
            if spec.split_by
            else {"": rows}
        )
        if spec.kind == "bar":
            labels = [str(r[spec.x]) for r in rows]
            width = 0.8 / len(spec.ys)
            for j, y in enumerate(spec.ys):
                values = [_num(r.get(y)) for r in rows]
                errors = [_num(r.get(f"{y}_std")) for r in rows]
                positions = [k + (j - (len(spec.ys) - 1) / 2) * width for k in range(len(rows))]
                ax.bar(positions, values, width, yerr=errors, label=LABELS.get(y, y), capsize=2)
            ax.set_xticks(range(len(rows)), labels, rotation=30 if len(labels) > 6 else 0)
        else:
            for name, members in series.items():
                for y in spec.ys:
                    xs = [_num(r.get(spec.x)) for r in members]
                    ys = [_num(r.get(y)) for r in members]
                    errors = [_num(r.get(f"{y}_std")) for r in members]
                    label = " ".join(p for p in (str(name), LABELS.get(y, y)) if p)
                    if spec.kind == "line" and all(
                        isinstance(r.get(spec.x), int | float) for r in members
                    ):
                        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=2, label=label)
                    else:
                        ax.errorbar(
                            xs,
                            ys,
                            yerr=errors,
                            marker="o",
                            linestyle="" if spec.kind == "scatter" else "-",
                            capsize=2,
                            label=label,
                        )
                    if spec.label:
                        for r, x_, y_ in zip(members, xs, ys, strict=True):
                            if r.get(spec.label) in (None, ""):
                                continue
                            ax.annotate(
                                f"{spec.label}={_fmt(r.get(spec.label))}",
                                (x_, y_),
                                fontsize=7,
                                xytext=(3, 3),
                                textcoords="offset points",
                            )
        paper = [p for p in doc.get("paper") or [] if all(p.get(k, v) == v for k, v in spec.where)]
        for y in spec.ys:
            pts = [
                (p.get(spec.x), p.get(y))
                for p in paper
                if p.get(y) is not None and p.get(spec.x) is not None
            ]
            if pts and spec.kind != "bar":
                ax.plot(
                    [_num(a) for a, _ in pts],
                    [_num(b) for _, b in pts],
                    "k--",
                    marker="x",
                    label=f"paper {LABELS.get(y, y)}",
                )
        ax.set_xlabel(spec.xlabel or spec.x)
        ax.set_ylabel(spec.ylabel)
        ax.set_title(experiment.title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{experiment.name}{'' if i == 0 else f'_{i + 1}'}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def provenance_lines(docs: Sequence[Doc]) -> list[str]:
    """The git revision and time of every experiment: a summary line, then a table."""
    revisions = list(dict.fromkeys(str(d.get("git_revision", "unknown")) for d in docs))
    if len(revisions) == 1:
        head = f"- git revision: `{revisions[0]}` for every experiment"
    else:
        head = (
            f"- git revision: the experiments were run at {len(revisions)} revisions "
            f"({', '.join(f'`{r}`' for r in revisions)}); see the table"
        )
    return [
        head,
        "",
        "| experiment | git revision | time |",
        "|---|---|---|",
        *(
            f"| {d['experiment']} | `{d.get('git_revision', 'unknown')}` | {d['seconds']:.0f} s |"
            for d in docs
        ),
    ]


def _splits_line(docs: Sequence[Doc], data: Doc) -> str:
    choose = docs[0].get("choose_on", "validation")
    report = docs[0].get("report_on", "test")
    return (
        f"- splits: thresholds and best rows are chosen on the {choose} split "
        f"(`data.validation_fraction` = {data.get('validation_fraction', 0):g} of the training "
        f"split, never trained on); every figure is reported on the {report} split"
    )


def write_report(out: Path) -> Path:
    """Render every experiment found in ``out`` into figures and ``REPORT.md``."""
    docs = load_documents(out)
    if not docs:
        raise ValueError(f"no experiment results in {str(out)!r}; run `ddnn experiment` first")
    manifest = json.loads((out / "manifest.json").read_text())
    base = docs[0]["base_config"]
    data = base["data"]
    lines = [
        "# DDNN reproduction report",
        "",
        f"- data: `{data['name']}`"
        + (f" (`{data['path']}`)" if data.get("path") else "")
        + f", {'quick' if manifest.get('quick') else 'full'} run, "
        f"{base['train']['epochs']} epochs per model",
        f"- seeds: {', '.join(map(str, docs[0]['seeds']))} (tables show mean ± std over seeds)",
        _splits_line(docs, data),
        *provenance_lines(docs),
        "",
        "## Goals",
        "",
        PREAMBLE,
        "",
        *goal_lines(docs),
        "",
    ]
    for doc in docs:
        experiment = get_experiment(doc["experiment"])
        lines += [f"## {doc['experiment']}: {doc['title']}", "", doc["description"], ""]
        lines += [markdown_table(doc), ""]
        for path in plot_experiment(doc, out):
            lines += [f"![{doc['experiment']}]({path.name})", ""]
        overrides = sorted({" ".join(t["overrides"]) or "(base config)" for t in doc["trials"]})
        lines += [
            f"Trials ({len({t['run'] for t in doc['trials']})} runs over "
            f"{len(doc['seeds'])} seed(s)); overrides on the base config:",
            "",
            *[f"- `{o}`" for o in overrides],
            "",
        ]
        if experiment.paper is None:
            lines += ["The paper has no such experiment.", ""]
    lines += [
        "## Base configuration",
        "",
        "Every trial is this configuration plus the overrides listed with its experiment; "
        "`data.seed` and `train.seed` are the seed. It is shown as fitted to the data: the "
        "model's devices, input shape and classes are the data set's (trials that select "
        "devices are fitted to their subset). Each run's resolved config is in "
        "`runs/<key>/config.yaml`.",
        "",
        "```yaml",
        yaml.safe_dump(base, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
