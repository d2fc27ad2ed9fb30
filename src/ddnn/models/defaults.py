"""Per-modality model defaults: what a hierarchy of vector or time-series sensors gets where the user set nothing.

``ModelConfig()`` holds the paper's defaults, made for cameras (ConvP(4) binary devices, MP local
exit, a binary cloud). On sensors that give feature vectors (input shape ``(F,)``) a binary FC of 4
units is a bottleneck, and on time series (``(C, L)``) one 1-D ConvP block of 4 filters sees too
few steps, so such hierarchies get the values below, chosen by ``benchmarks/sensor_defaults.py``
on synthetic and real multi-view data (docs/data.md, "Vector sensors" and "Time-series sensors").
A key keeps the user's value whenever it was given (config file, flag, ``key=value``) or differs
from the paper's; image devices keep the paper's defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from ddnn.config import ModelConfig
from ddnn.models.sections import stack_output_shape
from ddnn.wire import raw_bytes_per_device, score_payload_bytes
from ddnn.wire.scores import ScoreEncoding

# Chosen by benchmarks/results_sensor_defaults.txt (mean validation accuracy over 3 data sets x 5
# data seeds, with the default recipe: single-device dropout 0.3):
VECTOR_FILTERS = (16,)  # 16 units (2 B up per sample): 97.3 %; the paper's binary FC(4): 85.7 %
VECTOR_NORMALIZE_INPUT = True  # 97.3 % with it, 96.5 % without (breast-cancer's mixed scales)
VECTOR_LOCAL_AGGREGATION = "cc"  # learned fusion of score rows: 85.7 % vs ap 84.5 %, mp 80.5 %
VECTOR_CLOUD_FILTERS = (16, 16)  # float: 98.1 % vs 97.5 % for one layer of 64, 97.3 % binary
VECTOR_CLOUD_BINARY: bool | tuple[bool, ...] = False  # the cloud is a server
# A dropped device skips the sample in training (model.device.skip_absent), its BatchNorm
# statistics those of present inputs: on fresh data seeds 60-79 the mean validation accuracy of
# the three sets rose from 97.1 to 97.4 % (benchmarks/results_vector_gap_levers_present_fresh.txt).
# Not for images: on synthetic-mvmc's validation splits it raised the worst missing device's
# cost from 2.8 to 4.7 points (results_missing_device_present.txt).
VECTOR_SKIP_ABSENT = True


# Chosen by benchmarks/results_series_defaults.txt (mean validation accuracy over synthetic-series
# and digits-rows-4, 5 data seeds each, with the default recipe: single-device dropout 0.3):
SERIES_FILTERS = (32, 16, 16)  # three 1-D ConvP blocks: 95.2 %; one block of 16: 74.6-76.7 %
# ... cut on short series (series_filters): a block is kept only while the feature map it leaves
# has at least this many steps. On digits-rows-4 (8 steps) the three blocks leave 1 step, and the
# device stage's validation accuracy there was 95.8 % with them against 97.6 % for 32-16.
MIN_SERIES_STEPS = 2
# ... and the last block kept after a cut has at least this many filters: fewer steps carry fewer
# feature bits (16 filters over 2 steps: 32 bits, against 128 for the full stack over 64 steps).
# On digits-rows-4, 32-32 against 32-16: validation 98.45 % against 98.05 % over data seeds 0-19,
# and 98.6 % against 98.3 % on fresh seeds 80-89, the rule fixed before that run asking +0.2
# (benchmarks/results_series_short_levers_fresh.txt).
SERIES_CUT_LAST_FILTERS = 32
SERIES_NORMALIZE_INPUT = False  # two blocks (32-16): 84.9 % against 84.2 % with it
SERIES_LOCAL_AGGREGATION = "cc"  # chosen on the paper's device: cc 70.8 %, ap 69.4 %, mp 68.3 %
SERIES_CLOUD_FILTERS = (16, 16)  # float: 96.4 %; one layer of 64 (97.4 %) left < 50 % local exits
SERIES_CLOUD_BINARY: bool | tuple[bool, ...] = False  # the cloud is a server
# As for vectors: on fresh data seeds 60-69 the mean validation accuracy of the two sets rose from
# 96.5 to 96.8 % (benchmarks/results_series_gap_levers_present_fresh.txt).
SERIES_SKIP_ABSENT = True


# Score encoding, both modalities: the most precise one whose score row costs less than the
# device's raw reading (scores_below_raw). Chosen on validation against one encoding for all data
# (benchmarks/results_scores_below_raw.txt): vectors 97.9 % vs 97.3 % for int8 everywhere, series
# 96.9 % vs 96.4 % for float16 everywhere (which sent more than raw bytes on digits-rows-4).
SCORE_ENCODINGS = tuple(e.value for e in ScoreEncoding)  # float32, float16, int8: precise first


def first_layer_float(filters: tuple[int, ...]) -> bool | tuple[bool, ...]:
    """A float first layer on the raw signal, binary after (the exit head included): the device
    precision of vector and time-series sensors. The features still travel as bits."""
    return (False,) + (True,) * len(filters) if filters else True


def vector_binary(filters: tuple[int, ...]) -> bool | tuple[bool, ...]:
    """Device precision for vector sensors (:func:`first_layer_float`). Measured at 16 units with
    input normalization: 97.3 %, 1.4 KB; all float 97.3 %, 1.9 KB (without normalization); all
    binary (with it) 96.3 %, 0.3 KB."""
    return first_layer_float(filters)


def series_filters(shapes: Collection[tuple[int, ...]]) -> tuple[int, ...]:
    """``SERIES_FILTERS`` cut to the blocks whose feature map keeps at least ``MIN_SERIES_STEPS``
    steps on the shortest device's series (each block halves it); at least one block. After a
    cut, the last block kept has at least ``SERIES_CUT_LAST_FILTERS`` filters.

    64 steps keep all three blocks (64 → 32 → 16 → 8): 32-16-16; 8 steps keep two (8 → 4 → 2):
    32-32; 4 steps or fewer one: 32.
    """
    if not shapes:
        raise ValueError("series_filters needs the devices' input shapes, got none")
    shortest = min(s[-1] for s in shapes)
    kept = 1
    for n in range(len(SERIES_FILTERS), 1, -1):
        if stack_output_shape((1, shortest), SERIES_FILTERS[:n], 2)[-1] >= MIN_SERIES_STEPS:
            kept = n
            break
    if kept == len(SERIES_FILTERS):
        return SERIES_FILTERS
    return SERIES_FILTERS[: kept - 1] + (max(SERIES_FILTERS[kept - 1], SERIES_CUT_LAST_FILTERS),)


@dataclass(frozen=True)
class SensorDefaults:
    """The model keys one sensor modality gets where the user set nothing; the device filters
    from the devices' input shapes."""

    filters: Callable[[Collection[tuple[int, ...]]], tuple[int, ...]]
    normalize_input: bool
    local_aggregation: str
    cloud_filters: tuple[int, ...]
    cloud_binary: bool | tuple[bool, ...]
    skip_absent: bool


BY_MODALITY = {
    "vector": SensorDefaults(
        lambda shapes: VECTOR_FILTERS,
        VECTOR_NORMALIZE_INPUT,
        VECTOR_LOCAL_AGGREGATION,
        VECTOR_CLOUD_FILTERS,
        VECTOR_CLOUD_BINARY,
        VECTOR_SKIP_ABSENT,
    ),
    "series": SensorDefaults(
        series_filters,
        SERIES_NORMALIZE_INPUT,
        SERIES_LOCAL_AGGREGATION,
        SERIES_CLOUD_FILTERS,
        SERIES_CLOUD_BINARY,
        SERIES_SKIP_ABSENT,
    ),
}


def scores_below_raw(num_classes: int, shapes: Collection[tuple[int, ...]]) -> str:
    """The most precise score encoding whose row of ``num_classes`` scores costs fewer bytes than
    the smallest device's raw reading (8 bits per input value); ``int8`` when none does.

    Ten classes over a 16-value sensor get int8 (10 B, not 20 or 40), three classes over 16
    values float32 (12 B), two over 10 values float32 (8 B).
    """
    if not shapes:
        raise ValueError("scores_below_raw needs the devices' input shapes, got none")
    raw = min(raw_bytes_per_device(s) for s in shapes)
    for encoding in SCORE_ENCODINGS:
        if score_payload_bytes(num_classes, encoding) < raw:
            return encoding
    return SCORE_ENCODINGS[-1]


def modality(shapes: Collection[tuple[int, ...]]) -> str:
    """``"vector"``, ``"series"`` or ``"image"`` when every device's input has that many dims,
    else ``"mixed"``."""
    kinds = {{1: "vector", 2: "series", 3: "image"}.get(len(s), "mixed") for s in shapes}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _get(model: ModelConfig, key: str) -> Any:
    value: Any = model
    for part in key.split("."):
        value = getattr(value, part)
    return value


def with_modality_defaults(model: ModelConfig, given: Collection[str] = ()) -> ModelConfig:
    """``model`` with the defaults of its devices' modality for every key not ``given``.

    A key counts as given when ``"model.<key>"`` is in ``given`` or its value differs from the
    paper's default. Vector and time-series devices have defaults of their own; images and mixed
    hierarchies keep the paper's.
    """
    chosen = BY_MODALITY.get(modality(model.device_shapes))
    if chosen is None:
        return model
    paper = ModelConfig()

    def free(key: str) -> bool:
        return f"model.{key}" not in given and _get(model, key) == _get(paper, key)

    device, cloud = model.device, model.cloud
    if free("device.filters"):
        device = replace(device, filters=chosen.filters(model.device_shapes))
    if free("device.binary"):
        device = replace(device, binary=first_layer_float(device.filters))
    if free("device.normalize_input"):
        device = replace(device, normalize_input=chosen.normalize_input)
    if free("device.skip_absent"):
        device = replace(device, skip_absent=chosen.skip_absent)
    if free("cloud.filters"):
        cloud = replace(cloud, filters=chosen.cloud_filters)
    if free("cloud.binary"):
        cloud = replace(cloud, binary=chosen.cloud_binary)
    local = chosen.local_aggregation if free("local_aggregation") else model.local_aggregation
    wire = model.wire
    if free("wire.scores"):
        wire = replace(wire, scores=scores_below_raw(model.num_classes, model.device_shapes))
    return replace(model, device=device, cloud=cloud, local_aggregation=local, wire=wire)
