"""Beyond the paper: thresholds chosen automatically on a validation split for a user target."""

from __future__ import annotations

from ddnn.eval.calibrate import ByteCosts, CalibrationTarget, calibrate, save_calibration
from ddnn.experiments.measure import CHOOSE_ON, at_threshold, pct, split_data
from ddnn.experiments.registry import Experiment, PlotSpec, Row, register_experiment
from ddnn.experiments.runner import ExperimentContext

DROPS = (0.0, 1.0, 2.0)  # accuracy points below cloud-only
BUDGET_SHARES = (0.25, 0.5)  # byte budgets: scores + this share of the feature map


def _targets(costs: ByteCosts) -> list[tuple[str, CalibrationTarget]]:
    features = sum(costs.feature_bytes) / len(costs.feature_bytes)
    out = [(f"drop ≤ {d:g} pts", CalibrationTarget(max_accuracy_drop=d)) for d in DROPS]
    for share in BUDGET_SHARES:
        budget = costs.score_bytes + share * features
        out.append((f"≤ {budget:g} B/dev", CalibrationTarget(max_bytes=budget)))
    return out


def calibration(ctx: ExperimentContext) -> list[Row]:
    """Calibrate on the validation split for several targets; report validation and test."""
    run = ctx.run()  # the threshold model; the suite's base config holds out a validation split
    model, validation = run.model, split_data(run, CHOOSE_ON)
    rows: list[Row] = []
    first = None
    for name, target in _targets(ByteCosts.of_model(model)):
        try:
            cal = calibrate(model, validation, target)
        except ValueError as exc:  # a target the model cannot meet is a row that says so
            rows.append({"kind": "chosen", "target": name, "note": str(exc)})
            continue
        first = first or cal
        t = cal.thresholds
        test = at_threshold(run, t["local"], edge_threshold=t.get("edge"))
        rows.append(
            {
                "kind": "chosen",
                "target": name,
                "T_local": t["local"],
                "val_overall_acc": pct(cal.metrics.overall_accuracy),
                "val_cloud_acc": pct(cal.cloud_only_accuracy),
                "val_local_exit_pct": pct(cal.metrics.local_exit_fraction),
                "val_bytes_per_device": cal.metrics.bytes_per_device,
                "test_overall_acc": pct(test.overall_accuracy),
                "test_cloud_acc": pct(test.cloud_accuracy),
                "test_local_exit_pct": pct(test.local_exit_fraction),
                "test_bytes_per_device": test.bytes_per_device,
                "note": name,
            }
        )
    if first is not None:
        save_calibration(run.run_dir, first)  # `ddnn evaluate RUN --calibrated` uses it
        for k, point in enumerate(first.frontier):
            rows.append(
                {
                    "kind": "frontier",
                    "target": f"#{k}",
                    "T_local": point.local_threshold,
                    "val_overall_acc": pct(point.overall_accuracy),
                    "val_local_exit_pct": pct(point.local_exit_fraction),
                    "val_bytes_per_device": point.bytes_per_device,
                    "note": "",
                }
            )
    return rows


register_experiment(
    Experiment(
        name="calibrate",
        title="Threshold calibration on a validation split (beyond the paper)",
        run=calibration,
        keys=("kind", "target"),
        description=(
            "The threshold model is trained without the validation share of the training split "
            "(data.validation_fraction); thresholds are chosen on that validation split for each "
            "target — most local exits within X accuracy points of cloud-only, or best accuracy "
            "within B bytes per device — and then applied "
            "to the test split. The figure shows seed 0's validation Pareto frontier (accuracy vs "
            "bytes over all thresholds) and where each target's choice lies."
        ),
        columns=(
            "T_local",
            "val_overall_acc",
            "val_cloud_acc",
            "val_local_exit_pct",
            "val_bytes_per_device",
            "test_overall_acc",
            "test_cloud_acc",
            "test_local_exit_pct",
            "test_bytes_per_device",
        ),
        table_where=(("kind", "chosen"),),
        plots=(
            PlotSpec(
                "val_bytes_per_device",
                ("val_overall_acc",),
                "scatter",
                "bytes per device per sample (validation)",
                "overall accuracy (%, validation)",
                label="note",
                split_by="kind",
                where=(("seed", 0),),
                source="rows",
            ),
        ),
    )
)
