"""The cloud's all-present copy (``model.cloud.all_present_copy``): which layers answer which
sample, what its training phase changes and what it leaves alone, resume, refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ddnn.cli import main
from ddnn.config import CloudConfig, EdgeConfig, ModelConfig, RunConfig, TrainConfig
from ddnn.data.dataset import MultiDeviceDataset
from ddnn.models.ddnn import DDNN
from ddnn.models.sections import CloudSection
from ddnn.train import trainer
from ddnn.train.checkpoint import load_section, model_version, save_run
from ddnn.train.resume import INDEX
from ddnn.workflow import resume_run, train_run

CONFIG = ModelConfig(
    num_devices=3,
    input_shape=(6,),
    num_classes=3,
    cloud=CloudConfig(filters=(4,), all_present_copy=True),
)
COPY_KEYS = ("cloud.all_present.", "cloud.copy_trained")


def _vectors(n: int, seed: int) -> MultiDeviceDataset:
    """3 vector sensors of 6 features; feature k of every sensor is shifted by +2 for class k."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, (n,), generator=g)
    x = torch.randn(n, 3, 6, generator=g)
    x[torch.arange(n), :, labels] += 2.0
    return MultiDeviceDataset(x, labels[:, None].repeat(1, 3), labels, ("a", "b", "c"))


def _cloud(model: DDNN) -> CloudSection:
    assert model.cloud is not None and model.cloud.all_present is not None
    return model.cloud


def _by_hand(cloud: CloudSection, x: torch.Tensor, presence: torch.Tensor, copy: bool):
    """Scores of one path, called block by block: the copy's layers or the cloud's own."""
    fused = cloud.aggregate(x, presence)
    layers = cloud.all_present if copy else {"features": cloud.features, "head": cloud.head}
    assert layers is not None
    return layers["head"](layers["features"](fused))


@torch.no_grad()
def test_the_copy_answers_complete_samples_and_the_cloud_the_others():
    torch.manual_seed(0)
    model = DDNN(CONFIG)
    cloud = _cloud(model).eval()
    x = torch.randn(5, 3, *model.device(0).feature_shape)
    presence = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 1, 0]]).bool()
    own = _by_hand(cloud, x, presence, copy=False)
    # Not trained yet (a run interrupted before its phase): the cloud's layers answer all.
    assert torch.equal(cloud(x, presence)[0], own)
    assert torch.equal(cloud(x)[0], _by_hand(cloud, x, torch.ones(5, 3).bool(), copy=False))

    copy = cloud.start_copy()
    assert torch.equal(cloud(x, presence)[0], own)  # a copy of the same weights
    with torch.no_grad():  # make the copy answer differently: the head's sign flipped
        copy["head"].linear.weight.neg_()
    mixed = cloud(x, presence)[0]
    by_copy = _by_hand(cloud, x, presence, copy=True)
    assert not torch.equal(by_copy, own)
    complete = presence.all(dim=1)
    assert torch.equal(mixed[complete], by_copy[complete])  # rows 0 and 2
    assert torch.equal(mixed[~complete], own[~complete])  # a sensor missing
    # No mask (every input present) and a batch of only complete samples take the copy.
    assert torch.equal(cloud(x)[0], _by_hand(cloud, x, torch.ones(5, 3).bool(), copy=True))


def _train(model_config: ModelConfig, train_config: TrainConfig) -> DDNN:
    torch.manual_seed(0)
    model = DDNN(model_config)
    trainer.train(model, _vectors(64, 0), train_config)
    return model


def test_the_copys_phase_trains_the_copy_alone_without_dropout(monkeypatch):
    recipe = TrainConfig(epochs=3, batch_size=16, device_dropout=0.9, all_present_epochs=2)
    presences: list[torch.Tensor] = []
    loss = trainer.joint_loss

    def recording(out, labels, views, presence, config):  # type: ignore[no-untyped-def]
        presences.append(presence.clone())
        return loss(out, labels, views, presence, config)

    monkeypatch.setattr(trainer, "joint_loss", recording)
    with_copy = _train(CONFIG, recipe)
    without = _train(replace(CONFIG, cloud=replace(CONFIG.cloud, all_present_copy=False)), recipe)

    # 64 samples in batches of 16: 4 steps an epoch. The joint epochs drop a device in most
    # samples (rate 0.9); the copy's two epochs see every device, and come last.
    assert len(presences) == 4 * 3 + 4 * 2 + 4 * 3  # the run with the copy, then the one without
    joint, phase = presences[:12], presences[12:20]
    assert not all(bool(p.all()) for p in joint)
    assert all(bool(p.all()) for p in phase)

    # Everything outside the copy is what the same training without a copy produced, to the bit
    # (the copy's phase froze it; its BatchNorms too).
    state, reference = with_copy.state_dict(), without.state_dict()
    outside = {k: v for k, v in state.items() if not k.startswith(COPY_KEYS)}
    assert outside.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(outside[key], value), key
    # The copy started from the cloud's layers and trained on: it differs from them now.
    cloud = _cloud(with_copy)
    assert bool(cloud.copy_trained)
    assert not torch.equal(cloud.all_present["head"].linear.weight, cloud.head.linear.weight)
    assert all(p.requires_grad for p in with_copy.parameters())  # handed back trainable


def test_the_copys_epochs_follow_a_schedule_of_their_own(monkeypatch):
    seen: list[float] = []
    step = torch.optim.Adam.step

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    recipe = TrainConfig(
        epochs=2, batch_size=32, lr=0.02, lr_schedule="cosine", all_present_epochs=2
    )
    _train(CONFIG, recipe)
    # 64 samples, 2 steps an epoch; cos(pi / 2) = 0 halves the rate in each phase's 2nd epoch
    assert seen == pytest.approx([0.02, 0.02, 0.01, 0.01, 0.02, 0.02, 0.01, 0.01])


def test_no_joint_epochs_train_no_copy():
    model = _train(CONFIG, TrainConfig(epochs=0))
    assert not bool(_cloud(model).copy_trained)


def test_the_saved_cloud_section_answers_as_the_model(tmp_path):
    model = _train(CONFIG, TrainConfig(epochs=2, batch_size=16, all_present_epochs=2))
    save_run(tmp_path, model, RunConfig(model=CONFIG))
    section, _, version = load_section(tmp_path, "cloud")  # what the runtime's cloud node runs
    assert version == model_version(model)
    data = _vectors(8, 1)
    presence = torch.ones(8, 3, dtype=torch.bool)
    presence[::2, 1] = False
    with torch.no_grad():
        features = model.device_outputs(data.x, presence).features
        got = section(features, presence)[0]
        want = _by_hand(_cloud(model), features, presence, copy=True)
        own = _by_hand(_cloud(model), features, presence, copy=False)
    assert torch.equal(got[1::2], want[1::2]) and torch.equal(got[::2], own[::2])


@pytest.mark.parametrize(
    ("model_config", "recipe", "message"),
    [
        (
            replace(CONFIG, edge=EdgeConfig(groups=((0, 1), (2,)), filters=(4,))),
            TrainConfig(epochs=1),
            "all_present_copy needs a cloud that the devices report to directly",
        ),
        (CONFIG, TrainConfig(epochs=1, all_present_epochs=0), "all_present_epochs must be >= 1"),
    ],
)
def test_what_the_copy_cannot_do_is_refused(model_config, recipe, message):
    with pytest.raises(ValueError, match=message):
        trainer.train(DDNN(model_config), _vectors(8, 0), recipe)


def _npz(path: Path) -> Path:
    data = _vectors(48, 2)
    np.savez(path, X=data.x.numpy(), y=data.labels.numpy())
    return path


def _overrides(data: Path) -> list[str]:
    return [
        "data.name=npz",
        f"data.path={data}",
        "model.cloud.all_present_copy=true",
        "train.epochs=4",
        "train.all_present_epochs=4",
        "train.batch_size=16",
        "train.save_every=2",
    ]


@pytest.mark.parametrize("crash_after", [3, 5, 7])  # saved at 2 (joint), 4 (its end), 6 (copy)
def test_a_crash_in_either_phase_resumes_to_the_uninterrupted_weights(tmp_path, crash_after):
    from ddnn.config import resolve_config

    data = _npz(tmp_path / "v.npz")
    whole, *_ = train_run(resolve_config(overrides=_overrides(data)), tmp_path / "whole")

    def crash(done: int, losses: dict[str, float]) -> None:
        if done == crash_after:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train_run(resolve_config(overrides=_overrides(data)), tmp_path / "cut", crash)
    index = json.loads((tmp_path / "cut" / INDEX).read_text())
    assert (index["epoch"], index["epochs"]) == (crash_after - 1, 8)  # the copy's epochs count
    resumed, _, history, _ = resume_run(tmp_path / "cut")
    assert len(history.losses) == 8
    assert model_version(resumed) == model_version(whole)


def test_train_says_how_many_epochs_the_copy_took(tmp_path, capsys):
    data = _npz(tmp_path / "v.npz")
    overrides = [o for o in _overrides(data) if not o.startswith("data.")]
    code = main(
        ["train", "--data", "npz", "--data-path", str(data), "--out", str(tmp_path / "r")]
        + overrides
    )
    assert code == 0
    assert "trained 4 epochs (+4 of the cloud's all-present copy)" in capsys.readouterr().out
