"""Defaults for vector and time-series sensors, chosen by measurement on synthetic and real multi-view data.

Data (``ddnn.data.tabular``): ``synthetic-vectors`` (issue 15's easy case: 4 sensors x 16
features, 3 classes, the class's feature shifted +2σ; one fresh 600-sample set per data seed),
``digits-4`` (scikit-learn's real 8 x 8 digits, one 4 x 4 quadrant per sensor, 10 classes) and
``breast-cancer-3`` (scikit-learn's real breast cancer set, its mean / error / worst views of 10
measurements as 3 sensors, 2 classes). Each split: seeded 80/20 train/test, and 20 % of train held
out as validation. With ``--modality series`` (``ddnn.data.series``): ``synthetic-series`` (4
three-axis vibration sensors x 64 steps, 3 classes by frequency, under a distractor vibration and
noise growing from sensor to sensor; one fresh set per data seed) and ``digits-rows-4`` (the real
digits read as series: two rows, 2 x 8, per sensor).

Every DDNN candidate is trained with the default recipe (``TrainConfig()``), its local-exit
threshold calibrated on the validation split (``ddnn.eval.calibrate``, target: no accuracy below
cloud-only, then the most local exits), and reported on the test split at that threshold. The
search is staged: the local aggregation (it decides how many samples can exit locally at all),
then the device (width, depth, which layers are binary, input normalization), then the cloud's
precision and width, then the score encoding. Each stage keeps, among the candidates that meet
the goal's constraints on every validation split where any does (>= 50 % local exits, then fewer
payload bytes than raw), the one with the best mean validation accuracy over the data sets, or
among those within ``TIE`` points of it the cheapest (device memory, then bytes per device). Test
figures are printed but never used to choose.

Columns: val% / vexit% overall accuracy and local exits on validation at the calibrated
threshold; test% / exit% / B/dev the same threshold on test (payload bytes per device per
sample); local% / cloud% every test sample forced to that exit; raw B the raw input's bytes;
mem B device memory (``ddnn profile``).

The reference is a float model on all sensors concatenated (standardized inputs): scikit-learn's
LogisticRegression (C chosen on validation) and a one-hidden-layer MLP, and for series also a
float 1-D CNN on all sensors' channels stacked; the one better on validation is the bar.

Every data set is measured on ``--seeds`` data seeds (a fresh synthetic set, or a fresh seeded
split of a real one, per seed): choices use the mean validation figures over all of them, and the
goal is judged on the test splits' mean and on every seed, since one test split of ~120 samples
moves by a point per sample. ``--jobs`` trainings run in parallel, one thread each.

Run: python benchmarks/sensor_defaults.py [--modality vector|series] [--quick] [--seeds N] [--jobs J]
[--first-seed S]  (data seeds S .. S+N-1; default 0)
[--set KEY=JSON ...]  (with --defaults-only: a value instead of ddnn's default)
[--defaults-only]  (no search, ddnn's current defaults judged on every seed)
[--only-stage local|device|cloud|wire]  (that stage alone, from ddnn's current defaults)
(``--quick``: 10 epochs, one seed, two candidates; a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.config import DataConfig, RunConfig, TrainConfig, resolve_config, to_dict  # noqa: E402
from ddnn.data.dataset import DataSplits, MultiDeviceDataset  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.eval.calibrate import CalibrationTarget, calibrate  # noqa: E402
from ddnn.eval.evaluate import exit_accuracies, threshold_sweep  # noqa: E402
from ddnn.eval.profile import profile_model  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.models.defaults import (  # noqa: E402
    first_layer_float,
    modality,
    scores_below_raw,
    series_filters,
)
from ddnn.train.trainer import train  # noqa: E402
from ddnn.workflow import fit_model_to_data  # noqa: E402

TIE = 0.5  # accuracy points: validation differences below this are noise on these sizes
TARGET = CalibrationTarget(max_accuracy_drop=0.0)
# The paper's (image) defaults, spelled out so that a candidate never inherits modality defaults.
PAPER = {
    "model.device.filters": [4],
    "model.device.binary": True,
    "model.device.normalize_input": False,
    "model.local_aggregation": "mp",
    "model.cloud.filters": [16, 16],
    "model.cloud.binary": True,
    "model.wire.scores": "float32",
}
# A score-encoding candidate that is not one encoding: ddnn's rule (scores_below_raw), the most
# precise encoding below the device's raw reading, resolved for each data set.
BELOW_RAW = "below-raw"
# Likewise for the device of series sensors: ddnn's rule (series_filters), the default blocks cut
# to those that keep at least two steps of the shortest series, and the precision that follows.
BY_LENGTH = "by-length"


@dataclass
class Outcome:
    """One trained candidate on one data split."""

    val_overall: float
    test_overall: float
    test_local: float
    test_cloud: float
    local_exit: float  # on test, at the threshold calibrated on validation
    threshold: float
    bytes_per_device: float  # measured payload on test
    raw_bytes: float
    device_memory: int
    val_bytes: float
    val_exit: float


def _overrides(values: dict[str, Any]) -> list[str]:
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, list | tuple):
            return "[" + ",".join(text(x) for x in v) + "]"
        return str(v)

    return [f"{k}={text(v)}" for k, v in values.items()]


def run_candidate(
    values: dict[str, Any],
    splits: DataSplits,
    data: DataConfig,
    epochs: int,
    recipe: TrainConfig | None = None,
    target: CalibrationTarget = TARGET,
) -> Outcome:
    """Train ``values`` with ``recipe`` (default: the library's) for ``epochs``; measure it,
    at the local threshold that ``target`` chooses on the validation split."""
    # Keys left out: ddnn fills them for this data.
    values = {k: v for k, v in values.items() if v not in (BELOW_RAW, BY_LENGTH)}
    config = resolve_config(RunConfig(data=data), overrides=_overrides(values))
    config = replace(config, train=replace(recipe or TrainConfig(), epochs=epochs))
    config = fit_model_to_data(config, splits)
    torch.manual_seed(config.train.seed)
    model = DDNN(config.model)
    train(model, splits.train, config.train)
    model.eval()
    assert splits.validation is not None
    cal = calibrate(model, splits.validation, target)
    t = cal.thresholds["local"]
    row = threshold_sweep(model, splits.test, [t])[0]
    forced = exit_accuracies(model, splits.test)
    return Outcome(
        val_overall=cal.measured.overall_accuracy,
        test_overall=row.overall_accuracy,
        test_local=forced["local"] or 0.0,
        test_cloud=forced["cloud"] or 0.0,
        local_exit=row.local_exit_fraction,
        threshold=t,
        bytes_per_device=row.bytes_per_device,
        raw_bytes=row.raw_bytes_per_device,
        device_memory=profile_model(model)[0].memory_bytes,
        val_bytes=cal.measured.bytes_per_device,
        val_exit=cal.measured.local_exit_fraction,
    )


@functools.cache
def _load(name: str, seed: int) -> tuple[DataConfig, DataSplits]:
    dc = DataConfig(name=name, seed=seed, validation_fraction=0.2)
    return dc, load_dataset(dc)


def _run_job(job: tuple[dict[str, Any], str, int, int, CalibrationTarget]) -> Outcome:
    """One candidate on one data seed, in a worker process (one thread)."""
    values, name, seed, epochs, target = job
    torch.set_num_threads(1)
    dc, splits = _load(name, seed)
    return run_candidate(values, splits, dc, epochs, target=target)


# -- the float reference on all sensors concatenated ----------------------------------------------
def _flat(d: MultiDeviceDataset) -> np.ndarray:
    return d.x.reshape(len(d), -1).numpy().astype(np.float64)


def logistic_reference(splits: DataSplits) -> tuple[float, float]:
    """(validation, test) accuracy of a standardized LogisticRegression, C chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert splits.validation is not None
    best: tuple[float, float] = (-1.0, 0.0)
    for c in (0.01, 0.1, 1.0, 10.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        model.fit(_flat(splits.train), splits.train.labels.numpy())
        val = model.score(_flat(splits.validation), splits.validation.labels.numpy())
        if val > best[0]:
            best = (val, model.score(_flat(splits.test), splits.test.labels.numpy()))
    return best


def fit_reference(
    net: nn.Module,
    inputs: Callable[[MultiDeviceDataset], torch.Tensor],
    splits: DataSplits,
    epochs: int,
) -> tuple[float, float]:
    """Train ``net`` on ``inputs(train)`` with the DDNN's recipe (Adam 1e-3, batches of 64);
    (validation, test) accuracy. A net with BatchNorm skips a last batch of one sample."""
    assert splits.validation is not None
    x, y = inputs(splits.train), splits.train.labels
    norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            if norms and len(idx) < 2:  # BatchNorm needs two samples
                continue
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()

    def acc(d: MultiDeviceDataset) -> float:
        with torch.no_grad():
            return float((net(inputs(d)).argmax(1) == d.labels).float().mean())

    return acc(splits.validation), acc(splits.test)


def mlp_reference(splits: DataSplits, epochs: int) -> tuple[float, float]:
    """(validation, test) accuracy of a float MLP (64 hidden, ReLU) on standardized inputs."""
    x = torch.from_numpy(_flat(splits.train)).float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, splits.train.num_classes)
    )

    def standardized(d: MultiDeviceDataset) -> torch.Tensor:
        return (torch.from_numpy(_flat(d)).float() - mean) / std

    return fit_reference(net, standardized, splits, epochs)


def cnn_reference(splits: DataSplits, epochs: int) -> tuple[float, float]:
    """(validation, test) accuracy of a float 1-D CNN on every sensor's channels stacked:
    two conv(3)-BN-ReLU-maxpool(2) blocks of 32 and 64 filters, global average, linear."""

    def stacked(d: MultiDeviceDataset) -> torch.Tensor:
        x = d.x.float()
        return x.reshape(len(d), -1, x.shape[-1])  # (N, sensors * channels, L)

    channels = stacked(splits.train).shape[1]
    torch.manual_seed(0)

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv1d(cin, cout, 3, padding=1), nn.BatchNorm1d(cout), nn.ReLU(), nn.MaxPool1d(2)
        )

    net = nn.Sequential(
        nn.BatchNorm1d(channels),
        block(channels, 32),
        block(32, 64),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(64, splits.train.num_classes),
    )
    return fit_reference(net, stacked, splits, epochs)


def float_references(splits: DataSplits, epochs: int) -> dict[str, tuple[float, float]]:
    """(validation, test) accuracy of each float model on all sensors concatenated: logistic
    regression and an MLP, and on time series (devices of shape (C, L)) a 1-D CNN too."""
    found = {"logistic": logistic_reference(splits), "MLP": mlp_reference(splits, epochs)}
    if modality(splits.train.shapes) == "series":
        found["1-D CNN"] = cnn_reference(splits, epochs)
    return found


def float_bar(found: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """The reference a goal is judged against: the best of ``found`` on validation (the first of
    equals), as (validation, test) accuracy."""
    return max(found.values(), key=lambda vt: vt[0])


# -- the staged search ----------------------------------------------------------------------------
@dataclass
class Scored:
    """A candidate's validation figures over all data sets."""

    accuracy: float  # mean over data sets of the validation overall accuracy
    memory: float  # mean device memory, bytes
    bytes_ratio: float  # mean payload per device over raw, on validation
    exits_ok: bool  # >= 50 % local exits on every validation split
    below_raw: bool  # fewer payload bytes than raw on every validation split
    values: dict[str, Any]
    key: str


def choose(scored: list[Scored]) -> tuple[Scored, str]:
    """The goal's constraints first, where some candidate meets them (on validation): >= 50 %
    local exits, then fewer bytes than raw too. Among those, the best mean validation accuracy;
    candidates within ``TIE`` points of it go to the least device memory, then the fewest bytes."""
    pool, rule = scored, "no candidate has >= 50 % local exits on every validation split"
    if any(s.exits_ok for s in scored):
        pool, rule = [s for s in scored if s.exits_ok], ">= 50 % local exits"
        if any(s.below_raw for s in pool):
            pool, rule = [s for s in pool if s.below_raw], ">= 50 % local exits, below raw bytes"
    top = max(s.accuracy for s in pool)
    chosen = min(
        (s for s in pool if s.accuracy >= top - TIE / 100), key=lambda s: (s.memory, s.bytes_ratio)
    )
    return chosen, (
        f"among candidates with {rule} on validation: mean validation accuracy "
        f"{100 * chosen.accuracy:.1f}%, best {100 * top:.1f}%; within {TIE} points the least "
        "device memory, then the fewest bytes"
    )


def stages(quick: bool, series: bool = False) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each stage: changes tried on top of the best candidate so far (the first: on PAPER).
    Series devices also try deeper stacks: each 1-D ConvP block halves the length, and a
    vibration of a few cycles per window needs a receptive field of a dozen steps or more."""
    norm = {"model.device.normalize_input": True}
    first_float = {"model.device.binary": [False, True]}
    device = [
        {},
        {**norm, "model.device.filters": [16]},
        {**first_float, "model.device.filters": [16]},
        {**first_float, **norm, "model.device.filters": [16]},
        {**first_float, "model.device.filters": [32]},
        {**first_float, **norm, "model.device.filters": [32]},
        {"model.device.filters": [16], "model.device.binary": False},
        {"model.device.filters": [32, 16], "model.device.binary": [False, True, True]},
    ]
    if series:
        device += [
            {"model.device.filters": [16, 16], "model.device.binary": [False, True, True]},
            {"model.device.filters": [32, 32], "model.device.binary": [False, True, True]},
            {
                "model.device.filters": [16, 16, 16],
                "model.device.binary": [False, True, True, True],
            },
            {
                "model.device.filters": [32, 16, 16],
                "model.device.binary": [False, True, True, True],
            },
            {**norm, "model.device.filters": [32, 16], "model.device.binary": [False, True, True]},
        ]
    if quick:
        return [("device", device[:1] + device[3:4])]
    return [
        ("local", [{}, {"model.local_aggregation": "ap"}, {"model.local_aggregation": "cc"}]),
        ("device", device),
        (
            "cloud",
            [
                {},
                {"model.cloud.binary": False},
                {"model.cloud.filters": [64], "model.cloud.binary": False},
            ],
        ),
        (
            "wire",
            [
                {},
                {"model.wire.scores": "float16"},
                {"model.wire.scores": "int8"},
                {"model.wire.scores": BELOW_RAW},
            ],
        ),
    ]


def describe(values: dict[str, Any]) -> str:
    """A candidate in one short line: device · local aggregation · cloud · score encoding."""

    def precision(v: Any) -> str:
        if v == BY_LENGTH:
            return v
        if isinstance(v, bool):
            return "binary" if v else "float"
        return "[" + ",".join("B" if b else "F" for b in v) + "]"

    def widths(v: Any) -> str:
        return v if v == BY_LENGTH else "x".join(str(f) for f in v)

    norm = " norm" if values["model.device.normalize_input"] else ""
    return (
        f"dev {widths(values['model.device.filters'])} {precision(values['model.device.binary'])}"
        f"{norm} | {values['model.local_aggregation']} | cloud "
        f"{widths(values['model.cloud.filters'])} {precision(values['model.cloud.binary'])} | "
        f"{values['model.wire.scores']}"
    )


def library_defaults(splits: DataSplits, data: DataConfig) -> dict[str, Any]:
    """The model keys of ``PAPER`` as ``ddnn`` fills them for this data when none is given."""
    fitted = to_dict(fit_model_to_data(RunConfig(data=data), splits).model)
    values: dict[str, Any] = {}
    for key in PAPER:
        have: Any = fitted
        for part in key.split(".")[1:]:
            have = have[part]
        values[key] = have
    return values


def library_defaults_match(values: dict[str, Any], splits: DataSplits, data: DataConfig) -> str:
    """Whether ``ddnn``'s defaults for this data (no model keys given) are the chosen values."""
    defaults = library_defaults(splits, data)
    differ = []
    for key, want in values.items():
        have = defaults[key]
        if want == BELOW_RAW:
            want = scores_below_raw(splits.train.num_classes, splits.train.shapes)
        elif want == BY_LENGTH:
            filters = series_filters(splits.train.shapes)
            want = filters if key == "model.device.filters" else first_layer_float(filters)
        if have != (list(want) if isinstance(want, tuple) else want):
            differ.append(f"{key}={have!r} (chosen {want!r})")
    return "match" if not differ else "differ: " + ", ".join(differ)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 10 epochs, 2 candidates")
    parser.add_argument("--seeds", type=int, default=5, help="data seeds per data set (default 5)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="the first data seed (default 0): fresh splits"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="with --defaults-only: this value instead of ddnn's default, e.g. "
        "'model.device.filters=[32,16,16]' (repeatable)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel trainings (default 2)")
    parser.add_argument("--modality", choices=("vector", "series"), default="vector")
    parser.add_argument(
        "--defaults-only",
        action="store_true",
        help="no search: judge ddnn's current defaults for the modality on every seed",
    )
    parser.add_argument(
        "--only-stage",
        choices=("local", "device", "cloud", "wire"),
        help="run one stage only, the other keys at ddnn's current defaults",
    )
    parser.add_argument(
        "--confidence-level",
        type=float,
        default=None,
        metavar="P",
        help="calibrate with this confidence that the drop below cloud-only stays within 0 points "
        "on new data (CalibrationTarget.confidence_level); default: within 0 on validation",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or args.first_seed < 0:
        parser.error("--seeds and --jobs must be >= 1, --first-seed >= 0")
    if args.only_stage and (args.quick or args.defaults_only):
        parser.error("--only-stage runs one stage of the full search: drop --quick/--defaults-only")
    try:
        target = replace(TARGET, confidence_level=args.confidence_level)
    except ValueError as exc:
        parser.error(str(exc))
    given: dict[str, Any] = {}  # --set, checked before any data is loaded
    for item in args.set:
        key, _, text = item.partition("=")
        if not args.defaults_only or key not in PAPER:
            parser.error(f"--set takes one of {sorted(PAPER)} with --defaults-only, got {item!r}")
        try:
            given[key] = json.loads(text)
        except json.JSONDecodeError as exc:
            parser.error(f"--set {item!r}: the value is not JSON ({exc})")
    torch.set_num_threads(1)
    epochs = 10 if args.quick else TrainConfig().epochs
    seeds = 1 if args.quick else args.seeds
    series = args.modality == "series"
    sets = (
        ["synthetic-series", "digits-rows-4"]
        if series
        else ["synthetic-vectors", "digits-4", "breast-cancer-3"]
    )
    first = args.first_seed
    names = [(name, s) for name in sets for s in range(first, first + seeds)]
    start = time.perf_counter()
    print(f"command: python benchmarks/sensor_defaults.py {' '.join(argv or sys.argv[1:])}".strip())
    print(f"modality: {args.modality}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# sensor defaults: {machine()}; {epochs} epochs, recipe {to_dict(TrainConfig())}")
    print(f"threshold target (on validation): {target.describe()}")
    data = {key: _load(*key) for key in names}

    print("\n## float reference on all sensors concatenated (validation / test accuracy %)")
    refs: dict[str, list[float]] = {}
    for (name, seed), (_, splits) in data.items():
        found = float_references(splits, epochs)
        best = float_bar(found)
        refs.setdefault(name, []).append(best[1])
        each = ", ".join(f"{k} {100 * v:.1f} / {100 * t:.1f}" for k, (v, t) in found.items())
        print(
            f"{name} seed {seed} ({len(splits.train)}/{len(splits.validation or [])}/"
            f"{len(splits.test)} train/val/test): {each}; bar (better on validation): "
            f"{100 * best[1]:.1f}"
        )

    pool = multiprocessing.get_context("spawn").Pool(args.jobs)
    best_values = dict(PAPER)
    results: dict[str, dict[str, list[Outcome]]] = {}
    plan = stages(args.quick, series)
    current = {  # ddnn's defaults; what depends on the data stands as the rule
        **library_defaults(*reversed(data[names[-1]])),
        "model.wire.scores": BELOW_RAW,
    }
    if series:
        current |= {"model.device.filters": BY_LENGTH, "model.device.binary": BY_LENGTH}
    current |= given
    if args.defaults_only:
        best_values = current
        plan = [("current defaults", [{}])]
    elif args.only_stage:
        plan = [(stage, changes) for stage, changes in plan if stage == args.only_stage]
        keys = {key for change in plan[0][1] for key in change}
        best_values = {**current, **{key: PAPER[key] for key in keys}}
    for stage, changes in plan:
        print(f"\n## stage {stage}")
        print(
            f"{'candidate':52} {'data':18} {'val%':>5} {'vexit%':>6} {'test%':>5} "
            f"{'local%':>6} {'cloud%':>6} {'exit%':>5} {'B/dev':>5} {'raw B':>5} {'mem B':>5}"
        )
        scored = []
        for change in changes:
            values = {**best_values, **change}
            key = describe(values)
            if key not in results:
                jobs = [(values, name, seed, epochs, target) for name, seed in names]
                per: dict[str, list[Outcome]] = {}
                for (name, _seed), outcome in zip(names, pool.map(_run_job, jobs), strict=True):
                    per.setdefault(name, []).append(outcome)
                results[key] = per
            per = results[key]
            for name, outs in per.items():
                m = {
                    f: statistics.mean(getattr(o, f) for o in outs)
                    for f in Outcome.__dataclass_fields__
                }
                print(
                    f"{key:52} {name:18} {100 * m['val_overall']:5.1f} {100 * m['val_exit']:6.1f} "
                    f"{100 * m['test_overall']:5.1f} "
                    f"{100 * m['test_local']:6.1f} {100 * m['test_cloud']:6.1f} "
                    f"{100 * m['local_exit']:5.1f} {m['bytes_per_device']:5.1f} {m['raw_bytes']:5.0f} "
                    f"{m['device_memory']:5.0f}"
                )
            val = statistics.mean(
                statistics.mean(o.val_overall for o in outs) for outs in per.values()
            )
            memory = statistics.mean(o.device_memory for outs in per.values() for o in outs)
            ratio = statistics.mean(
                o.val_bytes / o.raw_bytes for outs in per.values() for o in outs
            )
            exits = min(o.val_exit for outs in per.values() for o in outs)
            below_raw = all(o.val_bytes < o.raw_bytes for outs in per.values() for o in outs)
            scored.append(Scored(val, memory, ratio, exits >= 0.5, below_raw, values, key))
        chosen, rule = choose(scored)
        best_values = chosen.values
        print(f"-> chosen: {chosen.key} ({rule})")

    pool.close()
    print(
        "\n## chosen configuration against the float reference (test: mean over data seeds, "
        "then each seed's gap)"
    )
    final = results[describe(best_values)]
    for name, outs in final.items():
        ref = statistics.mean(refs[name])
        acc = statistics.mean(o.test_overall for o in outs)
        exits = statistics.mean(o.local_exit for o in outs)
        sent = statistics.mean(o.bytes_per_device for o in outs)
        raw = outs[0].raw_bytes
        ok = acc >= ref - 0.01 and exits >= 0.5 and sent < raw
        gaps = [100 * (r - o.test_overall) for r, o in zip(refs[name], outs, strict=True)]
        seeds_met = sum(
            g <= 1.0 and o.local_exit >= 0.5 and o.bytes_per_device < raw
            for g, o in zip(gaps, outs, strict=True)
        )
        print(
            f"{name:18} DDNN {100 * acc:5.1f}%  float {100 * ref:5.1f}%  gap {100 * (ref - acc):+5.1f} "
            f"points  local exits {100 * exits:5.1f}%  {sent:5.1f} B/device vs raw {raw:.0f} B  "
            f"goal {'met' if ok else 'NOT met'} on the mean; per seed gap "
            f"{' '.join(f'{g:+.1f}' for g in gaps)}: met on {seeds_met} of {len(outs)}"
        )
    print(f"\nchosen: {' '.join(_overrides(best_values))}")
    dc, splits = data[("digits-rows-4" if series else "digits-4", first)]
    match = library_defaults_match(best_values, splits, dc)
    print(f"ddnn's defaults for {args.modality} sensors: {match}")
    print(f"finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
