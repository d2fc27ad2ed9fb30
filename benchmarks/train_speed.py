"""Training time of the paper recipe (100 epochs, full batch) and of our default recipe.

Both train on synthetic-mvmc's training split less a seeded 20 % validation split (as
`ddnn reproduce` holds out); T is the threshold with the best overall accuracy on that validation
split, and the accuracies are the test split's at that T.

Run: python benchmarks/train_speed.py [--epochs E]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import best_on_validation, machine  # noqa: E402

from ddnn.config import RunConfig  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.eval.evaluate import DEFAULT_THRESHOLDS  # noqa: E402
from ddnn.experiments.suite import VALIDATION_FRACTION  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="both recipes (default: 100)")
    args = parser.parse_args()
    config = RunConfig()
    config = replace(config, data=replace(config.data, validation_fraction=VALIDATION_FRACTION))
    t0 = time.perf_counter()
    splits = load_dataset(config.data)
    assert splits.validation is not None
    print(f"machine: {machine()}")
    print(
        f"data: synthetic-mvmc {len(splits.train)} train / {len(splits.validation)} validation "
        f"(chooses T) / {len(splits.test)} test, generated in {time.perf_counter() - t0:.1f} s"
    )
    recipes = {
        "paper (full batch, 100 epochs, no device dropout)": replace(
            config.train, batch_size=0, device_dropout=0.0
        ),
        f"default (batch {config.train.batch_size}, {config.train.epochs} epochs)": config.train,
    }
    for name, recipe in recipes.items():
        if args.epochs is not None:
            recipe = replace(recipe, epochs=args.epochs)
            name += f" [--epochs {args.epochs}]"
        torch.manual_seed(recipe.seed)
        model = DDNN(config.model)
        cpu = time.process_time()
        history = train(model, splits.train, recipe)
        cpu = time.process_time() - cpu  # every thread of the process
        val, test = best_on_validation(model, splits, DEFAULT_THRESHOLDS)
        print(
            f"{name}: {history.seconds:.1f} s training ({cpu:.1f} s CPU); "
            f"T={val.threshold} (best validation overall {100 * val.overall_accuracy:.1f}%); "
            f"test at that T: overall {100 * test.overall_accuracy:.1f}% "
            f"({100 * test.local_exit_fraction:.1f}% local exits), "
            f"local {100 * (test.local_accuracy or 0):.1f}%, cloud {100 * (test.cloud_accuracy or 0):.1f}%"
        )


if __name__ == "__main__":
    main()
