"""A trainer you can read in one screen: Adam on the joint loss, latent-weight clipping, dropout of devices."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ddnn.config import TrainConfig
from ddnn.data.dataset import MultiDeviceDataset
from ddnn.models.ddnn import DDNN
from ddnn.nn.binary import clip_latent_weights
from ddnn.train.losses import joint_loss

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, dict[str, float]], None]


@dataclass
class TrainHistory:
    """Per-epoch mean losses and the wall time."""

    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed torch and make CPU kernels deterministic."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN as a safety net; our kernels never
    # read uninitialised memory, and the fills cost ~12% of a training step on the CPU.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    if threads > 0:
        torch.set_num_threads(threads)


def device_dropout_mask(
    batch: int, num_devices: int, rate: float, generator: torch.Generator
) -> torch.Tensor:
    """Random presence mask: each device absent with probability ``rate``, at least one present."""
    if rate <= 0:
        return torch.ones(batch, num_devices, dtype=torch.bool)
    keep = torch.rand(batch, num_devices, generator=generator) >= rate
    nobody = ~keep.any(dim=1)
    if bool(nobody.any()):
        rescue = torch.randint(num_devices, (int(nobody.sum()),), generator=generator)
        keep[nobody.nonzero().flatten(), rescue] = True
    return keep


def validate_train_config(config: TrainConfig) -> None:
    """User-facing checks of the training recipe."""
    if config.epochs < 0:
        raise ValueError(f"train.epochs must be >= 0, got {config.epochs}")
    if config.lr <= 0:
        raise ValueError(f"train.lr must be > 0, got {config.lr}")
    if config.batch_size < 0:
        raise ValueError(f"train.batch_size must be >= 0 (0 = full batch), got {config.batch_size}")
    if not 0.0 <= config.device_dropout < 1.0:
        raise ValueError(f"train.device_dropout must be in [0, 1), got {config.device_dropout}")


def train(
    model: DDNN,
    data: MultiDeviceDataset,
    config: TrainConfig,
    progress: ProgressFn | None = None,
) -> TrainHistory:
    """Train ``model`` jointly on every exit; deterministic for a given ``config.seed`` on CPU."""
    validate_train_config(config)
    if data.num_devices != model.config.num_devices or data.shapes != model.config.device_shapes:
        raise ValueError(
            f"data has {data.num_devices} devices of input shapes {list(data.shapes)}, the model "
            f"expects {model.config.num_devices} of {list(model.config.device_shapes)}"
        )
    seed_everything(config.seed, config.threads)
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    n = len(data)
    batch = n if config.batch_size == 0 else min(config.batch_size, n)
    history = TrainHistory()
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        sums: dict[str, float] = {}
        steps = 0
        for begin in range(0, n, batch):
            idx = order[begin : begin + batch]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            presence = device_dropout_mask(len(idx), data.num_devices, config.device_dropout, gen)
            out = model(data.x[idx], presence)
            loss, parts = joint_loss(out, data.labels[idx], data.view_labels[idx], presence, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clip_latent_weights(model)
            for k, v in {"total": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        epoch_losses = {k: v / max(steps, 1) for k, v in sums.items()}
        history.losses.append(epoch_losses)
        log.debug("epoch %d: %s", epoch + 1, epoch_losses)
        if progress is not None:
            progress(epoch + 1, epoch_losses)
    if config.epochs > 0:
        recalibrate_batchnorm(model, data, batch)
    history.seconds = time.perf_counter() - start
    model.eval()
    return history


@torch.no_grad()
def recalibrate_batchnorm(model: DDNN, data: MultiDeviceDataset, batch_size: int) -> None:
    """Re-estimate BatchNorm running statistics with the final weights (exact average over ``data``).

    Flipping binary weights late in training leaves the running statistics, averaged over earlier
    weights, out of date; evaluated accuracy then collapses erratically. One pass fixes it.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches
    model.train()
    for begin in range(0, len(data), max(batch_size, 2)):
        chunk = data.x[begin : begin + max(batch_size, 2)]
        if len(chunk) >= 2:
            model(chunk)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
