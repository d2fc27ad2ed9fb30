"""Per-modality defaults: vector and time-series sensors get their own, images keep the paper's,
given keys win."""

from dataclasses import replace

import pytest

from ddnn.config import DataConfig, ModelConfig, RunConfig, resolve_config
from ddnn.data.registry import load_dataset
from ddnn.models import defaults
from ddnn.models.ddnn import DDNN
from ddnn.models.defaults import (
    modality,
    scores_below_raw,
    series_filters,
    vector_binary,
    with_modality_defaults,
)
from ddnn.workflow import fit_model_to_data

VECTORS = ModelConfig(num_devices=4, input_shape=(16,))


def test_modality_of_device_shapes():
    assert modality([(16,), (16,)]) == "vector"
    assert modality([(2, 12)]) == "series"
    assert modality([(3, 32, 32)]) == "image"
    assert modality([(3, 8, 8), (5,)]) == "mixed"


def test_vector_devices_get_the_vector_defaults():
    model = with_modality_defaults(VECTORS)
    assert model.device.filters == defaults.VECTOR_FILTERS
    assert model.device.binary == vector_binary(defaults.VECTOR_FILTERS)
    assert model.device.normalize_input is defaults.VECTOR_NORMALIZE_INPUT
    assert model.device.skip_absent is defaults.VECTOR_SKIP_ABSENT is True
    assert model.local_aggregation == defaults.VECTOR_LOCAL_AGGREGATION
    assert model.cloud.filters == defaults.VECTOR_CLOUD_FILTERS
    assert model.cloud.binary == defaults.VECTOR_CLOUD_BINARY
    assert model.wire.scores == "float32"  # 3 classes x 4 B = 12 B < 16 raw bytes
    DDNN(model)  # a valid hierarchy
    assert with_modality_defaults(model) == model  # applying twice changes nothing (resume)


def test_series_devices_get_the_series_defaults():
    model = with_modality_defaults(replace(VECTORS, input_shape=(3, 64)))
    assert model.device.filters == defaults.SERIES_FILTERS == (32, 16, 16)
    assert model.device.binary == (False, True, True, True)  # float first layer, binary after
    assert model.device.normalize_input is defaults.SERIES_NORMALIZE_INPUT
    assert model.device.skip_absent is defaults.SERIES_SKIP_ABSENT is True
    assert model.local_aggregation == defaults.SERIES_LOCAL_AGGREGATION
    assert model.cloud.filters == defaults.SERIES_CLOUD_FILTERS
    assert model.cloud.binary == defaults.SERIES_CLOUD_BINARY
    assert model.wire.scores == "float32"  # 12 B < 3 x 64 raw bytes
    net = DDNN(model)  # a valid hierarchy, also on the shortest series the blocks can take
    assert net.devices[0].feature_shape == (16, 8)  # 64 steps halved by each of the 3 blocks
    DDNN(with_modality_defaults(replace(VECTORS, input_shape=(2, 2))))
    assert with_modality_defaults(model) == model


@pytest.mark.parametrize(
    "steps, blocks, feature_steps",
    # Each block's max-pool (3, stride 2, padding 1) leaves ceil(L / 2) steps: 8 -> 4 -> 2 -> 1.
    [(64, 3, 8), (16, 3, 2), (9, 3, 2), (8, 2, 2), (5, 2, 2), (4, 1, 2), (2, 1, 1), (1, 1, 1)],
)
def test_short_series_get_fewer_blocks(steps, blocks, feature_steps):
    model = with_modality_defaults(replace(VECTORS, input_shape=(2, steps)))
    # the full stack is 32-16-16; a cut one keeps a last block of 32 filters
    filters = {3: (32, 16, 16), 2: (32, 32), 1: (32,)}[blocks]
    assert model.device.filters == filters
    assert model.device.binary == (False,) + (True,) * blocks  # the precision follows the cut
    net = DDNN(model)
    assert net.devices[0].feature_shape == (filters[-1], feature_steps)
    assert with_modality_defaults(model) == model  # cut once, kept on resume


def test_the_shortest_series_sets_the_depth():
    assert series_filters([(3, 64), (1, 8), (2, 32)]) == (32, 32)
    assert series_filters([(3, 64), (3, 9)]) == (32, 16, 16)
    with pytest.raises(ValueError, match="needs the devices' input shapes"):
        series_filters([])


def test_given_series_filters_are_not_cut():
    config = resolve_config(
        RunConfig(data=DataConfig(name="digits-rows-4")),
        overrides=["model.device.filters=[32,16,16]"],
    )
    splits = load_dataset(config.data)
    model = fit_model_to_data(config, splits).model
    assert model.device.filters == (32, 16, 16)  # given: kept, although 8 steps would cut it
    assert model.device.binary == (False, True, True, True)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_images_keep_the_papers_defaults(shape):
    model = replace(VECTORS, input_shape=shape)
    assert with_modality_defaults(model) == model


def test_given_keys_are_kept_even_when_equal_to_the_papers():
    config = resolve_config(
        overrides=[
            "model.device.filters=[4]",
            "model.local_aggregation=mp",
            "model.wire.scores=float32",
        ]
    )
    model = with_modality_defaults(replace(config.model, **_shape()), config.given)
    assert model.device.filters == (4,) and model.local_aggregation == "mp"
    assert model.wire.scores == "float32"
    # the precision follows the given depth: a float first layer, then binary
    assert model.device.binary == (False, True)
    deep = with_modality_defaults(replace(VECTORS, device=replace(VECTORS.device, filters=(8, 8))))
    assert deep.device.binary == (False, True, True)
    kept = resolve_config(
        overrides=[
            "model.device.binary=true",
            "model.device.normalize_input=false",
            "model.device.skip_absent=false",
        ]
    )
    model = with_modality_defaults(replace(kept.model, **_shape()), kept.given)
    assert model.device.binary is True and model.device.normalize_input is False
    assert model.device.skip_absent is False


def _shape():
    return {"num_devices": 4, "input_shape": (16,)}


def test_fit_model_to_data_applies_them_and_the_paper_run_is_untouched():
    vectors = load_dataset(DataConfig(name="synthetic-vectors"))
    fitted = fit_model_to_data(RunConfig(data=DataConfig(name="synthetic-vectors")), vectors)
    assert (
        fitted.model == with_modality_defaults(fitted.model) != replace(ModelConfig(), **_shape())
    )
    assert fitted.model.device.normalize_input is defaults.VECTOR_NORMALIZE_INPUT
    images = load_dataset(DataConfig(num_train=8, num_test=4))
    assert fit_model_to_data(RunConfig(data=DataConfig(num_train=8, num_test=4)), images).model == (
        ModelConfig()
    )


@pytest.mark.parametrize(
    ("classes", "shapes", "expected"),
    [
        (3, [(16,)], "float32"),  # 12 B < 16 B
        (4, [(16,)], "float16"),  # 16 B is not below 16 B; 8 B is
        (10, [(16,)], "int8"),  # 40 and 20 B are not below 16 B; 10 B is
        (2, [(10,)], "float32"),  # breast-cancer-3: 8 B < 10 B
        (10, [(2, 8)], "int8"),  # digits-rows-4: 16 raw bytes
        (3, [(64,), (8,)], "float16"),  # the smallest device decides: 6 B < 8 B <= 12 B
        (40, [(16,)], "int8"),  # none is below raw: the cheapest
    ],
)
def test_scores_are_the_most_precise_encoding_below_the_raw_reading(classes, shapes, expected):
    assert scores_below_raw(classes, shapes) == expected


def test_ten_classes_on_small_vectors_get_int8_and_a_given_encoding_wins():
    ten = replace(VECTORS, num_classes=10)
    model = with_modality_defaults(ten)
    assert model.wire.scores == "int8"
    assert with_modality_defaults(model) == model  # applying twice changes nothing
    given = resolve_config(overrides=["model.wire.scores=float32"])
    kept = with_modality_defaults(replace(given.model, **_shape(), num_classes=10), given.given)
    assert kept.wire.scores == "float32"
