"""The run manifest: save_run records every file's sha256 and size; verify_run catches damage."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddnn.config import CloudConfig, DeviceConfig, ModelConfig, RunConfig
from ddnn.models.ddnn import DDNN
from ddnn.train.checkpoint import save_run, verify_run

CONFIG = RunConfig(
    model=ModelConfig(
        num_devices=2,
        input_shape=(1, 8, 8),
        device=DeviceConfig(filters=(2,)),
        cloud=CloudConfig(filters=(4,)),
    )
)
FILES = {
    "checkpoint.pt",
    "config.yaml",
    "sections/device_0.pt",
    "sections/device_1.pt",
    "sections/local.pt",
    "sections/cloud.pt",
}


def _run(path: Path, seed: int) -> Path:
    """A run directory of an untrained 2-device model (weights differ by seed)."""
    torch.manual_seed(seed)
    return save_run(path, DDNN(CONFIG.model), CONFIG)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return _run(tmp_path / "a", 0), _run(tmp_path / "b", 1)


def test_manifest_lists_every_file_with_its_hash_and_size(runs):
    run, _ = runs
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["format"] == "ddnn-run/1"
    assert set(manifest["files"]) == FILES
    for name, entry in manifest["files"].items():
        data = (run / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    stamped = torch.load(run / "checkpoint.pt", weights_only=True)["model_version"]
    assert manifest["model_version"] == stamped


def test_a_good_run_verifies_and_gives_its_model_version(runs, caplog):
    run, other = runs
    with caplog.at_level(logging.WARNING):
        version = verify_run(run)
    assert version == torch.load(run / "checkpoint.pt", weights_only=True)["model_version"]
    assert version != verify_run(other)  # different weights, different version
    assert not caplog.records
    (run / "calibration.json").write_text("{}")  # files the manifest does not list are fine
    verify_run(run)


def test_truncated_checkpoint_is_named(runs):
    run, _ = runs
    size = (run / "checkpoint.pt").stat().st_size
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[: size // 2])
    want = f"checkpoint.pt does not match the manifest ({size // 2} bytes where it says {size})"
    with pytest.raises(ValueError, match=re.escape(want)):
        verify_run(run)


def test_section_from_another_run_is_named(runs):
    run, other = runs
    shutil.copy(other / "sections" / "device_1.pt", run / "sections" / "device_1.pt")
    with pytest.raises(ValueError) as error:
        verify_run(run)
    assert str(error.value) == (
        f"run directory {str(run)!r}: sections/device_1.pt does not match the manifest "
        "(sha256 differs): copied from another run or damaged; retrain or restore it"
    )


def test_one_flipped_byte_is_caught(runs):
    run, _ = runs
    data = bytearray((run / "config.yaml").read_bytes())
    data[-2] ^= 1
    (run / "config.yaml").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="config.yaml does not match the manifest"):
        verify_run(run)


def test_missing_file_and_damaged_manifest(runs):
    run, other = runs
    (run / "sections" / "cloud.pt").unlink()
    with pytest.raises(ValueError, match="sections/cloud.pt is in the manifest but missing"):
        verify_run(run)
    (other / "manifest.json").write_text('{"format": "ddnn-run/1", "files": [')
    with pytest.raises(ValueError, match="manifest.json is damaged"):
        verify_run(other)


def test_run_without_manifest_checks_model_versions(runs, caplog):
    run, other = runs
    (run / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING, logger="ddnn.train.checkpoint"):
        verify_run(run)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "no manifest.json" in caplog.records[0].getMessage()
    shutil.copy(other / "sections" / "device_0.pt", run / "sections" / "device_0.pt")
    with pytest.raises(ValueError, match="sections/device_0.pt has model version"):
        verify_run(run)


def test_verifying_a_run_with_a_manifest_needs_no_torch(runs):
    """C-engine device processes read the run through verify_run and must stay torch-free."""
    run, _ = runs
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from ddnn.train.checkpoint import verify_run\n"
        f"print(verify_run({str(run)!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert result.stdout.split() == [str(manifest["model_version"])]


def test_class_names_are_read_from_the_manifest_or_else_the_checkpoint(tmp_path):
    from ddnn.train.checkpoint import run_class_names

    c = CONFIG.model.num_classes
    names = [f"name{k}" for k in range(c)]
    named = save_run(tmp_path / "named", DDNN(CONFIG.model), CONFIG, {"class_names": names})
    assert json.loads((named / "manifest.json").read_text())["class_names"] == names
    assert run_class_names(named, c) == names
    (named / "manifest.json").unlink()  # a run saved before manifests held them
    assert run_class_names(named, c) == names  # from the checkpoint's extra
    plain = save_run(tmp_path / "plain", DDNN(CONFIG.model), CONFIG)
    assert run_class_names(plain, c) == [f"class_{k}" for k in range(c)]
