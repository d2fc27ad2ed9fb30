"""Accelerator and precision: clear errors without a GPU, bf16 autocast on the CPU, CPU sections."""

from __future__ import annotations

import pytest
import torch

from ddnn.cli import main
from ddnn.config import CloudConfig, DeviceConfig, ModelConfig, TrainConfig
from ddnn.data.dataset import MultiDeviceDataset
from ddnn.models.ddnn import DDNN
from ddnn.train import accelerator
from ddnn.train.accelerator import resolve_placement
from ddnn.train.distributed import World, check_batch
from ddnn.train.trainer import train


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(accelerator, "cuda_available", lambda: False)


def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert resolve_placement("auto", "32").device == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "precision", "message"),
    [
        ("cuda", "32", "no CUDA GPU is visible"),
        ("tpu", "32", "must be one of cpu, cuda, auto"),
        ("cpu", "8", "must be one of 32, bf16, 16"),
        ("cpu", "16", "needs a CUDA GPU"),
        ("auto", "16", "needs a CUDA GPU"),
    ],
)
def test_bad_placements_are_refused(no_gpu, name, precision, message):
    with pytest.raises(ValueError, match=message):
        resolve_placement(name, precision)


def test_cli_accelerator_cuda_without_a_gpu_is_one_line(no_gpu, tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--accelerator", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ddnn: error:") and "no CUDA GPU" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def _toy(n: int = 32) -> MultiDeviceDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (n,), generator=g)
    x = torch.randn(n, 2, 1, 8, 8, generator=g) + labels.float()[:, None, None, None, None]
    return MultiDeviceDataset(x, labels[:, None].repeat(1, 2), labels, ("a", "b", "c"))


CONFIG = ModelConfig(
    num_devices=2,
    input_shape=(1, 8, 8),
    device=DeviceConfig(filters=(2,)),
    cloud=CloudConfig(filters=(4,)),
)


def test_bf16_autocast_trains_on_the_cpu_and_keeps_float32_weights():
    torch.manual_seed(0)
    model = DDNN(CONFIG)
    history = train(model, _toy(), TrainConfig(epochs=2, batch_size=16, precision="bf16"))
    assert len(history.losses) == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in history.losses[-1].values())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_world_shares_split_a_global_batch_contiguously():
    # 10 samples over 3 processes: 4, 3, 3, in order, covering every sample once.
    shares = [World(r, r, 3).share(10) for r in range(3)]
    assert [(s.start, s.stop) for s in shares] == [(0, 4), (4, 7), (7, 10)]
    assert World(0, 0, 1).share(10) == slice(0, 10)


@pytest.mark.parametrize(
    ("batch", "n", "message"),
    [(63, 100, "does not divide over 2"), (0, 99, "the full batch"), (2, 100, "fewer than 2")],
)
def test_a_batch_that_does_not_split_over_the_world_is_refused(batch, n, message):
    with pytest.raises(ValueError, match=message):
        check_batch(World(0, 0, 2), batch, n)
    check_batch(World(0, 0, 1), batch, n)  # alone, anything goes


@pytest.mark.parametrize(
    "command",
    [
        ["experiment", "missing", "--quick"],
        ["reproduce", "--quick"],
        ["search", "--data", "synthetic-mvmc", "--trials", "1"],
    ],
)
def test_every_training_command_refuses_cuda_without_a_gpu_before_training(
    no_gpu, tmp_path, capsys, command
):
    code = main([*command, "--out", str(tmp_path / "out"), "--accelerator", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ddnn: error:") and "no CUDA GPU" in err
    assert not (tmp_path / "out").exists()


def test_train_says_where_it_trained(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1"]) == 0
    assert "trained 1 epochs in" in (out := capsys.readouterr().out) and " on the CPU; " in out
    code = main(["train", "--out", str(tmp_path / "b"), "--epochs", "1", "train.precision=bf16"])
    assert code == 0 and " on the CPU, bf16 mixed precision; " in capsys.readouterr().out


def test_a_gpu_placement_names_the_gpu_and_its_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    placement = accelerator.Placement(torch.device("cuda", 1), "16")
    assert placement.describe() == "GPU 1 (Test GPU), float16 mixed precision"
    assert accelerator.Placement(torch.device("cpu"), "32").describe() == "the CPU"
