"""Command-line flags of `ddnn experiment` and `ddnn reproduce` (light: no torch import)."""

from __future__ import annotations

import argparse


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``experiment`` and ``reproduce``."""
    p.add_argument("--data", default=None, help="data set name (default synthetic-mvmc)")
    p.add_argument("--data-path", default=None, help="file or folder for data sets read from disk")
    p.add_argument("--cameras", default=None, help="keep only these devices, e.g. 0,1,2")
    p.add_argument(
        "--seeds", type=int, default=None, help="number of seeds 0..N-1 (default 5; 1 with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="1 seed and fewer epochs")
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per model (overrides the suite's)"
    )
    p.add_argument("--jobs", type=int, default=0, help="parallel trainings (default: CPU count)")
    p.add_argument("--out", default=None, help="report folder (default reports/DATA[-quick])")
    p.add_argument(
        "--accelerator", default=None, help="cpu, cuda or auto; default: train.accelerator"
    )
    p.add_argument("--config", default=None, help="YAML base config")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the base config")
