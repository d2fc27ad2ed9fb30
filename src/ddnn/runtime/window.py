"""The sample ids a node has finished with, in bounded memory.

Sample ids grow for as long as a deployment runs; a node must remember which it has decided so
that late or replayed frames are not decided twice, but not every id forever. Ids are exact
above a *horizon* that trails the newest one by ``keep``; every id at or below the horizon
counts as finished, so memory stays O(keep) whatever the run's length.
"""

from __future__ import annotations

from collections.abc import Iterable


class FinishedIds:
    """A set of sample ids, exact above ``horizon`` and saturated at or below it."""

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self.horizon = -1  # every id <= horizon counts as finished
        self.newest = -1
        self._ids: set[int] = set()

    def __contains__(self, sample: object) -> bool:
        return isinstance(sample, int) and (sample <= self.horizon or sample in self._ids)

    def __len__(self) -> int:
        """Ids held exactly (the memory in use), not the count ever finished."""
        return len(self._ids)

    def add(self, samples: Iterable[int]) -> None:
        for s in samples:
            if s > self.horizon:
                self._ids.add(s)
                self.newest = max(self.newest, s)
        if len(self._ids) > 2 * self.keep:
            self.advance(self.newest - self.keep)

    def advance(self, horizon: int) -> None:
        """Moves the horizon up to ``horizon`` (never down), forgetting the ids it passes."""
        if horizon > self.horizon:
            self.horizon = horizon
            self._ids = {s for s in self._ids if s > horizon}
            self.newest = max(self.newest, horizon)
