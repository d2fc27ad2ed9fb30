"""The issue's goals, checked on the experiments' summaries (mean over seeds); misses say by how much."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Doc = dict[str, Any]

MIN_LOCAL_EXIT_PCT = 50.0
MIN_REDUCTION = 20.0
MAX_MISSING_DROP = 3.0
NEAR_TOP_POINTS = 1.0


def _doc(docs: Sequence[Doc], name: str) -> Doc | None:
    return next((d for d in docs if d["experiment"] == name), None)


def _verdict(ok: bool, miss: str = "") -> str:
    return "**met**" if ok else f"**missed**{f' ({miss})' if miss else ''}"


def aggregation_goal(doc: Doc) -> str:
    rows = sorted(doc["summary"], key=lambda r: -r["overall_acc"])
    best = rows[0]
    mpcc = next(r for r in rows if r["scheme"] == "MP-CC")
    rank = rows.index(mpcc) + 1
    gap = best["overall_acc"] - mpcc["overall_acc"]
    ok = rank == 1 or gap <= NEAR_TOP_POINTS
    return (
        f"- MP-CC at or near the top of the aggregation table (within {NEAR_TOP_POINTS:g} point): "
        f"{_verdict(ok, f'{gap - NEAR_TOP_POINTS:.1f} points beyond the margin')} — MP-CC overall "
        f"{mpcc['overall_acc']:.1f}%, rank {rank} of {len(rows)}; best {best['scheme']} "
        f"{best['overall_acc']:.1f}%."
    )


def threshold_goal(doc: Doc) -> str:
    rows = doc["summary"]
    enough_local = [r for r in rows if r["local_exit_pct"] >= MIN_LOCAL_EXIT_PCT]
    if not enough_local:
        return f"- No threshold sends ≥ {MIN_LOCAL_EXIT_PCT:g}% of samples out locally: **missed**."
    best = max(enough_local, key=lambda r: (r["overall_acc"] - r["cloud_acc"], r["local_exit_pct"]))
    margin = best["overall_acc"] - best["cloud_acc"]
    ok = margin >= 0 and best["reduction"] >= MIN_REDUCTION
    misses = []
    if margin < 0:
        misses.append(f"overall {-margin:.1f} points below cloud-only")
    if best["reduction"] < MIN_REDUCTION:
        misses.append(f"reduction {best['reduction']:.1f}× < {MIN_REDUCTION:g}×")
    return (
        f"- At the best threshold, overall ≥ cloud-only with ≥ {MIN_LOCAL_EXIT_PCT:g}% local exits "
        f"and ≥ {MIN_REDUCTION:g}× less communication than raw: {_verdict(ok, '; '.join(misses))} — "
        f"T = {best['T']:g}: overall {best['overall_acc']:.1f}% vs cloud-only "
        f"{best['cloud_acc']:.1f}%, {best['local_exit_pct']:.1f}% local exits, "
        f"{best['bytes_per_device']:.1f} B per device ({best['reduction']:.1f}× less than raw)."
    )


def missing_goal(doc: Doc) -> list[str]:
    rows = doc["summary"]
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    lines = []
    for protocol in protocols:
        singles = [r for r in rows if r["protocol"] == protocol and r["num_missing"] == 1]
        worst = max(singles, key=lambda r: r["drop"])
        pairs = [r for r in rows if r["protocol"] == protocol and r["num_missing"] == 2]
        pair_text = (
            f"; worst pair {max(pairs, key=lambda r: r['drop'])['missing']} "
            f"{max(r['drop'] for r in pairs):.1f} points"
            if pairs
            else ""
        )
        is_goal = protocol.startswith("mask") and not protocol.endswith("dropout 0")
        facts = f"{protocol}: worst single device {worst['missing']} {worst['drop']:.1f} points{pair_text}."
        if is_goal:
            verdict = _verdict(
                worst["drop"] <= MAX_MISSING_DROP,
                f"by {worst['drop'] - MAX_MISSING_DROP:.1f} points",
            )
            lines.append(
                f"- Any one device missing at test time drops overall accuracy ≤ "
                f"{MAX_MISSING_DROP:g} points (device dropout in training): {verdict} — {facts}"
            )
        else:
            lines.append(f"- For comparison, {facts}")
    return lines


def goal_lines(docs: Sequence[Doc]) -> list[str]:
    """One Markdown bullet per goal whose experiment is in ``docs``."""
    lines = []
    if (doc := _doc(docs, "aggregation")) is not None:
        lines.append(aggregation_goal(doc))
    if (doc := _doc(docs, "threshold")) is not None:
        lines.append(threshold_goal(doc))
    if (doc := _doc(docs, "missing")) is not None:
        lines += missing_goal(doc)
    return lines or ["- (none of the goal experiments are in this folder)"]
