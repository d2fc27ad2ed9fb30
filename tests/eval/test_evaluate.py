"""`threshold_sweep` (what `ddnn evaluate` prints) reads its bytes from `ddnn.wire` and its
accuracies from the deployed path, for every score encoding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ddnn.config import CloudConfig, DeviceConfig, EdgeConfig, ModelConfig, WireConfig
from ddnn.data.dataset import MultiDeviceDataset
from ddnn.eval.batched import infer_all_at
from ddnn.eval.evaluate import presence_without, threshold_sweep
from ddnn.models.ddnn import DDNN
from ddnn.report import threshold_table
from ddnn.wire import formula_bytes_per_device, wire_roundtrip

# 3 devices, 3 classes; device ConvP(3) on 1x6x6: 27 bits -> 4 bytes per feature map.
TINY = ModelConfig(
    num_devices=3,
    input_shape=(1, 6, 6),
    num_classes=3,
    device=DeviceConfig(filters=(3,)),
    cloud=CloudConfig(filters=(4,)),
)
SCORE_BYTES = {"float32": 12, "float16": 6, "int8": 3}


def _data(n: int = 60, seed: int = 0) -> MultiDeviceDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 1, 6, 6, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return MultiDeviceDataset(x, labels[:, None].repeat(1, 3), labels, ("a", "b", "c"), "random")


@pytest.mark.parametrize("encoding", ["float32", "float16", "int8"])
def test_sweep_bytes_and_accuracies_come_from_the_wire(encoding):
    torch.manual_seed(0)
    model = DDNN(replace(TINY, wire=WireConfig(scores=encoding))).eval()
    data = _data()
    rows = threshold_sweep(model, data, (0.0, 0.5, 0.9, 1.0))
    # Local-only accuracy as deployed: MP over the scores the SCORES frames deliver.
    with torch.no_grad():
        sent = model(data.x).device_logits  # (N, D, C), the float scores the devices compute
    fused = wire_roundtrip(sent, encoding).max(dim=1).values
    local_acc = float((fused.argmax(1) == data.labels).float().mean())
    for r in rows:
        up = 1 - r.local_exit_fraction
        assert r.local_accuracy == local_acc
        # measured payload: score bytes in the encoding + ceil(27 / 8) = 4 for samples going up
        assert r.bytes_per_device == pytest.approx(SCORE_BYTES[encoding] + up * 4)
        # frame headers apart: 9 B per SCORES frame, 6 B per FEATURES frame (ids < 128)
        assert r.header_bytes_per_device == pytest.approx(9 + up * 6)
        assert r.bytes_per_device_formula == pytest.approx(
            formula_bytes_per_device(3, r.local_exit_fraction, 27, encoding)
        )
        assert r.bytes_per_device_formula == pytest.approx(r.bytes_per_device)
        assert r.raw_bytes_per_device == 36
    assert rows[0].overall_accuracy == rows[0].cloud_accuracy  # T = 0: everything to the cloud
    assert rows[-1].overall_accuracy == rows[-1].local_accuracy  # T = 1: everything local


def test_int8_local_accuracy_is_the_deployed_one_not_the_float_one():
    torch.manual_seed(0)
    model = DDNN(replace(TINY, wire=WireConfig(scores="int8"))).eval()
    data = _data()
    (row,) = threshold_sweep(model, data, (1.0,))
    with torch.no_grad():
        out = model(data.x)
    assert not torch.equal(model.wire_forward(data.x).local_logits, out.local_logits)
    wire_pred = model.wire_forward(data.x).local_logits.argmax(1)
    assert row.local_accuracy == float((wire_pred == data.labels).float().mean())
    assert row.overall_accuracy == row.local_accuracy


def test_table_keeps_its_columns():
    torch.manual_seed(0)
    rows = threshold_sweep(DDNN(TINY).eval(), _data(), (0.5,))
    header = threshold_table(rows).splitlines()[0].split()
    for column in ("meas.", "formula", "+hdr", "raw", "reduction"):
        assert column in header
    assert np.isfinite(rows[0].reduction_factor)


def test_a_sweep_runs_the_devices_once_with_the_results_of_infer_at_each_threshold(monkeypatch):
    # An edge tier, a missing device and an edge threshold: every stage past the devices differs
    # between thresholds, and each must match staged inference called at that threshold alone.
    config = replace(TINY, edge=EdgeConfig(groups=((0, 1), (2,)), filters=(4,)))
    torch.manual_seed(0)
    model = DDNN(config).eval()
    data = _data(n=80)
    presence = presence_without(len(data), 3, [1])
    thresholds = [0.0, 0.3, 0.6, 0.9, 1.0]
    expected = [model.infer(data.x, {"local": t, "edge": 0.5}, presence) for t in thresholds]
    calls = []
    device_outputs = model.device_outputs
    monkeypatch.setattr(model, "device_outputs", lambda *a: calls.append(1) or device_outputs(*a))
    sets = [{"local": t, "edge": 0.5} for t in thresholds]
    got = infer_all_at(model, data, sets, presence)
    assert len(calls) == 1  # in memory: one chunk, one pass of the devices
    assert [r.exit_fraction("local") for r in expected] != [expected[0].exit_fraction("local")] * 5
    for want, have in zip(expected, got, strict=True):
        assert torch.equal(want.predictions, have.predictions)
        assert torch.equal(want.exit_index, have.exit_index)
        for link in ("device", "edge"):
            for field in ("payload", "header", "frames"):
                a, b = (
                    getattr(getattr(want.bytes, link), field),
                    getattr(getattr(have.bytes, link), field),
                )
                assert np.array_equal(a, b), (link, field)
    rows = threshold_sweep(model, data, thresholds, edge_threshold=0.5, missing=[1])
    for row, want in zip(rows, expected, strict=True):
        assert row.overall_accuracy == float((want.predictions == data.labels).float().mean())
        assert row.bytes_per_device == want.bytes.per_device()


def test_a_sweep_refuses_an_unknown_exit_before_running_any_device(monkeypatch):
    torch.manual_seed(0)
    model = DDNN(TINY).eval()
    monkeypatch.setattr(model, "device_outputs", lambda *a: pytest.fail("the devices ran"))
    with pytest.raises(ValueError, match="unknown exit.*'cloud'.*accepted: local, edge"):
        infer_all_at(model, _data(), [{"local": 0.5}, {"cloud": 0.5}])
    assert infer_all_at(model, _data(), []) == []


def test_a_threshold_sweep_forces_every_exit_from_the_same_single_pass_of_the_devices(monkeypatch):
    # The per-exit accuracies of a sweep are those of every sample forced to that exit as
    # deployed (wire_forward), with a device missing; the devices still run once for it all.
    config = replace(
        TINY,
        edge=EdgeConfig(groups=((0, 1), (2,)), filters=(4,)),
        wire=WireConfig(scores="int8"),
    )
    torch.manual_seed(0)
    model = DDNN(config).eval()
    data = _data(n=80)
    presence = presence_without(len(data), 3, [2])
    with torch.no_grad():
        forced = model.wire_forward(data.x, presence)

    def accuracy(logits: torch.Tensor) -> float:
        return float((logits.argmax(1) == data.labels).float().mean())

    calls = []
    run_devices = model._run_devices
    monkeypatch.setattr(model, "_run_devices", lambda *a: calls.append(1) or run_devices(*a))
    rows = threshold_sweep(model, data, (0.2, 0.7), edge_threshold=0.5, missing=[2])
    assert len(calls) == 1
    want = {
        "local": accuracy(forced.local_logits),
        "edge": accuracy(forced.edge_logits),
        "cloud": accuracy(forced.cloud_logits),
    }
    assert len(set(want.values())) > 1  # the exits differ, so a mix-up would show
    for row in rows:
        assert row.local_accuracy == want["local"]
        assert row.edge_accuracy == want["edge"]
        assert row.cloud_accuracy == want["cloud"]
