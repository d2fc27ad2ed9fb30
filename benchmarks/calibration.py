"""Calibration of a multi-device data set against the default model (docs/data.md, "Built-in data: synthetic-mvmc").

Every model trains on the training split less a seeded validation split (20 % unless told, as
`ddnn reproduce` holds out). T is chosen on that validation split, never on the test split:
the threshold with the best overall validation accuracy. Measures, on the test split:
  * individual accuracy: a model trained on one camera alone (configuration b), for every camera,
    on all test samples and on the samples that camera sees;
  * the default 6-device model: local, cloud, and overall accuracy at the chosen T with its
    local-exit %; the thresholds with >= 50 % local exits and overall >= cloud on validation;
  * the overall accuracy at the same T with each single device absent (presence mask).

Run: python benchmarks/calibration.py [--num-test 171] [--seeds 0,1,2] [key=value overrides]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import best_on_validation, machine  # noqa: E402

from ddnn.config import resolve_config  # noqa: E402
from ddnn.data.dataset import ABSENT, DataSplits  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.eval.evaluate import DEFAULT_THRESHOLDS, threshold_sweep  # noqa: E402
from ddnn.experiments.suite import VALIDATION_FRACTION  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402
from ddnn.workflow import fit_model_to_data  # noqa: E402

SWEEP = tuple(sorted({*DEFAULT_THRESHOLDS, 0.2, 0.4, 0.75, 0.85, 0.95}))


def individual_accuracy(config, splits: DataSplits, camera: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    one = DataSplits(splits.train.select_devices([camera]), splits.test.select_devices([camera]))
    cfg = fit_model_to_data(replace(config, model=replace(config.model, num_devices=1)), one)
    torch.manual_seed(cfg.train.seed)
    model = DDNN(cfg.model)
    train(model, one.train, cfg.train)
    with torch.no_grad():
        pred = model(one.test.x).cloud_logits.argmax(dim=1)
    correct = pred == one.test.labels
    seen = one.test.view_labels[:, 0] != ABSENT
    return float(correct.float().mean()), float(correct[seen].float().mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-test", type=int, default=171)
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=VALIDATION_FRACTION,
        help="share of the training split held out to choose T",
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--skip-individual", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        config = resolve_config(
            overrides=[
                *args.overrides,
                f"data.num_test={args.num_test}",
                f"data.validation_fraction={args.validation_fraction}",
                f"data.seed={seed}",
                f"train.seed={seed}",
            ]
        )
        t0 = time.perf_counter()
        splits = load_dataset(config.data)
        config = fit_model_to_data(config, splits)
        seen = (splits.test.view_labels != ABSENT).float().mean(dim=0)
        assert splits.validation is not None, "--validation-fraction must be > 0"
        print(
            f"\nseed {seed}: {config.data.name} {len(splits.train)}/{len(splits.validation)}/"
            f"{len(splits.test)} train/validation/test, data {time.perf_counter() - t0:.1f} s"
        )
        print("  camera sees object: " + " ".join(f"{100 * float(s):.0f}%" for s in seen))
        if not args.skip_individual:
            ind = [individual_accuracy(config, splits, k) for k in range(splits.train.num_devices)]
            print("  individual (all samples):  " + " ".join(f"{100 * a:.1f}" for a, _ in ind))
            print("  individual (seen samples): " + " ".join(f"{100 * s:.1f}" for _, s in ind))
        torch.manual_seed(config.train.seed)
        model = DDNN(config.model)
        history = train(model, splits.train, config.train)
        val, best = best_on_validation(model, splits, SWEEP)
        cloud = best.cloud_accuracy or 0.0
        val_rows = threshold_sweep(model, splits.validation, SWEEP)
        val_cloud = val_rows[0].cloud_accuracy or 0.0
        half = [
            t.threshold
            for t in val_rows
            if t.local_exit_fraction >= 0.5 and t.overall_accuracy >= val_cloud
        ]
        test_rows = {r.threshold: r for r in threshold_sweep(model, splits.test, half)}
        print(
            f"  6 devices ({history.seconds:.0f} s): local {100 * (best.local_accuracy or 0):.1f}, cloud {100 * cloud:.1f}, "
            f"overall {100 * best.overall_accuracy:.1f} at T={best.threshold} ({100 * best.local_exit_fraction:.1f}% local; "
            f"T chosen on validation: overall {100 * val.overall_accuracy:.1f})"
        )
        print(
            "  T with >=50% local exits and overall >= cloud on validation (test overall, local): "
            + (
                ", ".join(
                    f"T={t} ({100 * test_rows[t].overall_accuracy:.1f}%, {100 * test_rows[t].local_exit_fraction:.0f}% local)"
                    for t in half
                )
                or "none"
            )
        )
        drops = []
        for k in range(splits.test.num_devices):
            (b,) = threshold_sweep(model, splits.test, [best.threshold], missing=[k])
            drops.append(best.overall_accuracy - b.overall_accuracy)
            print(
                f"  device {k} absent: overall {100 * b.overall_accuracy:.1f} at T={best.threshold} (drop {100 * drops[-1]:+.1f})"
            )
        print(
            f"  largest drop with one device absent: {100 * max(drops):.1f} points (mean {100 * statistics.mean(drops):.1f})"
        )


if __name__ == "__main__":
    main()
