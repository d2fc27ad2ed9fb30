"""Every hierarchy a–f builds, trains into every parameter, and infers with real skipping."""

import math

import pytest
import torch
import torch.nn.functional as F

from ddnn.config import CloudConfig, DeviceConfig, EdgeConfig, ModelConfig
from ddnn.models.ddnn import DDNN
from ddnn.nn.functional import entropy_from_logits

SMALL = dict(input_shape=(3, 8, 8), num_classes=3)
HIERARCHIES = {
    "a_cloud_only_raw": ModelConfig(
        num_devices=2, device=DeviceConfig(filters=()), cloud=CloudConfig(filters=(4,)), **SMALL
    ),
    "b_one_device_cloud": ModelConfig(num_devices=1, cloud=CloudConfig(filters=(4,)), **SMALL),
    "c_devices_cloud": ModelConfig(num_devices=3, cloud=CloudConfig(filters=(4, 4)), **SMALL),
    "d_device_edge_cloud": ModelConfig(
        num_devices=1, edge=EdgeConfig(groups=((0,),), filters=(4,)), **SMALL
    ),
    "e_devices_edge_cloud": ModelConfig(
        num_devices=3, edge=EdgeConfig(groups=((0, 1, 2),), filters=(4,)), **SMALL
    ),
    "f_groups_edges_cloud": ModelConfig(
        num_devices=4,
        edge=EdgeConfig(groups=((0, 1), (2, 3)), filters=(4,)),
        cloud=CloudConfig(filters=(4,)),
        **SMALL,
    ),
    "edge_no_cloud": ModelConfig(
        num_devices=2,
        edge=EdgeConfig(groups=((0, 1),), filters=(4,)),
        cloud=CloudConfig(enabled=False),
        **SMALL,
    ),
    "shared_weights_ap_cc_float_cloud": ModelConfig(
        num_devices=3,
        local_aggregation="cc",
        device=DeviceConfig(filters=(2, 3), share_weights=True),
        cloud=CloudConfig(filters=(4,), aggregation="ap", binary=False),
        **SMALL,
    ),
}
EXPECTED_EXITS = {
    "a_cloud_only_raw": ("cloud",),
    "b_one_device_cloud": ("local", "cloud"),
    "c_devices_cloud": ("local", "cloud"),
    "d_device_edge_cloud": ("local", "edge", "cloud"),
    "e_devices_edge_cloud": ("local", "edge", "cloud"),
    "f_groups_edges_cloud": ("local", "edge", "cloud"),
    "edge_no_cloud": ("local", "edge"),
    "shared_weights_ap_cc_float_cloud": ("local", "cloud"),
}


@pytest.mark.parametrize("name", sorted(HIERARCHIES))
def test_builds_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    config = HIERARCHIES[name]
    model = DDNN(config)
    assert model.exit_names == EXPECTED_EXITS[name]
    x = torch.randn(6, config.num_devices, *config.input_shape)
    target = torch.randint(0, config.num_classes, (6,))
    out = model(x)
    # Cross-entropy, not a squared norm: after a train-mode BatchNorm the batch mean of a logit
    # equals the BN bias, so d(mean z^2)/d(bias) is exactly 0 at init and would hide nothing real.
    loss = sum(F.cross_entropy(v, target) for v in out.exit_logits().values())
    for per_input in (out.device_logits, out.edge_group_logits):
        if per_input is not None:
            n = per_input.shape[1]
            loss = loss + F.cross_entropy(per_input.flatten(0, 1), target.repeat_interleave(n))
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


@pytest.mark.parametrize("name", sorted(HIERARCHIES))
def test_infer_answers_every_sample(name):
    torch.manual_seed(0)
    config = HIERARCHIES[name]
    model = DDNN(config).eval()
    x = torch.randn(10, config.num_devices, *config.input_shape)
    result = model.infer(x, {"local": 0.5, "edge": 0.5})
    assert result.predictions.shape == (10,)
    assert bool((result.predictions >= 0).all()) and bool((result.exit_index >= 0).all())
    assert sum(result.exit_fraction(n) for n in model.exit_names) == pytest.approx(1.0)


def _count_batch(module, counter):
    module.register_forward_hook(lambda m, inp, out: counter.append(inp[0].shape[0]))


def test_staged_inference_skips_upper_sections_for_exited_samples():
    torch.manual_seed(0)
    model = DDNN(HIERARCHIES["e_devices_edge_cloud"]).eval()
    x = torch.randn(40, 3, 3, 8, 8)
    with torch.no_grad():
        full = model(x)
    # Thresholds at the median entropy so that some samples exit at each tier.
    t_local = float(entropy_from_logits(full.local_logits).median())
    t_edge = float(entropy_from_logits(full.edge_logits).median())
    seen_edge: list[int] = []
    seen_cloud: list[int] = []
    _count_batch(model.edges[0], seen_edge)
    _count_batch(model.cloud, seen_cloud)
    result = model.infer(x, {"local": t_local, "edge": t_edge})
    n_local = int((result.exit_index == 0).sum())
    n_edge = int((result.exit_index == 1).sum())
    assert 0 < n_local < 40 and n_edge > 0
    assert seen_edge == [40 - n_local]
    assert seen_cloud == ([40 - n_local - n_edge] if 40 - n_local - n_edge else [])
    # Staged predictions equal the full forward pass at the exit each sample took.
    for i in range(40):
        exit_logits = [full.local_logits, full.edge_logits, full.cloud_logits][
            int(result.exit_index[i])
        ]
        assert int(exit_logits[i].argmax()) == int(result.predictions[i])


def test_measured_bytes_equal_formula_with_all_devices_present():
    torch.manual_seed(0)
    config = ModelConfig(num_devices=6, device=DeviceConfig(filters=(4,)))  # paper threshold model
    model = DDNN(config).eval()
    x = torch.rand(50, 6, 3, 32, 32)
    for t in (0.0, 0.7, 1.0):
        result = model.infer(x, {"local": t})
        local = result.exit_fraction("local")
        expected = 4 * 3 + (1 - local) * 4 * 256 / 8
        assert result.bytes.per_device() == pytest.approx(expected)
        # v2 headers, ids < 128: 9 B per SCORES frame, 6 B per FEATURES frame for samples going up
        assert result.bytes.header_per_device() == pytest.approx(9 + (1 - local) * 6)
    assert model.infer(x, {"local": 0.0}).bytes.per_device() == 140
    assert model.infer(x, {"local": 1.0}).bytes.per_device() == 12


def test_raw_devices_send_8_bit_pixels():
    model = DDNN(HIERARCHIES["a_cloud_only_raw"]).eval()
    result = model.infer(torch.rand(4, 2, 3, 8, 8))
    assert result.bytes.per_device() == math.prod((3, 8, 8))
    # One FEATURES-layout frame per device and sample: 1 + 1 + 1 + 1 + 2 header bytes.
    assert result.bytes.header_per_device() == 6 and result.bytes.frames_per_device() == 1


def test_missing_devices_send_nothing_and_change_nothing_they_should_not():
    torch.manual_seed(0)
    model = DDNN(HIERARCHIES["c_devices_cloud"]).eval()
    x = torch.randn(8, 3, 3, 8, 8)
    presence = torch.tensor([[True, False, True]] * 8)
    result = model.infer(x, {"local": 0.0}, presence)
    assert result.bytes.device.payload[:, 1].sum() == 0
    assert result.bytes.device.header[:, 1].sum() == 0
    # An absent device's input must not influence the output.
    x2 = x.clone()
    x2[:, 1] = torch.randn(8, 3, 8, 8)
    again = model.infer(x2, {"local": 0.0}, presence)
    assert torch.equal(result.predictions, again.predictions)


@pytest.mark.parametrize(
    "config, message",
    [
        (ModelConfig(num_devices=0), "num_devices"),
        (ModelConfig(local_aggregation="sum"), "accepted: ap, cc, mp"),
        (ModelConfig(num_devices=2, edge=EdgeConfig(groups=((0, 5),))), "names device"),
        (ModelConfig(num_devices=3, edge=EdgeConfig(groups=((0, 1),))), "exactly one edge"),
        (ModelConfig(cloud=CloudConfig(enabled=False)), "without a cloud"),
    ],
)
def test_bad_configs_are_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        DDNN(config)


def test_input_shape_checked():
    model = DDNN(HIERARCHIES["c_devices_cloud"])
    with pytest.raises(ValueError, match="input must have shape"):
        model(torch.randn(2, 4, 3, 8, 8))
