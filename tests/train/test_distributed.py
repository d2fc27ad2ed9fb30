"""Data-parallel training with torchrun: 2 CPU processes (gloo) train a run that loads anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddnn.cli import main
from ddnn.train.checkpoint import load_run

pytestmark = pytest.mark.slow

ARGS = [
    "--data",
    "npz",
    "--epochs",
    "12",
    "model.device.filters=[2]",
    "model.cloud.filters=[4]",
    "train.batch_size=32",
    "train.device_dropout=0",
]


def _npz(path: Path, n: int = 320) -> Path:
    """3 devices of 1x8x8 images; class k brightens quadrant k on devices 0 and 1."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = 0.3 * rng.standard_normal((n, 3, 1, 8, 8)).astype(np.float32)
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        x[i, :2, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
    np.savez(path, X=x, y=y)
    return path


def _accuracy(run: Path, capsys) -> float:
    assert main(["evaluate", str(run), "--thresholds", "0", "--json"]) == 0  # cloud exit only
    return float(json.loads(capsys.readouterr().out)["rows"][0]["overall_accuracy"])


def test_two_gloo_processes_train_like_one(tmp_path, capsys):
    data = _npz(tmp_path / "toy.npz")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "ddnn", "train", *ARGS, "--data-path", str(data), "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 0 alone reports and writes.
    assert done.stdout.count("trained 12 epochs") == 1 and "on 2 processes" in done.stdout
    model, config, payload = load_run(tmp_path / "ddp")
    assert payload["extra"]["processes"] == 2
    assert {p.device.type for p in model.parameters()} == {"cpu"}

    torch.manual_seed(0)
    assert main(["train", *ARGS, "--data-path", str(data), "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    ddp, one = _accuracy(tmp_path / "ddp", capsys), _accuracy(tmp_path / "one", capsys)
    assert one > 0.8 and ddp > 0.8  # chance is 1/3
    assert abs(ddp - one) <= 0.1  # same global batch; BatchNorm statistics are per process
    ddp_loss = load_run(tmp_path / "ddp")[2]["extra"]["final_loss"]["total"]
    one_loss = load_run(tmp_path / "one")[2]["extra"]["final_loss"]["total"]
    assert ddp_loss == pytest.approx(one_loss, rel=0.25)


def test_a_world_that_does_not_divide_the_batch_is_refused(tmp_path):
    data = _npz(tmp_path / "toy.npz", n=64)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "ddnn", "train", *ARGS, "train.batch_size=31", "--data-path", str(data),
        "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 0
    assert "ddnn: error: train.batch_size 31 does not divide over 2 processes" in done.stderr
    assert not (tmp_path / "ddp").exists()
