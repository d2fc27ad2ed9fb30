"""Checks that a model configuration describes a buildable hierarchy, with user-facing errors."""

from __future__ import annotations

import math

from ddnn.config import ModelConfig
from ddnn.nn.aggregate import check_aggregator_name


def validate_model_config(config: ModelConfig) -> None:
    """Raise ``ValueError`` naming the bad value and what is accepted."""
    if config.num_devices < 1:
        raise ValueError(f"model.num_devices must be >= 1, got {config.num_devices}")
    if config.num_classes < 2:
        raise ValueError(f"model.num_classes must be >= 2, got {config.num_classes}")
    if not 1 <= len(config.input_shape) <= 3 or any(n < 1 for n in config.input_shape):
        raise ValueError(
            f"model.input_shape must be (C, H, W), (C, L) or (F,) with positive sizes, "
            f"got {config.input_shape}"
        )
    if config.device_input_shapes:
        _validate_device_shapes(config)
    check_aggregator_name(config.local_aggregation)
    encodings = ("float32", "float16", "int8")
    if config.wire.scores not in encodings:
        raise ValueError(
            f"model.wire.scores = {config.wire.scores!r}; accepted: {', '.join(encodings)}"
        )
    for name, filters in (
        ("model.device.filters", config.device.filters),
        ("model.edge.filters", config.edge.filters),
        ("model.cloud.filters", config.cloud.filters),
    ):
        if any(f < 1 for f in filters):
            raise ValueError(f"{name} must be positive filter counts, got {filters}")
    _validate_precisions(config)
    groups = config.edge.groups
    if groups:
        check_aggregator_name(config.edge.aggregation)
        if not config.edge.filters:
            raise ValueError("model.edge.filters must list at least one block when edges exist")
        seen: list[int] = [d for g in groups for d in g]
        bad = [d for d in seen if not 0 <= d < config.num_devices]
        if bad:
            raise ValueError(
                f"model.edge.groups names device(s) {bad}; accepted: 0..{config.num_devices - 1}"
            )
        if any(len(g) == 0 for g in groups):
            raise ValueError(f"model.edge.groups has an empty group: {groups}")
        if sorted(seen) != list(range(config.num_devices)):
            raise ValueError(
                f"model.edge.groups must assign every device to exactly one edge, got {groups} "
                f"for {config.num_devices} devices"
            )
        if config.edge.pool_stride not in (1, 2):
            raise ValueError(
                f"model.edge.pool_stride must be 1 or 2, got {config.edge.pool_stride}"
            )
    if config.cloud.enabled:
        check_aggregator_name(config.cloud.aggregation)
        if not config.cloud.filters:
            raise ValueError("model.cloud.filters must list at least one block")
        if config.cloud.pool_stride not in (1, 2):
            raise ValueError(
                f"model.cloud.pool_stride must be 1 or 2, got {config.cloud.pool_stride}"
            )
    else:
        if len(groups) != 1:
            raise ValueError(
                "a hierarchy without a cloud must end at exactly one edge "
                f"(model.edge.groups has {len(groups)} groups)"
            )
    if not config.device.filters and not config.cloud.enabled:
        raise ValueError("raw-offloading devices (model.device.filters=[]) need a cloud")


def _validate_device_shapes(config: ModelConfig) -> None:
    """Devices with different input shapes: packed inputs, flattened features fused by CC."""
    shapes = config.device_input_shapes
    if len(shapes) != config.num_devices:
        raise ValueError(
            f"model.device_input_shapes lists {len(shapes)} shapes for {config.num_devices} devices"
        )
    for k, shape in enumerate(shapes):
        if not 1 <= len(shape) <= 3 or any(n < 1 for n in shape):
            raise ValueError(
                f"model.device_input_shapes[{k}] must be (C, H, W), (C, L) or (F,) with positive "
                f"sizes, got {shape}"
            )
    width = max(math.prod(s) for s in shapes)
    if tuple(config.input_shape) != (width,):
        raise ValueError(
            f"with per-device input shapes model.input_shape must be ({width},), the longest "
            f"flattened device input, got {config.input_shape}"
        )
    if config.device.share_weights and len(set(shapes)) > 1:
        raise ValueError(
            "model.device.share_weights needs devices with one input shape, "
            f"got {sorted(set(shapes))}"
        )
    for name, section, used in (
        ("model.edge.aggregation", config.edge, bool(config.edge.groups)),
        ("model.cloud.aggregation", config.cloud, config.cloud.enabled),
    ):
        if used and section.aggregation != "cc":
            raise ValueError(
                f"{name} = {section.aggregation!r}, but devices with different input shapes send "
                "feature vectors of different lengths, which only 'cc' (concatenation) can fuse"
            )


def _validate_precisions(config: ModelConfig) -> None:
    """``binary`` per section: one bool, or one bool per layer (feature blocks, then the head)."""
    for name, section in (
        ("model.device", config.device),
        ("model.edge", config.edge),
        ("model.cloud", config.cloud),
    ):
        binary = section.binary
        if isinstance(binary, bool):
            continue
        if not isinstance(binary, tuple) or not all(isinstance(b, bool) for b in binary):
            raise ValueError(
                f"{name}.binary must be true/false or a list of true/false (a tuple in Python), "
                f"got {binary!r}"
            )
        blocks = len(section.filters)
        want = blocks + 1 if blocks or name != "model.device" else 0
        if len(binary) != want:
            layers = (
                "a raw-offloading device has no layers (give true or false)"
                if want == 0
                else f"{blocks} feature block(s) ({name}.filters) + the exit head"
            )
            raise ValueError(
                f"{name}.binary lists {len(binary)} flag(s), but the section has {want} layer(s): "
                f"{layers}; give one true/false per layer, or one true/false for all"
            )
