"""The search space of `ddnn search`: one trial's choices as ordinary key=value config overrides.

Every sampled point is a list of overrides for ``resolve_config``, so a trial is a plain run
configuration that `ddnn train` could have produced. Keys the user fixes on the command line are
not searched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ddnn.config import parse_override

# Choices (kept small: every trial is a full training run).
DEVICE_LAYERS = (1, 2)
# Up to 64 first-layer filters: a wide first layer is what lifts a 28 x 28 camera tile
# (benchmarks/fashion_benchmark.py); the device-memory objective weighs what it costs.
FIRST_FILTERS = (1, 2, 4, 8, 16, 32, 64)
SECOND_FILTERS = (1, 2, 4, 8, 16, 32)
# model.device.binary: every layer binary (eBNN), every layer float, or a float first layer on the
# raw signal and binary after (the vector and time-series default, ddnn.models.defaults).
PRECISIONS = ("binary", "float", "float-first")
SCORE_ENCODINGS = ("float32", "float16", "int8")
AGGREGATIONS = ("mp", "ap", "cc")
CLOUD_WIDTHS = (8, 16, 32, 64)
CLOUD_PRECISIONS = (True, False)  # model.cloud.binary: binarized or float (it runs on a server)
DROPOUT = (0.0, 0.3, 0.05)  # low, high, step
DEVICE_WEIGHT = (0.0, 1.0, 0.25)
EXIT_WEIGHT = (0.25, 2.0, 0.25)  # local and edge exits; the cloud exit keeps weight 1

# Each searched parameter and the config key it sets.
PARAM_KEYS: dict[str, str] = {
    "device_layers": "model.device.filters",
    "device_filters_1": "model.device.filters",
    "device_filters_2": "model.device.filters",
    "device_binary": "model.device.binary",
    "score_encoding": "model.wire.scores",
    "local_aggregation": "model.local_aggregation",
    "cloud_aggregation": "model.cloud.aggregation",
    "cloud_width": "model.cloud.filters",
    "cloud_binary": "model.cloud.binary",
    "edge_groups": "model.edge.groups",
    "edge_aggregation": "model.edge.aggregation",
    "device_dropout": "train.device_dropout",
    "device_weight": "train.device_weight",
    "local_weight": "train.local_weight",
    "edge_weight": "train.edge_weight",
}


class Suggester(Protocol):
    """What the space needs from a trial (``optuna.Trial`` and ``optuna.trial.FixedTrial`` fit)."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


def edge_groupings(num_devices: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Named edge layouts for ``num_devices`` devices: none, one edge, and k contiguous groups.

    k groups are offered only when every group can hold two devices, so an edge always fuses.
    """
    devices = list(range(num_devices))
    out: dict[str, tuple[tuple[int, ...], ...]] = {"none": (), "one": (tuple(devices),)}
    for k, name in ((2, "two"), (3, "three")):
        if num_devices >= 2 * k:
            bounds = [round(i * num_devices / k) for i in range(k + 1)]
            out[name] = tuple(tuple(devices[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
    return out


def override_keys(overrides: Iterable[str]) -> frozenset[str]:
    """Dotted keys that ``overrides`` set (a mapping value sets every key under it)."""

    def walk(tree: dict[str, Any], prefix: str) -> Iterable[str]:
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and value:
                yield from walk(value, path)
            else:
                yield path

    return frozenset(k for text in overrides for k in walk(parse_override(text), ""))


def _list(values: Sequence[Any]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def _precision_value(precision: str, layers: int) -> str:
    """``model.device.binary``'s value for a precision choice on ``layers`` feature blocks (a
    float first layer takes one flag per block and one for the exit head)."""
    if precision == "float-first":
        return _list(["false", *(["true"] * layers)])
    return "true" if precision == "binary" else "false"


@dataclass(frozen=True)
class SearchSpace:
    """The DDNN hierarchy's searchable choices for a data set with ``num_devices`` devices.

    Attributes:
        num_devices: devices of the data set (edge groupings depend on it).
        mixed_shapes: devices with different input shapes: only ``cc`` can fuse their features
            above the local exit, so edge and cloud aggregation are not searched.
        fixed: dotted config keys the user set; parameters writing them are not searched.
        fixed_edge: when ``model.edge.groups`` is fixed, whether those groups are non-empty.
        fixed_device_layers: when ``model.device.filters`` is fixed, how many blocks it lists.
    """

    num_devices: int
    mixed_shapes: bool = False
    fixed: frozenset[str] = frozenset()
    fixed_edge: bool = False
    fixed_device_layers: int = 1

    def searched(self, param: str) -> bool:
        """Whether ``param`` is searched (its key, or a mapping above it, is not fixed)."""
        key = PARAM_KEYS[param]
        return not any(key == f or key.startswith(f + ".") for f in self.fixed)

    def suggest(self, trial: Suggester) -> list[str]:
        """Sample one point; returns its overrides in a stable order."""
        out: list[str] = []
        layers = self.fixed_device_layers
        if self.searched("device_layers"):
            layers = trial.suggest_categorical("device_layers", DEVICE_LAYERS)
            filters = [trial.suggest_categorical("device_filters_1", FIRST_FILTERS)]
            if layers == 2:
                filters.append(trial.suggest_categorical("device_filters_2", SECOND_FILTERS))
            out.append(f"model.device.filters={_list(filters)}")
        if self.searched("device_binary"):
            precision = trial.suggest_categorical("device_binary", PRECISIONS)
            out.append(f"model.device.binary={_precision_value(precision, layers)}")
        if self.searched("score_encoding"):
            out.append(
                f"model.wire.scores={trial.suggest_categorical('score_encoding', SCORE_ENCODINGS)}"
            )
        if self.searched("local_aggregation"):
            agg = trial.suggest_categorical("local_aggregation", AGGREGATIONS)
            out.append(f"model.local_aggregation={agg}")
        upper = ("cc",) if self.mixed_shapes else AGGREGATIONS
        if self.searched("cloud_aggregation") and len(upper) > 1:
            agg = trial.suggest_categorical("cloud_aggregation", upper)
            out.append(f"model.cloud.aggregation={agg}")
        if self.searched("cloud_width"):
            width = trial.suggest_categorical("cloud_width", CLOUD_WIDTHS)
            out.append(f"model.cloud.filters={_list([width, width])}")
        if self.searched("cloud_binary"):
            binary = trial.suggest_categorical("cloud_binary", CLOUD_PRECISIONS)
            out.append(f"model.cloud.binary={str(binary).lower()}")
        has_edge = self.fixed_edge
        if self.searched("edge_groups"):
            layouts = edge_groupings(self.num_devices)
            groups = layouts[trial.suggest_categorical("edge_groups", tuple(layouts))]
            out.append(f"model.edge.groups={_list([_list(g) for g in groups])}")
            has_edge = bool(groups)
        if has_edge and self.searched("edge_aggregation") and len(upper) > 1:
            agg = trial.suggest_categorical("edge_aggregation", upper)
            out.append(f"model.edge.aggregation={agg}")
        for param, (low, high, step), edge_only in (
            ("device_dropout", DROPOUT, False),
            ("device_weight", DEVICE_WEIGHT, False),
            ("local_weight", EXIT_WEIGHT, False),
            ("edge_weight", EXIT_WEIGHT, True),
        ):
            if self.searched(param) and (has_edge or not edge_only):
                value = trial.suggest_float(param, low, high, step=step)
                out.append(f"{PARAM_KEYS[param]}={round(value, 6)}")
        return out

    def describe(self) -> list[str]:
        """One line per searched parameter: what it sets and its choices (for docs and logs)."""
        lines = []
        if self.searched("device_layers"):
            lines.append(
                f"model.device.filters: {DEVICE_LAYERS} layers, first {FIRST_FILTERS}, "
                f"second {SECOND_FILTERS} filters"
            )
        for param, choices in (
            ("device_binary", PRECISIONS),
            ("score_encoding", SCORE_ENCODINGS),
            ("local_aggregation", AGGREGATIONS),
            ("cloud_aggregation", ("cc",) if self.mixed_shapes else AGGREGATIONS),
            ("cloud_width", CLOUD_WIDTHS),
            ("cloud_binary", CLOUD_PRECISIONS),
            ("edge_groups", tuple(edge_groupings(self.num_devices).values())),
            ("edge_aggregation", ("cc",) if self.mixed_shapes else AGGREGATIONS),
        ):
            if self.searched(param):
                lines.append(f"{PARAM_KEYS[param]}: {choices}")
        for param, rng in (
            ("device_dropout", DROPOUT),
            ("device_weight", DEVICE_WEIGHT),
            ("local_weight", EXIT_WEIGHT),
            ("edge_weight", EXIT_WEIGHT),
        ):
            if self.searched(param):
                lines.append(f"{PARAM_KEYS[param]}: {rng[0]}..{rng[1]} step {rng[2]}")
        return lines
