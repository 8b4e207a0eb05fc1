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
of up to 32 replies whose events reached SSE consumers together. Then, for its first
:data:`SETTLE_TICKS` ticks, a link *settles*: a tick in a slot holding more than half as
many again as the mean (and at least :data:`SETTLE_LIMIT`) moves up to :data:`MAX_STEP`
slots later, to the first slot below that, or else to the farthest of the least crowded
(so a dense bunch flows forward a few slots per heartbeat until it is spread: 100 agents
that joined within 170 ms of a 1 s heartbeat ticked in 17 slots of 6, and in 50 slots
of 2 after some ten heartbeats; SSE delivery p99 at 1,000 events/s over 100 streams went
from 174 to 37 ms). A settled link's ticks keep the floor of :data:`BATCH`: a tighter
share kept moving ticks every heartbeat when a join filled part of the heartbeat (2,000
agents joining in 3 s of a 5 s heartbeat: 100–500 ticks moved per heartbeat).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BATCH",
    "JOIN_BATCH",
    "MAX_DELAY",
    "MAX_STEP",
    "SETTLE_LIMIT",
    "SETTLE_TICKS",
    "SLOT_S",
    "PollPhases",
]

SLOT_S: Final = 0.01  # seconds per slot
BATCH: Final = 32  # links a slot may hold whatever the mean
JOIN_BATCH: Final = 4  # … when a joining link is placed
MAX_DELAY: Final = 0.05  # of a heartbeat: how much later a tick may be moved
SETTLE_TICKS: Final = 16  # a link's first ticks, which move to even out the spread
SETTLE_LIMIT: Final = 2  # a settling tick stays in a slot holding fewer links
MAX_STEP: Final = 5  # slots: how much later a settling tick may be moved


class PollPhases:
    """Counts of links per slot of the heartbeat, shared by every link of a transport."""

    __slots__ = ("_counts", "_links", "_slot_s", "_slots", "_step", "_window")

    def __init__(self, interval_s: float, slot_s: float = SLOT_S) -> None:
        self._slots = max(1, round(interval_s / slot_s))
        self._slot_s = interval_s / self._slots
        self._window = int(self._slots * MAX_DELAY)
        self._step = min(self._window, MAX_STEP)
        self._counts = [0] * self._slots
        self._links = 0

    @property
    def links(self) -> int:
        return self._links

    def busiest(self) -> int:
        """The most links any slot holds."""
        return max(self._counts)

    def place(self, slot: int | None, due: float, settling: bool = False) -> tuple[int, float]:
        """The slot and the time of a link's tick due at ``due`` (the loop's clock); the
        link held ``slot`` until now (None: a new link), and is ``settling`` while its
        first :data:`SETTLE_TICKS` ticks run."""
        counts, slots, window, ties = self._counts, self._slots, self._window, False
        if slot is None:
            self._links += 1
            limit = max(self._links // slots + 1, JOIN_BATCH)
        else:
            counts[slot] -= 1
            if settling:
                limit = max(-(-3 * self._links // (2 * slots)), SETTLE_LIMIT)
                window, ties = self._step, True
            else:
                limit = max(-(-2 * self._links // slots), BATCH)
        index = int(due / self._slot_s) % slots
        fewest = counts[index]
        if fewest >= limit and window:
            best = index
            for step in range(1, window + 1):
                candidate = index + step
                if candidate >= slots:
                    candidate -= slots
                count = counts[candidate]
                if count < limit:
                    best = candidate
                    break
                if count < fewest or (ties and count == fewest):
                    best, fewest = candidate, count
            due += ((best - index) % slots) * self._slot_s
            index = best
        counts[index] += 1
        return index, due

    def release(self, slot: int) -> None:
        """A link left: it no longer ticks in ``slot``."""
        self._counts[slot] -= 1
        self._links -= 1
