"""Devices of different kinds, end to end: an npz with one array per device (a camera, an
accelerometer, a meter) trains, evaluates, deploys (answers equal ``model.infer``, each device's
bytes from its own shape) and exports the camera to C, with a clear error for the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ddnn.cli import main
from ddnn.data.registry import load_dataset
from ddnn.runtime.deploy import finish_local, run_local, start_local
from ddnn.train.checkpoint import load_run

pytestmark = [
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="mosquitto is not installed (.ci/run installs it)",
    ),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 3, n)
    camera = np.clip(rng.random((n, 1, 8, 8)) * 0.6 + y[:, None, None, None] * 0.2, 0, 1)
    camera = (np.round(camera * 255) / 255).astype(np.float32)  # 8-bit pixels, as a camera gives
    accel = rng.normal(size=(n, 3, 16)) + np.sin(np.arange(16) * (y[:, None, None] + 1))
    meter = rng.normal(size=(n, 6)) + y[:, None]
    path = root / "mixed.npz"
    np.savez(path, X0=camera, X1=accel.astype(np.float32), X2=meter.astype(np.float32), y=y)
    run = root / "run"
    args = ["train", "--data", "npz", "--data-path", str(path), "--out", str(run)]
    assert main([*args, "--epochs", "4", "model.cloud.filters=[8]"]) == 0
    return run


def test_mixed_devices_deploy_as_they_evaluate(mixed_run):
    model, config, _ = load_run(mixed_run)
    test = load_dataset(config.data).test
    thresholds = {"local": 0.6}
    expected = model.infer(test.x, thresholds)
    dep = start_local(
        mixed_run, {"thresholds": "local=0.6", "deadline": 2.0, "upper_timeout": 10.0}
    )
    try:
        run_local(dep, grace=2.0, timeout=120.0)
    finally:
        report = finish_local(dep, 0.0)
    assert report.failed == {}
    assert len(report.answers) == len(test)
    np.testing.assert_array_equal(report.predictions(), expected.predictions.numpy())
    exits = [expected.exit_names[i] for i in expected.exit_index.tolist()]
    assert report.exits() == exits
    # Each device's payload from its own shape: 3 float32 scores (12 B), plus its packed feature
    # map when the sample went up: camera ConvP(4) on 8x8 -> (4,4,4) = 64 bits = 8 B;
    # accelerometer (3,16) -> (4,8) = 32 bits = 4 B; meter (6,) -> FC(4) = 4 bits = 1 B.
    feature_bytes = {"0": 8, "1": 4, "2": 1}
    for answer in report.answers.values():
        for key, payload in answer.device_payload.items():
            assert payload == 12 + (feature_bytes[key] if answer.exit != "local" else 0)


def test_mixed_run_exports_its_camera_to_c(mixed_run, tmp_path, capsys):
    assert main(["export", "c", str(mixed_run), "--device", "0", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert any(p.suffix == ".c" for p in (tmp_path / "c").rglob("*"))
    assert main(["export", "c", str(mixed_run), "--device", "2", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddnn: error:") and err.count("\n") == 1
