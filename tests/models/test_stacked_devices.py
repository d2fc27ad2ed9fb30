"""The DDNN's stacked device path (one grouped stack) against running the devices one by one."""

import copy

import pytest
import torch

import ddnn.models.ddnn as ddnn_module
from ddnn.config import CloudConfig, DeviceConfig, EdgeConfig, ModelConfig
from ddnn.models.ddnn import DDNN

SMALL = dict(input_shape=(3, 8, 8), num_classes=3)
CONFIGS = {
    "devices_cloud": ModelConfig(num_devices=3, cloud=CloudConfig(filters=(4,)), **SMALL),
    "two_device_layers": ModelConfig(
        num_devices=4, device=DeviceConfig(filters=(4, 3)), cloud=CloudConfig(filters=(4,)), **SMALL
    ),
    "float_devices_cc_local": ModelConfig(
        num_devices=3,
        local_aggregation="cc",
        device=DeviceConfig(filters=(4,), binary=False),
        cloud=CloudConfig(filters=(4,), binary=False),
        **SMALL,
    ),
    "edges": ModelConfig(
        num_devices=4,
        edge=EdgeConfig(groups=((0, 1), (2, 3)), filters=(4,)),
        cloud=CloudConfig(filters=(4,)),
        **SMALL,
    ),
}


def _per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make DDNN run its devices one by one (the reference)."""
    monkeypatch.setattr(ddnn_module, "stackable", lambda stacks: False)


def _pair(name: str) -> tuple[DDNN, DDNN]:
    torch.manual_seed(0)
    model = DDNN(CONFIGS[name])
    return model, copy.deepcopy(model)


def _data(config: ModelConfig, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(batch, config.num_devices, *config.input_shape)
    presence = torch.rand(batch, config.num_devices) > 0.3
    presence[:, 0] = True
    return x, presence


def _loss(out: ddnn_module.DDNNOutput) -> torch.Tensor:
    logits = [v for v in vars(out).values() if v is not None]
    return sum((v * torch.linspace(-1, 1, v.numel()).view_as(v)).sum() for v in logits)


def test_the_stacked_path_is_taken():
    model, _ = _pair("devices_cloud")
    calls = []
    original = ddnn_module.stacked_features

    def spy(stacks, x):
        calls.append(x.shape)
        return original(stacks, x)

    mp = pytest.MonkeyPatch()
    mp.setattr(ddnn_module, "stacked_features", spy)
    try:
        model(torch.rand(2, 3, 3, 8, 8))
    finally:
        mp.undo()
    assert calls == [torch.Size([2, 9, 8, 8])]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("all_present", [True, False])
def test_training_step_equals_devices_one_by_one(name, all_present, monkeypatch):
    fast, ref = _pair(name)
    x, presence = _data(fast.config)
    if all_present:
        presence[:] = True
    out_fast = fast(x, presence)
    _loss(out_fast).backward()
    _per_device(monkeypatch)
    out_ref = ref(x, presence)
    _loss(out_ref).backward()
    for key, expected in vars(out_ref).items():
        got = getattr(out_fast, key)
        if expected is None:
            assert got is None, key
        else:
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=key)
    for (n, p_ref), (_, p_fast) in zip(
        ref.named_parameters(), fast.named_parameters(), strict=True
    ):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=1e-4, rtol=1e-4, msg=n)
    ref_state, fast_state = ref.state_dict(), fast.state_dict()
    assert list(fast_state) == list(ref_state)  # checkpoints, export and serving are unchanged
    for n, b in ref_state.items():
        torch.testing.assert_close(fast_state[n], b, atol=1e-5, rtol=1e-5, msg=n)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_inference_equals_devices_one_by_one(name, monkeypatch):
    fast, ref = _pair(name)
    x, presence = _data(fast.config, batch=8)
    with torch.no_grad():
        fast.train()(x)  # move the running statistics away from their initial values
        ref.load_state_dict(fast.state_dict())
    fast.eval()
    ref.eval()
    got = fast.infer(x, {"local": 0.6, "edge": 0.6}, presence)
    got_wire = fast.wire_forward(x, presence)
    _per_device(monkeypatch)
    expected = ref.infer(x, {"local": 0.6, "edge": 0.6}, presence)
    expected_wire = ref.wire_forward(x, presence)
    assert got.predictions.tolist() == expected.predictions.tolist()
    assert got.exit_index.tolist() == expected.exit_index.tolist()
    for key, e in vars(expected_wire).items():
        if e is not None:
            torch.testing.assert_close(getattr(got_wire, key), e, atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_input_laid_out_once_gives_the_same_outputs_and_needs_no_copy(name: str) -> None:
    """``input_layout`` stores (B, D, C, H, W) so that the stacked devices' (B, D*C, H, W) view is
    channels-last already; the outputs are those of the plain input, bit for bit."""
    torch.manual_seed(0)
    model = DDNN(CONFIGS[name]).eval()
    x = torch.randn(5, CONFIGS[name].num_devices, *SMALL["input_shape"])
    laid = model.input_layout(x)
    assert torch.equal(laid, x)  # the same values, another memory order
    assert laid.flatten(1, 2).is_contiguous(memory_format=torch.channels_last)
    assert not x.flatten(1, 2).is_contiguous(memory_format=torch.channels_last)
    rows = laid[torch.tensor([3, 0, 4])]  # a gathered batch keeps the layout
    assert rows.flatten(1, 2).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = model(x), model(laid)
    assert a.exit_logits().keys() == b.exit_logits().keys()
    for k, logits in a.exit_logits().items():
        assert torch.equal(logits, b.exit_logits()[k]), k
    assert torch.equal(a.device_logits, b.device_logits)


def test_input_layout_leaves_shared_weight_devices_alone() -> None:
    config = ModelConfig(
        num_devices=3, device=DeviceConfig(filters=(4,), share_weights=True), **SMALL
    )
    x = torch.randn(2, 3, *SMALL["input_shape"])
    assert DDNN(config).input_layout(x) is x
