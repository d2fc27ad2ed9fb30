"""Loading and preparing all 70 000 Fashion-MNIST samples as 6 devices must take < 10 s.

Run: python benchmarks/fashion_load_speed.py   (needs Debian's dataset-fashion-mnist)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.config import DataConfig  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402


def main() -> None:
    start = time.perf_counter()
    splits = load_dataset(DataConfig(name="fashion-mnist-6"))
    seconds = time.perf_counter() - start
    print(f"machine: {machine()}")
    print(
        f"fashion-mnist-6: {len(splits.train)} train + {len(splits.test)} test samples, "
        f"{splits.train.num_devices} devices of {splits.train.input_shape}, prepared in {seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
