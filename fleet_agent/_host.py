"""What the agent needs from a game server: the :class:`RoomHost` protocol.

:class:`~fleet_agent.RoomManager` is the reference implementation; any object with these
members works. Two optional extras are discovered at runtime: ``shutdown()`` (called last
by the graceful shutdown) and ``add_destroy_listener()`` (lets the agent forget that a
room was made by the fleet as soon as it is destroyed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["DestroyNotifier", "RoomHost", "RoomView", "SupportsShutdown"]


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

    async def create_room(self, room_type: str, room_id: str | None) -> RoomView:
        """Create a room (``room_id=None``: the host picks one).

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
