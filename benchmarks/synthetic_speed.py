"""Generation speed of synthetic-mvmc: 10 000 samples (60 000 camera views) must take < 30 s.

Run: python benchmarks/synthetic_speed.py [num_samples]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.data.synthetic import generate_synthetic_mvmc  # noqa: E402


def main(num_samples: int = 10_000) -> None:
    start = time.perf_counter()
    x, views, _ = generate_synthetic_mvmc(num_samples, seed=0)
    seconds = time.perf_counter() - start
    print(f"machine: {machine()}")
    print(
        f"{num_samples} samples ({x.shape[1]} cameras, {int((views != 3).sum())} visible views) "
        f"in {seconds:.1f} s = {num_samples / seconds:.0f} samples/s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
