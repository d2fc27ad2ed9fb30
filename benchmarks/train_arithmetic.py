"""How far each training-speed goal is from what this machine's arithmetic allows (issue 16).

For each timed workload, this counts the multiply-adds of one training step (forward, joint loss,
backward; ``torch.utils.flop_counter``), times warm steps of the same loop the trainer runs
(Adam, latent-weight clipping, the trainer's memory reuse), and compares both with the machine's
matrix throughput: the best of a 2048 x 2048 float32 matrix product, the fastest dense arithmetic
torch reaches here. ``MACs x steps / throughput`` is a lower bound on the training time that no
kernel, layout or fusion can beat on this CPU.

Workloads: synthetic-mvmc's paper recipe (full batch of 680, 100 steps) and default recipe (batch
64, 1 100 steps), and the fashion-mnist-6 DDNN of ``benchmarks/fashion_benchmark.py`` (batch 128,
4 300 steps) with that script's cloud-only CNN beside it. Random inputs of each data set's shape:
the arithmetic does not depend on the values.

It also prints oneDNN's own account (``ONEDNN_VERBOSE``) of the paper's grouped device
convolution, the largest item of its step: the weight layout oneDNN chose and its time.

Run: python benchmarks/train_arithmetic.py [--steps S]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from fashion_benchmark import DDNN_OVERRIDES, RawCloudCNN  # noqa: E402

from ddnn.config import RunConfig, TrainConfig, resolve_config  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.losses import joint_loss  # noqa: E402
from ddnn.train.memory import reused_memory  # noqa: E402
from ddnn.train.trainer import device_dropout_mask  # noqa: E402

MATRIX = 2048
FASHION_SHAPE = (1, 16, 10)  # one tile per device, fashion_benchmark.TILE
FASHION_CLASSES = 6
FASHION_TRAIN = 55_000
HERE = Path(__file__).parent


@dataclass(frozen=True)
class Workload:
    name: str
    steps: int  # optimizer steps of the whole training run
    results: str  # the committed results file with its measured training time
    pattern: str  # the regular expression that finds that time (seconds) in it
    goal: float | None  # issue 16's goal in seconds
    build: Callable[[], tuple[nn.Module, Callable[[], Tensor]]]  # model, one step's loss

    def measured(self) -> float:
        text = (HERE / self.results).read_text()
        found = re.search(self.pattern, text, re.MULTILINE)
        if found is None:
            raise SystemExit(f"no training time matching {self.pattern!r} in {self.results}")
        return float(found.group(1))


def ddnn_workload(
    config: RunConfig, batch: int, recipe: TrainConfig
) -> tuple[nn.Module, Callable[[], Tensor]]:
    torch.manual_seed(0)
    model = DDNN(config.model)
    m = config.model
    x = model.input_layout(torch.randn(batch, m.num_devices, *m.input_shape))
    labels = torch.randint(0, m.num_classes, (batch,))
    view_labels = labels.unsqueeze(1).expand(batch, m.num_devices).contiguous()
    gen = torch.Generator().manual_seed(0)

    def loss() -> Tensor:
        presence = device_dropout_mask(
            batch, m.num_devices, recipe.device_dropout, gen, recipe.device_dropout_mode
        )
        out = model(x, presence)
        return joint_loss(out, labels, view_labels, presence, recipe)[0]

    return model, loss


def paper() -> tuple[nn.Module, Callable[[], Tensor]]:
    config = RunConfig()
    return ddnn_workload(config, 680, replace(config.train, batch_size=0, device_dropout=0.0))


def default() -> tuple[nn.Module, Callable[[], Tensor]]:
    config = RunConfig()
    return ddnn_workload(config, config.train.batch_size, config.train)


def fashion_ddnn() -> tuple[nn.Module, Callable[[], Tensor]]:
    config = resolve_config(overrides=[*DDNN_OVERRIDES, "data.name=fashion-mnist-6"])
    model = replace(config.model, input_shape=FASHION_SHAPE, num_classes=FASHION_CLASSES)
    return ddnn_workload(replace(config, model=model), 128, config.train)


def fashion_cnn() -> tuple[nn.Module, Callable[[], Tensor]]:
    torch.manual_seed(0)
    model = RawCloudCNN(FASHION_CLASSES)
    x = torch.randn(128, 6, *FASHION_SHAPE)
    labels = torch.randint(0, FASHION_CLASSES, (128,))
    return model, lambda: F.cross_entropy(model(x), labels)


FASHION_STEPS = 10 * math.ceil(FASHION_TRAIN / 128)
WORKLOADS = (
    Workload(
        "synthetic-mvmc, paper recipe (batch 680)",
        100,
        "results_train_speed.txt",
        r"^paper .*?: ([0-9.]+) s training",
        15.0,
        paper,
    ),
    Workload(
        "synthetic-mvmc, default recipe (batch 64)",
        100 * math.ceil(680 / 64),
        "results_train_speed.txt",
        r"^default .*?: ([0-9.]+) s training",
        20.0,
        default,
    ),
    Workload(
        "fashion-mnist-6 DDNN (batch 128)",
        FASHION_STEPS,
        "results_fashion_benchmark.txt",
        r"^  DDNN: ([0-9.]+) s",
        120.0,
        fashion_ddnn,
    ),
    Workload(
        "fashion-mnist-6 cloud-only CNN (batch 128)",
        FASHION_STEPS,
        "results_fashion_benchmark.txt",
        r"^  \(a\) cloud-only CNN: ([0-9.]+) s",
        None,
        fashion_cnn,
    ),
)


def matrix_throughput(repeats: int = 5) -> float:
    """Multiply-adds per second of the best of ``repeats`` float32 2048^3 matrix products."""
    a, b = torch.randn(MATRIX, MATRIX), torch.randn(MATRIX, MATRIX)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return MATRIX**3 / best


def convolution_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: list[bool],
    **kwargs: object,
) -> int:
    """Flops of a (non-transposed) convolution's backward, grouped ones included.

    torch's own formula treats a grouped convolution's weight gradient as a dense one (it ignores
    ``groups``): 6x too many for the paper's six devices. Each gradient wanted costs what the
    forward does: every weight element meets every output position of every sample once.
    """
    if transposed:
        raise NotImplementedError("no transposed convolutions in these models")
    forward = 2 * grad_out_shape[0] * math.prod(w_shape) * math.prod(grad_out_shape[2:])
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def macs_per_step(model: nn.Module, loss: Callable[[], Tensor]) -> float:
    model.train()
    mapping = {torch.ops.aten.convolution_backward: convolution_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        loss().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


# The paper's device convolution: six devices' 3 -> 4 channel 3 x 3 convolutions on a full batch.
BATCH, DEVICES, CIN, COUT, SIDE = 680, 6, 3, 4, 32


def device_convolutions() -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Ways to compute the six devices' convolutions: (B, 18, H, W), (24, 3, 3, 3) -> (B, 24, H, W).

    Every one gives the same values up to summation order; block-diagonal weights add exact zeros.
    """

    def grouped(per: int) -> Callable[[Tensor, Tensor], Tensor]:
        # ``per`` devices share a group, with a block-diagonal weight inside it
        mask = torch.block_diag(*[torch.ones(COUT, CIN)] * per)[:, :, None, None]
        groups = DEVICES // per

        def run(x: Tensor, w: Tensor) -> Tensor:
            if per > 1:
                w = w.view(groups, per * COUT, CIN, 3, 3).repeat(1, 1, per, 1, 1)
                w = (w * mask).reshape(DEVICES * COUT, per * CIN, 3, 3)
            return F.conv2d(x, w, None, 1, 1, 1, groups)

        return run

    def separate(x: Tensor, w: Tensor) -> Tensor:
        xs = x.split(CIN, dim=1)
        ws = w.split(COUT)
        ys = [
            F.conv2d(xi.contiguous(memory_format=torch.channels_last), wi, None, 1, 1)
            for xi, wi in zip(xs, ws, strict=True)
        ]
        return torch.cat(ys, dim=1)

    return {
        "6 groups of 1 device (ddnn's stacked devices)": grouped(1),
        "3 groups of 2 devices, block-diagonal": grouped(2),
        "2 groups of 3 devices, block-diagonal": grouped(3),
        "1 dense convolution, block-diagonal": grouped(6),
        "6 separate convolutions, concatenated": separate,
    }


def time_device_convolution(run: Callable[[Tensor, Tensor], Tensor], channels_last: bool) -> float:
    """Best of five: forward and the weight gradient (the input needs none), as in training."""
    x = torch.randn(BATCH, DEVICES * CIN, SIDE, SIDE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(DEVICES * COUT, CIN, 3, 3).requires_grad_()
    best = math.inf
    with reused_memory():
        for i in range(6):
            start = time.perf_counter()
            y = run(x, w.sign())
            y.backward(torch.ones_like(y))
            if i > 0:  # the first call warms oneDNN's kernel cache
                best = min(best, time.perf_counter() - start)
            w.grad = None
    return best


GROUPED_CONV = """
import torch
from torch.nn import functional as F
x = torch.randn(680, 18, 32, 32).contiguous(memory_format=torch.channels_last)
w = torch.randn(24, 3, 3, 3).sign()
with torch.no_grad():
    for _ in range(3):
        F.conv2d(x, w, None, 1, 1, 1, 6)
"""


def onednn_account() -> list[str]:
    """oneDNN's verbose lines for the paper's grouped device convolution (the last call)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", GROUPED_CONV], env=env, capture_output=True, text=True, check=True
    ).stdout
    lines = [line for line in out.splitlines() if ",exec,cpu," in line]
    return lines[-2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.parse_args()
    print("command: python benchmarks/train_arithmetic.py")
    print(f"machine: {machine()}")
    peak = matrix_throughput()
    print(
        f"matrix throughput: {peak / 1e9:.1f} GMAC/s (best float32 {MATRIX}^3 product, "
        f"{torch.get_num_threads()} threads)"
    )
    print()
    print(
        "| workload | GMAC per step | steps | at matrix speed (lower bound) | goal | measured | achieved |"
    )
    print("|---|---|---|---|---|---|---|")
    for work in WORKLOADS:
        model, loss = work.build()
        macs = macs_per_step(model, loss)
        measured = work.measured()
        rate = macs * work.steps / measured
        goal = "-" if work.goal is None else f"{work.goal:g} s"
        print(
            f"| {work.name} | {macs / 1e9:.3f} | {work.steps} | {macs * work.steps / peak:.1f} s "
            f"| {goal} | {measured:.1f} s ({work.results}) | {rate / 1e9:.1f} GMAC/s "
            f"({100 * rate / peak:.0f} %) |"
        )
    print()
    macs = BATCH * DEVICES * COUT * CIN * 9 * SIDE * SIDE
    print(
        f"the paper's device convolution, forward + weight gradient ({2 * macs / 1e9:.3f} GMAC), "
        "best of 5:"
    )
    for name, run in device_convolutions().items():
        for channels_last in (True, False):
            seconds = time_device_convolution(run, channels_last)
            layout = "channels-last" if channels_last else "NCHW"
            print(
                f"  {name}, {layout}: {1000 * seconds:.1f} ms "
                f"({2 * macs / seconds / 1e9:.1f} GMAC/s)"
            )
    print()
    print(
        "oneDNN's account of the grouped forward (ONEDNN_VERBOSE; weights reordered to its blocked layout, then the convolution, ms last):"
    )
    for line in onednn_account():
        print("  " + line)


if __name__ == "__main__":
    main()
