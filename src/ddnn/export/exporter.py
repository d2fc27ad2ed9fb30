"""Exports the device sections of a trained run directory as C sources (``ddnn export c``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ddnn.config import parse_yaml
from ddnn.export.c_codegen import CSource, generate_c
from ddnn.export.fold import FoldedDevice, fold_device

log = logging.getLogger(__name__)


def run_num_devices(run_dir: str | Path) -> int:
    """Number of devices of a run, read from its ``config.yaml`` (no torch needed)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"run directory {str(run)!r} does not exist")
    path = run / "config.yaml"
    if not path.is_file():
        raise ValueError(
            f"{str(path)!r} not found; is {str(run)!r} a run directory made by `ddnn train`?"
        )
    try:
        config = parse_yaml(path.read_text(), f"run config {str(path)!r}")
        return int(config["model"]["num_devices"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{str(path)!r} is not a ddnn run config") from None


def check_device_index(run_dir: str | Path, device: int) -> None:
    """Raises ``ValueError`` unless ``device`` is one of the run's device indices."""
    n = run_num_devices(run_dir)
    if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < n:
        raise ValueError(
            f"device {device!r} is out of range: run {str(run_dir)!r} has {n} devices (0..{n - 1})"
        )


def fold_run_device(run_dir: str | Path, device: int) -> tuple[FoldedDevice, int]:
    """Loads ``device_K`` of a run alone and folds it; returns (folded section, model version)."""
    from ddnn.models.sections import DeviceSection
    from ddnn.train.checkpoint import load_section, verify_run

    check_device_index(run_dir, device)
    # a section copied from another run would carry the wrong version (only the section is
    # needed: a rollout bundle holds the manifest and this section, not the whole run)
    verify_run(run_dir, required=[f"sections/device_{device}.pt"])
    module, _, version = load_section(run_dir, f"device_{device}")
    assert isinstance(module, DeviceSection)
    try:
        return fold_device(module), version
    except ValueError as exc:
        raise ValueError(f"device {device} of {str(run_dir)!r}: {exc}") from None


def generate_run_device(run_dir: str | Path, device: int) -> tuple[CSource, FoldedDevice, int]:
    """C source of one device of a run: (source, folded section, model version)."""
    folded, version = fold_run_device(run_dir, device)
    source = generate_c(folded, device, version, origin=Path(run_dir).name)
    return source, folded, version


def write_source(source: CSource, out_dir: str | Path) -> tuple[Path, Path]:
    """Writes ``<name>.h`` and ``<name>.c`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, code = out / f"{source.name}.h", out / f"{source.name}.c"
    header.write_text(source.header)
    code.write_text(source.source)
    return header, code


def export_c(
    run_dir: str | Path,
    devices: Sequence[int] | None,
    out_dir: str | Path,
    force: bool = False,
) -> list[tuple[CSource, FoldedDevice]]:
    """Writes the C of the given devices (``None`` = every device) of a run into ``out_dir``.

    Every device is folded before anything is written, so a bad device leaves no partial output.

    Raises:
        ValueError: On a missing run or section, a device index out of range, a raw or float
            (non-binary) device section, or a non-empty ``out_dir`` without ``force``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(
            f"output folder {str(out)!r} exists and is not empty; pass --force to write into it"
        )
    indices = list(range(run_num_devices(run_dir))) if devices is None else list(devices)
    results = []
    for k in indices:
        source, folded, _ = generate_run_device(run_dir, k)
        results.append((source, folded))
    for source, folded in results:
        write_source(source, out)
        for tie in folded.ties:
            log.warning(
                "%s: layer %d channel %d: PyTorch's decision at pooled sum %d depends on %s",
                source.name,
                tie.layer,
                tie.channel,
                tie.value,
                tie.reason,
            )
    return results
