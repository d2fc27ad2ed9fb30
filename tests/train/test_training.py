"""Joint training: beats chance, deterministic, device dropout, checkpoints and sections."""

import pytest
import torch

from ddnn.config import CloudConfig, DeviceConfig, ModelConfig, TrainConfig
from ddnn.data.dataset import ABSENT, MultiDeviceDataset
from ddnn.models.ddnn import DDNN
from ddnn.train.checkpoint import load_run, load_section, model_version, save_run
from ddnn.train.losses import joint_loss
from ddnn.train.trainer import device_dropout_mask, epoch_lr, train

CONFIG = ModelConfig(
    num_devices=3, input_shape=(1, 8, 8), num_classes=3, cloud=CloudConfig(filters=(4,))
)


def _toy_data(n: int, seed: int) -> MultiDeviceDataset:
    """Class k lights up quadrant k of the image; device 2 sees the object in half the samples."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, (n,), generator=g)
    x = 0.3 * torch.randn(n, 3, 1, 8, 8, generator=g)
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        x[i, :2, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
    unseen = torch.rand(n, generator=g) < 0.5
    x[unseen, 2] = 0.0
    views = labels[:, None].repeat(1, 3)
    views[unseen, 2] = ABSENT
    return MultiDeviceDataset(x, views, labels, ("a", "b", "c"))


def test_short_training_beats_chance_clearly():
    torch.manual_seed(0)
    model = DDNN(CONFIG)
    train(model, _toy_data(300, 0), TrainConfig(epochs=40, batch_size=32))
    test = _toy_data(200, 1)
    for threshold in (0.0, 0.5, 1.0):  # cloud only, mixed, local only
        result = model.infer(test.x, {"local": threshold})
        accuracy = float((result.predictions == test.labels).float().mean())
        assert accuracy > 0.8, threshold  # chance is 1/3


def test_training_is_deterministic():
    data = _toy_data(64, 0)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = DDNN(CONFIG)
        train(model, data, TrainConfig(epochs=2, batch_size=16, device_dropout=0.3, seed=3))
        states.append(model_version(model))
    assert states[0] == states[1]


def test_absent_views_contribute_no_device_loss():
    model = DDNN(CONFIG)
    data = _toy_data(8, 0)
    presence = torch.ones(8, 3, dtype=torch.bool)
    out = model(data.x, presence)
    _, parts = joint_loss(out, data.labels, data.view_labels, presence, TrainConfig())
    seen = data.view_labels != ABSENT
    expected = torch.nn.functional.cross_entropy(out.device_logits[seen], data.view_labels[seen])
    assert int(seen.sum()) < 8 * 3
    assert parts["devices"] == pytest.approx(float(expected.detach()), rel=1e-5)


def test_device_dropout_keeps_at_least_one_device():
    g = torch.Generator().manual_seed(0)
    mask = device_dropout_mask(2000, 3, 0.9, g, "independent")
    assert bool(mask.any(dim=1).all())
    assert 0.05 < float(mask.float().mean()) < 0.5


def test_single_device_dropout_drops_at_most_one_uniformly_chosen_device():
    g = torch.Generator().manual_seed(0)
    n, devices, rate = 30_000, 6, 0.3
    absent = ~device_dropout_mask(n, devices, rate, g, "single")
    per_sample = absent.sum(dim=1)
    assert int(per_sample.max()) == 1  # never two devices gone at once
    # a sample loses a device with probability rate: binomial(n, 0.3), sd ~79 samples
    assert abs(int(per_sample.sum()) - rate * n) < 5 * (n * rate * (1 - rate)) ** 0.5
    # the lost device is uniform: each about n * rate / 6 = 1500 times, sd ~36
    per_device = absent.sum(dim=0)
    assert all(abs(int(k) - 1500) < 5 * 36 for k in per_device)


@pytest.mark.parametrize("devices, rate", [(6, 0.0), (1, 0.5)])
def test_single_device_dropout_keeps_everything_without_rate_or_a_second_device(devices, rate):
    mask = device_dropout_mask(50, devices, rate, torch.Generator().manual_seed(0), "single")
    assert bool(mask.all())


def test_unknown_device_dropout_mode_is_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match="must be one of independent, single, got 'pairs'"):
        device_dropout_mask(4, 3, 0.1, torch.Generator(), "pairs")


def test_cosine_schedule_follows_half_a_cosine_by_hand():
    # lr (1 + cos(pi e / 4)) / 2 for e = 0..3: cos = 1, 0.70711, 0, -0.70711
    cosine = TrainConfig(lr=0.1, epochs=4, lr_schedule="cosine")
    got = [epoch_lr(cosine, e) for e in range(4)]
    assert got == pytest.approx([0.1, 0.0853553, 0.05, 0.0146447], abs=1e-7)
    assert [epoch_lr(TrainConfig(lr=0.1, epochs=4), e) for e in range(4)] == [0.1] * 4


def test_training_steps_at_each_epochs_scheduled_lr(monkeypatch):
    seen: list[float] = []
    step = torch.optim.Adam.step

    def recording(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    torch.manual_seed(0)
    # 32 samples in batches of 16: two steps per epoch
    train(
        DDNN(CONFIG),
        _toy_data(32, 0),
        TrainConfig(epochs=2, batch_size=16, lr=0.02, lr_schedule="cosine"),
    )
    assert seen == pytest.approx([0.02, 0.02, 0.01, 0.01])  # cos(pi / 2) = 0: half the lr


def test_unknown_lr_schedule_is_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine, got 'step'"):
        train(DDNN(CONFIG), _toy_data(8, 0), TrainConfig(epochs=1, lr_schedule="step"))


def test_checkpoint_round_trip_and_sections_load_alone(tmp_path):
    torch.manual_seed(0)
    from ddnn.config import RunConfig

    config = RunConfig(
        model=ModelConfig(
            num_devices=3,
            input_shape=(1, 8, 8),
            device=DeviceConfig(filters=(2,)),
            cloud=CloudConfig(filters=(4,)),
        )
    )
    model = DDNN(config.model)
    train(model, _toy_data(32, 0), TrainConfig(epochs=1, batch_size=16))
    save_run(tmp_path, model, config)
    loaded, loaded_config, _ = load_run(tmp_path)
    assert loaded_config == config
    x = _toy_data(10, 5).x
    assert torch.equal(loaded.infer(x).predictions, model.infer(x).predictions)
    device1, _, version = load_section(tmp_path, "device_1")
    assert version == model_version(model)
    with torch.no_grad():
        s_alone, f_alone = device1(x[:, 1])
        s_ref, f_ref = model.device(1)(x[:, 1])
    assert torch.equal(s_alone, s_ref) and torch.equal(f_alone, f_ref)
    cloud, _, _ = load_section(tmp_path, "cloud")
    assert sum(p.numel() for p in cloud.parameters()) == sum(
        p.numel() for p in model.cloud.parameters()
    )


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "nope")
