"""Fault tolerance: devices missing at test time (presence mask) and devices removed and retrained."""

from __future__ import annotations

from itertools import combinations

from ddnn.experiments.goals import mask_protocol
from ddnn.experiments.measure import VAL, on_both_splits
from ddnn.experiments.registry import Experiment, PlotSpec, Row, register_experiment
from ddnn.experiments.runner import ExperimentContext, load_splits

PAPER_T = 0.8


def missing(ctx: ExperimentContext) -> list[Row]:
    """Protocol (i): the full model with devices absent via the presence mask, with and without
    training-time device dropout; protocol (ii): retrain without the device (the paper's code)."""
    base = ctx.config()
    n = load_splits(base.data).train.num_devices
    dropouts = sorted({base.train.device_dropout, 0.0}, reverse=True)
    mode = base.train.device_dropout_mode
    masked_runs = ctx.run_many([(f"train.device_dropout={p}",) for p in dropouts])
    keep = [[d for d in range(n) if d != k] for k in range(n)]
    retrained = ctx.run_many([(f"data.devices=[{','.join(map(str, s))}]",) for s in keep])
    rows: list[Row] = []
    absent_sets = [()] + [(k,) for k in range(n)] + list(combinations(range(n), 2))
    for p, run in zip(dropouts, masked_runs, strict=True):
        reference: Row = {}
        for absent in absent_sets:
            fields = on_both_splits(run, PAPER_T, missing=absent)
            reference = reference or fields
            rows.append(
                {
                    "protocol": mask_protocol(p, mode),
                    "missing": "+".join(map(str, absent)) or "none",
                    "num_missing": len(absent),
                    **fields,
                    **_drops(reference, fields),
                }
            )
    full = next(r for r in rows if r["protocol"] == mask_protocol(base.train.device_dropout, mode))
    for k, run in enumerate(retrained):
        fields = on_both_splits(run, PAPER_T)
        rows.append(
            {
                "protocol": "retrain",
                "missing": str(k),
                "num_missing": 1,
                **fields,
                **_drops(full, fields),
            }
        )
    return rows


def _drops(reference: Row, fields: Row) -> Row:
    """Overall accuracy lost against ``reference``, in points, on test and on validation."""
    return {
        "drop": reference["overall_acc"] - fields["overall_acc"],
        f"{VAL}drop": reference[f"{VAL}overall_acc"] - fields[f"{VAL}overall_acc"],
    }


register_experiment(
    Experiment(
        name="missing",
        title="Missing devices: presence mask at test time vs retraining without the device, T = 0.8",
        run=missing,
        keys=("protocol", "missing"),
        description=(
            "(i) 'mask': one model with every device and every pair of devices made absent at "
            "test time, trained with and without device dropout; (ii) 'retrain': a model trained "
            "without the device, as the paper's code did. 'drop' is the loss in overall accuracy "
            "(points) against all devices present."
        ),
        paper=[
            {"protocol": "retrain", "missing": str(k), "overall_acc": a}
            for k, a in enumerate((99.0, 99.0, 99.0, 99.0, 96.0, 98.0))
        ],
        columns=("local_acc", "cloud_acc", "overall_acc", "drop", "local_exit_pct"),
        plots=(
            PlotSpec(
                "missing",
                ("overall_acc",),
                "line",
                "device(s) missing",
                "overall accuracy (%)",
                split_by="protocol",
                where=(("num_missing", 1),),
            ),
        ),
    )
)
