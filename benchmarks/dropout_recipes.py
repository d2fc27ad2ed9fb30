"""Device-dropout recipes on the vector sensors: the DDNN against the float reference, 5 data seeds.

The question behind the default ``train.device_dropout`` / ``train.device_dropout_mode``: does
training for one failed device (``single``, 0.3) cost accuracy on data where every sensor is
present, against the earlier default (``independent``, 0.15) and no dropout? Every recipe trains
the same model (the vector defaults chosen by ``sensor_defaults.py`` under the earlier recipe:
devices [16] with a float first layer, CC, cloud [64] float, int8 scores; with ``--normalize``
also a BatchNorm on each device's input, with ``--filters`` other device widths) on five data
seeds of one data set, with its local-exit threshold calibrated on validation, and is compared
with the float reference (logistic regression or an MLP on all sensors concatenated, whichever
is better on validation) seed by seed. Choose on the validation gaps; the test gaps are reported.

Run: python benchmarks/dropout_recipes.py DATA [--normalize] [--filters N] [--recipes a,b]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import sensor_defaults as sd  # noqa: E402

from ddnn.config import DataConfig, TrainConfig  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402

VECTOR = {
    **sd.PAPER,
    "model.device.filters": [16],
    "model.device.binary": [False, True],
    "model.local_aggregation": "cc",
    "model.cloud.filters": [64],
    "model.cloud.binary": False,
    "model.wire.scores": "int8",
}
RECIPES: dict[str, dict[str, Any]] = {
    "indep0.15": {"device_dropout": 0.15, "device_dropout_mode": "independent"},
    "drop0": {"device_dropout": 0.0},
    "single0.3": {"device_dropout": 0.3, "device_dropout_mode": "single"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("data", choices=("synthetic-vectors", "digits-4", "breast-cancer-3"))
    parser.add_argument("--normalize", action="store_true", help="BatchNorm on device inputs")
    parser.add_argument("--filters", type=int, default=16, help="device width (default 16)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    if unknown := [r for r in recipes if r not in RECIPES]:
        parser.error(f"unknown recipe(s) {unknown}; accepted: {', '.join(RECIPES)}")
    torch.set_num_threads(1)
    model = {**VECTOR, "model.device.filters": [args.filters]}
    model["model.device.normalize_input"] = args.normalize
    print(f"# {' '.join(sys.argv)}; model {sd.describe(model)}")
    gaps: dict[str, tuple[list[float], list[float]]] = {r: ([], []) for r in recipes}
    outcomes: dict[str, list[sd.Outcome]] = {r: [] for r in recipes}
    for seed in range(args.seeds):
        dc = DataConfig(name=args.data, seed=seed, validation_fraction=0.2)
        splits = load_dataset(dc)
        ref_val, ref_test = sd.float_bar(sd.float_references(splits, 100))
        line = [f"seed {seed}: float {100 * ref_val:.1f} / {100 * ref_test:.1f}"]
        for name in recipes:
            recipe = replace(TrainConfig(), **RECIPES[name])
            o = sd.run_candidate(model, splits, dc, recipe.epochs, recipe)
            outcomes[name].append(o)
            gaps[name][0].append(100 * (ref_val - o.val_overall))
            gaps[name][1].append(100 * (ref_test - o.test_overall))
            line.append(
                f"{name} {100 * o.val_overall:.1f} / {100 * o.test_overall:.1f} "
                f"({100 * o.local_exit:.0f}% local, {o.bytes_per_device:.1f} B)"
            )
        print("; ".join(line) + "   (validation / test %)", flush=True)
    print(f"== {args.data}: gap to the float reference in points (+: DDNN below), mean over seeds")
    for name in recipes:
        val, test = gaps[name]
        outs = outcomes[name]
        print(
            f"{name:10} validation {statistics.mean(val):+.1f}  test {statistics.mean(test):+.1f} "
            f"(per seed {' '.join(f'{g:+.1f}' for g in test)})  local exits "
            f"{100 * statistics.mean(o.local_exit for o in outs):.1f}%  "
            f"{statistics.mean(o.bytes_per_device for o in outs):.1f} B/device "
            f"(raw {outs[0].raw_bytes:.0f})"
        )


if __name__ == "__main__":
    main()
