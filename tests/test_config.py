"""Typed config: defaults are the paper's, overrides are validated, unknown keys rejected."""

import pytest

from ddnn.config import RunConfig, parse_override, resolve_config, saved_run_config, to_dict


def test_defaults_are_paper_threshold_model():
    c = RunConfig()
    assert c.model.num_devices == 6 and c.model.device.filters == (4,)
    assert (c.model.local_aggregation, c.model.cloud.aggregation) == ("mp", "cc")
    assert c.model.cloud.filters == (16, 16)
    assert (c.train.lr, c.train.betas, c.train.epochs) == (1e-3, (0.9, 0.999), 100)


def test_overrides_parse_yaml_values():
    assert parse_override("model.device.filters=[8, 4]") == {
        "model": {"device": {"filters": [8, 4]}}
    }
    c = resolve_config(
        overrides=["model.device.filters=[8,4]", "train.lr=0.01", "model.cloud.binary=false"]
    )
    assert c.model.device.filters == (8, 4)
    assert c.train.lr == 0.01 and c.model.cloud.binary is False


def test_yaml_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "train:\n  epochs: 7\n  lr: 0.5\nmodel:\n  edge:\n    groups: [[0, 1, 2], [3, 4, 5]]\n"
    )
    c = resolve_config(yaml_path=f, overrides=["train.lr=0.25"])
    assert c.train.epochs == 7 and c.train.lr == 0.25
    assert c.model.edge.groups == ((0, 1, 2), (3, 4, 5))


def test_round_trip_through_dict():
    c = resolve_config(overrides=["model.edge.groups=[[0,1],[2,3,4,5]]"])
    assert resolve_config(extra=to_dict(c)) == c


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("modle.num_devices=3", "unknown config key 'modle'"),
        ("train.epochs=abc", "expected an integer"),
        ("train.lr=fast", "expected a number"),
        ("model.cloud.enabled=maybe", "true/false"),
        ("noequals", "key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises((KeyError, ValueError), match=message):
        resolve_config(overrides=[override])


def test_a_given_value_equal_to_the_default_is_not_replaced_by_the_data(tmp_path):
    """model.num_classes=3 is the default; given explicitly for 2-class data it is an error,
    where the data's count silently replaced it before."""
    import numpy as np

    from ddnn.data.registry import load_dataset
    from ddnn.workflow import fit_model_to_data

    rng = np.random.default_rng(0)
    x = rng.random((40, 6, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "two.npz", X=x, y=np.arange(40) % 2)
    data = [f"data.path={tmp_path / 'two.npz'}", "data.name=npz"]
    splits = load_dataset(resolve_config(overrides=data).data)
    fitted = fit_model_to_data(resolve_config(overrides=data), splits)
    assert fitted.model.num_classes == 2  # not given: taken from the data
    given = resolve_config(overrides=[*data, "model.num_classes=3"])
    assert "model.num_classes" in given.given and given.model.num_classes == 3
    with pytest.raises(ValueError, match="model.num_classes = 3 but data set 'npz' has 2"):
        fit_model_to_data(given, splits)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model:\n  num_devices: 6\n")  # equal to the data: fine
    assert fit_model_to_data(resolve_config(yaml_path=yaml_file, overrides=data), splits)
    assert "given" not in to_dict(given)  # bookkeeping, never saved with a run


def test_a_config_saved_before_the_dropout_mode_reads_as_the_independent_dropout_it_used():
    saved = to_dict(RunConfig())
    del saved["train"]["device_dropout_mode"]
    saved["train"]["device_dropout"] = 0.15
    old = saved_run_config(saved)
    assert old.train.device_dropout_mode == "independent" and old.train.device_dropout == 0.15
    assert saved_run_config(to_dict(RunConfig())).train.device_dropout_mode == "single"
