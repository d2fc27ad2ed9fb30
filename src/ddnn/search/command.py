"""`ddnn search`: its argument parser and command; every input is checked before any training.

Kept free of heavy imports at module level: `ddnn --help` and torch-less commands build this parser.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddnn.config import RunConfig, resolve_config

if TYPE_CHECKING:  # imported when the command runs, not when the parser is built
    import optuna

    from ddnn.data.dataset import DataSplits
    from ddnn.search.study import SearchSpec

DEFAULT_EPOCHS = 10
DEFAULT_VALIDATION_FRACTION = 0.2


def add_search_parser(sub: Any) -> None:
    """Register ``ddnn search`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "search",
        help="multi-objective search of the hierarchy (accuracy, bytes per device, device memory)",
    )
    p.add_argument("--data", required=True, help="data set name, e.g. synthetic-mvmc")
    p.add_argument("--data-path", default=None, help="file or folder for data sets read from disk")
    p.add_argument("--trials", type=int, required=True, help="trials this command runs")
    p.add_argument("--jobs", type=int, default=1, help="trials in parallel (worker processes)")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by workers, e.g. sqlite:///s.db (default OUT/study.db)",
    )
    p.add_argument("--study", default=None, help="study name (default ddnn-DATA-Ndev)")
    p.add_argument(
        "--epochs", type=int, default=None, help=f"epochs per trial (default {DEFAULT_EPOCHS})"
    )
    p.add_argument(
        "--max-bytes",
        type=float,
        default=None,
        metavar="B",
        help="feasible only within B bytes per device per sample (also the calibration target)",
    )
    p.add_argument(
        "--max-device-memory",
        type=float,
        default=None,
        metavar="M",
        help="feasible only if the largest device section fits in M bytes",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        metavar="X",
        help="without --max-bytes: calibrate to the most local exits within X accuracy points of "
        "cloud-only (default 1)",
    )
    p.add_argument(
        "--confidence-level",
        type=float,
        default=None,
        metavar="P",
        help="with the --max-drop calibration: keep the drop within X points with confidence P "
        "(e.g. 0.95) on new data, as `ddnn calibrate --confidence-level` does",
    )
    p.add_argument("--out", required=True, help="folder for trial runs and pareto.json/.csv/.png")
    p.add_argument("--json", action="store_true", help="print the Pareto rows as JSON on stdout")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (give each machine its own)")
    p.add_argument(
        "--accelerator", default=None, help="cpu, cuda or auto; default: train.accelerator"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides fixed for every trial")
    p.set_defaults(func=cmd_search)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    for flag, value in (
        ("--max-bytes", args.max_bytes),
        ("--max-device-memory", args.max_device_memory),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a number of bytes > 0, got {value:g}")
    if not (math.isfinite(args.max_drop) and args.max_drop >= 0):
        raise ValueError(f"--max-drop must be accuracy points >= 0, got {args.max_drop:g}")
    if args.confidence_level is not None:
        from ddnn.eval.calibrate import CalibrationTarget

        try:
            CalibrationTarget(
                max_accuracy_drop=args.max_drop, confidence_level=args.confidence_level
            )
        except ValueError as exc:
            raise ValueError(f"--confidence-level: {exc}") from None


def _scalar(text: str) -> str:
    """``text`` as an override value: bare when YAML reads it back as the same string."""
    import yaml

    try:
        plain = yaml.safe_load(text) == text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


def base_overrides(args: argparse.Namespace) -> list[str]:
    """What every trial starts from: the data set, epochs, a validation split, the user's keys."""
    from ddnn.search.space import override_keys

    user = list(args.overrides)
    keys = override_keys(user)
    out = [f"data.name={_scalar(args.data)}"]
    if args.data_path:
        out.append(f"data.path={_scalar(args.data_path)}")
    if args.epochs is not None or "train.epochs" not in keys:
        out.append(f"train.epochs={args.epochs or DEFAULT_EPOCHS}")
    if args.accelerator is not None:
        out.append(f"train.accelerator={_scalar(args.accelerator)}")
    if "data.validation_fraction" not in keys:
        out.append(f"data.validation_fraction={DEFAULT_VALIDATION_FRACTION}")
    return [*out, *user]  # the user's keys come last and win, as in `ddnn train`


def _check_max_bytes(args: argparse.Namespace, config: RunConfig, num_classes: int) -> None:
    """A byte limit below what any trial can send (|C| scores, 1 byte each at int8) is impossible."""
    from ddnn.search.space import override_keys
    from ddnn.wire import score_payload_bytes

    fixed = "model.wire.scores" in override_keys(args.overrides)
    encoding = config.model.wire.scores if fixed else "int8"
    smallest = score_payload_bytes(num_classes, encoding)
    if args.max_bytes is not None and args.max_bytes < smallest:
        raise ValueError(
            f"--max-bytes {args.max_bytes:g} is below the smallest possible {smallest} bytes per "
            f"device per sample: every device always sends its {num_classes} class scores "
            f"({encoding}, {smallest // num_classes} byte(s) each)"
        )


def _print_table(rows: list[dict[str, Any]], out: Path) -> None:
    def num(v: float | None, scale: float = 1.0) -> str:
        return "-" if v is None else f"{scale * v:.1f}"

    print(f"Pareto frontier: {len(rows)} trial(s), chosen on validation, then run on test")
    head = (
        "trial",
        "val acc %",
        "val B/dev",
        "test acc %",
        "test B/dev",
        "test local %",
        "dev mem B",
    )
    print("  ".join(f"{h:>{len(h)}}" for h in head) + "  run")
    for r in rows:
        cells = (
            str(r["trial"]),
            num(r["validation_accuracy"], 100),
            num(r["validation_bytes_per_device"]),
            num(r["accuracy"], 100),
            num(r["bytes_per_device"]),
            num(r["local_exit_fraction"], 100),
            str(r["device_memory_bytes"]),
        )
        print(
            "  ".join(f"{c:>{len(h)}}" for c, h in zip(cells, head, strict=True))
            + f"  {r['run_dir']}"
        )
    print(f"\nwrote {out / 'pareto.json'}, pareto.csv and pareto.png")


def prepare(args: argparse.Namespace) -> tuple[SearchSpec, DataSplits, optuna.Study]:
    """Check every input, load the data and open (or join) the study; nothing is trained yet."""
    _check_numbers(args)
    from ddnn.data.registry import list_datasets, load_dataset

    if args.data not in list_datasets():
        raise ValueError(f"unknown data set {args.data!r}; accepted: {', '.join(list_datasets())}")
    overrides = base_overrides(args)
    config = resolve_config(overrides=overrides)
    from ddnn.train.trainer import validate_train_config

    validate_train_config(config.train)  # e.g. --accelerator cuda without a GPU, before any trial
    if not config.model.device.filters:
        raise ValueError(
            "model.device.filters=[] (raw offloading) has no local exit to calibrate; "
            "leave model.device.filters to the search or give at least one layer"
        )
    splits = load_dataset(config.data)
    if splits.validation is None or len(splits.validation) == 0:
        raise ValueError("the validation split is empty; raise data.validation_fraction")
    train = splits.train
    _check_max_bytes(args, config, train.num_classes)

    from ddnn.search.objective import Limits
    from ddnn.search.space import SearchSpace, override_keys
    from ddnn.search.study import STORAGE_FILE, SearchSpec, create_study, open_storage, sqlite_url

    out = Path(args.out)
    url = args.storage or sqlite_url(out / STORAGE_FILE)
    if not args.storage:
        out.mkdir(parents=True, exist_ok=True)  # the default storage lives in --out
    storage = open_storage(url)  # an unreachable database is an error before any training
    spec = SearchSpec(
        storage=url,
        study_name=args.study or f"ddnn-{args.data}-{train.num_devices}dev",
        seed=args.seed,
        space=SearchSpace(
            num_devices=train.num_devices,
            mixed_shapes=len(set(train.shapes)) > 1,
            fixed=override_keys(args.overrides),
            fixed_edge=bool(config.model.edge.groups),
            fixed_device_layers=len(config.model.device.filters),
        ),
        base_overrides=tuple(overrides),
        out_dir=str(out.resolve()),
        limits=Limits(args.max_bytes, args.max_device_memory, args.max_drop, args.confidence_level),
        session=uuid.uuid4().hex,
        torch_threads=1 if args.jobs > 1 else 0,
    )
    return spec, splits, create_study(spec, storage)


def cmd_search(args: argparse.Namespace) -> int:
    """Run the trials with a progress bar, then write and print the frontier."""
    spec, splits, study = prepare(args)
    from tqdm import tqdm

    from ddnn.search.pareto import write_pareto
    from ddnn.search.study import run_search

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=args.trials,
        desc="search",
        unit="trial",
        file=sys.stderr,
        disable=True if args.json else None,
    )

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        run_search(spec, args.trials, args.jobs, progress, splits)
    finally:
        bar.close()
    rows = write_pareto(study, out, splits)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, out)
    return 0
