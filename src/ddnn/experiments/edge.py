"""Beyond the paper: the edge tier, configurations (e) and (f) against (c)."""

from __future__ import annotations

from ddnn.eval.evaluate import ThresholdRow
from ddnn.experiments.measure import on_both_splits, pct, row_fields
from ddnn.experiments.registry import Experiment, PlotSpec, Row, register_experiment
from ddnn.experiments.runner import ExperimentContext, load_splits

LOCAL_T = 0.8
EDGE_T = 0.8
# Edges send 16 x 8 x 8 bits = 128 B up (pool stride 2) instead of 16 x 16 x 16 bits = 512 B.
EDGE_SETTINGS = ("model.edge.filters=[16]", "model.edge.pool_stride=2")


def _groups(n: int, parts: int) -> list[list[int]]:
    size = -(-n // parts)
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def edge(ctx: ExperimentContext) -> list[Row]:
    """(c) devices + cloud; (e) one edge for all devices; (f) 2 and 3 edges over device groups."""
    n = load_splits(ctx.config().data).train.num_devices
    layouts: dict[str, list[list[int]]] = {"c": [], "e": [list(range(n))]}
    for parts in (2, 3):
        if n >= parts:
            layouts[f"f ({parts} edges)"] = _groups(n, parts)
    trials = [
        () if not groups else (f"model.edge.groups={groups}".replace(" ", ""), *EDGE_SETTINGS)
        for groups in layouts.values()
    ]
    runs = ctx.run_many(trials)
    return [
        {
            "config": name,
            "edges": len(groups),
            **on_both_splits(run, LOCAL_T, edge_threshold=EDGE_T, fields=_edge_fields),
        }
        for (name, groups), run in zip(layouts.items(), runs, strict=True)
    ]


def _edge_fields(row: ThresholdRow) -> Row:
    """The usual columns plus the edge tier's exits, accuracy and bytes to the cloud."""
    return {
        **row_fields(row),
        "edge_acc": pct(row.edge_accuracy),
        "edge_exit_pct": pct(row.edge_exit_fraction),
        "cloud_exit_pct": pct(row.cloud_exit_fraction),
        "edge_to_cloud_bytes": row.edge_to_cloud_bytes or 0.0,
    }


register_experiment(
    Experiment(
        name="edge",
        title="Edge tier (beyond the paper): configurations (e) and (f) vs (c), T_local = T_edge = 0.8",
        run=edge,
        keys=("config",),
        description=(
            "Edges fuse their group's feature maps (CC), run ConvP(16) with pool stride 2 and have "
            "an exit; what goes on up is 16x8x8 bits per edge. Bytes per device are on the "
            "device→edge (or device→cloud) link; edge→cloud bytes are per sample, all edges together."
        ),
        columns=(
            "local_exit_pct",
            "edge_exit_pct",
            "cloud_exit_pct",
            "local_acc",
            "edge_acc",
            "cloud_acc",
            "overall_acc",
            "bytes_per_device",
            "edge_to_cloud_bytes",
        ),
        plots=(
            PlotSpec(
                "config",
                ("local_exit_pct", "edge_exit_pct", "cloud_exit_pct"),
                "bar",
                "configuration",
                "samples answered (%)",
            ),
        ),
    )
)
