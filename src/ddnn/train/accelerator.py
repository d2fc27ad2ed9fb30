"""Where training runs: the CPU or a CUDA GPU, and in which precision (automatic mixed precision).

``train.accelerator``: ``cpu``, ``cuda`` (an error without a visible GPU) or ``auto`` (CUDA when a
GPU is visible). ``train.precision``: ``32`` (float32), ``bf16`` (autocast to bfloat16, CPU or
CUDA) or ``16`` (autocast to float16 with gradient scaling, CUDA only). Weights stay float32 in
every case, and sections are always saved from the CPU, so where a run trained does not matter
to ``evaluate``, ``deploy`` or ``export``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

ACCELERATORS = ("cpu", "cuda", "auto")
PRECISIONS = ("32", "bf16", "16")


@dataclass(frozen=True)
class Placement:
    """The resolved accelerator of one training process."""

    device: torch.device
    precision: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "16": torch.float16}.get(self.precision)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision for the forward pass and the loss (a no-op at 32 bits)."""
        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def describe(self) -> str:
        """Where and how training ran, for people: ``the CPU``, ``GPU 0 (NVIDIA H200), bf16
        mixed precision``."""
        where = "the CPU"
        if self.device.type == "cuda":
            where = f"GPU {self.device.index or 0} ({torch.cuda.get_device_name(self.device)})"
        mixed = {"bf16": "bf16", "16": "float16"}.get(self.precision)
        return where if mixed is None else f"{where}, {mixed} mixed precision"

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Gradient scaling against float16 underflow; disabled (a pass-through) otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_placement(accelerator: str, precision: str, local_rank: int = 0) -> Placement:
    """Check ``train.accelerator`` / ``train.precision`` and pick the torch device.

    Raises:
        ValueError: an unknown name, ``cuda`` without a visible GPU, or float16 on the CPU.
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"train.accelerator must be one of {', '.join(ACCELERATORS)}, got {accelerator!r}"
        )
    if precision not in PRECISIONS:
        raise ValueError(
            f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    has_gpu = cuda_available()
    if accelerator == "cuda" and not has_gpu:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ValueError(
            f"train.accelerator is cuda but no CUDA GPU is visible{hint}; "
            "use --accelerator cpu or auto"
        )
    use_cuda = accelerator == "cuda" or (accelerator == "auto" and has_gpu)
    if precision == "16" and not use_cuda:
        raise ValueError(
            "train.precision=16 (float16 mixed precision) needs a CUDA GPU; on the CPU use "
            "train.precision=bf16 or 32"
        )
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process of local rank {local_rank} has no GPU of its own "
                f"({torch.cuda.device_count()} visible); start at most that many per node"
            )
        return Placement(torch.device("cuda", local_rank), precision)
    return Placement(torch.device("cpu"), precision)
