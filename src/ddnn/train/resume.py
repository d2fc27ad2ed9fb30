"""Resumable training state: what ``ddnn train --resume RUN_DIR`` needs to continue exactly.

While a run trains, ``RUN_DIR`` holds (every ``train.save_every`` epochs, and on Ctrl-C)::

    resume.pt     model, optimizer, gradient scaler, RNG and data-order state, the run's config
    resume.json   format, epochs done, and the sha256 + size of resume.pt (written last)

Both are replaced atomically, so a crash while saving leaves the previous state. When training
finishes, ``save_run`` writes the run's files and these two are removed: a finished run has a
``manifest.json`` and no resume state. Resuming on the CPU with the same seed reaches the same
weights as training without the interruption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddnn.config import RunConfig, saved_run_config, to_dict

log = logging.getLogger(__name__)

FORMAT = "ddnn-resume/1"
STATE = "resume.pt"
INDEX = "resume.json"


@dataclass
class TrainState:
    """Where training stands: ``epoch`` epochs done, then ``step`` batches of the next one."""

    epoch: int
    step: int
    order: torch.Tensor | None  # the sample order of the epoch in progress (None at its start)
    sums: dict[str, float]  # loss sums of the epoch in progress
    steps: int  # optimizer steps of the epoch in progress
    generator: torch.Tensor  # state of the trainer's data-order / dropout generator
    torch_rng: torch.Tensor  # torch's global CPU RNG state
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class TrainingInterrupted(Exception):
    """Training stopped on request (Ctrl-C / SIGTERM) after saving a resumable state."""

    def __init__(self, run_dir: Path | None, epoch: int, step: int) -> None:
        where = f"; continue with `ddnn train --resume {run_dir}`" if run_dir else ""
        super().__init__(f"training interrupted in epoch {epoch + 1} after {step} batches{where}")
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_state(
    run_dir: str | Path, config: RunConfig, model_state: dict[str, Any], state: TrainState
) -> Path:
    """Write ``resume.pt`` then ``resume.json`` into ``run_dir`` (created if missing)."""
    import io

    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(
        {"format": FORMAT, "config": to_dict(config), "model": model_state, "state": asdict(state)},
        buffer,
    )
    data = buffer.getvalue()
    _write_atomic(out / STATE, data)
    index = {
        "format": FORMAT,
        "epoch": state.epoch,
        "step": state.step,
        "epochs": config.train.epochs,
        "sha256": _digest(data),
        "size": len(data),
    }
    _write_atomic(out / INDEX, (json.dumps(index, indent=2) + "\n").encode())
    log.debug("resumable state saved to %s (epoch %d, step %d)", out, state.epoch, state.step)
    return out / STATE


def load_state(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any], TrainState]:
    """The config, model weights and training state saved in ``run_dir``.

    Raises:
        ValueError: the directory is missing, finished, not a ddnn run, or its state is damaged.
    """
    run = Path(run_dir)
    where = f"--resume {str(run)!r}"
    if not run.is_dir():
        raise ValueError(f"{where}: no such directory")
    if not (run / INDEX).is_file():
        if (run / "manifest.json").is_file():
            raise ValueError(
                f"{where}: the run is finished (it has manifest.json and no resume state); "
                "evaluate it, or train a new run with --out"
            )
        raise ValueError(
            f"{where}: not a run in progress (no {INDEX}); --resume takes a run directory in "
            "which `ddnn train` saved resumable state"
        )
    try:
        index = json.loads((run / INDEX).read_text())
        ok = index.get("format") == FORMAT and isinstance(index.get("sha256"), str)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"{where}: {INDEX} is damaged or not a {FORMAT} index")
    try:
        data = (run / STATE).read_bytes()
    except OSError:
        raise ValueError(f"{where}: {STATE} is missing; the resume state is incomplete") from None
    if len(data) != index.get("size") or _digest(data) != index["sha256"]:
        raise ValueError(
            f"{where}: {STATE} does not match {INDEX} (damaged or copied from another run)"
        )
    import io

    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        config = saved_run_config(payload["config"])
        state = TrainState(**payload["state"])
        model_state = payload["model"]
    except Exception as exc:  # torch and the dataclasses raise many types for a bad payload
        raise ValueError(f"{where}: {STATE} is corrupt ({type(exc).__name__}: {exc})") from None
    if payload.get("format") != FORMAT:
        raise ValueError(f"{where}: {STATE} is not a {FORMAT} state")
    return config, model_state, state


def discard_state(run_dir: str | Path) -> None:
    """Remove the resume state of a run that finished."""
    for name in (INDEX, STATE):
        (Path(run_dir) / name).unlink(missing_ok=True)


def has_state(run_dir: str | Path) -> bool:
    return (Path(run_dir) / INDEX).is_file()


def peek_progress(run_dir: str | Path) -> tuple[int, int]:
    """(epochs done, epochs in all) from ``resume.json``, for a progress bar; (0, 0) if unreadable.

    Reading the state itself (``load_state``) is what checks it.
    """
    try:
        index = json.loads((Path(run_dir) / INDEX).read_text())
        return int(index["epoch"]), int(index["epochs"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0, 0
