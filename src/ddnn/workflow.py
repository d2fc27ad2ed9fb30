"""The library calls behind the CLI: train a run directory, calibrate and evaluate it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ddnn.config import RunConfig
from ddnn.data.dataset import DataSplits
from ddnn.data.registry import load_dataset
from ddnn.eval.calibrate import (
    Calibration,
    CalibrationTarget,
    calibrate,
    load_calibration,
    save_calibration,
)
from ddnn.eval.evaluate import ThresholdRow, threshold_sweep
from ddnn.models.ddnn import DDNN
from ddnn.models.defaults import with_modality_defaults
from ddnn.train.checkpoint import load_run, save_run
from ddnn.train.distributed import World, leave, world_from_env
from ddnn.train.resume import TrainingInterrupted, TrainState, discard_state, load_state, save_state
from ddnn.train.trainer import ProgressFn, TrainHistory, train

log = logging.getLogger(__name__)


def fit_model_to_data(config: RunConfig, splits: DataSplits) -> RunConfig:
    """Take devices, input shape and classes from the data; a config that disagrees is an error.

    Hierarchies of feature-vector sensors then get the vector defaults of ``ddnn.models.defaults``
    for every model key the config did not give.
    """
    train_set = splits.train
    model = config.model
    defaults = RunConfig().model
    for key, data_value in (
        ("num_devices", train_set.num_devices),
        ("input_shape", train_set.input_shape),
        ("num_classes", train_set.num_classes),
        ("device_input_shapes", train_set.device_shapes),
    ):
        value = getattr(model, key)
        given = value != getattr(defaults, key) or f"model.{key}" in config.given
        if given and value != data_value:  # a given value equal to the default counts too
            raise ValueError(
                f"model.{key} = {value} but data set {config.data.name!r} has {data_value}; "
                f"give {data_value} or leave model.{key} out to take the data's"
            )
    fitted = replace(
        model,
        num_devices=train_set.num_devices,
        input_shape=train_set.input_shape,
        num_classes=train_set.num_classes,
        device_input_shapes=train_set.device_shapes,
    )
    # Vector sensors get their own defaults for the keys the user left alone (models/defaults.py).
    return replace(config, model=with_modality_defaults(fitted, config.given))


def train_run(
    config: RunConfig,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    splits: DataSplits | None = None,
    world: World | None = None,
) -> tuple[DDNN, RunConfig, TrainHistory, DataSplits]:
    """Load data, build the model, train it jointly and save the run directory.

    Resumable state is saved in ``out_dir`` while training (``ddnn.train.resume``). Under
    torchrun (``world`` from the environment by default) every process trains its share and
    rank 0 alone writes ``out_dir``.
    """
    t0 = time.perf_counter()
    splits = splits or load_dataset(config.data)
    data_seconds = time.perf_counter() - t0
    config = fit_model_to_data(config, splits)
    torch.manual_seed(config.train.seed)
    model = DDNN(config.model)
    history = _train_and_save(model, config, splits, out_dir, progress, None, world, data_seconds)
    return model, config, history, splits


def resume_run(
    run_dir: str | Path,
    progress: ProgressFn | None = None,
    world: World | None = None,
    accelerator: str | None = None,
) -> tuple[DDNN, RunConfig, TrainHistory, DataSplits]:
    """Continue the interrupted training of ``run_dir`` from its last saved state, and save it.

    ``accelerator`` may move the rest of the training elsewhere (e.g. onto a GPU).
    """
    config, model_state, state = load_state(run_dir)
    if accelerator is not None:
        config = replace(config, train=replace(config.train, accelerator=accelerator))
    t0 = time.perf_counter()
    splits = load_dataset(config.data)
    data_seconds = time.perf_counter() - t0
    train_set, saved = splits.train, config.model
    if (train_set.num_devices, train_set.shapes, train_set.num_classes) != (
        saved.num_devices,
        saved.device_shapes,
        saved.num_classes,
    ):
        raise ValueError(
            f"--resume {str(run_dir)!r}: the data set {config.data.name!r} no longer matches the "
            "saved model (devices, input shapes or classes changed)"
        )
    model = DDNN(config.model)
    try:
        model.load_state_dict(model_state)
    except RuntimeError as exc:
        raise ValueError(
            f"--resume {str(run_dir)!r}: weights do not match its config: {exc}"
        ) from None
    log.info("resuming %s at epoch %d, batch %d", run_dir, state.epoch, state.step)
    history = _train_and_save(model, config, splits, run_dir, progress, state, world, data_seconds)
    return model, config, history, splits


def _train_and_save(
    model: DDNN,
    config: RunConfig,
    splits: DataSplits,
    out_dir: str | Path,
    progress: ProgressFn | None,
    resume: TrainState | None,
    world: World | None,
    data_seconds: float,
) -> TrainHistory:
    world = world or world_from_env()

    def checkpoint(state: TrainState) -> None:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_state(out_dir, config, weights, state)

    try:
        history = train(
            model,
            splits.train,
            config.train,
            progress,
            checkpoint=checkpoint,
            resume=resume,
            world=world,
            workers=config.data.workers,
        )
    except TrainingInterrupted as stopped:
        raise TrainingInterrupted(Path(out_dir), stopped.epoch, stopped.step) from None
    finally:
        leave(world)
    if not world.is_main:
        return history
    extra: dict[str, Any] = {
        "train_seconds": history.seconds,
        "data_seconds": data_seconds,
        "final_loss": history.losses[-1] if history.losses else {},
        "class_names": list(splits.train.class_names),
        "processes": world.size,
    }
    save_run(out_dir, model, config, extra)
    discard_state(out_dir)
    log.info("trained in %.1f s, saved to %s", history.seconds, out_dir)
    return history


def evaluate_run(
    run_dir: str | Path,
    thresholds: Sequence[float],
    missing: Sequence[int] = (),
    splits: DataSplits | None = None,
) -> tuple[list[ThresholdRow], RunConfig]:
    """Load a run and sweep thresholds on its data set's test split."""
    model, config, _ = load_run(run_dir)
    splits = splits or load_dataset(config.data)
    rows = threshold_sweep(model, splits.test, thresholds, config.eval.edge_threshold, missing)
    return rows, config


from ddnn.config import CALIBRATION_SPLITS  # noqa: E402  (re-exported)


def calibrate_run(
    run_dir: str | Path,
    target: CalibrationTarget,
    split: str = "validation",
    splits: DataSplits | None = None,
) -> Calibration:
    """Calibrate a run's exit thresholds on its validation (or training) split and save them."""
    if split not in CALIBRATION_SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(CALIBRATION_SPLITS)}")
    model, config, _ = load_run(run_dir)
    if split == "validation" and config.data.validation_fraction <= 0:
        raise ValueError(
            f"run {str(run_dir)!r} has no validation split (data.validation_fraction = "
            f"{config.data.validation_fraction:g}); retrain with data.validation_fraction=0.2, or "
            "pass --split train (optimistic: the model was fitted to those samples)"
        )
    splits = splits or load_dataset(config.data)
    data = splits.train if split == "train" else splits.validation
    assert data is not None, "load_dataset must carve the validation split the config asks for"
    calibration = calibrate(model, data, target, split=split)
    save_calibration(run_dir, calibration)
    return calibration


def evaluate_calibrated_run(
    run_dir: str | Path, missing: Sequence[int] = (), splits: DataSplits | None = None
) -> tuple[list[ThresholdRow], Calibration, RunConfig]:
    """The test split at the run's calibrated thresholds (one row); errors if uncalibrated or stale."""
    model, config, payload = load_run(run_dir)
    calibration = load_calibration(run_dir, int(payload["model_version"]))
    splits = splits or load_dataset(config.data)
    thresholds = calibration.thresholds
    rows = threshold_sweep(
        model,
        splits.test,
        [thresholds["local"]],
        thresholds.get("edge", config.eval.edge_threshold),
        missing,
    )
    return rows, calibration, config
