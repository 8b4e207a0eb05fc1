"""``reserve_seats`` and ``release_seats`` (CONTRACT §11): validation, the choice of a
room (or a new one), the reservation and its ticket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fleet_agent.wire import MAX_METADATA_BYTES, canonical_json, object_text

from ._errors import ErrorCode, FleetError
from ._instance import Instance
from ._models import RoomInfo
from ._placement import Placement, ValidationError
from ._read_model import ReadModel
from ._seats import (
    DEFAULT_TTL_MS,
    MAX_SEATS,
    MAX_TTL_MS,
    MIN_TTL_MS,
    SeatIndex,
    SeatLedger,
    SeatRequest,
    fullest_room,
)

__all__ = ["SeatGrant", "SeatReservation", "SeatService"]


@dataclass(frozen=True, slots=True)
class SeatReservation:
    """A live reservation as its caller sees it; ``ticket`` goes to the player."""

    id: str
    seats: int
    expires_at: int  # ms since the epoch
    ticket: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seats": self.seats,
            "expiresAt": self.expires_at,
            "ticket": self.ticket,
        }


@dataclass(frozen=True, slots=True)
class SeatGrant:
    """The answer to a seat request: the room, the reservation, whether it was created."""

    room: RoomInfo
    reservation: SeatReservation
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "room": self.room.to_dict(),
            "reservation": self.reservation.to_dict(),
            "created": self.created,
        }


class CreateRoom(Protocol):
    def __call__(
        self,
        type: str,
        room_id: str | None = None,
        placement: Placement | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Awaitable[RoomInfo]: ...


def _count(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{what} must be an integer from {low} to {high}")
    return value


def _wanted_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    try:
        object_text(metadata, MAX_METADATA_BYTES, "metadata")
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return {key: canonical_json(value) for key, value in metadata.items()}


def _create_options(create: bool | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The options of the room to create when nothing fits; None: do not create."""
    if create is None or create is False:
        return None
    if create is True:
        return {}
    if not isinstance(create, Mapping) or set(create) - {"options"}:
        raise ValidationError('create must be null or {"options": {...}}')
    options = create.get("options")
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValidationError("create.options must be a JSON object")
    return options


class SeatService:
    """Seat requests over the read model; the fleet wires in its create and its links."""

    def __init__(
        self,
        read: ReadModel,
        ledger: SeatLedger,
        *,
        create_room: CreateRoom,
        ticket_key: Callable[[Instance], bytes],
        require_lead: Callable[[], None],
    ) -> None:
        self._read = read
        self._ledger = ledger
        self._create_room = create_room
        self._ticket_key = ticket_key
        self._require_lead = require_lead
        self._index = SeatIndex()

    async def reserve_seats(
        self,
        type: str,
        seats: int = 1,
        *,
        metadata: Mapping[str, Any] | None = None,
        placement: Placement | None = None,
        create: bool | Mapping[str, Any] | None = None,
        ttl_ms: int = DEFAULT_TTL_MS,
    ) -> SeatGrant:
        if not isinstance(type, str) or not type:
            raise ValidationError("room type must be a non-empty string")
        if placement is None:
            placement = Placement()
        elif not isinstance(placement, Placement):
            raise ValidationError("placement must be a Placement")
        request = SeatRequest(
            type,
            _count(seats, "seats", 1, MAX_SEATS),
            _wanted_metadata(metadata),
            placement,
        )
        ttl_ms = _count(ttl_ms, "ttlMs", MIN_TTL_MS, MAX_TTL_MS)
        options = _create_options(create)
        self._require_lead()
        room = fullest_room(self._pinned(placement), request, self._index)
        if room is not None:
            return self._grant(room, request.seats, ttl_ms, created=False)
        if options is None:
            raise FleetError(ErrorCode.NO_CANDIDATE, f"no {type!r} room has {seats} free seats")
        info = await self._create_room(type, placement=placement, options=options)
        found = self._read.resolve(info.id)
        if found is None:
            raise FleetError(ErrorCode.INSTANCE_DISCONNECTED, "the new room's instance left")
        instance, raw = found
        return self._grant(instance.rooms[raw], request.seats, ttl_ms, created=True)

    def release_seats(self, reservation_id: str) -> None:
        if not isinstance(reservation_id, str):
            raise ValidationError("reservation id must be a string")
        self._require_lead()
        if not self._ledger.release(reservation_id):
            raise FleetError(ErrorCode.NOT_FOUND, "no live reservation by that id")

    def _pinned(self, placement: Placement) -> list[Instance]:
        if placement.instance_id is not None:
            one = self._read.instance(placement.instance_id)
            return [one] if one is not None else []
        if placement.process_uid is not None:
            matches = self._read.instances_by_process_uid(placement.process_uid)
            return [max(matches, key=lambda i: i.join_seq or 0)] if matches else []
        return list(self._read.joined)

    def _grant(self, room: Any, seats: int, ttl_ms: int, *, created: bool) -> SeatGrant:
        key = self._ticket_key(room.instance)
        reservation = self._ledger.reserve(room, seats, ttl_ms, key)
        return SeatGrant(
            room=room.room_info(),
            reservation=SeatReservation(
                reservation.id, seats, reservation.expires_at, reservation.ticket
            ),
            created=created,
        )
