"""A trainer you can read in one screen: Adam on the joint loss, latent-weight clipping, dropout of devices.

Around that loop: the accelerator and mixed precision (``ddnn.train.accelerator``), data-parallel
processes under torchrun (``ddnn.train.distributed``), resumable state saved every
``train.save_every`` epochs and on Ctrl-C (``ddnn.train.resume``), and freed memory kept for the
next step (``ddnn.train.memory``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ddnn.config import TrainConfig
from ddnn.data.dataset import AnyDataset, MultiDeviceDataset
from ddnn.data.streaming import Batch, iter_batches
from ddnn.models.ddnn import DDNN
from ddnn.nn.binary import clip_latent_weights
from ddnn.train.accelerator import Placement, resolve_placement
from ddnn.train.distributed import World, check_batch, join, mean_over_world
from ddnn.train.losses import joint_loss
from ddnn.train.memory import reused_memory
from ddnn.train.resume import TrainingInterrupted, TrainState

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, dict[str, float]], None]
CheckpointFn = Callable[[TrainState], None]


@dataclass
class TrainHistory:
    """Per-epoch mean losses and the wall time."""

    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


RELAYOUT_BYTES = 512 * 2**20  # in-memory inputs up to this size are re-laid out once for training


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed torch and make CPU kernels deterministic."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN as a safety net; our kernels never
    # read uninitialised memory, and the fills cost ~12% of a training step on the CPU.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    if threads > 0:
        torch.set_num_threads(threads)


DROPOUT_MODES = ("independent", "single")


def check_dropout_mode(mode: str) -> None:
    """Raise unless ``mode`` is one of ``DROPOUT_MODES`` (``train.device_dropout_mode``)."""
    if mode not in DROPOUT_MODES:
        raise ValueError(
            f"train.device_dropout_mode must be one of {', '.join(DROPOUT_MODES)}, got {mode!r}"
        )


def device_dropout_mask(
    batch: int,
    num_devices: int,
    rate: float,
    generator: torch.Generator,
    mode: str,
) -> torch.Tensor:
    """Random (batch, num_devices) presence mask for device dropout; at least one device present.

    ``independent``: each device is absent with probability ``rate``, independently (a sample that
    loses all of them keeps one, chosen uniformly). ``single``: with probability ``rate`` a sample
    loses exactly one device, chosen uniformly; the others stay. The second is the failure that
    the missing-device goal tests (one camera down), and trains for it without also teaching the
    model samples with half its devices gone.
    """
    check_dropout_mode(mode)
    if rate <= 0 or (mode == "single" and num_devices < 2):
        return torch.ones(batch, num_devices, dtype=torch.bool)
    if mode == "single":
        keep = torch.ones(batch, num_devices, dtype=torch.bool)
        hit = torch.rand(batch, generator=generator) < rate
        which = torch.randint(num_devices, (batch,), generator=generator)
        keep[hit.nonzero().flatten(), which[hit]] = False
        return keep
    keep = torch.rand(batch, num_devices, generator=generator) >= rate
    nobody = ~keep.any(dim=1)
    if bool(nobody.any()):
        rescue = torch.randint(num_devices, (int(nobody.sum()),), generator=generator)
        keep[nobody.nonzero().flatten(), rescue] = True
    return keep


LR_SCHEDULES = ("constant", "cosine")


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``config.lr_schedule``.

    ``cosine`` is half a cosine from ``lr`` at the first epoch towards 0, without reaching it:
    ``lr * (1 + cos(pi * epoch / epochs)) / 2``. A pure function of the epoch, so a resumed run
    continues the schedule with no state of its own.
    """
    if config.lr_schedule == "constant" or config.epochs == 0:
        return config.lr
    return config.lr * (1.0 + math.cos(math.pi * epoch / config.epochs)) / 2.0


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
    check_dropout_mode(config.device_dropout_mode)
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
            f"got {config.lr_schedule!r}"
        )
    if config.save_every < 0:
        raise ValueError(
            f"train.save_every must be >= 0 (0 = save resumable state only on Ctrl-C), "
            f"got {config.save_every}"
        )
    resolve_placement(config.accelerator, config.precision)  # names, and cuda without a GPU


class StopRequest:
    """Set by Ctrl-C / SIGTERM while training; the loop stops at the next batch boundary.

    A second Ctrl-C interrupts at once (no resumable state is saved then).
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: saving resumable state at the end of this batch")

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers live in the main thread only
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def agreed(self, world: World) -> bool:
        """Whether any process was asked to stop (all processes stop at the same batch)."""
        if not world.distributed:
            return self.requested
        flag = torch.tensor([int(self.requested)])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


def train(
    model: DDNN,
    data: AnyDataset,
    config: TrainConfig,
    progress: ProgressFn | None = None,
    *,
    checkpoint: CheckpointFn | None = None,
    resume: TrainState | None = None,
    world: World | None = None,
    workers: int = 0,
) -> TrainHistory:
    """Train ``model`` jointly on every exit; deterministic for a given ``config.seed`` on CPU.

    Args:
        checkpoint: called on rank 0 with the resumable state every ``config.save_every``
            epochs and when a stop is requested (the caller writes it with the weights).
        resume: a state saved by an earlier call with the same data and config: training
            continues from it (``model`` must already hold the saved weights).
        world: this process's place in a torchrun job (``None``: alone).
        workers: DataLoader worker processes for data streamed from disk (``data.workers``).

    Raises:
        TrainingInterrupted: after Ctrl-C / SIGTERM, once ``checkpoint`` has saved the state.
    """
    validate_train_config(config)
    world = world or World()
    if data.num_devices != model.config.num_devices or data.shapes != model.config.device_shapes:
        raise ValueError(
            f"data has {data.num_devices} devices of input shapes {list(data.shapes)}, the model "
            f"expects {model.config.num_devices} of {list(model.config.device_shapes)}"
        )
    n = len(data)
    check_batch(world, config.batch_size, n)
    placement = resolve_placement(config.accelerator, config.precision, world.local_rank)
    seed_everything(config.seed, config.threads)
    join(world, placement.device)
    model.to(placement.device)
    step_model = _wrap(model, world, placement)
    if isinstance(data, MultiDeviceDataset) and data.x.nbytes <= RELAYOUT_BYTES:
        # the model's layout once, not a copy per step (a larger set is converted per batch,
        # so training never holds two copies of a big one)
        data = replace(data, x=model.input_layout(data.x))
    on_gpu = placement.device.type == "cuda"
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        foreach=True,  # one kernel per step for all tensors; the same values as the loop
    )
    scaler = placement.grad_scaler()
    batch = n if config.batch_size == 0 else min(config.batch_size, n)
    history = TrainHistory()
    first_epoch, state = 0, resume
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        scaler.load_state_dict(state.scaler)
        gen.set_state(state.generator)
        torch.set_rng_state(state.torch_rng)
        history.losses = list(state.losses)
        first_epoch = state.epoch
    start = time.perf_counter() - (state.seconds if state is not None else 0.0)

    def snapshot(
        epoch: int, step: int, order: torch.Tensor | None, sums: dict[str, float], steps: int
    ) -> TrainState:
        return TrainState(
            epoch,
            step,
            order,
            dict(sums),
            steps,
            gen.get_state(),
            torch.get_rng_state(),
            optimizer.state_dict(),
            scaler.state_dict(),
            list(history.losses),
            time.perf_counter() - start,
        )

    model.train()
    with reused_memory(), StopRequest().installed() as stop:
        for epoch in range(first_epoch, config.epochs):
            if state is not None and state.order is not None:  # resume inside this epoch
                order, skip, sums, steps = state.order, state.step, dict(state.sums), state.steps
            else:
                order, skip, sums, steps = torch.randperm(n, generator=gen), 0, {}, 0
            state = None
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(config, epoch)
            # Global batches from ``skip`` on; this process reads only its share of each.
            firsts = range(skip * batch, n, batch)
            if batch == n and world.size == 1 and skip == 0:
                mine = torch.arange(n)  # one batch of everything: its order is moot
            else:
                mine = torch.cat(
                    [order[:0], *(order[f:][world.share(min(batch, n - f))] for f in firsts)]
                )
            batches = iter_batches(
                data, mine, batch // world.size, workers=workers, pin_memory=on_gpu
            )
            for b, first in enumerate(firsts, start=skip):
                size = min(batch, n - first)  # this global batch
                samples = next(batches)
                if world.smallest_share(size) >= 2:  # BatchNorm needs two samples
                    presence = device_dropout_mask(
                        size,
                        data.num_devices,
                        config.device_dropout,
                        gen,
                        config.device_dropout_mode,
                    )[world.share(size)]
                    parts = _step(
                        step_model, model, samples, presence, config, optimizer, scaler, placement
                    )
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v
                    steps += 1
                if stop.agreed(world):
                    if checkpoint is not None and world.is_main:
                        checkpoint(snapshot(epoch, b + 1, order, sums, steps))
                    raise TrainingInterrupted(None, epoch, b + 1)
            epoch_losses = mean_over_world({k: v / max(steps, 1) for k, v in sums.items()}, world)
            history.losses.append(epoch_losses)
            log.debug("epoch %d: %s", epoch + 1, epoch_losses)
            done = epoch + 1
            if checkpoint and world.is_main and config.save_every and done % config.save_every == 0:
                if done < config.epochs:
                    checkpoint(snapshot(done, 0, None, {}, 0))
            if progress is not None and world.is_main:
                progress(epoch + 1, epoch_losses)
    if config.epochs > 0:
        recalibrate_batchnorm(model, data, batch, placement.device, workers)
    history.seconds = time.perf_counter() - start
    model.to("cpu")
    model.eval()
    return history


def _wrap(model: DDNN, world: World, placement: Placement) -> nn.Module:
    """The module the steps call: ``model`` itself, or its DistributedDataParallel wrapper."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [placement.device.index] if placement.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _step(
    step_model: nn.Module,
    model: DDNN,
    samples: Batch,
    presence: torch.Tensor,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    placement: Placement,
) -> dict[str, float]:
    """One optimizer step on ``samples``; returns the loss parts."""
    batch = samples.to(placement.device, non_blocking=True)
    presence = presence.to(placement.device, non_blocking=True)
    with placement.autocast():
        out = step_model(batch.x, presence)
        loss, parts = joint_loss(out, batch.labels, batch.view_labels, presence, config)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    clip_latent_weights(model)
    return {"total": float(loss.detach()), **parts}


@torch.no_grad()
def recalibrate_batchnorm(
    model: DDNN,
    data: AnyDataset,
    batch_size: int,
    device: torch.device | None = None,
    workers: int = 0,
) -> None:
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
    everything = torch.arange(len(data))
    for samples in iter_batches(data, everything, max(batch_size, 2), workers=workers):
        if len(samples) >= 2:
            model(samples.x.to(device) if device is not None else samples.x)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
