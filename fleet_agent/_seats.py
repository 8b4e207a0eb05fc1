"""Seat reservations on the game server's side (docs/matchmaking.md §3, §4).

The agent derives the ticket key from its agent key and hands the host one
:class:`SeatLedger` (``attach_seat_ledger``); each :class:`~fleet_agent.Room` of the host
verifies tickets through it (``room.accept_ticket``), and the snapshot reports the ids it
accepted until they expire, so the orchestrator turns those seats into connections.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import wire
from ._tickets import TicketError, read_ticket, ticket_key

__all__ = ["SeatLedger", "SeatReservation"]


@dataclass(frozen=True, slots=True)
class SeatReservation:
    """A seat reservation the game server accepted: its ``id``, the ``room_id`` it is for,
    its ``seats`` and when it expires (``expires_at``, wall clock, ms since the epoch)."""

    id: str
    room_id: str
    seats: int
    expires_at: int


class SeatLedger:
    """Verifies seat tickets with one agent's ticket key and remembers the accepted
    reservation ids until they expire.

    At most :data:`~fleet_agent.wire.MAX_ACCEPTED_RESERVATIONS` unexpired ids are kept
    (the most a snapshot may report); past that a ticket is refused with
    ``too many accepted reservations`` rather than forgetting an id early (which would
    let its ticket be used twice). ``clock`` is the wall clock in seconds.
    """

    def __init__(self, agent_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self._key = ticket_key(agent_key)
        self._clock = clock
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._ids: tuple[str, ...] = ()

    def accept(self, room_id: str, ticket: str) -> SeatReservation:
        """Check ``ticket`` for the room ``room_id`` (signature, room, expiry, reuse, in
        the order of the design) and record its id; :class:`TicketError` otherwise, with
        nothing recorded."""
        claims = read_ticket(self._key, ticket)
        if len(claims.id) > wire.MAX_RESERVATION_ID:
            raise TicketError("malformed ticket")
        if claims.room != room_id:
            raise TicketError("ticket for another room")
        now = self._now_ms()
        if claims.exp <= now:
            raise TicketError("expired ticket")
        self._prune(now)
        if claims.id in self._expiry:
            raise TicketError("ticket already used")
        if len(self._expiry) >= wire.MAX_ACCEPTED_RESERVATIONS:
            raise TicketError("too many accepted reservations")
        self._expiry[claims.id] = claims.exp
        heapq.heappush(self._heap, (claims.exp, claims.id))
        self._ids = ()
        return SeatReservation(claims.id, room_id, claims.seats, claims.exp)

    def accepted(self) -> tuple[str, ...]:
        """The unexpired accepted ids, sorted (the same tuple while nothing changes)."""
        if not self._heap:
            return self._ids  # none: no clock to read
        self._prune(self._now_ms())
        if not self._ids and self._expiry:
            self._ids = tuple(sorted(self._expiry))
        return self._ids

    def __len__(self) -> int:
        return len(self._expiry)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _prune(self, now: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, expired = heapq.heappop(heap)
            self._expiry.pop(expired, None)
            self._ids = ()
