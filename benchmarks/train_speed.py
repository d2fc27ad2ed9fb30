"""Training time of the paper recipe (100 epochs, 680 samples, full batch) and of our default recipe.

Run: python benchmarks/train_speed.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.config import RunConfig  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.eval.evaluate import best_row, threshold_sweep  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402


def main() -> None:
    config = RunConfig()
    t0 = time.perf_counter()
    splits = load_dataset(config.data)
    print(f"machine: {machine()}")
    print(
        f"data: synthetic-mvmc {len(splits.train)} train / {len(splits.test)} test, generated in {time.perf_counter() - t0:.1f} s"
    )
    recipes = {
        "paper (full batch, 100 epochs, no device dropout)": replace(
            config.train, batch_size=0, device_dropout=0.0
        ),
        f"default (batch {config.train.batch_size}, {config.train.epochs} epochs)": config.train,
    }
    for name, recipe in recipes.items():
        torch.manual_seed(recipe.seed)
        model = DDNN(config.model)
        cpu = time.process_time()
        history = train(model, splits.train, recipe)
        cpu = time.process_time() - cpu  # every thread of the process
        best = best_row(threshold_sweep(model, splits.test))
        print(
            f"{name}: {history.seconds:.1f} s training ({cpu:.1f} s CPU); "
            f"best overall {100 * best.overall_accuracy:.1f}% "
            f"at T={best.threshold} ({100 * best.local_exit_fraction:.1f}% local exits), "
            f"local {100 * (best.local_accuracy or 0):.1f}%, cloud {100 * (best.cloud_accuracy or 0):.1f}%"
        )


if __name__ == "__main__":
    main()
