"""Feature maps a node keeps for the tier above until they are asked for (two-phase protocol).

Bounded in age and, optionally, in entries; what is asked for after eviction is counted, and the
tier above then fuses without it when its deadline passes.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class FeatureCache(Generic[T]):
    """Sample id -> feature map, oldest first."""

    def __init__(self, ttl: float, counters: Counter[str], max_entries: int | None = None) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.counters = counters
        self._items: OrderedDict[int, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, sample: int, features: T, now: float) -> None:
        self._items[sample] = (now, features)

    def put_many(self, samples: Iterable[int], features: T, now: float) -> None:
        """Every one of ``samples`` -> the same ``features`` (e.g. a whole batch's array and its
        first id, from which a sample finds its row): one entry each, made at C speed."""
        self._items.update(dict.fromkeys(samples, (now, features)))

    def take(self, sample: int) -> T | None:
        """The features of ``sample``, removed from the cache; ``None`` (counted) if gone."""
        entry = self._items.pop(sample, None)
        if entry is None:
            self.counters["features_expired"] += 1
            return None
        return entry[1]

    def evict(self, now: float) -> None:
        """Drop entries older than the TTL, and the oldest beyond ``max_entries``."""
        items = self._items
        while items and (
            (self.max_entries is not None and len(items) > self.max_entries)
            or next(iter(items.values()))[0] < now - self.ttl
        ):
            items.popitem(last=False)
            self.counters["features_evicted"] += 1
