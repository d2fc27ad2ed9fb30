"""Device size: last-layer filters vs communication, first-layer filters vs device memory."""

from __future__ import annotations

import math

from torch import nn

from ddnn.eval.profile import profile_model
from ddnn.experiments.measure import on_both_splits, threshold_for_local_exit
from ddnn.experiments.registry import Experiment, PlotSpec, Row, register_experiment
from ddnn.experiments.runner import ExperimentContext, TrainedRun
from ddnn.nn.binary import is_binary

FILTERS = (1, 2, 4, 8)
TARGET_LOCAL_EXIT = 0.7
FIXED_FILTERS = 4  # the layer that is not varied
PAPER_T = 0.8


def unfolded_bytes(module: nn.Module) -> int:
    """Memory counted as a plain parameter dump: binary weights at 1 bit, every other stored
    number (biases, BatchNorm scale, shift, running mean and variance) at 32 bits."""
    bits = 0
    for layer in module.modules():
        for name, tensor in [
            *layer.named_parameters(recurse=False),
            *layer.named_buffers(recurse=False),
        ]:
            if name == "num_batches_tracked":
                continue
            per = 1 if (name == "weight" and is_binary(layer)) else 32
            bits += per * tensor.numel()
    return math.ceil(bits / 8)


def _memory(run: TrainedRun) -> dict[str, float]:
    model = run.model
    profiles = {p.name: p for p in profile_model(model)}
    device = profiles["device_0"]
    return {
        "device_memory_bytes": float(device.memory_bytes),
        "device_unfolded_bytes": float(unfolded_bytes(model.device(0))),
        "device_binary_params": float(device.binary_parameters),
    }


def filters(ctx: ExperimentContext) -> list[Row]:
    """2-layer devices, last-layer filters f' varied, at the T giving ≈ 70% local exits on the
    validation split (reported on the test split)."""
    runs = ctx.run_many([(f"model.device.filters=[{FIXED_FILTERS},{f}]",) for f in FILTERS])
    rows = []
    for f, run in zip(FILTERS, runs, strict=True):
        t = threshold_for_local_exit(run, TARGET_LOCAL_EXIT)
        rows.append({"last_filters": f, "T": t, **on_both_splits(run, t), **_memory(run)})
    return rows


def memory(ctx: ExperimentContext) -> list[Row]:
    """2-layer devices, first-layer filters f varied: accuracy vs device memory, T = 0.8."""
    runs = ctx.run_many([(f"model.device.filters=[{f},{FIXED_FILTERS}]",) for f in FILTERS])
    return [
        {"first_filters": f, **on_both_splits(run, PAPER_T), **_memory(run)}
        for f, run in zip(FILTERS, runs, strict=True)
    ]


register_experiment(
    Experiment(
        name="filters",
        title="Device last-layer filters vs communication (2-layer devices, ≈ 70% local exit)",
        run=filters,
        keys=("last_filters",),
        description=(
            f"Devices ConvP({FIXED_FILTERS}) → ConvP(f'), 32→16→8 spatial; per model, T is set so "
            "that 70% of validation samples exit locally ('val local exit %'); the other columns "
            "are the test split at that T. Device memory: packed weights plus folded BatchNorm "
            "thresholds ('device_memory_bytes'), and a plain parameter dump "
            "('device_unfolded_bytes': binary weights 1 bit, every float 32 bits)."
        ),
        paper=[
            {"last_filters": f, "overall_acc": a, "bytes_per_device": b}
            for f, a, b in zip(
                FILTERS, (91.0, 95.0, 96.0, 97.0), (14.0, 16.0, 21.0, 30.0), strict=True
            )
        ],
        columns=(
            "T",
            "val_local_exit_pct",
            "local_exit_pct",
            "overall_acc",
            "bytes_per_device",
            "bytes_formula",
            "device_memory_bytes",
            "device_unfolded_bytes",
        ),
        plots=(
            PlotSpec(
                "bytes_per_device",
                ("overall_acc",),
                "scatter",
                "bytes per device per sample",
                "overall accuracy (%)",
                label="last_filters",
            ),
        ),
    )
)
register_experiment(
    Experiment(
        name="memory",
        title="Device first-layer filters vs device memory (2-layer devices), T = 0.8",
        run=memory,
        keys=("first_filters",),
        description=(
            f"Devices ConvP(f) → ConvP({FIXED_FILTERS}). The paper reports one accuracy per f "
            "without naming the exit; we compare it with the local (device) exit."
        ),
        paper=[
            {"first_filters": f, "local_acc": a}
            for f, a in zip(FILTERS, (70.0, 82.0, 87.0, 91.0), strict=True)
        ],
        columns=(
            "local_acc",
            "overall_acc",
            "cloud_acc",
            "device_memory_bytes",
            "device_unfolded_bytes",
            "device_binary_params",
        ),
        plots=(
            PlotSpec(
                "device_memory_bytes",
                ("local_acc", "overall_acc"),
                "scatter",
                "device memory (bytes, packed + folded)",
                "accuracy (%)",
                label="first_filters",
            ),
        ),
    )
)
