"""Running a `ddnn search` study: the storage workers share, the seeded sampler, J worker processes.

Workers on one machine or many coordinate only through Optuna's storage (a SQLite file, or any
database URL Optuna accepts): each opens the same study with ``load_if_exists`` and asks it for
trials, so adding a machine is starting one more `ddnn search` with the same ``--storage``.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ddnn.config import resolve_config
from ddnn.data.dataset import DataSplits
from ddnn.data.registry import load_dataset
from ddnn.search.objective import (
    DIRECTIONS,
    TRIAL_CONSTRAINTS,
    Limits,
    Objective,
    constraints,
)
from ddnn.search.space import SearchSpace

log = logging.getLogger(__name__)

STORAGE_FILE = "study.db"  # the default storage, inside --out
CONNECT_TIMEOUT_S = 5  # a database server that does not answer is an error, quickly
SQLITE_LOCK_TIMEOUT_S = 60  # workers sharing one SQLite file wait for each other's writes
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_SEED_STRIDE = 100_003  # sampler seed of in-process job i: seed + i · stride
_OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class SearchSpec:
    """Everything a worker process needs to run trials of one study (picklable).

    Attributes:
        storage: Optuna storage URL shared by every worker.
        study_name: the study's name in that storage.
        seed: sampler seed (job ``i`` of this process uses ``seed + i * 100003``).
        space: the search space.
        base_overrides: overrides every trial starts from (data set, epochs, the user's keys).
        out_dir: where trial run directories go (``OUT/trials/trial-NNNN``).
        limits: feasibility limits and the calibration target.
        session: tag of this `ddnn search` invocation on its trials.
        torch_threads: torch threads per worker process (0 = leave torch's default).
    """

    storage: str
    study_name: str
    seed: int
    space: SearchSpace
    base_overrides: tuple[str, ...]
    out_dir: str
    limits: Limits
    session: str
    torch_threads: int = 0


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///`` URL of a file (absolute, so workers in other folders find it)."""
    return f"sqlite:///{Path(path).resolve()}"


def _engine_kwargs(url: str) -> dict[str, Any]:
    dialect = url.split(":", 1)[0].split("+", 1)[0].lower()
    if dialect == "sqlite":
        return {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
    if dialect in ("postgresql", "postgres", "mysql", "mariadb"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def route_optuna_logs() -> None:
    """Optuna's messages go through ``logging``, not its own stderr handler; its per-trial INFO
    lines only with ``ddnn -v``."""
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Connect to an Optuna storage URL; any failure is a one-line ``ValueError``.

    A database server is given ``CONNECT_TIMEOUT_S`` seconds to answer.
    """
    route_optuna_logs()
    if "://" not in url:
        raise ValueError(
            f"--storage {url!r} is not a database URL; give e.g. sqlite:///search.db or "
            "postgresql://user:password@host/db"
        )
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        except Exception as exc:  # driver and network errors come in many types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            # Workers starting together on a fresh SQLite file race to create its tables.
            racing = any(m in reason for m in ("locked", "already exists", "UNIQUE constraint"))
            if racing and attempt + 1 < _OPEN_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1))
                continue
            missing = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
            if isinstance(missing, ModuleNotFoundError):
                reason = (
                    f"no Python driver for this database ({missing}); install it, "
                    "e.g. pip install 'psycopg[binary]' for postgresql://"
                )
            raise ValueError(f"cannot open --storage {url!r}: {reason}") from None
    raise AssertionError("unreachable")


def create_study(
    spec: SearchSpec, storage: optuna.storages.BaseStorage | None = None, job: int = 0
) -> optuna.Study:
    """Create the study, or join it when another worker already has; objectives must match."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.NSGAIISampler(
            seed=spec.seed + _SEED_STRIDE * job,
            constraints_func=None if TRIAL_CONSTRAINTS else constraints,
        )
    study = optuna.create_study(
        storage=storage or open_storage(spec.storage),
        study_name=spec.study_name,
        directions=list(DIRECTIONS),
        sampler=sampler,
        load_if_exists=True,
    )
    directions = tuple(d.name.lower() for d in study.directions)
    if directions != DIRECTIONS:
        raise ValueError(
            f"study {spec.study_name!r} in {spec.storage!r} optimizes {directions}, not "
            f"`ddnn search`'s {DIRECTIONS}; choose another --study"
        )
    return study


def session_trials(study: optuna.Study, session: str) -> int:
    """Trials of this invocation that have finished (any outcome)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return sum(1 for t in trials if t.user_attrs.get("session") == session)


def run_worker(
    spec: SearchSpec,
    job: int,
    n_trials: int,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    splits: DataSplits | None = None,
) -> None:
    """Run ``n_trials`` trials of the study in this process (``splits``: the data, if loaded)."""
    if spec.torch_threads > 0:
        import torch

        torch.set_num_threads(spec.torch_threads)
    config = resolve_config(overrides=spec.base_overrides)
    splits = splits or load_dataset(config.data)
    study = create_study(spec, job=job)
    objective = Objective(
        spec.space,
        list(spec.base_overrides),
        Path(spec.out_dir),
        splits,
        spec.limits,
        spec.session,
    )
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = []
    if on_trial is not None:
        callbacks.append(lambda _study, trial: on_trial(trial))
    # A configuration that fails to build or train is recorded as a failed trial; the search goes on.
    study.optimize(
        objective, n_trials=n_trials, catch=(ValueError, RuntimeError), callbacks=callbacks
    )


def _job_main(spec: SearchSpec, job: int, n_trials: int) -> None:
    """Entry point of a worker process (spawned: a clean interpreter, no forked torch threads)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_worker(spec, job, n_trials)


def shares(trials: int, jobs: int) -> list[int]:
    """``trials`` split as evenly as possible over at most ``jobs`` workers."""
    base, extra = divmod(trials, jobs)
    return [n for n in (base + (1 if i < extra else 0) for i in range(jobs)) if n > 0]


def run_search(
    spec: SearchSpec,
    trials: int,
    jobs: int,
    progress: Callable[[int], None] | None = None,
    splits: DataSplits | None = None,
) -> None:
    """Run ``trials`` trials in ``jobs`` parallel workers; ``progress(n)`` gets finished counts.

    One job runs in this process (on ``splits`` if given); more are spawned worker processes.
    """
    if jobs == 1:
        done = 0

        def count(_trial: optuna.trial.FrozenTrial) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done)

        run_worker(spec, 0, trials, count, splits)
        return
    study = create_study(spec)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [
            pool.submit(_job_main, spec, job, n) for job, n in enumerate(shares(trials, jobs))
        ]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
            if progress is not None:
                progress(session_trials(study, spec.session))
            for future in futures:
                if future.done() and future.exception() is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise future.exception()  # type: ignore[misc]
