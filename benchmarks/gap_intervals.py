"""How sure the sensor goal's means are: each data set's per-seed gaps to the float model, pooled
over the judged results files, with a 95 % interval for the mean gap.

Issue 15's sensor goal is a mean: the DDNN within 1 point of a float model on all sensors
concatenated. Each seed's gap is measured on a small test split (114 to 359 samples, one sample
0.3 to 0.9 points), so per seed the gap moves by a point or more either way, and a block of ten or
twenty seeds can land on either side of the line. This script reads the "per seed gap" lines that
``benchmarks/sensor_defaults.py --defaults-only`` prints (gaps rounded to 0.1 point there), pools
each data set's seeds over the files given (which must not repeat a seed), and reports the mean
gap, the standard deviation over seeds, Student's t 95 % interval for the mean, and how many
seeds are within 1 point. Nothing is trained; it only reads committed figures.

Run: python benchmarks/gap_intervals.py FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from scipy import stats

GOAL_POINTS = 1.0
# "digits-4           DDNN  96.3%  float  97.0%  gap  +0.7 points ... per seed gap +1.9 -1.1 ...:"
LINE = re.compile(r"^(?P<name>\S+)\s+DDNN .* per seed gap (?P<gaps>[-+0-9. ]+):")
# "digits-4 seed 3 (1150/288/359 train/val/test): logistic ...": the float reference's line
SEED = re.compile(r"^(?P<name>\S+) seed (?P<seed>\d+) \(")


def per_seed_gaps(paths: Sequence[Path]) -> dict[str, list[float]]:
    """Each data set's per-seed gaps (points) from the files' "per seed gap" lines, in order.

    Raises ValueError for a file without such lines, a line whose gaps do not match the file's
    seeds of that data set, or a data set's seed found in two files (it would count twice)."""
    gaps: dict[str, list[float]] = {}
    seen: dict[tuple[str, int], Path] = {}
    for path in paths:
        lines = path.read_text().splitlines()
        seeds: dict[str, list[int]] = {}
        for match in filter(None, map(SEED.match, lines)):
            seeds.setdefault(match["name"], []).append(int(match["seed"]))
        found = 0
        for match in filter(None, map(LINE.match, lines)):
            found += 1
            name, values = match["name"], [float(v) for v in match["gaps"].split()]
            if len(values) != len(seeds.get(name, ())):
                raise ValueError(
                    f"{path}: {name} has {len(values)} per-seed gaps but "
                    f"{len(seeds.get(name, ()))} seed lines"
                )
            for seed in seeds[name]:
                if (name, seed) in seen:
                    raise ValueError(f"{path}: {name} seed {seed} is also in {seen[name, seed]}")
                seen[name, seed] = path
            gaps.setdefault(name, []).extend(values)
        if not found:
            raise ValueError(f"{path}: no 'per seed gap' line (expected sensor_defaults.py output)")
    short = [name for name, values in gaps.items() if len(values) < 2]
    if short:
        raise ValueError(f"{', '.join(short)}: one seed only; an interval needs at least two")
    return gaps


def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student's t interval for the mean of ``values`` (at least two)."""
    mean = statistics.mean(values)
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values)
    half /= len(values) ** 0.5
    return mean - half, mean + half


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="sensor_defaults.py results files")
    args = parser.parse_args(argv)
    try:
        gaps = per_seed_gaps(args.files)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    print(f"command: python benchmarks/gap_intervals.py {' '.join(argv or sys.argv[1:])}")
    print("\n## gap = float model minus DDNN on test, points (negative: the DDNN is ahead)")
    print(
        f"{'data':18} {'seeds':>5} {'mean':>6} {'sd':>5} {'95 % interval':>16} "
        f"{'within 1 point':>14}"
    )
    for name, values in gaps.items():
        low, high = interval(values)
        within = sum(v <= GOAL_POINTS for v in values)
        print(
            f"{name:18} {len(values):5d} {statistics.mean(values):+6.2f} "
            f"{statistics.stdev(values):5.2f} {f'[{low:+.2f}, {high:+.2f}]':>16} "
            f"{f'{within} of {len(values)}':>14}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
