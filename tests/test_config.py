"""Typed config: defaults are the paper's, overrides are validated, unknown keys rejected."""

import pytest

from ddnn.config import RunConfig, parse_override, resolve_config, to_dict


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
