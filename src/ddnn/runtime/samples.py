"""``ddnn samples``: write what each device of a run would see, as files a live source can read.

``DIR/device_K/<sample>.png`` (or ``.npy``) for every device K and sample, and ``DIR/labels.csv``
(``sample,label,class_name``). PNG is for 8-bit image inputs of 1 or 3 channels (the values of
such data are k/255, so a PNG holds them exactly); ``.npy`` holds any input as float32. These
folders feed ``ddnn serve device --source folder:DIR/device_K`` and ``ddnn deploy --local
--source folder:DIR``, where ``labels.csv`` lets the report score the answers.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("png", "npy")


def image_pixels(x: np.ndarray) -> np.ndarray | None:
    """(C, H, W) float k/255 with C in (1, 3) -> (H, W) or (H, W, 3) uint8; None if ``x`` is not
    an 8-bit image (another shape, or values off the k/255 grid the C engine also requires)."""
    from ddnn.export.engine import to_pixels

    if x.ndim != 3 or x.shape[0] not in (1, 3):
        return None
    try:
        pixels = to_pixels(x)
    except ValueError:
        return None
    return pixels[0] if x.shape[0] == 1 else pixels.transpose(1, 2, 0)


def write_samples(
    run_dir: str | Path,
    out: str | Path,
    split: str = "test",
    limit: int | None = None,
    fmt: str = "png",
) -> dict[str, Any]:
    """Writes every device's view of ``split``; returns a summary (files, samples, devices).

    Raises:
        ValueError: On an unknown format, or PNG for inputs that are not 8-bit images.
    """
    from PIL import Image

    from ddnn.runtime.deploy import read_run_config, select_split
    from ddnn.train.checkpoint import run_class_names

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    config = read_run_config(run_dir)
    data = select_split(config, split, limit)
    names = run_class_names(run_dir, config.model.num_classes)
    root = Path(out)
    views = [data.device_input(k).numpy() for k in range(data.num_devices)]
    if fmt == "png":
        for k, view in enumerate(views):
            if len(view) and image_pixels(view[0]) is None:
                raise ValueError(
                    f"device {k}'s inputs of shape {tuple(view.shape[1:])} are not 8-bit images "
                    "of 1 or 3 channels; use --format npy"
                )
    for k, view in enumerate(views):
        folder = root / f"device_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, x in enumerate(view):
            if fmt == "png":
                pixels = image_pixels(x)
                assert pixels is not None
                Image.fromarray(pixels).save(folder / f"{i}.png")
            else:
                np.save(folder / f"{i}.npy", x.astype(np.float32))
    labels = data.labels.numpy()
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "label", "class_name"])
        for i, y in enumerate(labels.tolist()):
            w.writerow([i, y, names[y]])
    return {"out": str(root), "samples": len(labels), "devices": len(views), "format": fmt}


def read_labels(root: str | Path) -> dict[int, int] | None:
    """``sample -> label`` from ``ROOT/labels.csv``, or None if there is none.

    Raises:
        ValueError: If the file is there but malformed (naming the line).
    """
    path = Path(root) / "labels.csv"
    if not path.is_file():
        return None
    out: dict[int, int] = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                out[int(row["sample"])] = int(row["label"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"{path}: line {n} is not 'sample,label[,class_name]' with integers"
                ) from None
    return out


def add_samples_parser(sub: Any) -> None:
    p = sub.add_parser("samples", help="write each device's view of a split as files")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", help="test (default), train or validation")
    p.add_argument("--limit", type=int, default=None, help="first N samples")
    p.add_argument("--out", required=True, help="folder to write device_K/ and labels.csv to")
    p.add_argument("--format", choices=FORMATS, default="png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_samples)


def cmd_samples(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    doc = write_samples(args.run_dir, args.out, args.split, args.limit, args.format)
    if args.json:
        print(json.dumps(doc))
    else:
        print(
            f"wrote {doc['samples']} samples x {doc['devices']} devices ({doc['format']}) "
            f"to {doc['out']}"
        )
    return 0
