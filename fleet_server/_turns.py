"""How much of one event-loop turn the agent links' work may take.

When many agents answer at once — after a long loop iteration the timers of the next
poll slots fire together, their polls go out together and the replies come back
together — every link's task is woken in the same turn and does its work there:
hundreds of polls or replies, 100+ ms, during which no timer fires. Those late timers
bunch the next polls in turn, and near full load the loop does not get out of it
(docs/performance.md, *18,000 agents*).

:class:`TurnBudget` is shared by the links of a transport. The first poll or frame
handled in a loop turn starts the turn's clock. A link whose poll or frame comes after
:data:`TURN_BUDGET_S` of the turn has gone, or while others wait, joins the queue of
waiting links; each later turn lets the next :data:`GRANT` of them go, in the order
they came, without asking again, so a backlog costs one wake-up per piece of work and
the timers due meanwhile run in between. Each link still handles its own frames in
order. A link still joining (its first State not handled) is not held back, so a join
storm goes as fast as before; nor is an Ack, which a caller waits on. A quiet loop
never waits: one clock read per poll and frame, one callback per turn.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Final

__all__ = ["GRANT", "TURN_BUDGET_S", "TurnBudget"]

TURN_BUDGET_S: Final = 0.01  # of the links' work per loop turn
GRANT: Final = 32  # waiting links let go per later turn


class TurnBudget:
    """The clock of the current loop turn's link work, and the links waiting for a turn."""

    __slots__ = ("_budget", "_clock", "_marked", "_since", "_waiters", "_waking", "deferred")

    def __init__(
        self, budget_s: float = TURN_BUDGET_S, clock: Callable[[], float] = perf_counter
    ) -> None:
        self._budget = budget_s
        self._clock = clock
        self._since = 0.0
        self._marked = False  # this turn's first piece of work was seen
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waking = False  # a callback that lets waiters go is queued
        self.deferred = 0  # polls and frames that waited for a later turn, ever

    def spent(self) -> bool:
        """Whether a piece of work must wait (call before it, and :meth:`wait` if so)."""
        now = self._clock()
        if not self._marked:
            # A callback queued now runs in the next turn, and marks its start.
            self._marked = True
            self._since = now
            asyncio.get_running_loop().call_soon(self._next_turn)
        return bool(self._waiters) or now - self._since > self._budget

    async def wait(self) -> None:
        """Wait in line for a later turn."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.deferred += 1
        self._wake_later()
        await waiter

    def _wake_later(self) -> None:
        if not self._waking:
            self._waking = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._waking = False
        waiters = self._waiters
        for _ in range(GRANT):
            if not waiters:
                return
            waiter = waiters.popleft()
            if not waiter.done():  # not cancelled (its link closed)
                waiter.set_result(None)
        if waiters:
            self._wake_later()

    def _next_turn(self) -> None:
        self._marked = False
