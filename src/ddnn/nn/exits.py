"""Early-exit decisions from normalized entropy (SPEC §5)."""

from __future__ import annotations

import torch
from torch import Tensor

from ddnn.nn.functional import entropy_from_logits


def check_threshold(threshold: float) -> float:
    """A threshold must be a number in [0, 1]."""
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"exit threshold must be in [0, 1], got {threshold}")
    return t


def exit_decision(entropy: Tensor, threshold: float) -> Tensor:
    """Which samples exit given their normalized entropy: η < T; T = 1 answers every sample.

    The one exit rule, shared by staged inference and threshold calibration so they agree exactly.

    Args:
        entropy: (B,) normalized entropy η of each sample's scores at this exit.
        threshold: T in [0, 1].
    """
    t = check_threshold(threshold)
    if t >= 1.0:
        return torch.ones(entropy.shape, dtype=torch.bool, device=entropy.device)
    return entropy < t


def exit_mask(logits: Tensor, threshold: float) -> Tensor:
    """Which samples exit: normalized entropy η < T; T = 1 answers every sample, T = 0 none.

    Args:
        logits: (B, C) class scores at this exit.
        threshold: T in [0, 1].
    """
    t = check_threshold(threshold)
    if t >= 1.0:
        return logits.new_ones(logits.shape[0], dtype=bool)  # type: ignore[call-overload]
    return exit_decision(entropy_from_logits(logits), t)


def confidences(logits: Tensor) -> tuple[list[float], list[int]]:
    """Each sample's predicted class and its softmax probability, as Python lists.

    Args:
        logits: (B, C) class scores at an exit.

    Returns:
        (confidence in [0, 1], predicted class index) per sample.
    """
    best, index = torch.softmax(logits.float(), dim=1).max(dim=1)
    return best.clamp(0.0, 1.0).tolist(), index.tolist()
