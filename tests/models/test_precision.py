"""Per-layer precision (``binary`` as one bool or one per layer) and input normalization."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from ddnn.cli import main
from ddnn.config import CloudConfig, DeviceConfig, ModelConfig, RunConfig, resolve_config
from ddnn.eval.profile import profile_model
from ddnn.models.ddnn import DDNN
from ddnn.nn.binary import BinaryLinear
from ddnn.nn.blocks import SignActivation
from ddnn.train.checkpoint import load_run, load_section, save_run

# 4 vector sensors of 16 features, 3 classes; device FC(8) float, binary head.
VECTOR = ModelConfig(
    num_devices=4,
    input_shape=(16,),
    num_classes=3,
    device=DeviceConfig(filters=(8,), binary=(False, True)),
    cloud=CloudConfig(filters=(16,)),
)


def test_a_list_gives_each_layer_its_precision_and_the_activation_follows_the_next_layer():
    device = DDNN(VECTOR).device(0)
    block = device.features[0]
    assert type(block.linear) is nn.Linear and block.linear.bias is not None
    assert isinstance(block.act, SignActivation)  # the binary head sees ±1, the wire gets bits
    assert isinstance(device.head.linear, BinaryLinear)
    cloud = DDNN(
        ModelConfig(num_devices=2, input_shape=(6,), cloud=CloudConfig(binary=(True, False, False)))
    ).cloud
    first, second = cloud.features
    assert isinstance(first.linear, BinaryLinear) and isinstance(first.act, nn.ReLU)
    assert type(second.linear) is nn.Linear and isinstance(second.act, nn.ReLU)
    assert type(cloud.head.linear) is nn.Linear


def test_one_bool_still_means_every_layer():
    assert DeviceConfig(filters=(4, 4), binary=False).layer_binary() == (False, False, False)
    assert CloudConfig().layer_binary() == (True, True, True)
    assert DeviceConfig(filters=()).layer_binary() == ()


def test_memory_and_wire_bytes_by_hand():
    torch.manual_seed(0)
    model = DDNN(VECTOR).eval()
    rows = {r.name: r for r in profile_model(model)}
    dev = rows["device_0"]
    # float FC 16x8 + 8 biases at 4 B (544) + BN(8) before sign: 8 int32 thresholds + 1 byte of
    # directions (33) + binary head 8x3 bits (3) + head BN scale/shift for 3 classes (24)
    assert dev.memory_bytes == 544 + 33 + 3 + 24
    assert dev.binary_parameters == 24 and dev.float_parameters == 136 + 16 + 6
    # scores 3 x float32; the float layer still ends in sign: 8 bits = 1 byte per sample up
    assert (dev.score_bytes, dev.feature_bytes) == (12, 1)
    x = torch.randn(5, 4, 16)
    up = model.infer(x, {"local": 0.0})  # every sample goes up
    assert np.array_equal(up.bytes.device.payload, np.full((5, 4), 12 + 1))
    normed = DDNN(
        ModelConfig(
            num_devices=4,
            input_shape=(16,),
            device=DeviceConfig(filters=(8,), binary=(False, True), normalize_input=True),
        )
    )
    # + a BatchNorm over the 16 raw features, kept as a float scale and shift each (128 B)
    assert profile_model(normed)[0].memory_bytes == 544 + 33 + 3 + 24 + 128


def test_a_binary_block_before_a_float_layer_ends_in_relu_and_keeps_its_bn_as_floats():
    config = ModelConfig(
        num_devices=1,
        input_shape=(16,),
        device=DeviceConfig(filters=(8, 4), binary=(True, False, True)),
    )
    device = DDNN(config).device(0)
    assert isinstance(device.features[0].act, nn.ReLU)
    assert isinstance(device.features[1].act, SignActivation)  # the last block sends bits
    # binary 16x8 (16 B) + BN(8) as scale/shift (64) + float 8x4+4 (144) + BN(4) threshold (17)
    # + binary head 4x3 (2) + head BN (24)
    assert profile_model(DDNN(config))[0].memory_bytes == 16 + 64 + 144 + 17 + 2 + 24


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.device.binary=[false]", r"lists 1 flag\(s\), but the section has 2 layer\(s\)"),
        ("model.cloud.binary=[true,true]", r"has 3 layer\(s\): 2 feature block"),
        ("model.device.binary=[true,1]", "a list of true/false, one per layer"),
        ("model.device.binary=sometimes", "a list of true/false, one per layer"),
    ],
)
def test_bad_precision_lists_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        DDNN(resolve_config(overrides=[override]).model)


def test_a_raw_device_takes_no_list():
    with pytest.raises(ValueError, match="raw-offloading device has no layers"):
        DDNN(ModelConfig(device=DeviceConfig(filters=(), binary=(True,))))


def test_per_layer_precision_survives_save_and_load(tmp_path, capsys):
    torch.manual_seed(0)
    model = DDNN(VECTOR).eval()
    save_run(tmp_path, model, RunConfig(model=VECTOR))
    loaded, config, _ = load_run(tmp_path)
    assert config.model.device.binary == (False, True)
    x = torch.randn(6, 4, 16)
    torch.testing.assert_close(loaded(x).cloud_logits, model(x).cloud_logits)
    section, _, _ = load_section(tmp_path, "device_2")
    torch.testing.assert_close(section(x[:, 2])[0], model.device(2)(x[:, 2])[0])
    assert main(["profile", str(tmp_path), "--json"]) == 0
    sections = {s["name"]: s for s in json.loads(capsys.readouterr().out)["sections"]}
    assert sections["device_0"]["memory_bytes"] == 604
    assert main(["profile", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "features B" in out and "float MACs" in out
    assert (
        sections["device_0"]["float_macs"] == 16 * 8 and sections["device_0"]["binary_macs"] == 24
    )


def test_multiply_adds_per_sample_by_hand():
    paper = {r.name: r for r in profile_model(DDNN(ModelConfig()))}
    # device: ConvP(3 -> 4) keeps 32 x 32 for its 3 x 3 convolution, pools to 16 x 16, and its
    # binary head maps 4 x 16 x 16 features to 3 classes
    device = 4 * 3 * 9 * 32 * 32 + 4 * 16 * 16 * 3
    assert (paper["device_3"].binary_macs, paper["device_3"].float_macs) == (device, 0)
    # cloud: 6 devices' 4 channels concatenated (24 x 16 x 16), two ConvP(16) with stride-1
    # pools, a binary head on 16 x 16 x 16
    cloud = 16 * 24 * 9 * 256 + 16 * 16 * 9 * 256 + 16 * 256 * 3
    assert (paper["cloud"].binary_macs, paper["cloud"].float_macs) == (cloud, 0)
    assert (paper["local"].binary_macs, paper["local"].float_macs) == (0, 0)

    vector = {r.name: r for r in profile_model(DDNN(VECTOR))}
    # a float FC 16 -> 8, then the binary head 8 -> 3
    assert (vector["device_0"].binary_macs, vector["device_0"].float_macs) == (8 * 3, 16 * 8)
    # cloud: 4 devices x 8 bits concatenated, binary FC 32 -> 16 and head 16 -> 3
    assert (vector["cloud"].binary_macs, vector["cloud"].float_macs) == (32 * 16 + 16 * 3, 0)

    series = ModelConfig(
        num_devices=2,
        input_shape=(3, 16),
        device=DeviceConfig(filters=(4,), binary=(False, True)),
    )
    row = profile_model(DDNN(series))[0]
    # a float 1-D convolution 3 -> 4 of width 3 over 16 steps, pooled to 8; binary head 4 x 8 -> 3
    assert (row.binary_macs, row.float_macs) == (4 * 8 * 3, 4 * 3 * 3 * 16)

    raw = profile_model(DDNN(ModelConfig(device=DeviceConfig(filters=()))))[0]
    assert (raw.binary_macs, raw.float_macs) == (0, 0)  # a raw sensor sends its input as is
