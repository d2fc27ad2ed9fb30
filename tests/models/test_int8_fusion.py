"""With int8 scores the exits fuse log-probabilities in training too, as the wire delivers them."""

import pytest
import torch

from ddnn.config import DeviceConfig, EdgeConfig, ModelConfig, WireConfig
from ddnn.models.ddnn import DDNN


@pytest.mark.parametrize("aggregation", ["mp", "ap", "cc"])
def test_training_fuses_what_the_int8_wire_delivers(aggregation):
    config = ModelConfig(
        num_devices=4,
        input_shape=(6,),
        num_classes=4,
        local_aggregation=aggregation,
        device=DeviceConfig(filters=(4,)),
        edge=EdgeConfig(groups=((0, 1), (2, 3)), filters=(4,)),
        wire=WireConfig(scores="int8"),
    )
    torch.manual_seed(0)
    model = DDNN(config).eval()
    x = torch.randn(50, 4, 6)
    trained, deployed = model(x), model.wire_forward(x)
    # int8 rounds log-probabilities to 1/16 nat: the fused scores agree up to that rounding
    torch.testing.assert_close(trained.local_logits, deployed.local_logits, atol=0.1, rtol=0)
    torch.testing.assert_close(trained.edge_logits, deployed.edge_logits, atol=0.1, rtol=0)
    # device heads' cross-entropy is unchanged by fusing log-probabilities
    logits = torch.stack([model.device(k)(x[:, k])[0] for k in range(4)], dim=1)
    target = torch.randint(0, 4, (50 * 4,))
    torch.testing.assert_close(
        torch.nn.functional.cross_entropy(trained.device_logits.flatten(0, 1), target),
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), target),
    )


def test_float_scores_are_fused_as_they_are():
    torch.manual_seed(0)
    model = DDNN(ModelConfig(num_devices=2, input_shape=(6,))).eval()
    x = torch.randn(5, 2, 6)
    out = model(x)
    scores = torch.stack([model.device(k)(x[:, k])[0] for k in range(2)], dim=1)
    torch.testing.assert_close(out.device_logits, scores)
    torch.testing.assert_close(out.local_logits, scores.max(dim=1).values)
