"""The issue's goals, judged on the experiments' results: on the mean over seeds and on every seed.

A goal that picks something (a threshold, the best scheme) picks it on the validation split (the
rows' ``val_*`` columns) and judges what it picked on the test split (the plain columns), so a
headline figure is never chosen on the data it is reported on. Misses say by how much; a goal
that cannot be judged says why instead of disappearing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ddnn.config import DROPOUT_MODE_BEFORE_MODES
from ddnn.experiments.measure import VAL

Doc = dict[str, Any]
Rows = Sequence[Doc]

MIN_LOCAL_EXIT_PCT = 50.0
MIN_REDUCTION = 20.0
MAX_MISSING_DROP = 3.0
NEAR_TOP_POINTS = 1.0

PREAMBLE = (
    "Thresholds and best rows are chosen on the validation split (held out of the training "
    "split) and reported on the test split. Each goal is judged on the mean over seeds and on "
    "every seed."
)


@dataclass(frozen=True)
class Verdict:
    """A judged goal: met or not, by how much it missed, what was measured, what was picked."""

    ok: bool
    miss: str = ""  # by how much, when missed
    facts: str = ""  # the measurements behind the verdict (printed for the mean)
    picked: str = ""  # what the goal picked or found, in a few words (printed per seed)


@dataclass(frozen=True)
class NotJudged:
    """A goal the results cannot decide, and why."""

    reason: str


Judgement = Verdict | NotJudged
Judge = Callable[[Rows], Judgement]


def _doc(docs: Sequence[Doc], name: str) -> Doc | None:
    return next((d for d in docs if d["experiment"] == name), None)


def _has_validation(rows: Rows, column: str) -> bool:
    return bool(rows) and all(isinstance(r.get(f"{VAL}{column}"), int | float) for r in rows)


NO_VALIDATION = NotJudged(
    "its rows have no validation-split measurements (val_* columns) to choose on; "
    "rerun the experiment"
)


def _mean_verdict(v: Verdict) -> str:
    return "**met** on the mean" if v.ok else f"**missed** on the mean ({v.miss})"


def _seed_verdict(seed: Any, judgement: Judgement) -> str:
    if isinstance(judgement, NotJudged):
        return f"{seed} not judged ({judgement.reason})"
    details = [judgement.picked] if judgement.picked else []
    if not judgement.ok:
        details.append(judgement.miss)
    word = "met" if judgement.ok else "missed"
    return f"{seed} {word}" + (f" ({', '.join(details)})" if details else "")


def judged_line(statement: str, doc: Doc, judge: Judge) -> str:
    """One goal's bullet: the verdict on the mean (summary) with its facts, then every seed's."""
    mean = judge(doc["summary"])
    if isinstance(mean, NotJudged):
        return f"- {statement}: not judged because {mean.reason}."
    seeds = doc.get("seeds") or list(dict.fromkeys(r["seed"] for r in doc["rows"]))
    per_seed = [_seed_verdict(s, judge([r for r in doc["rows"] if r["seed"] == s])) for s in seeds]
    return f"- {statement}: {_mean_verdict(mean)} — {mean.facts}. Per seed: {', '.join(per_seed)}."


def judge_aggregation(rows: Rows) -> Judgement:
    """MP-CC ranked on validation; its test accuracy against the validation-best scheme's."""
    if not _has_validation(rows, "overall_acc"):
        return NO_VALIDATION
    mpcc = next((r for r in rows if r["scheme"] == "MP-CC"), None)
    if mpcc is None:
        return NotJudged("the table has no MP-CC row")
    best = max(rows, key=lambda r: r[f"{VAL}overall_acc"])  # first of ties: the registry order
    rank = 1 + sum(r[f"{VAL}overall_acc"] > mpcc[f"{VAL}overall_acc"] for r in rows)
    gap = best["overall_acc"] - mpcc["overall_acc"]
    ok = rank == 1 or gap <= NEAR_TOP_POINTS
    facts = (
        f"on validation MP-CC ranks {rank} of {len(rows)} ({mpcc[f'{VAL}overall_acc']:.1f}% "
        f"overall), best {best['scheme']} ({best[f'{VAL}overall_acc']:.1f}%); on test MP-CC "
        f"{mpcc['overall_acc']:.1f}%, {best['scheme']} {best['overall_acc']:.1f}%"
    )
    miss = f"{gap - NEAR_TOP_POINTS:.1f} points beyond the margin on test"
    return Verdict(ok, miss, facts, f"rank {rank}")


def judge_threshold(rows: Rows) -> Judgement:
    """T chosen on validation (most accuracy over cloud-only with enough local exits), then
    overall vs cloud-only, local exits and communication judged on test at that T."""
    if not _has_validation(rows, "overall_acc"):
        return NO_VALIDATION
    enough = [r for r in rows if r[f"{VAL}local_exit_pct"] >= MIN_LOCAL_EXIT_PCT]
    if not enough:
        most = max(r[f"{VAL}local_exit_pct"] for r in rows)
        miss = f"no T sends ≥ {MIN_LOCAL_EXIT_PCT:g}% of validation samples out locally"
        facts = f"at most {most:.1f}% of validation samples exit locally at any T"
        return Verdict(False, miss, facts)
    best = max(
        enough,
        key=lambda r: (r[f"{VAL}overall_acc"] - r[f"{VAL}cloud_acc"], r[f"{VAL}local_exit_pct"]),
    )
    margin = best["overall_acc"] - best["cloud_acc"]
    misses = []
    if margin < 0:
        misses.append(f"overall {-margin:.1f} points below cloud-only")
    if best["local_exit_pct"] < MIN_LOCAL_EXIT_PCT:
        misses.append(f"{best['local_exit_pct']:.1f}% local exits < {MIN_LOCAL_EXIT_PCT:g}%")
    if best["reduction"] < MIN_REDUCTION:
        misses.append(f"reduction {best['reduction']:.1f}× < {MIN_REDUCTION:g}×")
    facts = (
        f"T = {best['T']:g} chosen on validation (overall {best[f'{VAL}overall_acc']:.1f}% vs "
        f"cloud-only {best[f'{VAL}cloud_acc']:.1f}%, {best[f'{VAL}local_exit_pct']:.1f}% local "
        f"exits); on test: overall {best['overall_acc']:.1f}% vs cloud-only "
        f"{best['cloud_acc']:.1f}%, {best['local_exit_pct']:.1f}% local exits, "
        f"{best['bytes_per_device']:.1f} B per device ({best['reduction']:.1f}× less than raw)"
    )
    return Verdict(not misses, "; ".join(misses), facts, f"T = {best['T']:g}")


def _missing_facts(rows: Rows, protocol: str) -> tuple[Doc, str] | NotJudged:
    """The worst single device of ``protocol`` and a sentence on it (and the worst pair)."""
    singles = [r for r in rows if r["protocol"] == protocol and r["num_missing"] == 1]
    if not singles:
        return NotJudged(f"the missing experiment has no rows for protocol '{protocol}'")
    if len(singles) < 2:
        return NotJudged("the data has one device, so no device can be missing while others answer")
    worst = max(singles, key=lambda r: r["drop"])
    pairs = [r for r in rows if r["protocol"] == protocol and r["num_missing"] == 2]
    pair_text = ""
    if pairs:
        worst_pair = max(pairs, key=lambda r: r["drop"])
        pair_text = f"; worst pair {worst_pair['missing']} {worst_pair['drop']:.1f} points"
    return (
        worst,
        f"{protocol}: worst single device {worst['missing']} {worst['drop']:.1f} points{pair_text}",
    )


def missing_judge(protocol: str) -> Judge:
    """Any one device missing (presence mask, model of ``protocol``) costs ≤ 3 points on test."""

    def judge(rows: Rows) -> Judgement:
        found = _missing_facts(rows, protocol)
        if isinstance(found, NotJudged):
            return found
        worst, facts = found
        miss = f"by {worst['drop'] - MAX_MISSING_DROP:.1f} points"
        return Verdict(worst["drop"] <= MAX_MISSING_DROP, miss, facts, f"device {worst['missing']}")

    return judge


def mask_protocol(device_dropout: float, mode: str) -> str:
    """The missing experiment's name for the presence mask on a model trained with this dropout
    (``train.device_dropout_mode``: "single" is named, "independent" is not, as before the mode)."""
    kind = "single-device dropout" if mode == "single" and device_dropout > 0 else "dropout"
    return f"mask, {kind} {device_dropout:g}"


def goal_protocol(doc: Doc) -> tuple[str, float] | None:
    """The missing experiment's goal protocol: the mask on the model trained with the base
    config's device dropout (whatever it is, 0 included), and that dropout."""
    train = (doc.get("base_config") or {}).get("train", {})
    dropout = train.get("device_dropout")
    if dropout is None:
        return None
    mode = str(train.get("device_dropout_mode", DROPOUT_MODE_BEFORE_MODES))
    return mask_protocol(float(dropout), mode), float(dropout)


def missing_goal(doc: Doc) -> list[str]:
    """The goal line for the base config's protocol, then the other protocols for comparison."""
    statement = (
        f"Any one device missing at test time drops overall accuracy ≤ {MAX_MISSING_DROP:g} points"
    )
    goal = goal_protocol(doc)
    if goal is None:
        reason = "the document does not record the base config's train.device_dropout"
        return [f"- {statement}: not judged because {reason}."]
    protocol, dropout = goal
    statement += (
        " (device dropout in training)"
        if dropout > 0
        else " (trained without device dropout: train.device_dropout = 0)"
    )
    lines = [judged_line(statement, doc, missing_judge(protocol))]
    for other in dict.fromkeys(r["protocol"] for r in doc["summary"]):
        if other == protocol:
            continue
        found = _missing_facts(doc["summary"], other)
        if not isinstance(found, NotJudged):
            lines.append(f"- For comparison, {found[1]}.")
    return lines


def goal_lines(docs: Sequence[Doc]) -> list[str]:
    """One Markdown bullet per goal whose experiment is in ``docs`` (plus comparisons)."""
    lines = []
    if (doc := _doc(docs, "aggregation")) is not None:
        statement = (
            f"MP-CC at or near the top of the aggregation table (within {NEAR_TOP_POINTS:g} point)"
        )
        lines.append(judged_line(statement, doc, judge_aggregation))
    if (doc := _doc(docs, "threshold")) is not None:
        statement = (
            f"At the best threshold, overall ≥ cloud-only with ≥ {MIN_LOCAL_EXIT_PCT:g}% local "
            f"exits and ≥ {MIN_REDUCTION:g}× less communication than raw"
        )
        lines.append(judged_line(statement, doc, judge_threshold))
    if (doc := _doc(docs, "missing")) is not None:
        lines += missing_goal(doc)
    return lines or ["- (none of the goal experiments are in this folder)"]
