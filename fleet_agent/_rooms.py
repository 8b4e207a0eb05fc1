"""The reference :class:`RoomHost`: :class:`Room` and :class:`RoomManager`."""

from __future__ import annotations

import inspect
import json
import secrets
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

from . import wire
from ._errors import RoomExistsError, UnknownRoomTypeError
from ._log import logger
from ._seats import SeatLedger, SeatReservation
from ._tickets import TicketError

__all__ = ["DestroyListener", "MatchmakingFields", "Room", "RoomFactory", "RoomManager"]

RoomFactory: TypeAlias = "Callable[[str, str], Room]"
"""A :class:`Room` subclass or any callable ``(room_id, room_type) -> Room``."""

DestroyListener: TypeAlias = "Callable[[Room], Awaitable[None] | None]"
"""Called (and awaited when it returns an awaitable) after a room is destroyed."""

MatchmakingFields: TypeAlias = tuple[str, "int | None", bool]
"""A room's ``(metadata text, max_connections, locked)`` as one tuple: the snapshot reads
it in one attribute access per room and poll."""

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_GENERATED_ID_CHARS = 21
_MAX_ROOM_ID = 256
_MAX_ROOM_TYPE = 64


def _generate_room_id() -> str:
    """``r_`` + 21 chars of ``A-Z a-z 0-9 _ -``, as the orchestrator generates them."""
    return "r_" + "".join(_ID_ALPHABET[b & 63] for b in secrets.token_bytes(_GENERATED_ID_CHARS))


class Room:
    """One room of a game server.

    ``connections`` is what the fleet sees as the room's load: set it whenever players
    join or leave. ``metadata`` (a JSON object), ``max_connections`` (seats, ``None``:
    unlimited) and ``locked`` (no new seats) are what matchmaking sees; all four are
    reported at the next poll. ``options`` are the create options the room was made with.
    Subclasses may override the async :meth:`on_create` and :meth:`on_destroy` hooks.
    """

    def __init__(self, room_id: str, room_type: str) -> None:
        self._id = room_id
        self._type = room_type
        self._connections = 0
        self._options: dict[str, Any] = {}
        self._matchmaking: MatchmakingFields = ("", None, False)
        self._seats: SeatLedger | None = None
        self._notify: Callable[[str], None] | None = None  # set while in a RoomManager

    def _changed(self) -> None:
        """Tell the manager holding this room that what the fleet sees of it changed."""
        notify = self._notify
        if notify is not None:
            notify(self._id)

    @property
    def id(self) -> str:
        return self._id

    @property
    def type(self) -> str:
        return self._type

    @property
    def connections(self) -> int:
        return self._connections

    @connections.setter
    def connections(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"connections must be an int >= 0, got {value!r}")
        if value != self._connections:
            self._connections = value
            self._changed()

    @property
    def options(self) -> dict[str, Any]:
        """The create options (``{}`` when none, as for local rooms); set before
        :meth:`on_create` runs."""
        return self._options

    @property
    def metadata(self) -> dict[str, Any]:
        """The room's metadata, a JSON object (``{}`` when none).

        Reading returns a fresh copy; assign a new object to change it. Assigning
        something that is not a JSON object, or whose canonical text is over
        :data:`~fleet_agent.wire.MAX_METADATA_BYTES` bytes, raises ``ValueError`` and keeps
        the old value.
        """
        text = self._matchmaking[0]
        return json.loads(text) if text else {}

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        text = wire.object_text(value, wire.MAX_METADATA_BYTES, "metadata")
        _, max_connections, locked = self._matchmaking
        self._matchmaking = ("" if text == "{}" else text, max_connections, locked)
        self._changed()

    @property
    def metadata_text(self) -> str:
        """The canonical JSON text of :attr:`metadata` as reported (``""`` when none)."""
        return self._matchmaking[0]

    @property
    def max_connections(self) -> int | None:
        """Seats in the room for matchmaking; ``None`` (the default) is unlimited."""
        return self._matchmaking[1]

    @max_connections.setter
    def max_connections(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= wire.MAX_CONNECTIONS
        ):
            raise ValueError(
                f"max_connections must be None or an int from 0 to {wire.MAX_CONNECTIONS}, "
                f"got {value!r}"
            )
        text, _, locked = self._matchmaking
        self._matchmaking = (text, value, locked)
        self._changed()

    @property
    def locked(self) -> bool:
        """A locked room takes no new seats (its players stay)."""
        return self._matchmaking[2]

    @locked.setter
    def locked(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"locked must be a bool, got {value!r}")
        text, max_connections, _ = self._matchmaking
        self._matchmaking = (text, max_connections, value)
        self._changed()

    def accept_ticket(self, ticket: str) -> SeatReservation:
        """Admit the holder of a seat ticket: verify it offline and record its reservation.

        The ticket must be signed with the key of the agent this room's host is attached
        to, name this room, be unexpired by the local clock and not have been accepted
        before. The reservation id is reported at the next poll, so the orchestrator
        stops holding the seat: count the player in :attr:`connections` at the same time.
        Raises :class:`~fleet_agent.TicketError` with the reason, recording nothing; a room
        whose host no :class:`~fleet_agent.FleetAgent` was made for raises it with
        ``no agent key``.
        """
        if self._seats is None:
            raise TicketError("no agent key")
        return self._seats.accept(self._id, ticket)

    async def on_create(self) -> None:
        """Run once before the room becomes visible; raising aborts the create."""

    async def on_destroy(self) -> None:
        """Run once after the room left the manager."""

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self._id!r} type={self._type!r} "
            f"connections={self._connections}>"
        )


class RoomManager:
    """Rooms by id, created from one factory per room type.

    Implements :class:`~fleet_agent.RoomHost`; rooms created through :meth:`create` are
    *local* rooms, reported with origin ``local``.

    Every change the fleet sees (a room added or removed, a room's connections,
    metadata, seats or lock) adds the room's id to each set handed out by
    :meth:`_track`, so the agent's snapshot reads only the rooms that changed.
    """

    def __init__(self) -> None:
        self._factories: dict[str, RoomFactory] = {}
        self._types: tuple[str, ...] = ()
        self._rooms: dict[str, Room] = {}
        self._reserved: set[str] = set()
        self._listeners: dict[object, DestroyListener] = {}
        self._seats: SeatLedger | None = None
        self._trackers: dict[int, set[str]] = {}
        self._next_tracker = 0

    # -- definition and lookup -------------------------------------------------------

    def define(self, room_type: str, factory: RoomFactory) -> None:
        """Register the factory of ``room_type`` (a :class:`Room` subclass or a callable)."""
        if not isinstance(room_type, str) or not 0 < len(room_type) <= _MAX_ROOM_TYPE:
            raise ValueError(f"room_type must be a string of 1 to {_MAX_ROOM_TYPE} chars")
        if not callable(factory):
            raise ValueError("factory must be a Room subclass or a callable")
        if room_type in self._factories:
            raise ValueError(f"room type {room_type!r} is already defined")
        self._factories[room_type] = factory
        self._types = tuple(sorted(self._factories))

    def get(self, room_id: str) -> Room | None:
        """The live room with this id, or ``None``."""
        return self._rooms.get(room_id)

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, room_id: object) -> bool:
        return room_id in self._rooms

    # -- RoomHost --------------------------------------------------------------------

    def room_types(self) -> Sequence[str]:
        return self._types

    def rooms(self) -> Sequence[Room]:
        return tuple(self._rooms.values())

    async def create_room(
        self, room_type: str, room_id: str | None, options: Mapping[str, Any] | None = None
    ) -> Room:
        return await self.create(room_type, room_id, options)

    async def destroy_room(self, room_id: str) -> bool:
        return await self.destroy(room_id)

    # -- lifecycle -------------------------------------------------------------------

    async def create(
        self,
        room_type: str,
        room_id: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Room:
        """Create a room (``room_id=None`` generates one) and run its ``on_create()``.

        ``options`` (a JSON object) become the room's :attr:`Room.options` before
        ``on_create()`` runs. Raises :class:`UnknownRoomTypeError` or
        :class:`RoomExistsError`; the id is reserved while ``on_create()`` runs, so
        concurrent creates of one id cannot both win.
        """
        factory = self._factories.get(room_type)
        if factory is None:
            raise UnknownRoomTypeError(room_type)
        if options is not None and not isinstance(options, Mapping):
            raise ValueError("options must be a JSON object")
        if room_id is None:
            room_id = _generate_room_id()
            while self._taken(room_id):
                room_id = _generate_room_id()
        elif not isinstance(room_id, str) or not 0 < len(room_id) <= _MAX_ROOM_ID:
            raise ValueError(f"room_id must be a string of 1 to {_MAX_ROOM_ID} chars")
        elif self._taken(room_id):
            raise RoomExistsError(room_id)
        self._reserved.add(room_id)
        try:
            room = factory(room_id, room_type)
            if not isinstance(room, Room):
                raise TypeError(f"the factory of {room_type!r} must return a Room")
            if room.id != room_id or room.type != room_type:
                raise ValueError(f"the factory of {room_type!r} returned a room with another id")
            room._options = dict(options or {})
            room._seats = self._seats
            await room.on_create()
            room._seats = self._seats  # attach_seat_ledger() may have run meanwhile
            self._rooms[room_id] = room
            room._notify = self._touch
            self._touch(room_id)
        finally:
            self._reserved.discard(room_id)
        return room

    async def destroy(self, room_id: str) -> bool:
        """Remove a room, run its ``on_destroy()`` and notify listeners; ``False`` if absent."""
        room = self._rooms.pop(room_id, None)
        if room is None:
            return False
        room._notify = None
        self._touch(room_id)
        try:
            await room.on_destroy()
        finally:
            await self._notify_destroyed(room)
        return True

    async def shutdown(self) -> None:
        """Destroy every room; a failing ``on_destroy()`` is logged and the rest go on."""
        for room_id in list(self._rooms):
            try:
                await self.destroy(room_id)
            except Exception:
                logger.exception("room on_destroy failed room=%s", room_id)

    # -- seat tickets ----------------------------------------------------------------

    def attach_seat_ledger(self, ledger: SeatLedger) -> None:
        """Let every room, present and future, accept seat tickets through ``ledger``
        (called by :class:`~fleet_agent.FleetAgent` with the one of its agent key)."""
        self._seats = ledger
        for room in self._rooms.values():
            room._seats = ledger

    # -- destroy notifications -------------------------------------------------------

    def add_destroy_listener(self, listener: DestroyListener) -> Callable[[], None]:
        """Call ``listener(room)`` after each destroy; returns the unsubscribe callable."""
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    async def _notify_destroyed(self, room: Room) -> None:
        for listener in list(self._listeners.values()):
            try:
                result = listener(room)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("room destroy listener failed room=%s", room.id)

    # -- change tracking -------------------------------------------------------------

    def _track(self, owner: object) -> set[str]:
        """A set that collects the id of every room added, removed or changed from now
        on (the consumer empties it as it reads), until ``owner`` is garbage-collected."""
        changed: set[str] = set()
        token = self._next_tracker
        self._next_tracker += 1
        self._trackers[token] = changed
        weakref.finalize(owner, self._trackers.pop, token, None)
        return changed

    def _touch(self, room_id: str) -> None:
        for changed in self._trackers.values():
            changed.add(room_id)

    def _taken(self, room_id: str) -> bool:
        return room_id in self._rooms or room_id in self._reserved
