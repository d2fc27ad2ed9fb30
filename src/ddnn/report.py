"""Plain-text tables for the CLI (threshold sweeps, calibrations, profiles)."""

from __future__ import annotations

from collections.abc import Sequence

from ddnn.eval.calibrate import Calibration, OperatingPoint
from ddnn.eval.evaluate import ThresholdRow
from ddnn.eval.profile import SectionProfile


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def threshold_table(rows: Sequence[ThresholdRow]) -> str:
    """The threshold table of `ddnn evaluate` / `ddnn demo`."""
    has_edge = any(r.edge_exit_fraction is not None for r in rows)
    header = ["T", "local exit %"]
    header += ["edge exit %"] if has_edge else []
    header += (
        ["local acc %"] + (["edge acc %"] if has_edge else []) + ["cloud acc %", "overall acc %"]
    )
    header += ["B/dev meas.", "B/dev formula", "+hdr B", "raw B", "reduction"]
    header += ["edge→cloud B"] if has_edge else []
    body = []
    for r in rows:
        line = [f"{r.threshold:.2f}", _pct(r.local_exit_fraction)]
        line += [_pct(r.edge_exit_fraction)] if has_edge else []
        line += [_pct(r.local_accuracy)] + ([_pct(r.edge_accuracy)] if has_edge else [])
        line += [_pct(r.cloud_accuracy), _pct(r.overall_accuracy)]
        line += [
            f"{r.bytes_per_device:.2f}",
            f"{r.bytes_per_device_formula:.2f}",
            f"{r.header_bytes_per_device:.1f}",
            f"{r.raw_bytes_per_device:g}",
            f"{r.reduction_factor:.1f}x",
        ]
        line += (
            [f"{r.edge_to_cloud_bytes:.1f}" if r.edge_to_cloud_bytes is not None else "-"]
            if has_edge
            else []
        )
        body.append(line)
    return format_table(header, body)


PAPER_T = 0.8  # the paper's operating point: fixed in advance, so reporting it picks nothing


def headline(rows: list[ThresholdRow]) -> str:
    """One line on a test-split sweep that picks nothing on it: the paper's T = 0.8 when swept
    (else the cloud-only accuracy), and where thresholds are chosen instead (validation)."""
    paper = next((r for r in rows if abs(r.threshold - PAPER_T) < 1e-9), None)
    advice = "to choose T, calibrate on a validation split: ddnn calibrate RUN_DIR"
    cloud = "" if rows[0].cloud_accuracy is None else f"{100 * rows[0].cloud_accuracy:.1f}%"
    if paper is None:
        return f"cloud-only accuracy {cloud or 'n/a (no cloud)'}; {advice}"
    return (
        f"at the paper's T = {PAPER_T:.2f}: overall accuracy {100 * paper.overall_accuracy:.1f}% "
        f"{f'(cloud-only {cloud}) ' if cloud else ''}with "
        f"{100 * paper.local_exit_fraction:.1f}% local exits; {paper.bytes_per_device:.1f} B per "
        f"device per sample vs {paper.raw_bytes_per_device:g} B raw "
        f"({paper.reduction_factor:.1f}x less); {advice}"
    )


def _thresholds_text(thresholds: dict[str, float]) -> str:
    return ", ".join(f"{name} T = {t:.2f}" for name, t in thresholds.items())


def _point_text(p: OperatingPoint) -> str:
    exits = [f"local exits {_pct(p.local_exit_fraction)}%"]
    exits += (
        [f"edge exits {_pct(p.edge_exit_fraction)}%"] if p.edge_exit_fraction is not None else []
    )
    exits += (
        [f"cloud exits {_pct(p.cloud_exit_fraction)}%"] if p.cloud_exit_fraction is not None else []
    )
    text = f"{', '.join(exits)}; {p.bytes_per_device:.2f} B per device per sample"
    if p.edge_to_cloud_bytes is not None:
        text += f", {p.edge_to_cloud_bytes:.1f} B edge→cloud per sample"
    return text


def calibration_summary(cal: Calibration) -> str:
    """What `ddnn calibrate` chose and what it gives on the calibration split."""
    m = cal.measured
    lines = [
        f"target: {cal.target.describe()}",
        f"thresholds: {_thresholds_text(cal.thresholds)}",
        f"on the {cal.split} split ({cal.num_samples} samples): overall accuracy "
        f"{_pct(m.overall_accuracy)}% (cloud-only {_pct(cal.cloud_only_accuracy)}%), {_point_text(m)}",
    ]
    if cal.split == "train":
        lines.append("note: calibrated on training data; expect lower accuracy on new data")
    return "\n".join(lines)


def frontier_table(
    points: Sequence[OperatingPoint], chosen: OperatingPoint | None = None, max_rows: int = 10
) -> str:
    """The accuracy-vs-bytes frontier, thinned to ``max_rows`` evenly spaced points; * = chosen."""
    is_chosen = [
        chosen is not None
        and (p.bytes_per_device, p.overall_accuracy)
        == (chosen.bytes_per_device, chosen.overall_accuracy)
        for p in points
    ]
    keep = sorted(
        {round(k * (len(points) - 1) / max(max_rows - 2, 1)) for k in range(max_rows - 1)}
        | {i for i, c in enumerate(is_chosen) if c}
    )
    has_edge = any(p.edge_threshold is not None for p in points)
    header = ["", "local T"] + (["edge T"] if has_edge else []) + ["local exit %"]
    header += (["edge exit %"] if has_edge else []) + ["overall acc %", "B/dev"]
    body = []
    for i in (k for k in keep if k < len(points)):
        p = points[i]
        line = ["*" if is_chosen[i] else "", f"{p.local_threshold:.2f}"]
        line += [f"{p.edge_threshold:.2f}"] if has_edge else []
        line += [_pct(p.local_exit_fraction)] + ([_pct(p.edge_exit_fraction)] if has_edge else [])
        line += [_pct(p.overall_accuracy), f"{p.bytes_per_device:.2f}"]
        body.append(line)
    return format_table(header, body)


def calibrated_headline(row: ThresholdRow, cal: Calibration) -> str:
    """One line: test accuracy at the calibrated thresholds next to the calibration split's."""
    return (
        f"calibrated thresholds ({_thresholds_text(cal.thresholds)}, from the {cal.split} split): "
        f"test overall accuracy {_pct(row.overall_accuracy)}% ({cal.split} "
        f"{_pct(cal.measured.overall_accuracy)}%) with {_pct(row.local_exit_fraction)}% local "
        f"exits; {row.bytes_per_device:.1f} B per device per sample"
    )


def profile_table(rows: Sequence[SectionProfile]) -> str:
    """The `ddnn profile` table."""
    body = [
        [
            r.name,
            str(r.parameters),
            str(r.binary_parameters),
            str(r.float_parameters),
            str(r.memory_bytes),
            str(r.score_bytes) if r.score_bytes else "",
            str(r.feature_bytes) if r.feature_bytes else "",
            str(r.binary_macs) if r.binary_macs else "",
            str(r.float_macs) if r.float_macs else "",
        ]
        for r in rows
    ]
    header = [
        "section",
        "params",
        "binary",
        "float",
        "memory B",
        "scores B",
        "features B",
        "±1 MACs",
        "float MACs",
    ]
    return format_table(header, body)
