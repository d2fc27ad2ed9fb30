"""The ``ddnn`` command line: thin subcommands over library calls; user errors exit with status 2."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

# Heavy modules (torch) are imported inside the commands, so that `ddnn serve device --engine c`
# runs without torch, as a microcontroller-class device would.
from ddnn.config import CALIBRATION_SPLITS, DEFAULT_THRESHOLDS, RunConfig, resolve_config

log = logging.getLogger("ddnn")


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def parse_float_list(text: str, what: str) -> list[float]:
    """``"0.1,0.5"`` -> [0.1, 0.5], each in [0, 1]."""
    values = []
    for item in text.split(","):
        try:
            v = float(item)
        except ValueError:
            raise UsageError(
                f"{what}: {item!r} is not a number; give comma-separated values in [0, 1]"
            ) from None
        if not 0.0 <= v <= 1.0 or math.isnan(v):
            raise UsageError(f"{what}: {v} is outside [0, 1]")
        values.append(v)
    return values


def parse_int_list(text: str, what: str) -> list[int]:
    """``"0,3"`` -> [0, 3]."""
    if not text.strip():
        return []
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a comma-separated list of integers") from None


def _progress_bar(total: int, desc: str, initial: int = 0):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="epoch", disable=None, file=sys.stderr, initial=initial)

    def update(epoch: int, losses: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{losses.get('total', float('nan')):.3f}")
        if epoch == total:
            bar.close()

    return update


ACCELERATOR_HELP = "cpu, cuda or auto (CUDA when a GPU is visible); default: train.accelerator"


def _train_config(args: argparse.Namespace) -> RunConfig:
    extra: dict[str, dict[str, object]] = {"data": {}, "train": {}}
    if args.data is not None:
        extra["data"]["name"] = args.data
    if getattr(args, "data_path", None):
        extra["data"]["path"] = args.data_path
    if getattr(args, "cameras", None):
        extra["data"]["devices"] = parse_int_list(args.cameras, "--cameras")
    if args.epochs is not None:
        extra["train"]["epochs"] = args.epochs
    if args.seed is not None:
        extra["train"]["seed"] = args.seed
        extra["data"]["seed"] = args.seed
    if getattr(args, "accelerator", None) is not None:
        extra["train"]["accelerator"] = args.accelerator
    return resolve_config(yaml_path=args.config, overrides=args.overrides, extra=extra)


def cmd_train(args: argparse.Namespace) -> int:
    from ddnn.train.accelerator import resolve_placement
    from ddnn.train.distributed import world_from_env
    from ddnn.train.resume import TrainingInterrupted, peek_progress
    from ddnn.workflow import resume_run, train_run

    world = world_from_env()
    if not world.is_main:  # rank 0 alone logs; the others speak only for errors
        logging.getLogger().setLevel(logging.ERROR)
    try:
        if args.resume is not None:
            fixed = [
                flag
                for flag, value in (
                    ("--data", args.data),
                    ("--data-path", args.data_path),
                    ("--cameras", args.cameras),
                    ("--epochs", args.epochs),
                    ("--seed", args.seed),
                    ("--config", args.config),
                )
                if value is not None
            ]
            if fixed or args.overrides:
                raise UsageError(
                    "--resume continues a run with the config it was started with; drop "
                    f"{', '.join(fixed + args.overrides)} (only --accelerator may change)"
                )
            if args.out is not None and Path(args.out) != Path(args.resume):
                raise UsageError("--resume RUN_DIR trains into RUN_DIR; drop --out")
            done, total = peek_progress(args.resume)
            bar = _progress_bar(total, "train", done) if world.is_main else None
            _, config, history, _ = resume_run(args.resume, bar, world, args.accelerator)
            out = args.resume
        else:
            if args.out is None:
                raise UsageError("give --out RUN_DIR (a new run) or --resume RUN_DIR")
            config = _train_config(args)
            bar = _progress_bar(config.train.epochs, "train") if world.is_main else None
            _, config, history, _ = train_run(config, args.out, bar, world=world)
            out = args.out
    except TrainingInterrupted as stopped:
        if world.is_main:
            print(f"ddnn: {stopped}", file=sys.stderr)
        return 130
    if world.is_main:
        placement = resolve_placement(config.train.accelerator, config.train.precision)
        where = f" on {placement.describe()}"
        if world.distributed:  # each process has its own GPU (or shares the CPU)
            where = f" on {world.size} processes ({placement.describe()} in process 0)"
        print(
            f"trained {config.train.epochs} epochs in {history.seconds:.1f} s{where}; "
            f"run saved to {out}"
        )
    return 0


def _print_rows(rows, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    from ddnn.report import headline, threshold_table

    if as_json:
        print(json.dumps({"rows": [r.as_dict() for r in rows]}, indent=2))
    else:
        print(threshold_table(rows))
        print()
        print(headline(rows))  # nothing is picked on the test split


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ddnn.report import calibrated_headline, threshold_table
    from ddnn.workflow import evaluate_calibrated_run, evaluate_run

    missing = parse_int_list(args.missing, "--missing")
    if args.calibrated:
        if args.thresholds is not None:
            raise UsageError("--calibrated uses the stored thresholds; drop --thresholds")
        rows, calibration, _ = evaluate_calibrated_run(args.run_dir, missing)
        if args.json:
            doc = {"rows": [r.as_dict() for r in rows], "calibration": calibration.as_dict()}
            print(json.dumps(doc, indent=2))
        else:
            print(threshold_table(rows))
            print()
            print(calibrated_headline(rows[0], calibration))
        return 0
    text = args.thresholds or ",".join(str(t) for t in DEFAULT_THRESHOLDS)
    rows, _ = evaluate_run(args.run_dir, parse_float_list(text, "--thresholds"), missing)
    _print_rows(rows, args.json)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ddnn.eval.calibrate import CALIBRATION_FILE, CalibrationTarget
    from ddnn.report import calibration_summary, frontier_table
    from ddnn.workflow import calibrate_run

    target = CalibrationTarget(
        max_accuracy_drop=args.max_drop,
        max_bytes=args.max_bytes,
        confidence_level=args.confidence_level,
    )
    calibration = calibrate_run(args.run_dir, target, args.split)
    if not calibration.matches_grid:
        log.warning("staged inference differs from the grid's prediction; see calibration.json")
    if args.json:
        print(json.dumps(calibration.as_dict(), indent=2))
        return 0
    print(calibration_summary(calibration))
    print(f"\nPareto frontier, bytes per device vs overall accuracy ({calibration.split} split):")
    print(frontier_table(calibration.frontier, calibration.measured))
    print(f"\nsaved to {args.run_dir}/{CALIBRATION_FILE}; use `ddnn evaluate --calibrated`")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ddnn.eval.evaluate import threshold_sweep
    from ddnn.workflow import train_run

    start = time.perf_counter()
    config = resolve_config(overrides=args.overrides)
    out = args.out or tempfile.mkdtemp(prefix="ddnn-demo-")
    print(
        f"ddnn demo: {config.data.name}, "
        f"{config.model.num_devices} devices, device ConvP({','.join(map(str, config.model.device.filters))}), "
        f"{config.model.local_aggregation.upper()}-{config.model.cloud.aggregation.upper()}"
    )
    model, config, history, splits = train_run(
        config, out, _progress_bar(config.train.epochs, "train")
    )
    rows = threshold_sweep(model, splits.test, DEFAULT_THRESHOLDS, config.eval.edge_threshold)
    print(
        f"{len(splits.train)} train / {len(splits.test)} test samples; trained in "
        f"{history.seconds:.1f} s; run directory: {out}\n"
    )
    _print_rows(rows, as_json=False)
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from ddnn.eval.profile import profile_model
    from ddnn.report import profile_table
    from ddnn.train.checkpoint import load_run

    model, _, _ = load_run(args.run_dir)
    rows = profile_model(model)
    if args.json:
        print(json.dumps({"sections": [r.__dict__ for r in rows]}, indent=2))
    else:
        print(profile_table(rows))
    return 0


def _suite_config(args: argparse.Namespace) -> RunConfig:
    extra: dict[str, dict[str, object]] = {"data": {}}
    if args.data is not None:
        extra["data"]["name"] = args.data
    if args.data_path:
        extra["data"]["path"] = args.data_path
    if args.cameras:
        extra["data"]["devices"] = parse_int_list(args.cameras, "--cameras")
    if args.accelerator is not None:
        extra["train"] = {"accelerator": args.accelerator}
    config = resolve_config(yaml_path=args.config, overrides=args.overrides, extra=extra)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
        config = resolve_config(base=config, overrides=[f"train.epochs={args.epochs}"])
    return config


def cmd_experiment(args: argparse.Namespace) -> int:
    from ddnn.experiments.commands import experiment_names, run_from_args

    return run_from_args(experiment_names(args.name), args, _suite_config(args))


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ddnn.experiments.commands import run_from_args
    from ddnn.experiments.registry import list_experiments

    return run_from_args(list_experiments(), args, _suite_config(args))


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line (``ddnn: error: …``, status 2) that points to ``--help``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddnn", description="Distributed deep neural networks with early exits.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a DDNN and save a run directory")
    p.add_argument("--data", default=None, help="data set name (default synthetic-mvmc)")
    p.add_argument("--data-path", default=None, help="file or folder for data sets read from disk")
    p.add_argument("--cameras", default=None, help="comma-separated device subset, e.g. 0,1,2")
    p.add_argument("--out", default=None, help="run directory to write")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last saved epoch (train.save_every, Ctrl-C)",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--accelerator", default=None, help=ACCELERATOR_HELP)
    p.add_argument("--config", default=None, help="YAML file overriding the defaults")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. model.device.filters=[8]"
    )
    p.set_defaults(func=cmd_train)

    from ddnn.experiments.arguments import add_suite_arguments

    p = sub.add_parser(
        "experiment", help="run one registered experiment over seeds into a report folder"
    )
    p.add_argument(
        "name", help="aggregation, threshold, scaling, missing, filters, memory, edge, calibrate"
    )
    add_suite_arguments(p)
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser(
        "reproduce", help="run every experiment and write the report (CSV, JSON, PNG, REPORT.md)"
    )
    add_suite_arguments(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("evaluate", help="threshold table of a trained run on its test split")
    p.add_argument("run_dir")
    p.add_argument(
        "--thresholds",
        default=None,
        help=f"local-exit thresholds (default {','.join(str(t) for t in DEFAULT_THRESHOLDS)})",
    )
    p.add_argument(
        "--calibrated",
        action="store_true",
        help="evaluate at the thresholds `ddnn calibrate` stored in the run directory",
    )
    p.add_argument(
        "--missing", default="", help="comma-separated device indices absent at test time"
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "calibrate", help="choose exit thresholds for an accuracy or a communication target"
    )
    p.add_argument("run_dir")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--max-drop",
        type=float,
        default=None,
        metavar="X",
        help="most local exits with overall accuracy at most X points below cloud-only",
    )
    goal.add_argument(
        "--max-bytes",
        type=float,
        default=None,
        metavar="B",
        help="best overall accuracy within B bytes per device per sample",
    )
    p.add_argument(
        "--confidence-level",
        type=float,
        default=None,
        metavar="P",
        help="with --max-drop: keep the drop within X points with confidence P (e.g. 0.95) on "
        "new data, not only on the calibration split, at the cost of some local exits",
    )
    p.add_argument(
        "--split",
        choices=CALIBRATION_SPLITS,
        default="validation",
        help="data to calibrate on (train is optimistic; default validation)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "demo", help="generate the default data, train the paper's model, print the table"
    )
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "profile", help="parameters, device memory, bytes sent and multiply-adds per section"
    )
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)

    from ddnn.runtime.commands import add_runtime_parsers
    from ddnn.runtime.gateway import add_gateway_parser
    from ddnn.runtime.samples import add_samples_parser
    from ddnn.runtime.watch import add_watch_parser

    add_runtime_parsers(sub)
    add_samples_parser(sub)
    add_watch_parser(sub)
    add_gateway_parser(sub)

    from ddnn.export.cli import add_export_parser

    add_export_parser(sub)
    from ddnn.search.command import add_search_parser

    add_search_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        # key=value overrides may follow a positional (``ddnn experiment NAME --quick k=v``),
        # which argparse does not hand to the trailing positional list on its own.
        stray = [a for a in unknown if a.startswith("-") or "=" not in a]
        if stray or (unknown and not hasattr(args, "overrides")):
            parser.error(f"unrecognized arguments: {' '.join(stray or unknown)}")
        if unknown:
            args.overrides = [*args.overrides, *unknown]
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return int(args.func(args))
    except (UsageError, ValueError, KeyError) as exc:
        message = str(exc.args[0] if exc.args else exc)
        # One line whatever the message (a YAML or library error may span several).
        print(f"ddnn: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
