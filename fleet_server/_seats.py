"""Seat reservations (CONTRACT §11, docs/matchmaking.md §3): the ledger and the choice of
a room.

A reservation holds ``seats`` of one room until its TTL, until the room's agent reports
it accepted, until it is released, or until the room leaves the read model. Choosing a
room and recording the reservation happen in one event-loop callback, so concurrent
requests never over-commit a room.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fleet_agent._tickets import TicketClaims, mint_ticket
from fleet_agent.wire import canonical_json

from ._fields import json_object
from ._ids import ID_ALPHABET
from ._instance import Instance, _Room
from ._placement import Placement
from ._selectors import Selector

__all__ = ["Reservation", "SeatIndex", "SeatLedger", "SeatRequest", "fullest_room"]

MIN_TTL_MS: Final = 1_000
MAX_TTL_MS: Final = 300_000
DEFAULT_TTL_MS: Final = 30_000
MAX_SEATS: Final = 1_000


def _reservation_id() -> str:
    return "s_" + "".join(ID_ALPHABET[b & 63] for b in os.urandom(21))


@dataclass(eq=False, slots=True)
class Reservation:
    id: str
    room: _Room
    seats: int
    expires_at: int  # ms since the epoch
    ticket: str
    timer: asyncio.TimerHandle | None = None

    @property
    def live(self) -> bool:
        """Its room is still the one listed under its id on a live instance."""
        room = self.room
        return not room.instance.removed and room.instance.rooms.get(room.raw) is room


@dataclass(frozen=True, slots=True)
class SeatRequest:
    """What a seat request asks of a room (validated by the fleet)."""

    type: str
    seats: int
    metadata: Mapping[str, str]  # key -> canonical JSON text of the wanted value
    placement: Placement


class SeatLedger:
    """Live reservations by id; each room's ``reserved`` is the sum of its live ones."""

    def __init__(self, clock_ms: Callable[[], int], on_change: Callable[[_Room], None]) -> None:
        self._clock_ms = clock_ms
        self._on_change = on_change
        self._live: dict[str, Reservation] = {}

    def __len__(self) -> int:
        return len(self._live)

    def reserve(self, room: _Room, seats: int, ttl_ms: int, key: bytes) -> Reservation:
        expires_at = self._clock_ms() + ttl_ms
        reservation_id = _reservation_id()
        ticket = mint_ticket(key, TicketClaims(reservation_id, room.raw, seats, expires_at))
        reservation = Reservation(reservation_id, room, seats, expires_at, ticket)
        loop = asyncio.get_running_loop()
        reservation.timer = loop.call_later(ttl_ms / 1000.0, self._end, reservation_id)
        self._live[reservation_id] = reservation
        room.reserved += seats
        self._on_change(room)
        return reservation

    def release(self, reservation_id: str) -> bool:
        """End a live reservation; False when there is none by that id."""
        reservation = self._live.get(reservation_id)
        if reservation is None or not reservation.live:
            self._end(reservation_id)
            return False
        self._end(reservation_id)
        return True

    def accepted(self, reservation_ids: Iterable[str]) -> None:
        """The agent admitted these players: their seats are connections from now on."""
        for reservation_id in reservation_ids:
            self._end(reservation_id)

    def close(self) -> None:
        for reservation in self._live.values():
            if reservation.timer is not None:
                reservation.timer.cancel()
        self._live.clear()

    def _end(self, reservation_id: str) -> None:
        reservation = self._live.pop(reservation_id, None)
        if reservation is None:
            return
        if reservation.timer is not None:
            reservation.timer.cancel()
            reservation.timer = None
        room = reservation.room
        room.reserved = max(0, room.reserved - reservation.seats)
        if reservation.live:
            self._on_change(room)


def _metadata_matches(room: _Room, wanted: Mapping[str, str]) -> bool:
    if not wanted:
        return True
    have: Mapping[str, Any] = json_object(room.metadata)
    for key, text in wanted.items():
        if key not in have or canonical_json(have[key]) != text:
            return False
    return True


def _seats_fit(room: _Room, request: SeatRequest) -> bool:
    """Whether ``room`` (of the type, unlocked, addressable) has the seats and metadata."""
    if room.max_connections is not None:
        free = room.max_connections - room.connections - room.reserved
        if free < request.seats:
            return False
    return _metadata_matches(room, request.metadata)


def _instance_open(instance: Instance, selector: Selector | None) -> bool:
    snapshot = instance.snapshot
    if snapshot is None or instance.stale or instance.removed:
        return False
    if instance.effective_status != "active":
        return False
    return selector is None or selector.matches(snapshot.labels)


_Ranked = list[tuple[tuple[int, str], _Room]]  # (-(connections + reserved), public id), room


class SeatIndex:
    """Per instance and room type, the rooms that may take seats (unlocked, with a public
    id), fullest first. An instance's lists are remade only when its rooms' views are
    (:meth:`Instance.room_infos` returns a new tuple after any change to a room's type,
    connections, seats, lock, metadata or public id), so a request looks at the front of
    each open instance's list instead of at every room of the fleet."""

    def __init__(self) -> None:
        self._lists: dict[Instance, tuple[object, dict[str, _Ranked]]] = {}

    def ranked(self, instance: Instance, room_type: str) -> _Ranked:
        """``instance``'s rooms of ``room_type`` that may take seats, fullest first."""
        views = instance.room_infos()
        entry = self._lists.get(instance)
        if entry is None or entry[0] is not views:
            entry = (views, {})
            self._lists[instance] = entry
        ranked = entry[1].get(room_type)
        if ranked is None:
            ranked = [
                ((-(room.connections + room.reserved), room.public), room)
                for room in instance.rooms.values()
                if room.type == room_type and not room.locked and room.public
            ]
            ranked.sort(key=_rank)
            entry[1][room_type] = ranked
        return ranked

    def prune(self, live: int) -> None:
        """Forget the instances that left, once the lists outnumber the ``live`` (joined)
        ones more than twice."""
        if len(self._lists) > 2 * live + 64:
            self._lists = {i: e for i, e in self._lists.items() if not i.removed}


def _rank(entry: tuple[tuple[int, str], _Room]) -> tuple[int, str]:
    return entry[0]


def fullest_room(
    instances: Iterable[Instance], request: SeatRequest, index: SeatIndex
) -> _Room | None:
    """The fullest eligible room (most connections + reserved, then the lower public id),
    over the first selector of the placement that has one; None when no room fits."""
    pool = list(instances)
    pinned = request.placement.instance_id or request.placement.process_uid
    selectors: tuple[Selector | None, ...] = (None,) if pinned else request.placement.predicates()
    if not pinned:  # the pool is every joined instance
        index.prune(len(pool))
    for selector in selectors:
        best: _Room | None = None
        best_key: tuple[int, str] | None = None
        test = (
            selector if selector is not None and (selector.labels or selector.expressions) else None
        )
        for instance in pool:
            if not _instance_open(instance, test):
                continue
            for key, room in index.ranked(instance, request.type):
                if best_key is not None and key >= best_key:
                    break  # nothing fuller left on this instance
                # A room known from its ack only has unknown seats: it takes one
                # reservation (the request that made it, or the first after a create)
                # and no more until a snapshot says how many seats it has.
                if _seats_fit(room, request) and not (
                    room.reserved and instance.provisional(room.raw)
                ):
                    best, best_key = room, key
                    break
        if best is not None:
            return best
    return None
