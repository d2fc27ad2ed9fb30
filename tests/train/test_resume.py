"""Resumable training: an interrupted run, resumed, reaches the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from ddnn.cli import main
from ddnn.config import resolve_config
from ddnn.train.checkpoint import model_version
from ddnn.train.resume import INDEX, STATE, TrainingInterrupted, load_state
from ddnn.workflow import resume_run, train_run


def _npz(path: Path, n: int = 48) -> Path:
    """3 devices of 1x8x8 images; class k brightens quadrant k on devices 0 and 1."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = 0.3 * rng.standard_normal((n, 3, 1, 8, 8)).astype(np.float32)
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        x[i, :2, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
    np.savez(path, X=x, y=y)
    return path


def _config(data: Path, *extra: str):
    return resolve_config(
        overrides=[
            "data.name=npz",
            f"data.path={data}",
            "model.device.filters=[2]",
            "model.cloud.filters=[4]",
            "train.epochs=6",
            "train.batch_size=16",
            "train.device_dropout=0.3",
            "train.save_every=2",
            *extra,
        ]
    )


def _interrupt_at(epoch: int):
    """A progress callback that presses Ctrl-C (a real SIGINT) when ``epoch`` ends."""

    def progress(done: int, losses: dict[str, float]) -> None:
        if done == epoch:
            os.kill(os.getpid(), signal.SIGINT)

    return progress


def test_ctrl_c_saves_state_and_resume_reaches_the_uninterrupted_weights(tmp_path):
    data = _npz(tmp_path / "toy.npz")
    whole, _, whole_history, _ = train_run(_config(data), tmp_path / "whole")
    assert not (tmp_path / "whole" / INDEX).exists()  # a finished run keeps no resume state

    with pytest.raises(TrainingInterrupted) as stopped:
        train_run(_config(data), tmp_path / "cut", _interrupt_at(3))
    # The stop lands at the first batch boundary after the signal: epoch 4 (index 3), batch 1.
    assert (stopped.value.epoch, stopped.value.step) == (3, 1)
    assert stopped.value.run_dir == tmp_path / "cut"
    assert not (tmp_path / "cut" / "manifest.json").exists()
    _, _, state = load_state(tmp_path / "cut")
    assert (state.epoch, state.step) == (3, 1)
    assert len(state.losses) == 3

    resumed, _, history, _ = resume_run(tmp_path / "cut")
    assert model_version(resumed) == model_version(whole)
    assert len(history.losses) == len(whole_history.losses) == 6
    for got, want in zip(history.losses, whole_history.losses, strict=True):
        assert got == pytest.approx(want)
    assert (tmp_path / "cut" / "manifest.json").exists()
    assert not (tmp_path / "cut" / INDEX).exists() and not (tmp_path / "cut" / STATE).exists()


@pytest.mark.parametrize(
    "extra",
    [
        ("train.lr_schedule=constant",),
        ("train.lr_schedule=cosine",),
        ("model.device.skip_absent=true",),  # dropped devices run apart from the others
    ],
)
def test_a_crash_resumes_from_the_last_save_every_epoch(tmp_path, extra):
    data = _npz(tmp_path / "toy.npz")
    whole, *_ = train_run(_config(data, *extra), tmp_path / "whole")

    def crash(done: int, losses: dict[str, float]) -> None:
        if done == 5:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train_run(_config(data, *extra), tmp_path / "cut", crash)
    index = json.loads((tmp_path / "cut" / INDEX).read_text())
    assert (index["epoch"], index["step"], index["epochs"]) == (4, 0, 6)  # save_every = 2
    resumed, *_ = resume_run(tmp_path / "cut")
    assert model_version(resumed) == model_version(whole)


def test_resume_through_the_cli(tmp_path, capsys):
    data = _npz(tmp_path / "toy.npz")
    with pytest.raises(RuntimeError):
        train_run(_config(data), tmp_path / "run", _crash_after(2))
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert "trained 6 epochs" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "run"), "--json"]) == 0


def _crash_after(epoch: int):
    def progress(done: int, losses: dict[str, float]) -> None:
        if done == epoch:
            raise RuntimeError("killed")

    return progress


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda run: None, "no such directory"),
        (lambda run: run.mkdir(), "not a run in progress"),
        (lambda run: (run.mkdir(), (run / "manifest.json").write_text("{}")), "run is finished"),
        (lambda run: (run.mkdir(), (run / INDEX).write_text("{not json")), "damaged"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys, prepare, message):
    run = tmp_path / "run"
    prepare(run)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddnn: error:") and message in err and "\n" not in err


def test_resume_refuses_a_state_that_does_not_match_its_index(tmp_path, capsys):
    data = _npz(tmp_path / "toy.npz")
    with pytest.raises(RuntimeError):
        train_run(_config(data), tmp_path / "run", _crash_after(2))
    state = tmp_path / "run" / STATE
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    state.write_bytes(bytes(raw))
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "does not match" in capsys.readouterr().err


def test_resume_refuses_other_config_flags(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "train.lr=0.1"]) == 2
    assert "drop train.lr=0.1" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--out RUN_DIR" in capsys.readouterr().err
