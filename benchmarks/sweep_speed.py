"""Time of a 21-threshold sweep on fashion-mnist-6: the devices run once, or once per threshold.

``threshold_sweep`` (``ddnn evaluate``, the experiments, the fashion benchmark) runs the device
sections once and the exits and upper tiers once per threshold (``infer_all_at``). Before, it
called staged inference afresh at every threshold, devices included. Both ways are timed here on
the same trained model and test images, and their results compared sample by sample.

The model is the fashion benchmark's DDNN trained for one epoch on ``--num-train`` images: the
time of a sweep does not depend on how well the model is trained, only on its shape.

Run: python benchmarks/sweep_speed.py [--num-train N] [--num-test N] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from fashion_benchmark import DDNN_OVERRIDES, THRESHOLDS  # noqa: E402

from ddnn.config import RunConfig, resolve_config  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.eval.batched import infer_all, infer_all_at  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402
from ddnn.workflow import fit_model_to_data  # noqa: E402

RESULTS = Path(__file__).parent / "results_sweep_speed.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--num-train", type=int, default=1_280)
    parser.add_argument("--num-test", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (default 2)")
    args = parser.parse_args()
    if min(args.num_train, args.num_test, args.repeats) < 1:
        parser.error("--num-train, --num-test and --repeats must be >= 1")
    data = replace(
        RunConfig().data, name="fashion-mnist-6", num_train=args.num_train, num_test=args.num_test
    )
    splits = load_dataset(data)
    config = resolve_config(
        overrides=[*DDNN_OVERRIDES, "data.name=fashion-mnist-6", "train.epochs=1"]
    )
    config = fit_model_to_data(config, splits)
    torch.manual_seed(0)
    model = DDNN(config.model)
    train(model, splits.train, replace(config.train, batch_size=128))
    model.eval()
    sets = [{"local": t} for t in THRESHOLDS]
    test = splits.test

    def timed(fn):  # fastest of --repeats
        best, out = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    each, old = timed(lambda: [infer_all(model, test, s) for s in sets])
    once, new = timed(lambda: infer_all_at(model, test, sets))
    same = all(
        torch.equal(a.predictions, b.predictions)
        and torch.equal(a.exit_index, b.exit_index)
        and np.array_equal(a.bytes.device.payload, b.bytes.device.payload)
        and np.array_equal(a.bytes.device.header, b.bytes.device.header)
        for a, b in zip(old, new, strict=True)
    )
    lines = [
        f"machine: {machine()}",
        "command: python benchmarks/sweep_speed.py "
        f"--num-train {args.num_train} --num-test {args.num_test} --repeats {args.repeats}",
        f"model: the fashion benchmark's DDNN (6 devices), {len(THRESHOLDS)} thresholds, "
        f"{len(test)} test images; fastest of {args.repeats}",
        f"devices once per threshold (before): {each:.2f} s",
        f"devices once (infer_all_at):          {once:.2f} s  ({each / once:.1f}x faster)",
        f"predictions, exits and bytes identical at every threshold: {same}",
    ]
    print("\n".join(lines))
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"written to {RESULTS}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
