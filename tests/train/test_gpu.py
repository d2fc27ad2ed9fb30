"""The CUDA path, where a GPU is visible (skipped elsewhere: nothing may require one).

Run on a GPU machine with ``pytest tests/train/test_gpu.py``. The expectations come from CPU
training of the same model (float32, or the definition of the weights' dtype and device), not
from the GPU run itself.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ddnn.cli import main
from ddnn.config import CloudConfig, DataConfig, DeviceConfig, ModelConfig, TrainConfig
from ddnn.data.dataset import MultiDeviceDataset
from ddnn.data.registry import load_dataset
from ddnn.eval.evaluate import threshold_sweep
from ddnn.models.ddnn import DDNN
from ddnn.train.checkpoint import load_run
from ddnn.train.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")

CONFIG = ModelConfig(
    num_devices=2,
    input_shape=(1, 8, 8),
    device=DeviceConfig(filters=(4,)),
    cloud=CloudConfig(filters=(8,)),
)


def _toy(n: int = 64) -> MultiDeviceDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (n,), generator=g)
    x = torch.randn(n, 2, 1, 8, 8, generator=g) + labels.float()[:, None, None, None, None]
    return MultiDeviceDataset(x, labels[:, None].repeat(1, 2), labels, ("a", "b", "c"))


@pytest.mark.parametrize("precision", ["32", "bf16", "16"])
def test_cuda_training_leaves_float32_sections_on_the_cpu(precision):
    torch.manual_seed(0)
    model = DDNN(CONFIG)
    history = train(
        model,
        _toy(),
        TrainConfig(epochs=3, batch_size=16, accelerator="cuda", precision=precision),
    )
    assert len(history.losses) == 3
    assert all(np.isfinite(v) for v in history.losses[-1].values())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {t.device.type for t in model.state_dict().values()} == {"cpu"}
    (row,) = threshold_sweep(model, _toy(), [0.8])  # evaluates on the CPU as trained
    assert 0.0 <= row.overall_accuracy <= 1.0


def test_first_full_batch_loss_on_cuda_matches_the_cpu():
    # One full-batch step: its loss is the forward pass of the initial weights, so the GPU and
    # CPU agree up to float32 / TF32 rounding (not bit for bit: other kernels, other order).
    losses = {}
    for name in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = DDNN(CONFIG)
        history = train(model, _toy(), TrainConfig(epochs=1, batch_size=0, accelerator=name))
        losses[name] = history.losses[0]["total"]
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-2)


def test_streamed_batches_train_on_cuda_like_in_memory_batches(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    x = rng.random((120, 2, 1, 8, 8)).astype(np.float32) + labels[:, None, None, None, None]
    path = tmp_path / "d.npz"
    np.savez(path, X=x, y=labels)
    data = DataConfig(name="npz", path=str(path))
    losses = []
    for in_memory in (True, False):
        splits = load_dataset(replace(data, in_memory=in_memory))
        torch.manual_seed(0)
        model = DDNN(CONFIG)
        history = train(
            model,
            splits.train,
            TrainConfig(epochs=2, batch_size=16, accelerator="cuda"),
            workers=0 if in_memory else 2,  # pinned batches from worker processes
        )
        losses.append(history.losses[-1]["total"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


def test_cli_run_trained_on_cuda_loads_and_evaluates_anywhere(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), "--epochs", "2", "--accelerator", "cuda"])
    assert code == 0, capsys.readouterr().err
    model, config, _ = load_run(run)
    assert config.train.accelerator == "cuda"
    assert {t.device.type for t in model.state_dict().values()} == {"cpu"}
    assert main(["evaluate", str(run)]) == 0
