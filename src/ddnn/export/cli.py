"""``ddnn export c``: the command-line front end of the C exporter."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_export_parser(subparsers: Any) -> None:
    """Adds ``export`` (with the sub-subcommand ``c``) to the ``ddnn`` subcommand parsers."""
    export = subparsers.add_parser("export", help="export trained sections for other targets")
    targets = export.add_subparsers(dest="target", required=True, metavar="TARGET")
    p = targets.add_parser(
        "c",
        help="device sections as dependency-free C99 for microcontrollers",
        description=(
            "Write each device section as a C99 header and source (no dependencies beyond the "
            "C standard library, no dynamic allocation, integer-only binary layers), "
            "bit-exact with the PyTorch section, with its memory footprint in a comment."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory made by `ddnn train`")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", type=int, metavar="K", help="export device K")
    which.add_argument("--all-devices", action="store_true", help="export every device")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the C files into")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    p.set_defaults(func=cmd_export_c)


def cmd_export_c(args: argparse.Namespace) -> int:
    """Runs ``ddnn export c``; user errors raise ``ValueError`` (exit status 2 in ``ddnn``)."""
    from ddnn.export.exporter import export_c  # torch is imported only when exporting

    devices = None if args.all_devices else [args.device]
    results = export_c(args.run_dir, devices, args.out, force=args.force)
    print(f"{'device':<8}{'files':<40}{'const B':>9}{'RAM B':>8}{'wire B':>8}{'ties':>6}")
    for source, folded in results:
        fp = source.footprint
        files = f"{source.name}.c, {source.name}.h"
        print(
            f"{source.name.rsplit('_', 1)[-1]:<8}{files:<40}{fp.const_bytes:>9}"
            f"{fp.ram_bytes:>8}{fp.feature_bytes + fp.score_bytes:>8}{len(folded.ties):>6}"
        )
    print(f"wrote {2 * len(results)} files to {args.out}")
    if any(folded.ties for _, folded in results):
        print(
            "note: 'ties' are pooled sums at which PyTorch's own float32 decision depends on its "
            "rounding; they are listed in each file's header comment",
            file=sys.stderr,
        )
    return 0
