"""Accuracy and bytes per score encoding (float32 / float16 / int8), in-process.

For every seed one model is trained (``ddnn train``'s recipe); the encoding changes nothing in
training, so the three encodings are then applied to the same weights at inference only
(``model.wire.scores``: ``DDNN.infer`` fuses the scores as the wire delivers them and counts
really encoded v2 frames). Per encoding, the local-exit threshold is the one with the best overall
accuracy on the VALIDATION split (ties: more local exits, then the lower T) over T = 0, 0.05, ...,
1, read off the calibration grid (``ddnn.eval.calibrate.evaluate_grid`` on ``DDNN.wire_forward``:
the exit rule of ``infer``, one forward pass); every reported figure is ``threshold_sweep`` (i.e.
``model.infer``) on the test split, at that T and, to separate the encoding from the choice of T,
at the fixed T = 0.8.

Data sets:

* ``synthetic-mvmc``: ``ddnn train`` defaults (the paper's threshold model, 100 epochs, batch 64)
  with ``data.validation_fraction=0.2`` so that T can be chosen on held-out data: 544 train /
  136 validation / 171 test. The data (``data.seed`` 0) is the same for every seed; the seed is
  ``train.seed`` (weights and minibatch order).
* ``fashion-mnist-6``: the configuration of ``fashion_benchmark.py`` (``DDNN_OVERRIDES``) on a
  budget for 2 cores: 6000 training images of which 20% validation (4800 / 1200), 2000 test
  images, 5 epochs, batch 128.

A diagnostic (not an encoding) follows each table: the local exit fusing float32
log-probabilities (``log_softmax`` of the device scores, what int8 carries, without its 8-bit
rounding), read off the calibration grid like the choice of T; it tells whether a gap between
int8 and float32 comes from sending log-probabilities or from rounding them.

Goal: int8 within 0.5 points of float32 (overall test accuracy, int8 >= float32 - 0.5) at a
quarter of float32's score bytes; judged on the mean over seeds and per seed.

Run: python benchmarks/score_encodings.py [--data NAME ...] [--seeds 0 1 2 3 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from fashion_benchmark import DDNN_OVERRIDES  # noqa: E402

from ddnn.config import RunConfig, WireConfig, resolve_config  # noqa: E402
from ddnn.data.dataset import DataSplits, MultiDeviceDataset  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.eval.calibrate import ByteCosts, OperatingPoint, evaluate_grid  # noqa: E402
from ddnn.eval.evaluate import ThresholdRow, threshold_sweep  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402
from ddnn.wire import score_payload_bytes  # noqa: E402
from ddnn.workflow import fit_model_to_data  # noqa: E402

RESULTS = Path(__file__).parent / "results_score_encodings.txt"
THREADS = 1  # the default: on a shared 2-core machine two threads per process oversubscribe
ENCODINGS = ("float32", "float16", "int8")
GRID = tuple(round(0.05 * i, 2) for i in range(21))
FIXED_T = 0.8
GOAL_POINTS = 0.5
PRESETS: dict[str, tuple[str, ...]] = {
    "synthetic-mvmc": ("data.validation_fraction=0.2",),
    "fashion-mnist-6": (
        *DDNN_OVERRIDES,
        "data.num_train=6000",
        "data.num_test=2000",
        "data.validation_fraction=0.2",
        "train.epochs=5",
        "train.batch_size=128",
    ),
}


@dataclass
class Outcome:
    """One (seed, encoding): the validation choice and the test figures."""

    seed: int
    encoding: str
    score_bytes: int
    val: OperatingPoint  # at the chosen T, on the validation split
    test: ThresholdRow  # at the chosen T, on the test split
    fixed: ThresholdRow  # at T = FIXED_T, on the test split


@dataclass
class Diagnostic:
    """One seed's local exit on float32 log-probabilities (grid points: exact as ``infer``)."""

    seed: int
    val: OperatingPoint  # at the T chosen on validation
    test: OperatingPoint  # test split, at that T
    fixed: OperatingPoint  # test split, at T = FIXED_T
    local_only: float  # test split, every sample at the local exit


def with_encoding(model: DDNN, encoding: str) -> DDNN:
    """The same weights, sending scores in ``encoding``."""
    config = replace(model.config, wire=WireConfig(scores=encoding))
    twin = DDNN(config)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def choose_on_validation(model: DDNN, val: MultiDeviceDataset) -> OperatingPoint:
    """Best overall accuracy on ``val`` over GRID; ties: more local exits, then the lower T."""
    logits = model.wire_forward(val.x).exit_logits()
    grid = evaluate_grid(logits, val.labels, ByteCosts.of_model(model), GRID)
    return max(grid.rows(), key=lambda p: (p.overall_accuracy, p.local_exit_fraction))


def logprob_exits(model: DDNN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every exit's logits with the local exit fusing float32 log-probabilities."""
    with torch.no_grad():
        out = model(x)
        assert model.local is not None and out.device_logits is not None
        named = out.exit_logits()
        named["local"] = model.local(out.device_logits.log_softmax(-1), None)
    return named


def logprob_diagnostic(model: DDNN, splits: DataSplits, seed: int) -> Diagnostic:
    assert splits.validation is not None
    model.eval()
    costs = ByteCosts.of_model(model)
    val = evaluate_grid(
        logprob_exits(model, splits.validation.x), splits.validation.labels, costs, GRID
    )
    test = evaluate_grid(logprob_exits(model, splits.test.x), splits.test.labels, costs, GRID)
    assert val.edge_thresholds is None, "the diagnostic handles local -> cloud hierarchies"
    pick = max(val.rows(), key=lambda p: (p.overall_accuracy, p.local_exit_fraction))
    at = {t: i for i, t in enumerate(GRID)}
    return Diagnostic(
        seed,
        pick,
        test.point(at[pick.local_threshold], 0),
        test.point(at[FIXED_T], 0),
        test.point(at[1.0], 0).overall_accuracy,
    )


def run_seed(
    config: RunConfig, splits: DataSplits, seed: int
) -> tuple[list[Outcome], Diagnostic, float]:
    config = replace(config, train=replace(config.train, seed=seed))
    torch.manual_seed(seed)
    model = DDNN(config.model)
    seconds = train(model, splits.train, config.train).seconds
    assert splits.validation is not None
    out = []
    for encoding in ENCODINGS:
        m = with_encoding(model, encoding)
        val = choose_on_validation(m, splits.validation)
        test, fixed = threshold_sweep(m, splits.test, [val.local_threshold, FIXED_T])
        b = score_payload_bytes(config.model.num_classes, encoding)
        out.append(Outcome(seed, encoding, b, val, test, fixed))
    return out, logprob_diagnostic(model, splits, seed), seconds


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def mean_std(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def report(log: Callable[[str], None], outcomes: list[Outcome], n_test: int) -> None:
    log("")
    log("Per seed (test split; T chosen on validation; bytes per device per sample):")
    log("")
    log(
        "| seed | encoding | T (val) | val overall % | overall % | local exit % | local-only % "
        "| cloud-only % | score B | payload B/dev | +hdr B | formula B | overall % at T=0.8 |"
    )
    log("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        t = o.test
        log(
            f"| {o.seed} | {o.encoding} | {t.threshold:.2f} | {pct(o.val.overall_accuracy)} | "
            f"{pct(t.overall_accuracy)} | {pct(t.local_exit_fraction)} | "
            f"{pct(t.local_accuracy)} | {pct(t.cloud_accuracy)} | {o.score_bytes} | "
            f"{t.bytes_per_device:.2f} | {t.header_bytes_per_device:.2f} | "
            f"{t.bytes_per_device_formula:.2f} | {pct(o.fixed.overall_accuracy)} |"
        )
    log("")
    log("Per encoding, over seeds (mean ± sample std; test split):")
    log("")
    log(
        "| encoding | overall % | local exit % | local-only % | score B | payload B/dev | +hdr B "
        "| formula B | overall % at T=0.8 |"
    )
    log("|---|---|---|---|---|---|---|---|---|")
    for enc in ENCODINGS:
        rows = [o for o in outcomes if o.encoding == enc]
        t = [o.test for o in rows]
        log(
            f"| {enc} | {mean_std([r.overall_accuracy for r in t])} | "
            f"{mean_std([r.local_exit_fraction for r in t])} | "
            f"{mean_std([r.local_accuracy or 0.0 for r in t])} | {rows[0].score_bytes} | "
            f"{statistics.mean(r.bytes_per_device for r in t):.2f} | "
            f"{statistics.mean(r.header_bytes_per_device for r in t):.2f} | "
            f"{statistics.mean(r.bytes_per_device_formula for r in t):.2f} | "
            f"{mean_std([o.fixed.overall_accuracy for o in rows])} |"
        )
    verdict(log, outcomes, n_test)


def diagnostic_report(log: Callable[[str], None], diags: list[Diagnostic]) -> None:
    log("")
    log(
        "Diagnostic: local exit fusing float32 log-probabilities (int8's representation, no "
        "rounding); test split, T chosen on validation the same way:"
    )
    log("")
    log("| seed | T (val) | overall % | local exit % | local-only % | overall % at T=0.8 |")
    log("|---|---|---|---|---|---|")
    for d in diags:
        log(
            f"| {d.seed} | {d.test.local_threshold:.2f} | {pct(d.test.overall_accuracy)} | "
            f"{pct(d.test.local_exit_fraction)} | {pct(d.local_only)} | "
            f"{pct(d.fixed.overall_accuracy)} |"
        )
    log(
        f"| mean ± std | | {mean_std([d.test.overall_accuracy for d in diags])} | "
        f"{mean_std([d.test.local_exit_fraction for d in diags])} | "
        f"{mean_std([d.local_only for d in diags])} | "
        f"{mean_std([d.fixed.overall_accuracy for d in diags])} |"
    )


def verdict(log: Callable[[str], None], outcomes: list[Outcome], n_test: int) -> None:
    by = {(o.seed, o.encoding): o for o in outcomes}
    seeds = sorted({o.seed for o in outcomes})
    log("")
    log(
        f"Goal: int8 overall accuracy >= float32 - {GOAL_POINTS} points, at a quarter of the "
        f"score bytes (one test sample is {100 / n_test:.2f} points here)."
    )
    f32, i8 = by[(seeds[0], "float32")].score_bytes, by[(seeds[0], "int8")].score_bytes
    log(
        f"score bytes: int8 {i8} B vs float32 {f32} B = {i8 / f32:.2f} x -> quarter: "
        f"{'met' if i8 * 4 <= f32 else 'MISSED'}"
    )
    diffs = []
    for s in seeds:
        d = 100 * (by[(s, "int8")].test.overall_accuracy - by[(s, "float32")].test.overall_accuracy)
        fixed = 100 * (
            by[(s, "int8")].fixed.overall_accuracy - by[(s, "float32")].fixed.overall_accuracy
        )
        diffs.append(d)
        log(
            f"seed {s}: int8 - float32 = {d:+.2f} points at the chosen T ({fixed:+.2f} at "
            f"T = {FIXED_T}) -> {'met' if d >= -GOAL_POINTS - 1e-9 else 'MISSED'}"
        )
    mean = statistics.mean(diffs)
    met = sum(d >= -GOAL_POINTS - 1e-9 for d in diffs)
    log(
        f"mean over {len(seeds)} seeds: int8 - float32 = {mean:+.2f} points -> "
        f"{'met' if mean >= -GOAL_POINTS - 1e-9 else 'MISSED'} (per seed: met on {met} of "
        f"{len(seeds)})"
    )


def run_data(name: str, seeds: Sequence[int], extra: Sequence[str], log: Callable[[str], None]):
    t0 = time.perf_counter()
    overrides = [f"data.name={name}", *PRESETS[name], *extra]
    config = resolve_config(overrides=overrides)
    splits = load_dataset(config.data)
    config = fit_model_to_data(config, splits)
    assert splits.validation is not None
    m, r = config.model, config.train
    log("")
    log(f"## {name}")
    log("")
    log(f"overrides of `ddnn train`'s defaults: {' '.join(overrides)}")
    log(
        f"data: {len(splits.train)} train / {len(splits.validation)} validation / "
        f"{len(splits.test)} test samples, {m.num_devices} devices, {m.num_classes} classes, "
        f"loaded in {time.perf_counter() - t0:.1f} s"
    )
    log(
        f"model: {m.local_aggregation.upper()}-{m.cloud.aggregation.upper()}, device "
        f"ConvP{list(m.device.filters)} ({'binary' if m.device.binary else 'float'}), cloud "
        f"ConvP{list(m.cloud.filters)} ({'binary' if m.cloud.binary else 'float'}); "
        f"training: {r.epochs} epochs, batch {r.batch_size}, lr {r.lr}, device dropout "
        f"{r.device_dropout}; seeds (train.seed) {list(seeds)}"
    )
    outcomes, diags = [], []
    for seed in seeds:
        got, diag, seconds = run_seed(config, splits, seed)
        outcomes += got
        diags.append(diag)
        log(
            f"  seed {seed}: trained in {seconds:.1f} s, "
            + ", ".join(f"{o.encoding} {pct(o.test.overall_accuracy)}%" for o in got)
        )
    report(log, outcomes, len(splits.test))
    diagnostic_report(log, diags)
    log(f"({name}: {time.perf_counter() - t0:.0f} s)")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--data", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--out", help=f"results file (default {RESULTS.name}); '-' for none")
    p.add_argument("--threads", type=int, default=THREADS, help="torch threads")
    p.add_argument("overrides", nargs="*", help="extra config overrides, key=value")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def log(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    log(f"command: python benchmarks/score_encodings.py {argv_text}".rstrip())
    log(f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    log(f"machine: {machine()}")
    log(
        "T per encoding: best overall accuracy on the validation split over T = 0, 0.05, ..., 1 "
        "(ties: more local exits, then lower T); all other figures on the test split."
    )
    t0 = time.perf_counter()
    for name in args.data:
        run_data(name, args.seeds, args.overrides, log)
    log(f"total wall time: {time.perf_counter() - t0:.0f} s")
    if args.out != "-":
        path = Path(args.out) if args.out else RESULTS
        path.write_text("\n".join(lines) + "\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
