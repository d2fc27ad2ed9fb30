"""Where the aggregator keeps the device scores of the samples it is still collecting: dense
arrays written a frame at a time and read a decision at a time, and each sample's byte costs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Costs = tuple[int, float, float]  # per sample of a frame: payload, header share, MQTT share
ByteMaps = tuple[dict[str, int], dict[str, float], dict[str, float]]  # the same, by device


class ScoreSlots:
    """The score rows of the samples being collected, in dense arrays: slot x device x class.

    A frame's rows land with one array assignment and a decision gathers its whole batch with
    one indexing, instead of a Python step per row. Slots are reused once decided; absent
    entries are zeros, as the fusion expects.
    """

    def __init__(self, num_inputs: int, num_classes: int, capacity: int = 256) -> None:
        self.scores = np.zeros((capacity, num_inputs, num_classes), dtype=np.float32)
        self.present = np.zeros((capacity, num_inputs), dtype=bool)
        self._free = list(range(capacity - 1, -1, -1))

    def take(self) -> int:
        if not self._free:  # more samples collecting than ever before: twice the room
            n = len(self.scores)
            self.scores = np.concatenate([self.scores, np.zeros_like(self.scores)])
            self.present = np.concatenate([self.present, np.zeros_like(self.present)])
            self._free = list(range(2 * n - 1, n - 1, -1))
        return self._free.pop()

    def put(self, slots: list[int], sender: int, rows: np.ndarray) -> None:
        self.scores[slots, sender] = rows
        self.present[slots, sender] = True

    def gather(self, slots: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(B, N, C) scores and (B, N) presence of ``slots``, which are then free again."""
        scores, present = self.scores[slots], self.present[slots]  # copies
        self.scores[slots] = 0.0
        self.present[slots] = False
        self._free.extend(slots)
        return scores, present


@dataclass
class Arrivals:
    """A sample's device frames so far; its score rows are in ``slots`` at ``slot``."""

    first: float  # monotonic time of the first frame
    captured: float  # earliest capture time stamped by a device
    slots: ScoreSlots
    slot: int
    costs: dict[int, Costs] = field(default_factory=dict)  # device -> its frame's per-sample cost

    @property
    def scores(self) -> dict[int, np.ndarray]:
        """The score row of each device that sent one."""
        return {k: self.slots.scores[self.slot, k] for k in self.costs}

    def byte_maps(self) -> ByteMaps:
        """Payload, frame-header and MQTT bytes by device (the keys answers carry)."""
        payload: dict[str, int] = {}
        header: dict[str, float] = {}
        mqtt: dict[str, float] = {}
        for k, (p, h, m) in self.costs.items():
            key = str(k)
            payload[key], header[key], mqtt[key] = p, h, m
        return payload, header, mqtt

    @property
    def payload(self) -> dict[str, int]:
        return self.byte_maps()[0]

    @property
    def header(self) -> dict[str, float]:
        return self.byte_maps()[1]

    @property
    def mqtt(self) -> dict[str, float]:
        return self.byte_maps()[2]
