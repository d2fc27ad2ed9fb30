"""The joint DDNN objective: weighted sum of cross-entropy over every exit (SPEC §4)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ddnn.config import TrainConfig
from ddnn.data.dataset import ABSENT
from ddnn.models.ddnn import DDNNOutput


def joint_loss(
    out: DDNNOutput,
    labels: Tensor,
    view_labels: Tensor,
    presence: Tensor,
    config: TrainConfig,
) -> tuple[Tensor, dict[str, float]]:
    """Total loss and its parts.

    Each device head is trained on its own view label; views labelled ``ABSENT`` and devices that
    are not present contribute nothing. Local, edge and cloud exits use the sample label.

    Args:
        out: the model's training output.
        labels: (B,) sample labels.
        view_labels: (B, D) per-device labels with ``ABSENT``.
        presence: (B, D) bool, devices present in this batch.
        config: exit weights.
    """
    parts: dict[str, Tensor] = {}
    if out.device_logits is not None:
        targets = view_labels.masked_fill(~presence, ABSENT)
        if bool((targets != ABSENT).any()):
            # The mean over valid (sample, device) pairs; ignore_index instead of selecting them
            # by a mask spares two gathers and their backward (same gradients, bit for bit).
            parts["devices"] = config.device_weight * F.cross_entropy(
                out.device_logits.flatten(0, 1), targets.flatten(), ignore_index=ABSENT
            )
    if out.local_logits is not None:
        parts["local"] = config.local_weight * F.cross_entropy(out.local_logits, labels)
    if out.edge_logits is not None and out.edge_group_logits is not None:
        groups = out.edge_group_logits
        per_edge = F.cross_entropy(groups.flatten(0, 1), labels.repeat_interleave(groups.shape[1]))
        parts["edge"] = config.edge_weight * (F.cross_entropy(out.edge_logits, labels) + per_edge)
    if out.cloud_logits is not None:
        parts["cloud"] = config.cloud_weight * F.cross_entropy(out.cloud_logits, labels)
    total = torch.stack(list(parts.values())).sum()
    return total, {k: float(v.detach()) for k, v in parts.items()}
