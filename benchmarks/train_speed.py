"""Training time of the paper recipe (100 epochs, 680 samples, full batch) and of our default recipe.

Both train on synthetic-mvmc's whole training split (680 samples), as the speed goals are stated.
The accuracy line is a check that speed did not cost accuracy: the test split at the paper's fixed
T = 0.8, so nothing is chosen on it. This machine's speed varies with other work on its host, so
each recipe runs ``--repeats`` times; the fastest run is the figure, the spread is shown beside it.

Run: python benchmarks/train_speed.py [--epochs E] [--repeats R] [--accelerator A] [--precision P]
(``--accelerator cuda`` times the GPU path; it is not a goal of the 2-core machine.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.config import RunConfig  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.eval.evaluate import threshold_sweep  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402

PAPER_THRESHOLD = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="both recipes (default: 100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per recipe (default: 3)")
    parser.add_argument("--accelerator", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--precision", default="32", help="32, bf16 or 16 (default: 32)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    config = RunConfig()
    config = replace(
        config,
        train=replace(config.train, accelerator=args.accelerator, precision=args.precision),
    )
    t0 = time.perf_counter()
    splits = load_dataset(config.data)
    print(f"machine: {machine()}")
    if args.accelerator != "cpu" or args.precision != "32":
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none visible"
        print(f"accelerator: {args.accelerator}, precision {args.precision} (GPU: {gpu})")
    print(
        f"data: synthetic-mvmc {len(splits.train)} train / {len(splits.test)} test, "
        f"generated in {time.perf_counter() - t0:.1f} s"
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
        walls, cpus = [], []
        for _ in range(args.repeats):
            torch.manual_seed(recipe.seed)
            model = DDNN(config.model)
            cpu = time.process_time()
            history = train(model, splits.train, recipe)
            cpus.append(time.process_time() - cpu)  # every thread of the process
            walls.append(history.seconds)
        (row,) = threshold_sweep(model, splits.test, [PAPER_THRESHOLD])
        print(
            f"{name}: {min(walls):.1f} s training (fastest of {args.repeats}; median "
            f"{statistics.median(walls):.1f} s, all {', '.join(f'{w:.1f}' for w in walls)}; "
            f"{min(cpus):.1f} s CPU); test at T={PAPER_THRESHOLD}: overall "
            f"{100 * row.overall_accuracy:.1f}% ({100 * row.local_exit_fraction:.1f}% local exits), "
            f"local {100 * (row.local_accuracy or 0):.1f}%, cloud {100 * (row.cloud_accuracy or 0):.1f}%"
        )


if __name__ == "__main__":
    main()
