"""A histogram kept as plain numbers, for series whose every observation is on a hot
path (poll round trips, command durations)."""

from __future__ import annotations

import bisect
from typing import Final

__all__ = ["Tally"]


class Tally:
    """A histogram kept as plain numbers: :attr:`observe` is a list's own ``append`` (no
    Python frame on the hot path); :meth:`fold` moves what it holds into the buckets and
    must be called now and then (the loop-lag tick, every scrape)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._pending: list[float] = []
        self.observe: Final = self._pending.append

    def fold(self) -> None:
        pending = self._pending
        if not pending:
            return
        counts, bounds = self._counts, self._bounds
        for value in pending:
            counts[bisect.bisect_left(bounds, value)] += 1
        self._sum += sum(pending)
        pending.clear()

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, and the sum."""
        self.fold()
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out, self._sum
