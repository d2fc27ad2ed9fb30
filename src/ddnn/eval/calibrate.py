"""Automatic exit-threshold calibration: every (local, edge) threshold pair from one forward pass.

The model runs once on held-out data, on the deployed path (``DDNN.wire_forward``: exits fuse
scores as the wire delivers them in the model's score encoding); each exit's normalized entropy
then decides, for every pair of thresholds on a grid, where each sample exits (the same rule as
staged inference, ``ddnn.nn.exits.exit_decision``), giving accuracy, exit fractions and payload
bytes (SPEC §6, from ``ddnn.wire``) for the whole grid in a few matrix products. A target picks
one pair; the real staged path ``model.infer`` re-checks it. The result is stored as
``RUN_DIR/calibration.json``, stamped with the model version.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddnn.data.dataset import AnyDataset
from ddnn.eval.batched import forward_all, infer_all
from ddnn.eval.evaluate import check_data_fits_model
from ddnn.models.ddnn import CLOUD, DDNN, EDGE, LOCAL, InferenceResult
from ddnn.models.sections import EdgeSection
from ddnn.nn.exits import check_threshold, exit_decision
from ddnn.nn.functional import entropy_from_logits
from ddnn.train.checkpoint import model_version, run_model_version
from ddnn.wire import ScoreEncoding, feature_payload_bytes, score_payload_bytes

log = logging.getLogger(__name__)

DEFAULT_GRID = tuple(i / 100 for i in range(101))  # T = 0, 0.01, …, 1
CALIBRATION_FILE = "calibration.json"
FORMAT = "ddnn-calibration/1"
_TOL = 1e-9  # slack for targets given in decimal points or bytes


@dataclass(frozen=True)
class CalibrationTarget:
    """Exactly one of: accuracy points allowed below cloud-only, or bytes per device per sample.

    ``max_accuracy_drop``: maximise local exits keeping overall accuracy at most this many points
    below cloud-only. ``max_bytes``: the best overall accuracy within this many bytes per device.

    ``confidence_level`` (only with ``max_accuracy_drop``): keep the drop within the limit not just
    on the calibration samples but with this one-sided confidence on new samples from the same
    distribution. Without it, the threshold that is chosen is the one at the edge of what the
    calibration samples allow, where their luck counts most; with it, the drop's upper confidence
    bound (paired with the last exit on the same samples, normal approximation) must be within
    the limit, which costs some local exits.
    """

    max_accuracy_drop: float | None = None
    max_bytes: float | None = None
    confidence_level: float | None = None

    def __post_init__(self) -> None:
        if (self.max_accuracy_drop is None) == (self.max_bytes is None):
            raise ValueError(
                "give exactly one calibration target: max_accuracy_drop (accuracy points below "
                "cloud-only) or max_bytes (bytes per device per sample)"
            )
        if self.confidence_level is not None:
            level = float(self.confidence_level)
            if self.max_accuracy_drop is None:
                raise ValueError(
                    "a confidence level bounds the accuracy drop: give it with an accuracy-drop "
                    "target (max_accuracy_drop, --max-drop), not a byte budget"
                )
            if not 0.5 <= level < 1:
                raise ValueError(
                    f"the confidence level must be in [0.5, 1) (e.g. 0.95), got "
                    f"{self.confidence_level}"
                )
            object.__setattr__(self, "confidence_level", level)
        for name in ("max_accuracy_drop", "max_bytes"):
            value = getattr(self, name)
            if value is None:
                continue
            v = float(value)
            if math.isnan(v) or v < 0:
                unit = "accuracy points" if name == "max_accuracy_drop" else "bytes"
                raise ValueError(f"{name} must be a number of {unit} >= 0, got {value}")
            object.__setattr__(self, name, v)

    def check_budget(
        self, num_classes: int, encoding: ScoreEncoding | str = ScoreEncoding.FLOAT32
    ) -> None:
        """A byte budget must cover the class scores every device always sends."""
        minimum = score_payload_bytes(num_classes, encoding)
        if self.max_bytes is not None and self.max_bytes < minimum:
            raise ValueError(
                f"max_bytes = {self.max_bytes:g} is below the minimum of {minimum} bytes per device "
                f"per sample: every device always sends its {num_classes} class scores "
                f"({ScoreEncoding(encoding).value}, model.wire.scores)"
            )

    @property
    def z(self) -> float:
        """Standard normal quantile of ``confidence_level`` (0 without one)."""
        if self.confidence_level is None:
            return 0.0
        return NormalDist().inv_cdf(self.confidence_level)

    def describe(self) -> str:
        if self.max_accuracy_drop is not None:
            sure = (
                ""
                if self.confidence_level is None
                else f" with {100 * self.confidence_level:g}% confidence on new data"
            )
            return (
                f"most local exits with overall accuracy at most {self.max_accuracy_drop:g} points "
                f"below cloud-only{sure}"
            )
        return f"best overall accuracy within {self.max_bytes:g} bytes per device per sample"

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold pair and what it gives; fractions in [0, 1], bytes per sample.

    ``edge_threshold`` is None when there is no edge exit to set (no edge, or the edge is the last
    exit); ``cloud_exit_fraction`` / ``edge_to_cloud_bytes`` are None without a cloud / an edge.
    """

    local_threshold: float
    edge_threshold: float | None
    overall_accuracy: float
    local_exit_fraction: float
    edge_exit_fraction: float | None
    cloud_exit_fraction: float | None
    bytes_per_device: float
    edge_to_cloud_bytes: float | None

    @property
    def thresholds(self) -> dict[str, float]:
        """Keyword thresholds for ``model.infer``."""
        out = {LOCAL: self.local_threshold}
        if self.edge_threshold is not None:
            out[EDGE] = self.edge_threshold
        return out

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class ByteCosts:
    """Payload bytes of one sample on each link (SPEC §6), from ``ddnn.wire``'s accounting."""

    score_bytes: int  # per device: |C| scores in the model's encoding, always sent
    feature_bytes: tuple[int, ...]  # per device: bit-packed ⌈f·o/8⌉, sent if no local exit
    edge_bytes: int | None  # all edges' bit-packed features per sample going on to the cloud

    @classmethod
    def of_model(cls, model: DDNN) -> ByteCosts:
        devices = range(model.config.num_devices)
        feature = tuple(feature_payload_bytes(model.device(k).feature_shape) for k in devices)
        edge = None
        if model.groups and model.cloud is not None:
            edges = [e for e in model.edges if isinstance(e, EdgeSection)]
            edge = sum(feature_payload_bytes(e.feature_shape) for e in edges)
        scores = score_payload_bytes(model.config.num_classes, model.config.wire.scores)
        return cls(scores, feature, edge)


@dataclass
class CalibrationGrid:
    """Every (local T, edge T) pair: counts over ``num_samples`` samples, indexed [i, j].

    Without an edge threshold the second axis has length 1 and ``edge_thresholds`` is None.
    """

    local_thresholds: np.ndarray  # (G,)
    edge_thresholds: np.ndarray | None  # (H,)
    exit_names: tuple[str, ...]
    costs: ByteCosts
    num_samples: int
    last_exit_correct: int  # samples the last exit gets right when it answers all of them
    correct: np.ndarray  # (G, H) samples answered correctly
    discordant: np.ndarray  # (G, H) samples whose answer is right xor the last exit's is right
    exits: np.ndarray  # (G, H, K) samples answered at each exit, in ``exit_names`` order
    device_bytes: np.ndarray  # (G, H) payload bytes all devices sent for all samples
    edge_bytes: np.ndarray  # (G, H) payload bytes all edges sent to the cloud

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.correct.shape[0]), int(self.correct.shape[1])

    def point(self, i: int, j: int) -> OperatingPoint:
        n, d = self.num_samples, len(self.costs.feature_bytes)
        frac = {name: int(self.exits[i, j, k]) / n for k, name in enumerate(self.exit_names)}
        return OperatingPoint(
            local_threshold=float(self.local_thresholds[i]),
            edge_threshold=None if self.edge_thresholds is None else float(self.edge_thresholds[j]),
            overall_accuracy=int(self.correct[i, j]) / n,
            local_exit_fraction=frac[LOCAL],
            edge_exit_fraction=frac.get(EDGE),
            cloud_exit_fraction=frac.get(CLOUD),
            bytes_per_device=int(self.device_bytes[i, j]) / (n * d),
            edge_to_cloud_bytes=None
            if self.costs.edge_bytes is None
            else int(self.edge_bytes[i, j]) / n,
        )

    def rows(self) -> list[OperatingPoint]:
        """The full table, local T major."""
        g, h = self.shape
        return [self.point(i, j) for i in range(g) for j in range(h)]

    def frontier(self) -> list[tuple[int, int]]:
        """Indices of the Pareto frontier in (device bytes ↓, accuracy ↑), fewest bytes first.

        One point per distinct (bytes, accuracy); among equals the one with fewer edge→cloud
        bytes, then the lowest thresholds.
        """
        g, h = self.shape
        ii, jj = np.meshgrid(np.arange(g), np.arange(h), indexing="ij")
        dev, acc, edge = self.device_bytes.ravel(), self.correct.ravel(), self.edge_bytes.ravel()
        order = np.lexsort((jj.ravel(), ii.ravel(), edge, -acc, dev))
        best_before = np.concatenate(([-1], np.maximum.accumulate(acc[order])[:-1]))
        keep = order[acc[order] > best_before]
        return [(int(k // h), int(k % h)) for k in keep]


def evaluate_grid(
    exit_logits: dict[str, Tensor],
    labels: Tensor,
    costs: ByteCosts,
    grid: Sequence[float] = DEFAULT_GRID,
) -> CalibrationGrid:
    """Outcome of every threshold pair on the grid, from each exit's logits on all samples.

    Args:
        exit_logits: (N, C) logits per exit in order local → [edge] → [cloud]; the last answers.
        labels: (N,) true classes.
        costs: bytes per link.
        grid: thresholds tried at the local exit and, if it is not last, at the edge exit.
    """
    names = tuple(exit_logits)
    if names[:1] != (LOCAL,) or len(names) < 2 or not set(names) <= {LOCAL, EDGE, CLOUD}:
        raise ValueError(
            f"calibration needs exits local → [edge] → [cloud] with at least two, got {names}"
        )
    ts = sorted({check_threshold(t) for t in grid})
    if not ts:
        raise ValueError("the threshold grid is empty")
    n = int(labels.shape[0])
    if n == 0:
        raise ValueError("cannot calibrate on an empty data set")
    correct = {k: (v.argmax(dim=1) == labels).double().numpy() for k, v in exit_logits.items()}

    def decisions(name: str) -> np.ndarray:  # (T, N) 1.0 where the sample exits
        eta = entropy_from_logits(exit_logits[name])
        return torch.stack([exit_decision(eta, t) for t in ts]).double().numpy()

    last = correct[names[-1]]
    differs = {k: np.abs(v - last) for k, v in correct.items()}  # 1 where right xor last right
    local = decisions(LOCAL)  # (G, N)
    up = 1.0 - local
    local_n = local.sum(axis=1)[:, None]  # (G, 1)
    local_ok = (local @ correct[LOCAL])[:, None]
    local_differs = (local @ differs[LOCAL])[:, None]
    edge_t: np.ndarray | None = None
    if EDGE in names and names[-1] != EDGE:
        edge = decisions(EDGE)  # (H, N)
        edge_t = np.array(ts)
        edge_n = up @ edge.T  # (G, H)
        last_n = up.sum(axis=1)[:, None] - edge_n
        right = local_ok + (up * correct[EDGE]) @ edge.T + (up * last) @ (1 - edge).T
        discordant = local_differs + (up * differs[EDGE]) @ edge.T
        counts = np.stack([np.broadcast_to(local_n, edge_n.shape), edge_n, last_n], axis=-1)
    else:
        last_n = up.sum(axis=1)[:, None]
        right = local_ok + (up @ last)[:, None]
        discordant = local_differs
        counts = np.stack([local_n, last_n], axis=-1)
    counts = np.rint(counts).astype(np.int64)  # exact: sums of 0/1 in float64
    went_up = n - counts[..., 0]  # (G, H) samples whose devices also send feature maps
    device_bytes = n * len(costs.feature_bytes) * costs.score_bytes + went_up * sum(
        costs.feature_bytes
    )
    edge_bytes = counts[..., -1] * (costs.edge_bytes or 0)
    return CalibrationGrid(
        local_thresholds=np.array(ts),
        edge_thresholds=edge_t,
        exit_names=names,
        costs=costs,
        num_samples=n,
        last_exit_correct=int(last.sum()),
        correct=np.rint(right).astype(np.int64),
        discordant=np.rint(discordant).astype(np.int64),  # (G, H) like ``right``
        exits=counts,
        device_bytes=device_bytes.astype(np.int64),
        edge_bytes=edge_bytes.astype(np.int64),
    )


def choose(grid: CalibrationGrid, target: CalibrationTarget) -> tuple[int, int]:
    """Index of the grid point that best meets ``target``; a clear error if none does.

    ``max_accuracy_drop``: among points with overall ≥ last-exit-only − drop, the most local
    exits, then higher accuracy, then fewer bytes. With a ``confidence_level`` the drop that must
    stay within the limit is its upper bound, see ``drop_upper_bound``. ``max_bytes``: among
    points within the budget, the highest accuracy, then fewer bytes. Remaining ties go to the
    lowest thresholds.
    """
    g, h = grid.shape
    n = grid.num_samples
    ii, jj = (a.ravel() for a in np.meshgrid(np.arange(g), np.arange(h), indexing="ij"))
    acc, local = grid.correct.ravel(), grid.exits[..., 0].ravel()
    dev, edge = grid.device_bytes.ravel(), grid.edge_bytes.ravel()
    keys: tuple[np.ndarray, ...]  # np.lexsort order: the last key sorts first
    if target.max_accuracy_drop is not None:
        reference = grid.last_exit_correct
        bound = drop_upper_bound(grid, target.z).ravel()
        ok = bound <= target.max_accuracy_drop / 100 * n + _TOL
        keys = (jj, ii, edge, dev, -acc, -local)
        if not ok.any():
            best = int(acc.max())
            sure = (
                ""
                if target.confidence_level is None
                else f" with {100 * target.confidence_level:g}% confidence "
                f"(the smallest upper bound is {100 * bound.min() / n:.1f} points)"
            )
            raise ValueError(
                f"no threshold on the grid keeps overall accuracy within "
                f"{target.max_accuracy_drop:g} points of cloud-only ({100 * reference / n:.1f}%)"
                f"{sure}; the best achievable is {100 * best / n:.1f}% "
                f"({100 * (reference - best) / n:.1f} points below)"
            )
    else:
        assert target.max_bytes is not None
        devices = len(grid.costs.feature_bytes)
        ok = dev <= target.max_bytes * n * devices + _TOL
        keys = (jj, ii, edge, dev, -acc)
        if not ok.any():
            fewest = int(dev.min()) / (n * devices)
            raise ValueError(
                f"no threshold on the grid stays within {target.max_bytes:g} bytes per device "
                f"per sample; the fewest achievable is {fewest:g} bytes"
            )
    candidates = np.flatnonzero(ok)
    pick = candidates[np.lexsort(tuple(k[candidates] for k in keys))[0]]
    return int(pick // h), int(pick % h)


def drop_upper_bound(grid: CalibrationGrid, z: float) -> np.ndarray:
    """(G, H) samples lost against the last exit, plus ``z`` standard errors; z = 0: as measured.

    Each sample's difference d = [answer right] − [last exit right] is −1, 0 or +1, so over the
    grid's n samples Σd is ``correct − last_exit_correct`` and Σd² the ``discordant`` count. The
    standard error of the total loss −Σd is √(n · s²) with the paired sample variance
    s² = (Σd² − (Σd)²/n) / (n − 1).
    """
    n = grid.num_samples
    total = (grid.correct - grid.last_exit_correct).astype(np.float64)  # Σd
    variance = np.maximum(grid.discordant - total**2 / n, 0.0) / max(n - 1, 1)
    return -total + z * np.sqrt(n * variance)


@dataclass
class Calibration:
    """The chosen thresholds, what they give on the calibration data, and the trade-off curve.

    ``metrics`` is the grid's prediction for the chosen thresholds and ``measured`` the same
    thresholds run through ``model.infer``; they agree exactly (same rule, same bytes).
    ``grid`` is None when the calibration was read back from ``calibration.json``.
    """

    target: CalibrationTarget
    metrics: OperatingPoint
    measured: OperatingPoint
    cloud_only_accuracy: float  # every sample forced to the last exit
    frontier: list[OperatingPoint]
    split: str
    num_samples: int
    model_version: int
    grid: CalibrationGrid | None = None

    @property
    def thresholds(self) -> dict[str, float]:
        return self.metrics.thresholds

    @property
    def matches_grid(self) -> bool:
        return self.metrics == self.measured

    def as_dict(self) -> dict[str, Any]:
        """What ``calibration.json`` holds (everything but the full grid)."""
        return {
            "format": FORMAT,
            "model_version": self.model_version,
            "split": self.split,
            "num_samples": self.num_samples,
            "target": self.target.as_dict(),
            "thresholds": self.thresholds,
            "cloud_only_accuracy": self.cloud_only_accuracy,
            "metrics": self.metrics.as_dict(),
            "measured": self.measured.as_dict(),
            "frontier": [p.as_dict() for p in self.frontier],
        }


@torch.no_grad()
def calibrate(
    model: DDNN,
    data: AnyDataset,
    target: CalibrationTarget,
    grid: Sequence[float] = DEFAULT_GRID,
    split: str = "validation",
) -> Calibration:
    """Pick exit thresholds on ``data`` that meet ``target`` (see ``choose``).

    Args:
        model: a model with a local exit (raw-offloading devices have no threshold to set).
        data: held-out samples (a validation split; training data gives optimistic thresholds).
        target: the accuracy or communication goal.
        grid: thresholds tried at the local exit and, when it is not last, the edge exit.
        split: name of the data's split, recorded with the result.
    """
    if not model.has_local_exit:
        raise ValueError(
            "this model has no local exit (raw-offloading devices, model.device.filters=[]): "
            "there is no threshold to calibrate"
        )
    check_data_fits_model(model, data)
    target.check_budget(model.config.num_classes, model.config.wire.scores)
    model.eval()
    costs = ByteCosts.of_model(model)
    logits = forward_all(model, data, wire=True).exit_logits()
    table = evaluate_grid(logits, data.labels, costs, grid)
    i, j = choose(table, target)
    chosen = table.point(i, j)
    measured = measure(infer_all(model, data, chosen.thresholds), data.labels, chosen, costs)
    if measured != chosen:
        log.warning("staged inference %s differs from the grid's prediction %s", measured, chosen)
    return Calibration(
        target=target,
        metrics=chosen,
        measured=measured,
        cloud_only_accuracy=table.last_exit_correct / len(data),
        frontier=[table.point(a, b) for a, b in table.frontier()],
        split=split,
        num_samples=len(data),
        model_version=model_version(model),
        grid=table,
    )


def measure(
    result: InferenceResult, labels: Tensor, point: OperatingPoint, costs: ByteCosts
) -> OperatingPoint:
    """The operating point staged inference actually reached at ``point``'s thresholds."""
    n = len(labels)
    frac = {
        name: int((result.exit_index == k).sum()) / n for k, name in enumerate(result.exit_names)
    }
    return OperatingPoint(
        local_threshold=point.local_threshold,
        edge_threshold=point.edge_threshold,
        overall_accuracy=int((result.predictions == labels).sum()) / n,
        local_exit_fraction=frac[LOCAL],
        edge_exit_fraction=frac.get(EDGE),
        cloud_exit_fraction=frac.get(CLOUD),
        bytes_per_device=result.bytes.per_device(),
        edge_to_cloud_bytes=None
        if costs.edge_bytes is None
        else result.bytes.edge_to_cloud_per_sample(),
    )


def save_calibration(run_dir: str | Path, calibration: Calibration) -> Path:
    """Write ``RUN_DIR/calibration.json``; returns its path."""
    path = Path(run_dir) / CALIBRATION_FILE
    path.write_text(json.dumps(calibration.as_dict(), indent=2) + "\n")
    return path


def load_calibration(run_dir: str | Path, model_version: int | None = None) -> Calibration:
    """Read ``RUN_DIR/calibration.json``, rejecting one made for other weights (a retrained run).

    Args:
        run_dir: the run directory.
        model_version: the run's current model version (default: read from its checkpoint).
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise ValueError(
            f"no calibration in {str(run_dir)!r} (missing {CALIBRATION_FILE}); "
            f"run `ddnn calibrate {run_dir} --max-drop 1` first"
        )
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT!r}")
        calibration = Calibration(
            target=CalibrationTarget(**raw["target"]),
            metrics=OperatingPoint(**raw["metrics"]),
            measured=OperatingPoint(**raw["measured"]),
            cloud_only_accuracy=float(raw["cloud_only_accuracy"]),
            frontier=[OperatingPoint(**p) for p in raw["frontier"]],
            split=str(raw["split"]),
            num_samples=int(raw["num_samples"]),
            model_version=int(raw["model_version"]),
        )
        for t in calibration.thresholds.values():
            check_threshold(t)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid {FORMAT} file ({exc})") from None
    current = run_model_version(run_dir) if model_version is None else model_version
    if calibration.model_version != current:
        raise ValueError(
            f"{str(path)!r} is stale: it was computed for model version "
            f"{calibration.model_version:08x} but the run's model is {current:08x} (retrained?); "
            f"run `ddnn calibrate {run_dir}` again"
        )
    return calibration
