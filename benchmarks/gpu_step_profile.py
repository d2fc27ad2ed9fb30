"""Where a CUDA training step of the fashion-mnist-6 benchmark DDNN spends its time.

One epoch over ``--num-train`` images (batch 128, the benchmark's DDNN) under ``torch.profiler``:
the operators with the most GPU time, the kernels launched per step, and the step's wall time
against its GPU time. A step whose wall time is far above its GPU time is bound by the host
(Python and kernel launches), not by the GPU.

Run (on a machine with a CUDA GPU): python benchmarks/gpu_step_profile.py [--num-train N]
    [--precision 32|bf16|16]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from fashion_benchmark import DDNN_OVERRIDES  # noqa: E402

from ddnn.config import RunConfig, resolve_config  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.trainer import train  # noqa: E402
from ddnn.workflow import fit_model_to_data  # noqa: E402

BATCH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--num-train", type=int, default=6_400, help="images (default 6400)")
    parser.add_argument("--precision", default="32", help="32, bf16 or 16 (default 32)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: this profile is of the CUDA path")
    data = replace(RunConfig().data, name="fashion-mnist-6", num_train=args.num_train, num_test=1)
    splits = load_dataset(data)
    config = resolve_config(
        overrides=[
            *DDNN_OVERRIDES,
            "data.name=fashion-mnist-6",
            "train.epochs=1",
            f"train.batch_size={BATCH}",
            "train.accelerator=cuda",
            f"train.precision={args.precision}",
        ]
    )
    config = fit_model_to_data(config, splits)
    print(f"machine: {machine()}; GPU: {torch.cuda.get_device_name()}")
    torch.manual_seed(0)
    train(DDNN(config.model), splits.train, config.train)  # warm-up: cuDNN plans, allocator
    steps = len(splits.train) // BATCH + (len(splits.train) % BATCH > 0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train(DDNN(config.model), splits.train, config.train)
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernels = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
    # kernels only: a user annotation (``Optimizer.step#Adam.step``) spans kernels counted already
    gpu_us = sum(
        e.self_device_time_total
        for e in events
        if "#" not in e.key and not getattr(e, "is_user_annotation", False)
    )
    print(
        f"precision {args.precision}: {steps} steps in {wall:.2f} s under the profiler "
        f"({1e3 * wall / steps:.2f} ms per step, BatchNorm recalibration included); "
        f"GPU busy {gpu_us / 1e3 / steps:.2f} ms per step; {kernels / steps:.0f} kernel "
        "launches per step"
    )
    print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=50))


if __name__ == "__main__":
    main()
