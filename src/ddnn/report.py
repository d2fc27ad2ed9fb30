"""Plain-text tables for the CLI (threshold sweeps, profiles)."""

from __future__ import annotations

from collections.abc import Sequence

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


def headline(row: ThresholdRow) -> str:
    """One line: best overall accuracy, its local-exit %, bytes vs raw, reduction."""
    return (
        f"best overall accuracy {100 * row.overall_accuracy:.1f}% at T = {row.threshold:.2f} "
        f"with {100 * row.local_exit_fraction:.1f}% local exits; "
        f"{row.bytes_per_device:.1f} B per device per sample vs {row.raw_bytes_per_device:g} B raw "
        f"({row.reduction_factor:.1f}x less)"
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
        ]
        for r in rows
    ]
    return format_table(["section", "params", "binary", "float", "memory B"], body)
