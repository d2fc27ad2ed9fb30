"""Paper experiments on accuracy: aggregation schemes, the exit threshold, adding devices."""

from __future__ import annotations

from ddnn.eval.evaluate import DEFAULT_THRESHOLDS
from ddnn.experiments.measure import CHOOSE_ON, at_threshold, on_both_splits, pct
from ddnn.experiments.registry import Experiment, PlotSpec, Row, register_experiment
from ddnn.experiments.runner import ExperimentContext, load_splits

SCHEMES = ("mp", "ap", "cc")
PAPER_T = 0.8


def aggregation(ctx: ExperimentContext) -> list[Row]:
    """All 9 local-cloud schemes, device ConvP(16), T = 0.8."""
    pairs = [(local, cloud) for local in SCHEMES for cloud in SCHEMES]
    runs = ctx.run_many(
        [
            (
                "model.device.filters=[16]",
                f"model.local_aggregation={a}",
                f"model.cloud.aggregation={b}",
            )
            for a, b in pairs
        ]
    )
    return [
        {"scheme": f"{a.upper()}-{b.upper()}", **on_both_splits(run, PAPER_T)}
        for (a, b), run in zip(pairs, runs, strict=True)
    ]


def threshold(ctx: ExperimentContext) -> list[Row]:
    """One trained model (device ConvP(4), MP-CC) swept over the paper's thresholds, measured on
    the validation split (where the goal picks T) and on the test split (what it reports)."""
    run = ctx.run()
    return [{"T": t, **on_both_splits(run, t)} for t in DEFAULT_THRESHOLDS]


def scaling(ctx: ExperimentContext) -> list[Row]:
    """Devices added one at a time, weakest first, retraining for every subset.

    A device's *individual* accuracy is that of a model trained on that device alone (its local
    exit). The order, weakest first as in the paper's figure, is by individual accuracy on the
    validation split; the table reports the test split.
    """
    n = load_splits(ctx.config().data).train.num_devices
    singles = ctx.run_many([(f"data.devices=[{k}]",) for k in range(n)])
    individual = [pct(at_threshold(run, PAPER_T).local_accuracy) or 0.0 for run in singles]
    chooser = [
        pct(at_threshold(run, PAPER_T, split=CHOOSE_ON).local_accuracy) or 0.0 for run in singles
    ]
    order = sorted(range(n), key=lambda k: (chooser[k], k))
    subsets = [sorted(order[: i + 1]) for i in range(n)]
    runs = ctx.run_many(
        [(f"data.devices=[{','.join(map(str, s))}]",) if len(s) < n else () for s in subsets]
    )
    rows = []
    for i, (subset, run) in enumerate(zip(subsets, runs, strict=True)):
        added = order[i]
        rows.append(
            {
                "devices": i + 1,
                "added_device": str(added),  # an index, not a quantity: never averaged
                "individual_acc": individual[added],
                "val_individual_acc": chooser[added],
                **on_both_splits(run, PAPER_T),
                "subset": " ".join(map(str, subset)),
            }
        )
    return rows


register_experiment(
    Experiment(
        name="aggregation",
        title="Aggregation schemes (local-cloud), device ConvP(16), T = 0.8",
        run=aggregation,
        keys=("scheme",),
        description=(
            "All 9 combinations of MP / AP / CC at the local aggregator and the cloud, measured "
            "on the validation and the test split; the table shows the test split. The goal "
            "ranks the schemes on validation."
        ),
        paper=[{"scheme": "MP-CC", "local_acc": 97.0, "cloud_acc": 99.0, "overall_acc": 99.0}],
        columns=("local_acc", "cloud_acc", "overall_acc", "local_exit_pct", "bytes_per_device"),
        plots=(
            PlotSpec(
                "scheme", ("local_acc", "cloud_acc", "overall_acc"), "bar", "scheme", "accuracy (%)"
            ),
        ),
    )
)
register_experiment(
    Experiment(
        name="threshold",
        title="Exit threshold T (device ConvP(4), MP-CC, one trained model)",
        run=threshold,
        keys=("T",),
        description=(
            "One model per seed, staged inference at each local-exit threshold T on the validation "
            "and the test split; the table shows the test split. The goal picks T on validation."
        ),
        paper=[
            {"T": t, "local_exit_pct": e, "overall_acc": o, "local_acc": 92.0, "cloud_acc": 96.0}
            for t, e, o in zip(
                DEFAULT_THRESHOLDS,
                (0.0, 0.6, 1.8, 2.9, 22.8, 60.8, 83.0, 100.0),
                (96.0, 96.0, 96.0, 96.0, 96.0, 97.0, 96.0, 92.0),
                strict=True,
            )
        ],
        columns=(
            "local_exit_pct",
            "local_acc",
            "cloud_acc",
            "overall_acc",
            "bytes_per_device",
            "bytes_formula",
            "reduction",
        ),
        plots=(
            PlotSpec(
                "local_exit_pct",
                ("overall_acc",),
                "scatter",
                "samples exited locally (%)",
                "overall accuracy (%)",
                label="T",
            ),
            PlotSpec("T", ("bytes_per_device", "bytes_formula"), "line", "T", "bytes per device"),
        ),
    )
)
register_experiment(
    Experiment(
        name="scaling",
        title="Adding devices one at a time, weakest first (retrained per subset), T = 0.8",
        run=scaling,
        keys=("devices",),
        description=(
            "Each device alone is trained first (its local exit = individual accuracy); devices "
            "are then added in order of increasing individual accuracy on the validation split "
            "and the DDNN is retrained for every subset. The table reports the test split."
        ),
        paper=[
            {"devices": i + 1, "overall_acc": a}
            for i, a in enumerate((58.0, 80.0, 88.0, 96.0, 99.0, 99.0))
        ],
        columns=("added_device", "individual_acc", "local_acc", "cloud_acc", "overall_acc"),
        plots=(
            PlotSpec(
                "devices",
                ("individual_acc", "local_acc", "cloud_acc", "overall_acc"),
                "line",
                "number of devices",
                "accuracy (%)",
            ),
        ),
    )
)
