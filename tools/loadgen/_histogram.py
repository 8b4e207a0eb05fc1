"""A mergeable latency histogram with ~2 % relative resolution (log-spaced buckets)."""

from __future__ import annotations

import math
from typing import Final

__all__ = ["Histogram"]

_FLOOR_S: Final = 10e-6  # everything under 10 µs shares bucket 0
_GROWTH: Final = 1.02
_LOG_GROWTH: Final = math.log(_GROWTH)
_BUCKETS: Final = 1100  # 10 µs · 1.02**1100 ≈ 30 min


class Histogram:
    """Counts of durations in seconds; ``quantile`` answers within one bucket (2 %)."""

    __slots__ = ("count", "counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def clear(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float, times: int = 1) -> None:
        """``times`` samples of ``seconds``."""
        if seconds <= _FLOOR_S:
            index = 0
        else:
            index = min(_BUCKETS - 1, 1 + int(math.log(seconds / _FLOOR_S) / _LOG_GROWTH))
        self.counts[index] += times
        self.count += times
        self.total += seconds * times
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        for index, n in enumerate(other.counts):
            if n:
                self.counts[index] += n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """The upper edge of the bucket holding the ``q`` quantile (0 when empty)."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if index == 0:
                    return _FLOOR_S
                return min(self.max, _FLOOR_S * _GROWTH**index)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def to_state(self) -> dict[str, object]:
        """A picklable, JSON-able form (sparse)."""
        return {
            "counts": {i: n for i, n in enumerate(self.counts) if n},
            "count": self.count,
            "total": self.total,
            "max": self.max,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Histogram:
        hist = cls()
        counts = state["counts"]
        assert isinstance(counts, dict)
        for index, n in counts.items():
            hist.counts[int(index)] = int(n)
        count, total, top = state["count"], state["total"], state["max"]
        assert isinstance(count, int) and isinstance(total, float | int)
        assert isinstance(top, float | int)
        hist.count = count
        hist.total = float(total)
        hist.max = float(top)
        return hist
