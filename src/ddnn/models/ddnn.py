"""The DDNN: device sections, local aggregator, optional edges, optional cloud; forward and infer.

``forward`` (training) returns every exit's logits in a fixed order (devices → local → edge →
cloud), in float. ``infer`` is the staged early-exit path: upper sections run only on samples
that did not exit, the scores the exits fuse are what the wire delivers in the configured score
encoding (``model.wire.scores``), and the bytes each tier sends are measured on really encoded
frames (``ddnn.wire.measure``). ``wire_forward`` is every exit on every sample on that same path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddnn.config import ModelConfig
from ddnn.models.sections import (
    CloudSection,
    DeviceSection,
    EdgeSection,
    LocalAggregatorSection,
    _fast_layout,
    device_feature_shape,
)
from ddnn.models.validate import validate_model_config
from ddnn.nn.aggregate import zero_absent
from ddnn.nn.exits import exit_mask
from ddnn.nn.stacked import stackable, stacked_features, worth_stacking
from ddnn.wire import (
    FrameCounts,
    LinkBytes,
    feature_frames,
    raw_frames,
    score_frames,
    wire_roundtrip,
)

LOCAL, EDGE, CLOUD = "local", "edge", "cloud"


def upper_input_shape(config: ModelConfig) -> tuple[int, ...]:
    """Per-input feature shape an edge or the cloud receives from the devices.

    Devices of one input shape send their feature maps as they are; devices of different shapes
    send flattened feature vectors, zero-padded to the longest so that CC can fuse them.
    """
    shapes = [device_feature_shape(s, config.device) for s in config.device_shapes]
    if not config.device_input_shapes:
        return shapes[0]
    return (max(math.prod(f) for f in shapes),)


@dataclass
class DDNNOutput:
    """Logits of every exit for a batch (training contract; absent exits are ``None``)."""

    device_logits: Tensor | None  # (B, D, C)
    local_logits: Tensor | None  # (B, C)
    edge_group_logits: Tensor | None  # (B, E, C), one per edge
    edge_logits: Tensor | None  # (B, C), the fused edge exit
    cloud_logits: Tensor | None  # (B, C)

    def exit_logits(self) -> dict[str, Tensor]:
        """The exits that exist, in order local → edge → cloud."""
        named = {LOCAL: self.local_logits, EDGE: self.edge_logits, CLOUD: self.cloud_logits}
        return {k: v for k, v in named.items() if v is not None}


@dataclass
class InferenceResult:
    """Staged inference outcome for a batch."""

    predictions: Tensor  # (B,) class index
    exit_index: Tensor  # (B,) index into ``exit_names``
    exit_names: tuple[str, ...]
    bytes: LinkBytes  # payload and frame headers per (sample, device) and (sample, edge)

    def exit_fraction(self, name: str) -> float:
        """Fraction of samples answered at exit ``name``."""
        if name not in self.exit_names or len(self.exit_index) == 0:
            return 0.0
        return float((self.exit_index == self.exit_names.index(name)).float().mean())


@dataclass(frozen=True)
class DeviceOutputs:
    """What the device sections computed on a batch, before any exit decision."""

    mask: Tensor  # (B, D) bool, devices present
    scores: Tensor | None  # (B, D, C) device exit scores, None without a local exit
    features: Tensor  # (B, D, ...) feature maps, zero for absent devices


def check_threshold_keys(thresholds: dict[str, float] | None) -> dict[str, float]:
    """A copy of ``thresholds`` (``None``: empty) once its keys are exits that take one."""
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - {LOCAL, EDGE}
    if unknown:
        raise ValueError(f"unknown exit(s) {sorted(unknown)} in thresholds; accepted: local, edge")
    return thresholds


class DDNN(nn.Module):
    """A distributed deep neural network over any hierarchy of SPEC §1 (configurations a–f)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        validate_model_config(config)
        self.config = config
        d = config.num_devices
        n_dev_modules = 1 if config.device.share_weights else d
        shapes = config.device_shapes
        self.devices = nn.ModuleList(
            DeviceSection(shapes[k], config.num_classes, config.device)
            for k in range(n_dev_modules)
        )
        device0 = self.devices[0]
        assert isinstance(device0, DeviceSection)
        self.has_local_exit = not device0.raw
        # Devices with different input shapes send flattened feature rows padded to the longest;
        # ``device_feature_elements`` is how many of each row are real (what goes on the wire).
        self.packed = bool(config.device_input_shapes)
        self.device_feature_elements = tuple(
            math.prod(self.device(k).feature_shape) for k in range(d)
        )
        upper_in = upper_input_shape(config)
        self.local = (
            LocalAggregatorSection(config.local_aggregation, d, config.num_classes)
            if self.has_local_exit
            else None
        )
        self.groups = tuple(tuple(g) for g in config.edge.groups)
        self.edges = nn.ModuleList(
            EdgeSection(len(g), upper_in, config.num_classes, config.edge, config.cloud.enabled)
            for g in self.groups
        )
        self.edge_exit = (
            LocalAggregatorSection(config.local_aggregation, len(self.groups), config.num_classes)
            if self.groups
            else None
        )
        self.cloud: CloudSection | None = None
        if config.cloud.enabled:
            if self.groups:
                edge0 = self.edges[0]
                assert isinstance(edge0, EdgeSection)
                self.cloud = CloudSection(
                    len(self.groups), edge0.feature_shape, config.num_classes, config.cloud, False
                )
            else:
                self.cloud = CloudSection(d, upper_in, config.num_classes, config.cloud, False)
        names = [LOCAL] if self.has_local_exit else []
        names += [EDGE] if self.groups else []
        names += [CLOUD] if self.cloud is not None else []
        self.exit_names: tuple[str, ...] = tuple(names)

    # -- helpers -------------------------------------------------------------------------------
    def device(self, index: int) -> DeviceSection:
        """The section that runs on device ``index`` (shared weights: the same module for all)."""
        module = self.devices[0 if self.config.device.share_weights else index]
        assert isinstance(module, DeviceSection)
        return module

    def _check_input(self, x: Tensor, presence: Tensor | None) -> Tensor:
        expected = (self.config.num_devices, *self.config.input_shape)
        if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"input must have shape (batch, {', '.join(map(str, expected))}) for this model, "
                f"got {tuple(x.shape)}"
            )
        if presence is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if tuple(presence.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"presence mask must have shape {tuple(x.shape[:2])}, got {tuple(presence.shape)}"
            )
        return presence.to(torch.bool)

    def input_layout(self, x: Tensor) -> Tensor:
        """``x`` (B, D, C, H, W) stored so that ``x.flatten(1, 2)`` is already the channels-last
        (B, D*C, H, W) the stacked devices convolve: a trainer converts its data once instead of
        every step (rows gathered from it keep the layout). Other inputs come back unchanged."""
        if x.dim() != 5 or self.packed or self.config.device.share_weights:
            return x  # the cases _run_devices does not stack, checked before the stacking test
        if not self._devices_stack():
            return x
        b, d, c = x.shape[:3]
        stacked = x.reshape(b, d * c, *x.shape[3:]).contiguous(memory_format=torch.channels_last)
        return stacked.unflatten(1, (d, c))

    def _run_devices(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """All devices on ``x`` (B, D, ...) -> scores (B, D, C) or None, features (B, D, ...).

        Devices of different shapes take packed rows (B, D, P) and give features (B, D, F)."""
        if not self.packed and self.config.device.share_weights:
            b, d = x.shape[:2]
            scores, feats = self.device(0)(x.flatten(0, 1))
            out_scores = None if scores is None else scores.view(b, d, -1)
            return out_scores, feats.view(b, d, *feats.shape[1:])
        if not self.packed and self._devices_stack():
            sections = [self.device(i) for i in range(self.config.num_devices)]
            return self._run_stacked_devices(x, sections)
        return self._joined([self._run_device(i, x[:, i]) for i in range(x.shape[1])])

    def _run_device(self, i: int, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """Device ``i`` alone on its readings ``x`` (n, ...) -> scores (n, C) or None, features
        (n, ...); packed readings (n, P) are cut to the device's own shape, and its features come
        back as a flattened row padded to the longest device's (n, F)."""
        if not self.packed:
            return self.device(i)(x)
        shape = self.config.device_input_shapes[i]
        s, f = self.device(i)(x[:, : math.prod(shape)].reshape(len(x), *shape))
        width = max(self.device_feature_elements)
        return s, F.pad(f.reshape(len(f), -1), (0, width - self.device_feature_elements[i]))

    def _joined(self, outs: list[tuple[Tensor | None, Tensor]]) -> tuple[Tensor | None, Tensor]:
        """Per-device (scores, features) stacked along a device axis: (B, D, C), (B, D, ...)."""
        feats = torch.stack([f for _, f in outs], dim=1)
        if not self.has_local_exit:
            return None, feats
        return torch.stack([s for s, _ in outs], dim=1), feats  # type: ignore[misc]

    def _devices_stack(self) -> bool:
        """Whether the devices run as one grouped stack (``ddnn.nn.stacked``)."""
        sections = [self.device(i) for i in range(self.config.num_devices)]
        stacks = [s.features for s in sections]
        return (
            all(s.head is not None and s.input_norm is None for s in sections)
            and stackable(stacks)
            and worth_stacking(stacks)
        )

    def _run_stacked_devices(
        self, x: Tensor, sections: list[DeviceSection]
    ) -> tuple[Tensor, Tensor]:
        """Devices with same-shaped ConvP stacks as one grouped stack (``ddnn.nn.stacked``).

        (B, D, Cin, ...) -> scores (B, D, C), features (B, D, Cout, ...) in the layout the CC
        aggregator turns into the channels-last (B, D*Cout, H, W) the upper sections want.
        """
        b, d = x.shape[:2]
        feats = stacked_features([s.features for s in sections], _fast_layout(x.flatten(1, 2)))
        # Each device's (C, H, W) map flattened in the order its head expects, as one copy.
        rows = feats.contiguous().view(b, d, -1).unbind(1)
        scores = [s.head(r) for s, r in zip(sections, rows, strict=True)]  # type: ignore[misc]
        return torch.stack(scores, dim=1), feats.view(b, d, -1, *feats.shape[2:])

    def _received(self, scores: Tensor, presence: Tensor) -> Tensor:
        """What an exit receives for (B, N, C) ``scores`` sent in SCORES frames: the configured
        encoding, sent and decoded (float32: unchanged; int8: log-probabilities).

        Absent senders send nothing; their slots, which the aggregators ignore, are zeros.
        """
        sent = scores.masked_fill(~presence.unsqueeze(-1), 0.0)
        out = wire_roundtrip(sent, self.config.wire.scores)
        assert isinstance(out, Tensor)
        return out.to(scores.dtype)

    def _as_fused(self, scores: Tensor) -> Tensor:
        """Training's version of ``_received``, differentiable and without rounding: int8 sends
        log-probabilities, so the exits learn to fuse those (cross-entropy on a device's own
        scores is the same either way); the float encodings send the scores themselves."""
        if self.config.wire.scores == "int8":
            return F.log_softmax(scores, dim=-1)
        return scores

    def _run_edges(
        self, feats: Tensor, presence: Tensor, wire: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> per-edge scores (B, E, C), fused edge scores (B, C), edge features, edge presence.

        With ``wire`` the edge exit fuses the per-edge scores as their SCORES frames deliver them
        (edges send them to the aggregator); the per-edge scores returned are those.
        """
        scores, out_feats, present = [], [], []
        for edge, group in zip(self.edges, self.groups, strict=True):
            idx = list(group)
            s, f = edge(feats[:, idx], presence[:, idx])
            scores.append(s)
            out_feats.append(f)
            present.append(presence[:, idx].any(dim=1))
        group_scores = torch.stack(scores, dim=1)
        edge_presence = torch.stack(present, dim=1)
        group_scores = (
            self._received(group_scores, edge_presence) if wire else self._as_fused(group_scores)
        )
        assert self.edge_exit is not None
        return (
            group_scores,
            self.edge_exit(group_scores, edge_presence),
            torch.stack(out_feats, 1),
            edge_presence,
        )

    def _all_exits(self, x: Tensor, presence: Tensor | None, wire: bool) -> DDNNOutput:
        return self._exits_from(self._devices(x, presence), wire)

    def _devices(self, x: Tensor, presence: Tensor | None) -> DeviceOutputs:
        mask = self._check_input(x, presence)
        skip = self.training and self.config.device.skip_absent and not bool(mask.all())
        # BatchNorm needs two samples of each device (a tiny last batch may not have them)
        if skip and int(mask.sum(0).min()) >= 2:
            scores, feats = self._run_present_devices(x, mask)
        else:
            scores, feats = self._run_devices(zero_absent(x, mask))
        return DeviceOutputs(mask, scores, feats)

    def _run_present_devices(self, x: Tensor, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        """Training with devices absent (device dropout) and ``model.device.skip_absent``: each
        device runs on the samples where it is present only; its outputs are zeros elsewhere.

        Otherwise an absent device's input enters its BatchNorms' batch statistics as a row of
        zeros. Evaluation normalizes with running statistics re-estimated on present inputs
        (``recalibrate_batchnorm``), so training normalizes differently from evaluation, by the
        most on inputs whose mean is far from zero (breast-cancer's areas). Devices then run one
        by one (not stacked). Needs two present samples of every device.
        """
        b, d = x.shape[:2]

        def scattered(rows: Tensor, out: Tensor) -> Tensor:
            return out.new_zeros(len(rows), *out.shape[1:]).index_put((rows,), out)

        if self.config.device.share_weights:
            rows = mask.flatten()
            scores, feats = self.device(0)(x.flatten(0, 1)[rows])
            out_scores = None if scores is None else scattered(rows, scores).view(b, d, -1)
            return out_scores, scattered(rows, feats).view(b, d, *feats.shape[1:])
        outs: list[tuple[Tensor | None, Tensor]] = []
        for i in range(d):
            rows = mask[:, i]
            s, f = self._run_device(i, x[rows, i])
            outs.append((None if s is None else scattered(rows, s), scattered(rows, f)))
        return self._joined(outs)

    def _exits_from(self, devices: DeviceOutputs, wire: bool) -> DDNNOutput:
        mask, dev_scores, feats = devices.mask, devices.scores, devices.features
        if dev_scores is not None:
            dev_scores = self._received(dev_scores, mask) if wire else self._as_fused(dev_scores)
        local = (
            self.local(dev_scores, mask)
            if self.local is not None and dev_scores is not None
            else None
        )
        group_logits = edge_logits = None
        up_feats, up_mask = feats, mask
        if self.groups:
            group_logits, edge_logits, up_feats, up_mask = self._run_edges(feats, mask, wire)
        cloud = self.cloud(up_feats, up_mask)[0] if self.cloud is not None else None
        return DDNNOutput(dev_scores, local, group_logits, edge_logits, cloud)

    # -- training path -------------------------------------------------------------------------
    def forward(self, x: Tensor, presence: Tensor | None = None) -> DDNNOutput:
        """Every exit on every sample, in float (no wire encoding: this is what training sees).

        ``x``: (B, D, *input_shape); ``presence``: (B, D) bool.
        """
        return self._all_exits(x, presence, wire=False)

    # -- deployed paths --------------------------------------------------------------------------
    @torch.no_grad()
    def wire_forward(self, x: Tensor, presence: Tensor | None = None) -> DDNNOutput:
        """Every exit on every sample as deployed: what ``infer`` computes at each exit.

        The local and edge exits fuse the device and edge scores as their SCORES frames deliver
        them in ``config.wire.scores`` (``device_logits`` and ``edge_group_logits`` are those
        received scores; for int8, log-probabilities). Feature maps are ±1 and travel bit-packed,
        which is lossless, so the cloud exit equals ``forward``'s. For float32 this equals
        ``forward`` exactly.
        """
        return self._all_exits(x, presence, wire=True)

    @torch.no_grad()
    def wire_exits_from(self, devices: DeviceOutputs) -> DDNNOutput:
        """:meth:`wire_forward` after the devices ran (:meth:`device_outputs`): every exit on
        every sample, so that a sweep can also force each exit without running the devices
        again."""
        return self._exits_from(devices, wire=True)

    def _feature_frames(self, feats: Tensor, present: np.ndarray, ids: np.ndarray) -> FrameCounts:
        """The FEATURES frames (raw devices: 8-bit pixels) the devices send for ``feats``."""
        d = self.config.num_devices
        if self.packed:  # padded flat rows (n, D, F): each device sends its own map
            maps = [
                feats[:, k, : self.device_feature_elements[k]].reshape(
                    len(feats), *self.device(k).feature_shape
                )
                for k in range(d)
            ]
        else:
            maps = [feats[:, k] for k in range(d)]
        if self.has_local_exit:
            return feature_frames(maps, present, sample_ids=ids)
        return raw_frames(maps, present, sample_ids=ids)

    def _infer_edges(
        self,
        feats: Tensor,
        mask: Tensor,
        remaining: Tensor,
        thresholds: dict[str, float],
        predictions: Tensor,
        exit_index: Tensor,
        link: LinkBytes,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The edge stage of ``infer`` on the ``remaining`` samples' device features (n, D, ...).

        Answers the samples that exit at the edge (in ``predictions``/``exit_index``), books the
        edges' FEATURES frames to the cloud, and returns the samples still remaining with the
        edge features (n', E, ...) and edge presence (n', E) the cloud fuses.
        """
        _, edge_scores, edge_feats, edge_mask = self._run_edges(feats, mask, wire=True)
        ei = self.exit_names.index(EDGE)
        leaving = (
            torch.ones(len(remaining), dtype=torch.bool)
            if ei == len(self.exit_names) - 1
            else exit_mask(edge_scores, thresholds.get(EDGE, 0.8))
        )
        done = remaining[leaving]
        predictions[done] = edge_scores[leaving].argmax(dim=1)
        exit_index[done] = ei
        up = ~leaving
        remaining = remaining[up]
        if self.cloud is not None:
            going = remaining.numpy()
            sent = feature_frames(
                list(edge_feats[up].unbind(1)), edge_mask[up].cpu().numpy(), sample_ids=going
            )
            link.edge.add(going, sent)
        return remaining, edge_feats[up], edge_mask[up]

    @torch.no_grad()
    def infer(
        self,
        x: Tensor,
        thresholds: dict[str, float] | None = None,
        presence: Tensor | None = None,
    ) -> InferenceResult:
        """Staged inference: a sample exits where normalized entropy < T; upper tiers skip it.

        Exits fuse scores as the wire delivers them (``wire_forward``). Bytes are those of the
        frames the runtime sends, one per sample and sender, with sample ids ``0 .. B-1``: a
        SCORES frame per present device, a FEATURES frame per present device for each sample
        that goes up, and a FEATURES frame per present edge for each sample going on to the cloud.

        Args:
            x: (B, D, *input_shape) inputs.
            thresholds: T per exit, keys ``"local"`` and ``"edge"`` (default 0.8); the last exit
                always answers.
            presence: (B, D) which devices are present (default: all).
        """
        check_threshold_keys(thresholds)
        return self.infer_from(self.device_outputs(x, presence), thresholds)

    @torch.no_grad()
    def device_outputs(self, x: Tensor, presence: Tensor | None = None) -> DeviceOutputs:
        """The device sections on ``x`` (B, D, *input_shape), absent devices zeroed: what every
        threshold's staged inference starts from (:meth:`infer_from`)."""
        return self._devices(x, presence)

    @torch.no_grad()
    def infer_from(
        self, devices: DeviceOutputs, thresholds: dict[str, float] | None = None
    ) -> InferenceResult:
        """:meth:`infer` after the devices ran: the exits, upper tiers and bytes at ``thresholds``.

        A threshold sweep runs the devices once and this once per threshold, with the results
        of calling :meth:`infer` at each threshold."""
        thresholds = check_threshold_keys(thresholds)
        mask, dev_scores, feats = devices.mask, devices.scores, devices.features
        b = mask.shape[0]
        predictions = torch.full((b,), -1, dtype=torch.long)
        exit_index = torch.full((b,), -1, dtype=torch.long)
        remaining = torch.arange(b)
        mask_np = mask.cpu().numpy()
        link = LinkBytes.empty(mask_np, len(self.groups))

        last = len(self.exit_names) - 1
        if dev_scores is not None:
            assert self.local is not None
            ids = np.arange(b)
            link.device.add(ids, score_frames(dev_scores, mask_np, self.config.wire.scores))
            local = self.local(self._received(dev_scores, mask), mask)
            leaving = (
                torch.ones(b, dtype=torch.bool)
                if last == 0
                else exit_mask(local, thresholds.get(LOCAL, 0.8))
            )
            predictions[leaving] = local[leaving].argmax(dim=1)
            exit_index[leaving] = 0
            remaining = (~leaving).nonzero().flatten()
        # Phase two: devices send their feature maps only for samples that go up.
        stay = remaining.numpy()
        link.device.add(stay, self._feature_frames(feats[remaining], mask_np[stay], stay))
        feats_up, mask_up = feats[remaining], mask[remaining]
        if self.groups and len(remaining):
            remaining, feats_up, mask_up = self._infer_edges(
                feats_up, mask_up, remaining, thresholds, predictions, exit_index, link
            )
        if self.cloud is not None and len(remaining):
            cloud_scores, _ = self.cloud(feats_up, mask_up)
            predictions[remaining] = cloud_scores.argmax(dim=1)
            exit_index[remaining] = self.exit_names.index(CLOUD)
        assert bool((exit_index >= 0).all()), "every sample must be answered by some exit"
        return InferenceResult(predictions, exit_index, self.exit_names, link)
