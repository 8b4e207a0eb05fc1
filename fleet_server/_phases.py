"""Where in the heartbeat each agent link's poll ticks fall, kept evenly spread.

Every link ticks once per heartbeat on its own phase (SPEC §3.4). Links that join in
the same loop iteration — a join storm, a reconnect after a takeover — get the same
phase, and a bunch of them polls, and is answered, in one iteration every heartbeat:
at 18,000 agents that made loop stalls of tens of ms on every heartbeat (one in a
hundred 10 ms windows carried 7× the mean number of polls, the busiest 17×).

:class:`PollPhases` counts the links per slot of :data:`SLOT_S` over the heartbeat. A
tick that falls in a slot already holding its share of the links (the mean, and at least
:data:`BATCH`) is moved to the next slot below that share, at most :data:`MAX_DELAY` of a
heartbeat later, never earlier:
a bunch spreads out over a few heartbeats, and no tick comes sooner than the protocol
says (the first one a heartbeat after the join at the earliest, the next ones a
heartbeat apart at the least). The floor of :data:`BATCH` keeps small fleets batched:
each slot costs a loop wake-up, and spreading 1,000 agents one per slot raised their
CPU per poll from ~350 to ~500 µs; 32 polls and their replies are a few ms of work.

A joining link is placed with a smaller floor, :data:`JOIN_BATCH`: the links that join
in one loop iteration share a due time, and with 32 a 100-agent fleet answered in bursts
of up to 32 replies whose events reached SSE consumers together (p50 50 ms, p99 129 ms
at 1,000 events/s over 100 streams; with 4: p50 9–14 ms, p99 36–71 ms). Its later ticks
keep the floor of :data:`BATCH`: a tighter share moved ticks again and again when a join
filled part of the heartbeat (2,000 agents joining in 3 s of a 5 s heartbeat: 100–500
ticks moved per heartbeat, each up to :data:`MAX_DELAY` late, where 32 moved none).
"""

from __future__ import annotations

from typing import Final

__all__ = ["BATCH", "JOIN_BATCH", "MAX_DELAY", "SLOT_S", "PollPhases"]

SLOT_S: Final = 0.01  # seconds per slot
BATCH: Final = 32  # links a slot may hold whatever the mean
JOIN_BATCH: Final = 4  # … when a joining link is placed
MAX_DELAY: Final = 0.05  # of a heartbeat: how much later a tick may be moved


class PollPhases:
    """Counts of links per slot of the heartbeat, shared by every link of a transport."""

    __slots__ = ("_counts", "_links", "_slot_s", "_slots", "_window")

    def __init__(self, interval_s: float, slot_s: float = SLOT_S) -> None:
        self._slots = max(1, round(interval_s / slot_s))
        self._slot_s = interval_s / self._slots
        self._window = int(self._slots * MAX_DELAY)
        self._counts = [0] * self._slots
        self._links = 0

    @property
    def links(self) -> int:
        return self._links

    def busiest(self) -> int:
        """The most links any slot holds."""
        return max(self._counts)

    def place(self, slot: int | None, due: float) -> tuple[int, float]:
        """The slot and the time of a link's tick due at ``due`` (the loop's clock); the
        link held ``slot`` until now (None: a new link)."""
        counts, slots = self._counts, self._slots
        if slot is None:
            self._links += 1
            floor = JOIN_BATCH
        else:
            counts[slot] -= 1
            floor = BATCH
        index = int(due / self._slot_s) % slots
        share = max(self._links // slots + 1, floor)
        if counts[index] >= share and self._window:
            best, fewest = index, counts[index]
            for step in range(1, self._window + 1):
                candidate = index + step
                if candidate >= slots:
                    candidate -= slots
                if counts[candidate] < fewest:
                    best, fewest = candidate, counts[candidate]
                    if fewest < share:
                        break
            due += ((best - index) % slots) * self._slot_s
            index = best
        counts[index] += 1
        return index, due

    def release(self, slot: int) -> None:
        """A link left: it no longer ticks in ``slot``."""
        self._counts[slot] -= 1
        self._links -= 1
