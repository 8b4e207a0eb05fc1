"""What the agent needs from a game server: the :class:`RoomHost` protocol.

:class:`~fleet_agent.RoomManager` is the reference implementation; any object with these
members works. Optional extras are discovered at runtime: ``shutdown()`` (called last
by the graceful shutdown), ``add_destroy_listener()`` (lets the agent forget that a
room was made by the fleet as soon as it is destroyed) and ``attach_seat_ledger()`` (the
agent hands the host what verifies seat tickets with its key, when it is made).

A room view may also have ``metadata_text`` (the canonical JSON text of its metadata,
``""`` for none), ``max_connections`` (``int | None``) and ``locked`` (``bool``); the
snapshot reports them when present (:class:`~fleet_agent.Room` has all three).

``create_room`` takes the create ``options`` as a third argument. The agent passes them
only when a create carries some, so a host whose ``create_room(room_type, room_id)``
predates them keeps working for creates without options; a create with options on such
a host fails its ack (``this host's create_room takes no options``) rather than
dropping them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ._seats import SeatLedger

__all__ = ["DestroyNotifier", "RoomHost", "RoomView", "SupportsSeatLedger", "SupportsShutdown"]


@runtime_checkable
class RoomView(Protocol):
    """A room as the fleet sees it."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def connections(self) -> int: ...


@runtime_checkable
class RoomHost(Protocol):
    """The rooms of one game server, and how to create and destroy them."""

    def room_types(self) -> Sequence[str]:
        """The room types this host can create."""
        ...

    def rooms(self) -> Iterable[RoomView]:
        """The live rooms, each with ``id``, ``type`` and ``connections``."""
        ...

    async def create_room(
        self, room_type: str, room_id: str | None, options: Mapping[str, Any] | None = None
    ) -> RoomView:
        """Create a room (``room_id=None``: the host picks one) with the create
        ``options`` (a JSON object; ``None`` when the create carried none).

        Raises :class:`~fleet_agent.RoomExistsError` when the id is taken and
        :class:`~fleet_agent.UnknownRoomTypeError` for a type it cannot create.
        """
        ...

    async def destroy_room(self, room_id: str) -> bool:
        """Destroy a room; ``False`` when it was already gone."""
        ...


@runtime_checkable
class SupportsShutdown(Protocol):
    """A host with a ``shutdown()`` (sync or async), run last by the graceful shutdown."""

    def shutdown(self) -> object: ...


@runtime_checkable
class DestroyNotifier(Protocol):
    """A host that reports destroyed rooms; the returned callable unsubscribes."""

    def add_destroy_listener(
        self, listener: Callable[[RoomView], Awaitable[None] | None]
    ) -> Callable[[], None]: ...


@runtime_checkable
class SupportsSeatLedger(Protocol):
    """A host whose rooms accept seat tickets through the agent's :class:`SeatLedger`."""

    def attach_seat_ledger(self, ledger: SeatLedger) -> None: ...
