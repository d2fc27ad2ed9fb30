"""Per-modality model defaults: what a hierarchy of feature-vector sensors gets where the user set nothing.

``ModelConfig()`` holds the paper's defaults, made for cameras (ConvP(4) binary devices, MP local
exit, a binary cloud). On sensors that give feature vectors (input shape ``(F,)``) a binary FC of 4
units is a bottleneck, so such hierarchies get the values below, chosen by
``benchmarks/sensor_defaults.py`` on synthetic and real multi-view data (docs/data.md, "Vector
sensors"). A key keeps the user's value whenever it was given (config file, flag, ``key=value``)
or differs from the paper's; image and time-series devices keep the paper's defaults.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from ddnn.config import ModelConfig

# Chosen by benchmarks/results_sensor_defaults.txt (mean validation accuracy over 3 data sets):
VECTOR_FILTERS = (16,)  # 16 units (2 B up per sample): 96.4 %; the paper's binary FC(4): 86.7 %
VECTOR_NORMALIZE_INPUT = False  # 96.7 % with it: within the 0.5-point tie, 128 B more memory
VECTOR_LOCAL_AGGREGATION = "cc"  # learned fusion of score rows: 86.7 % vs ap 84.8 %, mp 81.0 %
VECTOR_CLOUD_FILTERS = (64,)  # one wide float layer: 97.6 % vs 96.4 % for the binary 16x16 cloud
VECTOR_CLOUD_BINARY: bool | tuple[bool, ...] = False  # the cloud is a server
VECTOR_SCORES = "int8"  # the one encoding below raw bytes on digits-4 (10 classes, 16 features)


def vector_binary(filters: tuple[int, ...]) -> bool | tuple[bool, ...]:
    """Device precision for vector sensors: a float first layer on the raw features, binary after
    (the exit head included). Measured at 16 units: 96.4 %, 1.2 KB; all float 96.6 %, 1.4-1.9 KB;
    all binary (with ``normalize_input``) 96.4 %, 0.3 KB, at the edge of the benchmark's tie
    window — a near tie that another run may break the other way."""
    return (False,) + (True,) * len(filters) if filters else True


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
    paper's default. Only vector devices have defaults of their own so far.
    """
    if modality(model.device_shapes) != "vector":
        return model
    paper = ModelConfig()

    def free(key: str) -> bool:
        return f"model.{key}" not in given and _get(model, key) == _get(paper, key)

    device, cloud = model.device, model.cloud
    if free("device.filters"):
        device = replace(device, filters=VECTOR_FILTERS)
    if free("device.binary"):
        device = replace(device, binary=vector_binary(device.filters))
    if free("device.normalize_input"):
        device = replace(device, normalize_input=VECTOR_NORMALIZE_INPUT)
    if free("cloud.filters"):
        cloud = replace(cloud, filters=VECTOR_CLOUD_FILTERS)
    if free("cloud.binary"):
        cloud = replace(cloud, binary=VECTOR_CLOUD_BINARY)
    local = VECTOR_LOCAL_AGGREGATION if free("local_aggregation") else model.local_aggregation
    wire = replace(model.wire, scores=VECTOR_SCORES) if free("wire.scores") else model.wire
    return replace(model, device=device, cloud=cloud, local_aggregation=local, wire=wire)
