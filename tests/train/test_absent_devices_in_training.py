"""``model.device.skip_absent``: in training, a dropped device runs on nothing, so its BatchNorm
statistics come from the samples where it is present, and its outputs are zeros. Without it (the
library's default, kept for images) it runs on a zeroed input. Evaluation is the same either way."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ddnn.config import CloudConfig, DeviceConfig, ModelConfig
from ddnn.models.ddnn import DDNN

VECTORS = ModelConfig(
    num_devices=3,
    input_shape=(5,),
    num_classes=2,
    local_aggregation="cc",
    device=DeviceConfig(filters=(4,), binary=(False, True), normalize_input=True, skip_absent=True),
    cloud=CloudConfig(filters=(4,), binary=False),
)
PRESENCE = torch.tensor(
    [[1, 1, 1], [0, 1, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]]
).bool()


def _inputs(config: ModelConfig, seed: int = 0) -> torch.Tensor:
    """Readings whose mean is far from zero (as breast-cancer's areas are): zero rows would move
    the batch statistics a long way."""
    g = torch.Generator().manual_seed(seed)
    return 50.0 + 10.0 * torch.randn(len(PRESENCE), config.num_devices, 5, generator=g)


def _input_norms(model: DDNN) -> list[torch.nn.BatchNorm1d]:
    norms = [model.device(k).input_norm for k in range(model.config.num_devices)]
    assert all(isinstance(n, torch.nn.BatchNorm1d) for n in norms)
    return norms  # type: ignore[return-value]


@pytest.mark.parametrize("share_weights", [False, True])
def test_a_devices_batch_statistics_are_those_of_its_present_samples(share_weights):
    config = replace(VECTORS, device=replace(VECTORS.device, share_weights=share_weights))
    torch.manual_seed(0)
    model = DDNN(config).train()
    for norm in _input_norms(model):
        norm.momentum = 1.0  # the running statistics become this batch's
    x = _inputs(config)
    model(x, PRESENCE)
    xs, present = x.numpy(), PRESENCE.numpy()
    for k, norm in enumerate(_input_norms(model)):
        # NumPy on the rows where device k (or, shared, any device) is present
        rows = xs[present[:, k], k] if not share_weights else xs[present]
        assert norm.running_mean.numpy() == pytest.approx(rows.mean(axis=0), rel=1e-5)
        assert norm.running_var.numpy() == pytest.approx(rows.var(axis=0, ddof=1), rel=1e-4)
        # the zero rows would have pulled the mean towards 0 by a fifth or more
        assert abs(float(norm.running_mean.mean()) - 50.0) < 10.0


def test_without_it_a_dropped_device_runs_on_zeros_which_enter_its_statistics():
    config = replace(VECTORS, device=replace(VECTORS.device, skip_absent=False))
    torch.manual_seed(0)
    model = DDNN(config).train()
    for norm in _input_norms(model):
        norm.momentum = 1.0
    x = _inputs(config)
    model(x, PRESENCE)
    zeroed = (x * PRESENCE[:, :, None]).numpy()
    for k, norm in enumerate(_input_norms(model)):
        assert norm.running_mean.numpy() == pytest.approx(zeroed[:, k].mean(axis=0), rel=1e-5)


def test_absent_devices_output_zeros_and_present_ones_what_the_device_gives_them():
    torch.manual_seed(0)
    model = DDNN(VECTORS).train()
    x = _inputs(VECTORS)
    outputs = model.device_outputs(x, PRESENCE)
    assert outputs.scores is not None
    for k in range(3):
        rows = PRESENCE[:, k]
        alone_scores, alone_feats = model.device(k)(x[rows, k])  # the device on its own rows
        assert torch.equal(outputs.features[rows, k], alone_feats)
        assert torch.equal(outputs.scores[rows, k], alone_scores)
        assert not outputs.features[~rows, k].any() and not outputs.scores[~rows, k].any()


def test_evaluation_still_runs_every_device_on_every_sample():
    torch.manual_seed(0)
    model = DDNN(VECTORS).eval()
    x = _inputs(VECTORS)
    with torch.no_grad():
        outputs = model.device_outputs(x, PRESENCE)
        for k in range(3):
            _, feats = model.device(k)(x[:, k] * PRESENCE[:, k, None])  # absent: zero input
            assert torch.equal(outputs.features[:, k], feats)


def test_devices_of_different_shapes_keep_their_own_present_samples():
    config = replace(VECTORS, input_shape=(6,), device_input_shapes=((6,), (4,), (5,)))
    torch.manual_seed(0)
    model = DDNN(config).train()
    for norm in _input_norms(model):
        norm.momentum = 1.0
    g = torch.Generator().manual_seed(0)
    x = 50.0 + 10.0 * torch.randn(len(PRESENCE), 3, 6, generator=g)  # packed rows, longest 6
    model(x, PRESENCE)
    for k, (norm, width) in enumerate(zip(_input_norms(model), (6, 4, 5), strict=True)):
        rows = x[PRESENCE[:, k], k, :width].numpy()
        assert norm.running_mean.numpy() == pytest.approx(rows.mean(axis=0), rel=1e-5)


def test_a_batch_with_a_device_present_once_still_trains():
    # BatchNorm needs two samples: with one, the batch runs every device on every sample
    torch.manual_seed(0)
    model = DDNN(VECTORS).train()
    presence = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]]).bool()
    out = model(_inputs(VECTORS)[:3], presence)
    assert out.cloud_logits is not None and bool(torch.isfinite(out.cloud_logits).all())
