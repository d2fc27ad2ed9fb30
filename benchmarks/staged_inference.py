"""Throughput of staged early-exit inference at T = 0.8 vs running every section on every sample.

Trains the default model on synthetic-mvmc, then times both paths on a 2000-sample test split.
The expected staged speed-up follows from the measured cost of the device tier (always run) and
of the cloud (run on the 1 − l samples that do not exit): t_staged ≈ t_devices + (1 − l)·t_cloud.

Run: python benchmarks/staged_inference.py
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of, machine  # noqa: E402

from ddnn.config import RunConfig  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402


def main(threshold: float = 0.8, num_test: int = 2000) -> None:
    config = RunConfig()
    config = replace(config, data=replace(config.data, num_test=num_test))
    splits = load_dataset(config.data)
    torch.manual_seed(0)
    model = DDNN(config.model)
    train(model, splits.train, config.train)
    model.eval()
    x = splits.test.x
    n = len(x)

    def full() -> None:
        with torch.no_grad():
            model(x)

    def staged() -> None:
        model.infer(x, {"local": threshold})

    def devices_only() -> None:
        with torch.no_grad():
            model._run_devices(x)

    local = model.infer(x, {"local": threshold}).exit_fraction("local")
    t_full, t_staged, t_dev = best_of(full), best_of(staged), best_of(devices_only)
    t_cloud = t_full - t_dev
    predicted = t_dev + (1 - local) * t_cloud
    print(f"machine: {machine()}")
    print(f"{n} samples, T = {threshold}: local exit fraction {local:.3f}")
    print(f"every section on every sample: {n / t_full:8.0f} samples/s ({t_full * 1e3:.0f} ms)")
    print(f"staged early exit:             {n / t_staged:8.0f} samples/s ({t_staged * 1e3:.0f} ms)")
    print(
        f"speed-up {t_full / t_staged:.2f}x; predicted from tier costs "
        f"(devices {t_dev * 1e3:.0f} ms + (1 - l) x cloud {t_cloud * 1e3:.0f} ms): {t_full / predicted:.2f}x"
    )


if __name__ == "__main__":
    main()
