"""Data-parallel training under ``torchrun``: who this process is, and its share of each batch.

``torchrun --standalone --nproc-per-node N -m ddnn train …`` starts N processes and sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; the trainer then joins the process group (gloo on
the CPU, NCCL on CUDA) and wraps the model in ``DistributedDataParallel``. Every process draws
the same epoch order and device-dropout masks from the same seed, and takes its own contiguous
slice of every *global* batch, so N processes with ``train.batch_size`` B step exactly like one
process with B, up to BatchNorm statistics (per process) and float summation order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when run alone)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run directory, logs and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, count: int) -> slice:
        """This rank's contiguous slice of a global batch of ``count`` samples (sizes differ by ≤ 1)."""
        base, extra = divmod(count, self.size)
        begin = self.rank * base + min(self.rank, extra)
        return slice(begin, begin + base + (1 if self.rank < extra else 0))

    def smallest_share(self, count: int) -> int:
        return count // self.size


def world_from_env() -> World:
    """The world ``torchrun`` describes in the environment; a lone process without it."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them); got "
            f"{os.environ.get('WORLD_SIZE')!r}, {os.environ.get('RANK')!r}, "
            f"{os.environ.get('LOCAL_RANK')!r}"
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK must be in 0..WORLD_SIZE-1, got RANK={rank}, WORLD_SIZE={size}")
    return World(rank, local_rank, size)


def check_batch(world: World, batch_size: int, num_samples: int) -> None:
    """The global batch must split evenly over the processes (0 = the full batch)."""
    if not world.distributed:
        return
    batch = num_samples if batch_size == 0 else min(batch_size, num_samples)
    if batch % world.size:
        raise ValueError(
            f"train.batch_size {batch}{' (the full batch)' if batch_size == 0 else ''} does not "
            f"divide over {world.size} processes; use a multiple of {world.size}"
        )
    if batch // world.size < 2:
        raise ValueError(
            f"train.batch_size {batch} over {world.size} processes leaves each fewer than 2 "
            "samples, which BatchNorm needs; use a batch of at least "
            f"{2 * world.size}"
        )


def join(world: World, device: torch.device) -> None:
    """Join the process group of ``world`` (a no-op alone): NCCL on CUDA, gloo otherwise."""
    if world.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def leave(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_world(values: dict[str, float], world: World) -> dict[str, float]:
    """Average per-process values (epoch losses) over every process; unchanged alone."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: float(v) / world.size for k, v in zip(keys, tensor.tolist(), strict=True)}
