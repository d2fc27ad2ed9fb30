"""Devices with different input shapes: a camera, a 2-axis time series and a feature vector."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddnn.cli import main
from ddnn.config import CloudConfig, DeviceConfig, EdgeConfig, ModelConfig
from ddnn.data.dataset import pack_device_inputs
from ddnn.models.ddnn import DDNN
from ddnn.train.checkpoint import load_section, save_run

SHAPES = ((3, 8, 8), (2, 12), (5,))
WIDTH = 3 * 8 * 8  # the longest flattened input
CONFIG = ModelConfig(
    num_devices=3,
    input_shape=(WIDTH,),
    device_input_shapes=SHAPES,
    num_classes=4,
    cloud=CloudConfig(filters=(6,)),
)
# Device ConvP(4), pool stride 2: (3,8,8) -> (4,4,4) = 64 bits; (2,12) -> (4,6) = 24 bits;
# (5,) -> FC(4) = 4 bits. On the wire: 8, 3 and 1 bytes.
FEATURE_BYTES = np.array([8, 3, 1])


def _inputs(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, *s, generator=g) for s in SHAPES]


def test_each_device_sees_its_own_input_unpacked():
    torch.manual_seed(0)
    model = DDNN(CONFIG).eval()
    inputs = _inputs()
    x, shapes = pack_device_inputs(inputs)
    assert shapes == SHAPES and x.shape == (10, 3, WIDTH)
    out = model(x)
    for k, own in enumerate(inputs):
        scores, feats = model.device(k)(own)
        assert tuple(feats.shape[1:]) == model.device(k).feature_shape
        torch.testing.assert_close(out.device_logits[:, k], scores)
    assert out.cloud_logits.shape == (10, 4)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = DDNN(CONFIG)
    x, _ = pack_device_inputs(_inputs())
    target = torch.randint(0, 4, (10,))
    out = model(x)
    loss = F.cross_entropy(out.local_logits, target) + F.cross_entropy(out.cloud_logits, target)
    loss = loss + F.cross_entropy(out.device_logits.flatten(0, 1), target.repeat_interleave(3))
    loss.backward()
    assert [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()
    ] == []


def test_bytes_are_each_devices_own_feature_size():
    torch.manual_seed(0)
    model = DDNN(CONFIG).eval()
    x, _ = pack_device_inputs(_inputs())
    everyone_up = model.infer(x, {"local": 0.0})  # eta < 0 never holds: every sample goes up
    assert (everyone_up.exit_index == 1).all()
    assert np.array_equal(everyone_up.bytes.device.payload, np.tile(16 + FEATURE_BYTES, (10, 1)))
    all_local = model.infer(x, {"local": 1.0})
    assert np.array_equal(all_local.bytes.device.payload, np.full((10, 3), 16))
    absent = torch.ones(10, 3, dtype=torch.bool)
    absent[:, 1] = False
    partial = model.infer(x, {"local": 0.0}, absent)
    assert np.array_equal(partial.bytes.device.payload[:, 1], np.zeros(10))
    assert math.isclose(partial.bytes.per_device(), 16 + (8 + 1) / 2)


def test_absent_device_counts_as_zeros_whatever_its_input():
    torch.manual_seed(0)
    model = DDNN(CONFIG).eval()
    inputs = _inputs()
    x, _ = pack_device_inputs(inputs)
    other = [inputs[0], torch.randn_like(inputs[1]) * 9, inputs[2]]
    y, _ = pack_device_inputs(other)
    presence = torch.tensor([[True, False, True]] * 10)
    torch.testing.assert_close(model(x, presence).cloud_logits, model(y, presence).cloud_logits)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(cloud=CloudConfig(aggregation="mp")), "only 'cc'"),
        (dict(edge=EdgeConfig(groups=((0, 1), (2,)), aggregation="ap")), "only 'cc'"),
        (dict(device=DeviceConfig(share_weights=True)), "share_weights needs devices with one"),
        (dict(input_shape=(100,)), r"must be \(192,\)"),
        (dict(device_input_shapes=SHAPES[:2]), "lists 2 shapes for 3 devices"),
        (dict(device_input_shapes=((3, 8, 8), (0, 4), (5,))), r"device_input_shapes\[1\]"),
    ],
)
def test_invalid_heterogeneous_configs(change, message):
    from dataclasses import replace

    with pytest.raises(ValueError, match=message):
        DDNN(replace(CONFIG, **change))


def test_edges_and_sections_load_alone(tmp_path):
    from dataclasses import replace

    from ddnn.config import RunConfig

    config = replace(CONFIG, edge=EdgeConfig(groups=((0, 1), (2,)), filters=(4,)))
    torch.manual_seed(0)
    model = DDNN(config).eval()
    x, _ = pack_device_inputs(_inputs())
    save_run(tmp_path, model, RunConfig(model=config))
    feats = []
    for k, own in enumerate(_inputs()):
        device, _, _ = load_section(tmp_path, f"device_{k}")
        feats.append(device(own)[1].flatten(1))
    padded = torch.stack([F.pad(f, (0, 64 - f.shape[1])) for f in feats], dim=1)  # (B, 3, 64)
    edge0, _, _ = load_section(tmp_path, "edge_0")
    edge1, _, _ = load_section(tmp_path, "edge_1")
    cloud, _, _ = load_section(tmp_path, "cloud")
    _, f0 = edge0(padded[:, :2])
    _, f1 = edge1(padded[:, 2:])
    scores, _ = cloud(torch.stack([f0, f1], dim=1))
    torch.testing.assert_close(scores, model(x).cloud_logits)


def test_cli_trains_and_evaluates_per_device_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 3, n)
    camera = rng.random((n, 1, 8, 8)).astype(np.float32) + y[:, None, None, None] * 0.5
    accel = rng.normal(size=(n, 3, 16)).astype(np.float32) + np.sin(
        np.arange(16) * (y[:, None, None] + 1)
    )
    tabular = rng.normal(size=(n, 6)).astype(np.float32) + y[:, None]
    path = tmp_path / "mixed.npz"
    np.savez(path, X0=camera, X1=accel, X2=tabular, y=y)
    run = tmp_path / "run"
    args = ["train", "--data", "npz", "--data-path", str(path), "--out", str(run), "--epochs", "3"]
    assert main([*args, "model.cloud.filters=[8]"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--thresholds", "0,1", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["rows"]
    # Camera ConvP(4): (4,4,4) = 8 B; accelerometer (4,8) = 4 B; vector FC(4) = 1 B; 3 classes.
    assert rows[0]["bytes_per_device"] == pytest.approx(12 + (8 + 4 + 1) / 3)
    assert rows[1]["bytes_per_device"] == pytest.approx(12)
    assert rows[0]["raw_bytes_per_device"] == pytest.approx((64 + 48 + 6) / 3)
    assert main(["train", *args[1:], "--cameras", "1,2", "model.cloud.aggregation=mp"]) == 2
    assert "only 'cc'" in capsys.readouterr().err
