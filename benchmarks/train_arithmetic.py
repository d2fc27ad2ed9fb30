"""How far each training-speed goal is from what this machine's arithmetic allows (issue 16).

For each timed workload, this counts the multiply-adds (MACs) of one training step (forward, joint
loss, backward; ``torch.utils.flop_counter``, with grouped convolutions counted right) and compares
them with the machine's matrix speed: the best float32 matrix product torch runs here, over sizes
1024 to 4096. ``MACs x steps / matrix speed`` is how long training would take if every step kept
the arithmetic units as busy as the best matrix product does, and did nothing else: no pooling,
BatchNorm, binarization, optimizer or data handling, which are not counted. The training times
compared are the committed ones (``results_train_speed.txt``, ``results_fashion_benchmark.txt``).

Workloads: synthetic-mvmc's paper recipe (full batch of 680, 100 steps) and default recipe (batch
64, 1 100 steps), and the fashion-mnist-6 DDNN of ``benchmarks/fashion_benchmark.py`` (batch 128,
4 300 steps) with that script's cloud-only CNN beside it. Random inputs of each data set's shape:
the arithmetic does not depend on the values.

Then the paper step's convolutions alone (forward and the gradients training needs): the devices'
grouped convolution in five formulations that compute the same values, channels-last and NCHW,
and the cloud's two; and oneDNN's own account (``ONEDNN_VERBOSE``) of the grouped one: the
weight layout it chose and its time.

Run: python benchmarks/train_arithmetic.py
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of, machine  # noqa: E402
from fashion_benchmark import DDNN_OVERRIDES, RawCloudCNN  # noqa: E402

from ddnn.config import RunConfig, TrainConfig, resolve_config  # noqa: E402
from ddnn.models.ddnn import DDNN  # noqa: E402
from ddnn.train.losses import joint_loss  # noqa: E402
from ddnn.train.memory import reused_memory  # noqa: E402
from ddnn.train.trainer import device_dropout_mask  # noqa: E402

MATRIX_SIZES = (1024, 2048, 3072, 4096)
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


def matrix_throughput(repeats: int = 4) -> tuple[float, int]:
    """The most multiply-adds per second of float32 square matrix products (best of ``repeats``
    for each size, after a warm-up), and the size that reached it."""
    best: tuple[float, int] = (0.0, 0)
    for n in MATRIX_SIZES:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = max(best, (n**3 / best_of(functools.partial(torch.matmul, a, b), repeats), n))
    return best


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


def time_training_pass(run: Callable[[Tensor, Tensor], Tensor], x: Tensor, w: Tensor) -> float:
    """Best of five after a warm-up (which fills oneDNN's kernel cache), with the trainer's memory
    reuse: ``run(x, sign(w))`` forward and backward, the gradients of what requires one."""

    def step() -> None:
        y = run(x, w.sign())
        y.backward(torch.ones_like(y))
        x.grad = w.grad = None

    with reused_memory():
        return best_of(step, 5)


def time_device_convolution(run: Callable[[Tensor, Tensor], Tensor], channels_last: bool) -> float:
    """The devices' convolution: forward and the weight gradient (the input needs none)."""
    x = torch.randn(BATCH, DEVICES * CIN, SIDE, SIDE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(DEVICES * COUT, CIN, 3, 3).requires_grad_()
    return time_training_pass(run, x, w)


def time_convolution(x_shape: tuple[int, ...], out_channels: int, input_grad: bool) -> float:
    """One 3 x 3 convolution (pad 1, channels-last, as ddnn runs it), forward and the gradients
    training needs (the weights', and the input's unless it is the raw input)."""
    x = torch.randn(x_shape).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    w = torch.randn(out_channels, x_shape[1], 3, 3).requires_grad_()
    return time_training_pass(lambda x, w: F.conv2d(x, w, None, 1, 1), x, w)


def convolution_macs(x_shape: tuple[int, ...], out_channels: int, input_grad: bool) -> int:
    """Multiply-adds of ``time_convolution``'s work: the forward, once more per gradient."""
    batch, cin, *spatial = x_shape
    forward = batch * math.prod(spatial) * out_channels * cin * 9
    return forward * (3 if input_grad else 2)


# The paper's cloud: ConvP(24 -> 16) and ConvP(16 -> 16) on 16 x 16 maps of the full batch.
PAPER_CLOUD = (
    ("cloud 24 -> 16", (BATCH, DEVICES * COUT, SIDE // 2, SIDE // 2), 16, True, 1),
    ("cloud 16 -> 16", (BATCH, 16, SIDE // 2, SIDE // 2), 16, True, 1),
)
# The fashion DDNN's convolutions in one training step (batch 128): each device runs its own
# (ConvP(64) on a 16 x 10 tile, then ConvP(32) on 8 x 5; 64 channels are not stacked), then the
# cloud's two on the six devices' 4 x 3 maps: (name, input shape, filters, input gradient, count).
FASHION_CONVOLUTIONS = (
    ("device 1 -> 64", (128, 1, 16, 10), 64, False, 6),
    ("device 64 -> 32", (128, 64, 8, 5), 32, True, 6),
    ("cloud 192 -> 64", (128, 192, 4, 3), 64, True, 1),
    ("cloud 64 -> 64", (128, 64, 4, 3), 64, True, 1),
)
Convolution = tuple[str, tuple[int, ...], int, bool, int]


def print_convolutions(convolutions: tuple[Convolution, ...]) -> float:
    """Time each convolution alone; print it; return the seconds of all of them in one step."""
    step = 0.0
    for name, shape, filters, input_grad, count in convolutions:
        seconds = time_convolution(shape, filters, input_grad)
        macs = convolution_macs(shape, filters, input_grad)
        grads = "both gradients" if input_grad else "weight gradient"
        print(
            f"  {name} x {count}, forward + {grads} ({macs / 1e9:.3f} GMAC): "
            f"{1000 * seconds:.2f} ms ({macs / seconds / 1e9:.1f} GMAC/s)"
        )
        step += count * seconds
    return step


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
    peak, size = matrix_throughput()
    print(
        f"matrix speed: {peak / 1e9:.1f} GMAC/s (the best float32 matrix product of sizes "
        f"{', '.join(map(str, MATRIX_SIZES))}: {size}; {torch.get_num_threads()} threads)"
    )
    print()
    print(
        "| workload | GMAC per step | steps | at matrix speed | goal | the goal needs | "
        "measured | measured reaches |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for work in WORKLOADS:
        model, loss = work.build()
        total = macs_per_step(model, loss) * work.steps
        measured = work.measured()
        goal, needs = "-", "-"
        if work.goal is not None:
            goal = f"{work.goal:g} s"
            needs = f"{100 * total / work.goal / peak:.0f} % of matrix speed"
        print(
            f"| {work.name} | {total / work.steps / 1e9:.3f} | {work.steps} | "
            f"{total / peak:.1f} s | {goal} | {needs} | {measured:.1f} s ({work.results}) | "
            f"{100 * total / measured / peak:.0f} % of matrix speed |"
        )
    print()
    macs = BATCH * DEVICES * COUT * CIN * 9 * SIDE * SIDE
    print(
        f"the paper step's convolutions alone, best of 5 (the devices': forward + weight gradient, "
        f"{2 * macs / 1e9:.3f} GMAC):"
    )
    for name, run in device_convolutions().items():
        for channels_last in (True, False):
            seconds = time_device_convolution(run, channels_last)
            layout = "channels-last" if channels_last else "NCHW"
            print(
                f"  devices, {name}, {layout}: {1000 * seconds:.1f} ms "
                f"({2 * macs / seconds / 1e9:.1f} GMAC/s)"
            )
    print_convolutions(PAPER_CLOUD)
    print()
    print("the fashion DDNN step's convolutions alone, best of 5 each:")
    step = print_convolutions(FASHION_CONVOLUTIONS)
    print(
        f"  all of one step: {1000 * step:.1f} ms; x {FASHION_STEPS} steps = {step * FASHION_STEPS:.0f} s "
        "of convolutions alone, before any pooling, BatchNorm, binarization, exit head, loss, "
        "optimizer or data handling"
    )
    print()
    print(
        "oneDNN's account of the devices' grouped forward (ONEDNN_VERBOSE; the weights "
        "reordered to its blocked layout, then the convolution; ms last):"
    )
    for line in onednn_account():
        print("  " + line)


if __name__ == "__main__":
    main()
