"""The one runner behind every experiment: trains each distinct config once, in parallel, resumably.

A *trial* is the experiment's base config plus ``key=value`` overrides and a seed. Its run
directory is named after a hash of the resolved config, so two experiments asking for the same
model share one training, and an interrupted ``reproduce`` finds finished runs (marked by
``done.json``) and does not retrain them. Training runs in worker processes (one thread each);
experiments for different seeds are planned concurrently so the workers stay busy.

A trial is fitted to its data (``fit_model_to_data``) here, where the keys the user gave are
known, and the run is named after the fitted config; the worker gets those keys with the config,
since they do not survive its JSON, so what it trains is what the report shows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ddnn.config import DataConfig, RunConfig, from_dict, resolve_config, to_dict
from ddnn.data.dataset import DataSplits
from ddnn.data.registry import load_dataset
from ddnn.data.split import apply_device_selection, carve_validation
from ddnn.models.ddnn import DDNN
from ddnn.train.checkpoint import load_run
from ddnn.workflow import fit_model_to_data

log = logging.getLogger(__name__)

DONE = "done.json"


def config_key(config: RunConfig) -> str:
    """Stable short hash of a resolved config: the run directory's name."""
    text = json.dumps(to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _cached_splits(data_json: str) -> DataSplits:
    return load_dataset(from_dict(DataConfig, json.loads(data_json)))


def load_splits(config: DataConfig) -> DataSplits:
    """Data splits for ``config``, loaded once per process.

    Device subsets and validation hold-outs are cut from one cached load of the full data set,
    so an experiment that retrains on many device subsets generates (or reads) the data once.
    """
    full = replace(config, devices=(), validation_fraction=0.0)
    splits = _cached_splits(json.dumps(to_dict(full), sort_keys=True))
    return carve_validation(apply_device_selection(splits, config), config)


def _worker_init() -> None:
    torch.set_num_threads(1)


def fit_trial(config: RunConfig) -> RunConfig:
    """``config`` fitted to its data (devices, shapes, classes, modality defaults); a value the
    user gave that the data contradicts is a ``ValueError``, raised before any training."""
    return fit_model_to_data(config, load_splits(config.data))


def train_trial(config_json: str, run_dir: str, given: Sequence[str] = ()) -> dict[str, Any]:
    """Train one config into ``run_dir`` (runs in a worker process) and mark it done.

    ``given``: the keys the user set (``RunConfig.given``), which the JSON does not carry.
    """
    from ddnn.workflow import train_run

    config = replace(from_dict(RunConfig, json.loads(config_json)), given=frozenset(given))
    _, fitted, history, _ = train_run(config, run_dir, splits=load_splits(config.data))
    summary = {
        "config_key": config_key(config),
        "train_seconds": history.seconds,
        "epochs": fitted.train.epochs,
    }
    (Path(run_dir) / DONE).write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class TrainedRun:
    """A finished training: where it lives, what was asked for, and the model (loaded lazily)."""

    run_dir: Path
    config: RunConfig
    summary: dict[str, Any]
    _model: DDNN | None = field(default=None, repr=False)

    @property
    def model(self) -> DDNN:
        if self._model is None:
            self._model, _, _ = load_run(self.run_dir)
        return self._model

    @property
    def splits(self) -> DataSplits:
        return load_splits(self.config.data)

    @property
    def train_seconds(self) -> float:
        return float(self.summary.get("train_seconds", float("nan")))


class RunCache:
    """Trains each distinct config at most once under ``root``; thread-safe; resumable."""

    def __init__(self, root: Path, jobs: int = 0) -> None:
        self.root = root
        self.jobs = jobs or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._futures: dict[str, Future[dict[str, Any]]] = {}
        self._executor: Executor | None = None
        self.trained = 0
        self.reused = 0

    def _pool(self) -> Executor:
        if self._executor is None:
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                self.jobs, mp_context=ctx, initializer=_worker_init
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def submit(self, config: RunConfig) -> Future[dict[str, Any]]:
        """Start training ``config`` unless it is done or already on its way."""
        key = config_key(config)
        run_dir = self.root / key
        with self._lock:
            if key in self._futures:
                return self._futures[key]
            future: Future[dict[str, Any]]
            done = _read_done(run_dir, key)
            if done is not None:
                future = Future()
                future.set_result(done)
                self.reused += 1
            elif self.jobs == 1:
                future = Future()
                try:
                    future.set_result(train_trial(*_trial_args(config, run_dir)))
                except Exception as exc:  # handed to the caller through the future
                    future.set_exception(exc)
                self.trained += 1
            else:
                future = self._pool().submit(train_trial, *_trial_args(config, run_dir))
                self.trained += 1
            self._futures[key] = future
            return future

    def get(self, config: RunConfig) -> TrainedRun:
        summary = self.submit(config).result()
        return TrainedRun(self.root / config_key(config), config, summary)


def _trial_args(config: RunConfig, run_dir: Path) -> tuple[str, str, list[str]]:
    return json.dumps(to_dict(config)), str(run_dir), sorted(config.given)


def _read_done(run_dir: Path, key: str) -> dict[str, Any] | None:
    """The summary of a finished run, or None when it is missing or was cut short."""
    marker = run_dir / DONE
    if not marker.is_file() or not (run_dir / "checkpoint.pt").is_file():
        return None
    try:
        summary = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    return summary if summary.get("config_key") == key else None


@dataclass(frozen=True)
class TrialRecord:
    """Which overrides an experiment asked for and the run directory (config key) that served it."""

    overrides: tuple[str, ...]
    key: str


@dataclass
class ExperimentContext:
    """What an experiment function sees: its base config, seed and the shared run cache."""

    base: RunConfig
    seed: int
    quick: bool
    cache: RunCache
    on_trial_done: Callable[[], None] = lambda: None
    on_trials_planned: Callable[[int], None] = lambda n: None
    history: list[TrialRecord] = field(default_factory=list)

    def config(self, *overrides: str) -> RunConfig:
        """The base config with ``overrides`` applied and this context's seed."""
        config = resolve_config(base=self.base, overrides=list(overrides))
        return replace(
            config,
            data=replace(config.data, seed=self.seed),
            train=replace(config.train, seed=self.seed),
        )

    def run(self, *overrides: str) -> TrainedRun:
        """Train (or reuse) the base config with ``overrides``."""
        return self.run_many([tuple(overrides)])[0]

    def run_many(self, trials: Sequence[Sequence[str]]) -> list[TrainedRun]:
        """Train (or reuse) several trials at once, in parallel; results in the given order.

        Each trial is fitted to its data first, so a config the data contradicts fails here.
        """
        configs = [fit_trial(self.config(*t)) for t in trials]
        self.history += [
            TrialRecord(tuple(t), config_key(c)) for t, c in zip(trials, configs, strict=True)
        ]
        self.on_trials_planned(len(configs))
        futures = [self.cache.submit(c) for c in configs]
        runs = []
        for config, future in zip(configs, futures, strict=True):
            summary = future.result()
            runs.append(TrainedRun(self.cache.root / config_key(config), config, summary))
            self.on_trial_done()
        return runs
