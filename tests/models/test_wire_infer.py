"""`DDNN.infer` and `DDNN.wire_forward` fuse scores as the wire delivers them, and count the bytes
of really encoded v2 frames (`ddnn.wire`); training `forward` stays float."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddnn.config import CloudConfig, DeviceConfig, EdgeConfig, ModelConfig, WireConfig
from ddnn.models.ddnn import DDNN
from ddnn.nn.exits import exit_mask
from ddnn.nn.functional import entropy_from_logits

# 3 devices, 3 classes; ConvP(3) with pool stride 2 on 1x6x6: a 3x3x3 = 27-bit map, 4 bytes.
TINY = ModelConfig(
    num_devices=3,
    input_shape=(1, 6, 6),
    num_classes=3,
    device=DeviceConfig(filters=(3,)),
    cloud=CloudConfig(filters=(4,)),
)
EDGES = replace(
    TINY, num_devices=4, edge=EdgeConfig(groups=((0, 1), (2, 3)), filters=(4,))
)  # local -> edge -> cloud
SCORE_BYTES = {"float32": 12, "float16": 6, "int8": 3}  # 3 classes


def _model(config: ModelConfig, encoding: str, seed: int = 0) -> DDNN:
    torch.manual_seed(seed)
    return DDNN(replace(config, wire=WireConfig(scores=encoding))).eval()


def _x(config: ModelConfig, n: int = 40, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, config.num_devices, *config.input_shape, generator=g)


def _roundtrip_by_hand(logits: np.ndarray, encoding: str) -> np.ndarray:
    """What a receiver decodes, written out in NumPy from the frame format's description."""
    if encoding == "float32":
        return logits.astype(np.float32)
    if encoding == "float16":
        return logits.astype(np.float16).astype(np.float32)
    x = logits.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    q = np.clip(np.rint(-logp * 16), 0, 255)  # 1/16 nat per step, uint8
    return (-q / 16).astype(np.float32)


def _max_fuse(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    """MP over the present senders: (B, N, C), (B, N) -> (B, C)."""
    return np.where(present[..., None], scores, -np.inf).max(axis=1)


@pytest.mark.parametrize("encoding", ["float32", "float16", "int8"])
def test_infer_bytes_by_hand(encoding):
    model = _model(TINY, encoding)
    assert model.device(0).feature_shape == (3, 3, 3)
    x = _x(TINY)
    eta = entropy_from_logits(model.wire_forward(x).local_logits)
    for t in (0.0, float(eta.median()), 1.0):
        result = model.infer(x, {"local": t})
        up = 1 - result.exit_fraction("local")
        b = result.bytes
        # payload: the scores in the encoding, plus ceil(27 / 8) = 4 bytes for samples going up
        assert b.per_device() == pytest.approx(SCORE_BYTES[encoding] + up * 4)
        # headers, sample ids < 128: 9 B per SCORES frame, 6 B per FEATURES frame
        assert b.header_per_device() == pytest.approx(9 + up * 6)
        assert b.frames_per_device() == pytest.approx(1 + up)
        assert np.array_equal(b.device.frames.sum(axis=1) > 3, result.exit_index == 1)
    assert 0 < model.infer(x, {"local": float(eta.median())}).exit_fraction("local") < 1


def test_headers_grow_with_the_sample_id():
    model = _model(TINY, "int8")
    result = model.infer(_x(TINY, n=130), {"local": 0.0})  # every sample goes up
    # ids 0..127 take one varint byte, 128 and 129 two: 9 + 6 and 10 + 7 bytes of headers
    assert set(result.bytes.device.header[:128].ravel()) == {15}
    assert set(result.bytes.device.header[128:].ravel()) == {17}


def test_edges_send_features_frames_to_the_cloud():
    model = _model(EDGES, "float16")
    x = _x(EDGES, n=20)
    result = model.infer(x, {"local": 0.0, "edge": 0.0})  # everything goes to the cloud
    edge_bits = math.prod(model.edges[0].feature_shape)
    per_edge = math.ceil(edge_bits / 8)
    assert result.bytes.edge_to_cloud_per_sample() == 2 * per_edge
    assert result.bytes.edge_header_per_sample() == 2 * 6
    assert model.infer(x, {"local": 1.0}).bytes.edge_to_cloud_per_sample() == 0


def test_float32_is_exactly_the_float_path():
    model = _model(TINY, "float32")
    x = _x(TINY)
    presence = torch.rand(40, 3, generator=torch.Generator().manual_seed(3)) < 0.7
    presence[:, 0] = True
    for mask in (None, presence):
        with torch.no_grad():
            full = model(x, mask)
        wire = model.wire_forward(x, mask)
        assert torch.equal(full.local_logits, wire.local_logits)
        assert torch.equal(full.cloud_logits, wire.cloud_logits)
        t = float(entropy_from_logits(full.local_logits).median())
        result = model.infer(x, {"local": t}, mask)
        local = exit_mask(full.local_logits, t)
        assert torch.equal(result.exit_index == 0, local)
        want = torch.where(local, full.local_logits.argmax(1), full.cloud_logits.argmax(1))
        assert torch.equal(result.predictions, want)


@pytest.mark.parametrize("encoding", ["float16", "int8"])
def test_local_exit_fuses_the_roundtripped_scores(encoding):
    model = _model(TINY, encoding)
    x = _x(TINY)
    presence = torch.ones(40, 3, dtype=torch.bool)
    presence[::3, 1] = False
    with torch.no_grad():
        float_out = model(x, presence)  # training path: float scores
    sent = float_out.device_logits.numpy()
    fused = _max_fuse(_roundtrip_by_hand(sent, encoding), presence.numpy())  # (B, C)
    np.testing.assert_array_equal(model.wire_forward(x, presence).local_logits.numpy(), fused)
    if encoding == "int8":  # the wire really changes what is fused
        assert not np.allclose(fused, float_out.local_logits.numpy())
    fused_t = torch.from_numpy(fused)
    for t in (float(entropy_from_logits(fused_t).median()), 1.0):
        result = model.infer(x, {"local": t}, presence)
        local = exit_mask(fused_t, t)
        assert torch.equal(result.exit_index == 0, local)
        assert torch.equal(result.predictions[local], fused_t.argmax(1)[local])


def test_edge_exit_fuses_the_edges_roundtripped_scores():
    model = _model(EDGES, "int8")
    x = _x(EDGES, n=20)
    with torch.no_grad():
        float_out = model(x)
    sent = float_out.edge_group_logits.numpy()  # (B, E, C), what each edge sends
    fused = _max_fuse(_roundtrip_by_hand(sent, "int8"), np.ones((20, 2), bool))
    wire = model.wire_forward(x)
    np.testing.assert_array_equal(wire.edge_logits.numpy(), fused)
    torch.testing.assert_close(wire.cloud_logits, float_out.cloud_logits, rtol=0, atol=0)
    result = model.infer(x, {"local": 0.0, "edge": 1.0})  # every sample answers at the edge
    assert (result.exit_index == 1).all()
    assert torch.equal(result.predictions, torch.from_numpy(fused).argmax(1))


def test_training_forward_fuses_what_the_encoding_sends_without_rounding():
    float_model, int8_model = _model(TINY, "float32"), _model(TINY, "int8")
    int8_model.load_state_dict(float_model.state_dict())
    x = _x(TINY, n=8)
    a, b = float_model(x), int8_model(x)
    torch.testing.assert_close(a.cloud_logits, b.cloud_logits, rtol=0, atol=0)
    # float scores are fused as they are; int8 sends log-probabilities, so training fuses those
    torch.testing.assert_close(a.local_logits, a.device_logits.max(dim=1).values)
    log_probs = F.log_softmax(a.device_logits, dim=-1)
    torch.testing.assert_close(b.local_logits, log_probs.max(dim=1).values)
    int8_model.train()
    out = int8_model(x)
    F.cross_entropy(out.local_logits, torch.zeros(8, dtype=torch.long)).backward()
    assert all(p.grad is not None for p in int8_model.devices.parameters())
