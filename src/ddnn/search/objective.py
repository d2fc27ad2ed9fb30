"""One trial of `ddnn search`: train a configuration, calibrate its exits on validation, measure it.

Nothing here looks at the test split: the three objectives (validation accuracy at the calibrated
thresholds, payload bytes per device per sample on validation, device memory) and the limits are
all decided on data the test split never meets.
"""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import optuna

from ddnn.config import resolve_config
from ddnn.data.dataset import DataSplits
from ddnn.eval.calibrate import Calibration, CalibrationTarget, calibrate, save_calibration
from ddnn.eval.profile import profile_model
from ddnn.models.ddnn import DDNN
from ddnn.search.space import SearchSpace
from ddnn.workflow import train_run

log = logging.getLogger(__name__)

THRESHOLD_SPLIT = "validation"  # the only split thresholds and objectives are measured on
# accuracy, bytes per device, device memory
DIRECTIONS: tuple[Literal["maximize", "minimize"], ...] = ("maximize", "minimize", "minimize")
OBJECTIVES = ("validation_accuracy", "bytes_per_device", "device_memory_bytes")
# Optuna 5 takes constraints from the trial (``Trial.set_constraint``); older versions ask the
# sampler's ``constraints_func`` after each trial.
TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")
LIMIT_NAMES = ("max_bytes", "max_device_memory")
_TOL = 1e-9  # bytes per device are ratios of integers; a budget met exactly is met


@dataclass(frozen=True)
class Limits:
    """Feasibility limits; None = no limit.

    Attributes:
        max_bytes: payload bytes per device per sample (also the calibration target when given).
        max_device_memory: bytes of memory the largest device section needs.
        max_drop: calibration target without a byte limit: most local exits with overall
            validation accuracy at most this many points below cloud-only.
        confidence_level: with ``max_drop``, keep the drop within it with this confidence on new
            data (``CalibrationTarget.confidence_level``); None: on the validation split alone.
    """

    max_bytes: float | None = None
    max_device_memory: float | None = None
    max_drop: float = 1.0
    confidence_level: float | None = None

    def violations(self, bytes_per_device: float, device_memory: float) -> list[float]:
        """Optuna constraint values: > 0 breaks a limit, <= 0 is feasible."""
        over = [
            0.0 if self.max_bytes is None else bytes_per_device - self.max_bytes,
            0.0 if self.max_device_memory is None else device_memory - self.max_device_memory,
        ]
        return [0.0 if abs(v) <= _TOL else v for v in over]


@dataclass(frozen=True)
class TrialMeasures:
    """What one trial reached on the validation split at its calibrated thresholds."""

    validation_accuracy: float
    bytes_per_device: float
    device_memory_bytes: int
    local_exit_fraction: float
    thresholds: dict[str, float]
    calibration_target: dict[str, float | None]
    threshold_split: str

    @property
    def values(self) -> tuple[float, float, float]:
        """The objectives, in ``DIRECTIONS`` order."""
        return self.validation_accuracy, self.bytes_per_device, float(self.device_memory_bytes)


def device_memory_bytes(model: DDNN) -> int:
    """Memory of the largest device section as deployed (``ddnn profile``'s accounting)."""
    return max(p.memory_bytes for p in profile_model(model) if p.name.startswith("device_"))


def calibrate_within(model: DDNN, splits: DataSplits, limits: Limits) -> Calibration:
    """Calibrate on the validation split: best accuracy within ``max_bytes`` when a byte limit is
    set, else most local exits within ``max_drop`` points of cloud-only (at ``confidence_level``
    when one is set).

    A model that cannot meet the byte limit at any threshold is calibrated on ``max_drop`` instead
    (the trial is then infeasible).
    """
    data = splits.validation
    if data is None:
        raise ValueError("the search needs a validation split (data.validation_fraction > 0)")
    if limits.max_bytes is not None:
        try:
            return calibrate(model, data, CalibrationTarget(max_bytes=limits.max_bytes))
        except ValueError as exc:
            log.info("byte limit not reachable (%s); calibrating on max_drop", exc)
    target = CalibrationTarget(
        max_accuracy_drop=limits.max_drop, confidence_level=limits.confidence_level
    )
    return calibrate(model, data, target)


def run_trial(
    overrides: list[str], run_dir: Path, splits: DataSplits, limits: Limits
) -> TrialMeasures:
    """Train ``overrides`` into ``run_dir`` (as `ddnn train` saves runs), calibrate, measure."""
    config = resolve_config(overrides=overrides)
    model, _, _, _ = train_run(config, run_dir, None, splits)
    calibration = calibrate_within(model, splits, limits)
    save_calibration(run_dir, calibration)
    point = calibration.measured
    return TrialMeasures(
        validation_accuracy=point.overall_accuracy,
        bytes_per_device=point.bytes_per_device,
        device_memory_bytes=device_memory_bytes(model),
        local_exit_fraction=point.local_exit_fraction,
        thresholds=dict(point.thresholds),
        calibration_target=calibration.target.as_dict(),
        threshold_split=calibration.split,
    )


def constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Optuna < 5's ``constraints_func``: the violations the objective recorded (none: infeasible)."""
    return [float(v) for v in trial.user_attrs.get("constraints", [1.0, 1.0])]


class Objective:
    """Optuna objective: sample overrides, run the trial, record everything as user attributes."""

    def __init__(
        self,
        space: SearchSpace,
        base_overrides: list[str],
        out_dir: Path,
        splits: DataSplits,
        limits: Limits,
        session: str,
    ) -> None:
        self.space = space
        self.base_overrides = list(base_overrides)
        self.out_dir = out_dir
        self.splits = splits
        self.limits = limits
        self.session = session

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        overrides = [*self.base_overrides, *self.space.suggest(trial)]
        run_dir = (self.out_dir / "trials" / f"trial-{trial.number:04d}").resolve()
        attrs: dict[str, Any] = {
            "overrides": overrides,
            "run_dir": str(run_dir),
            "host": socket.gethostname(),
            "session": self.session,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        measures = run_trial(overrides, run_dir, self.splits, self.limits)
        violations = self.limits.violations(measures.bytes_per_device, measures.device_memory_bytes)
        for key, value in asdict(measures).items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("constraints", violations)
        if TRIAL_CONSTRAINTS:
            for name, value in zip(LIMIT_NAMES, violations, strict=True):
                trial.set_constraint(name, value)  # type: ignore[attr-defined]
        reasons = infeasible_reasons(measures, self.limits)
        trial.set_user_attr("feasible", not reasons)
        if reasons:
            trial.set_user_attr("infeasible_reason", "; ".join(reasons))
        if not all(math.isfinite(v) for v in measures.values):
            raise ValueError(f"trial {trial.number} measured non-finite objectives {measures}")
        return measures.values


def infeasible_reasons(measures: TrialMeasures, limits: Limits) -> list[str]:
    """Why a trial breaks the limits (empty when it keeps them)."""
    reasons = []
    if limits.max_bytes is not None and measures.bytes_per_device > limits.max_bytes + _TOL:
        reasons.append(
            f"{measures.bytes_per_device:g} bytes per device > --max-bytes {limits.max_bytes:g}"
        )
    if limits.max_device_memory is not None and (
        measures.device_memory_bytes > limits.max_device_memory
    ):
        reasons.append(
            f"device memory {measures.device_memory_bytes} B > --max-device-memory "
            f"{limits.max_device_memory:g}"
        )
    return reasons
