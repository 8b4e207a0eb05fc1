"""The agent's exceptions: one root, converted at the boundary.

Errors::

    FleetAgentError
    ├── AgentTimeoutError        connect_timeout_ms or await_empty()'s timeout passed
    │                            (also a TimeoutError)
    ├── ConnectionClosedError    the connection a call waited on is gone: a drop,
    │                            disconnect(), or no connection at all
    ├── ProtocolMismatchError    the orchestrator speaks another protocol major (fatal)
    ├── RoomExistsError          RoomHost.create_room: the room id is taken
    ├── TicketError              room.accept_ticket: the seat ticket may not be accepted
    │                            (also a ValueError; defined in _tickets)
    └── UnknownRoomTypeError     RoomHost.create_room: no factory for the room type

Network failures never raise into the host: the agent logs and retries. Only the calls
that wait for a network outcome (``connect()``, ``drain()``, ``undrain()``) raise, and
only these types. ``room.accept_ticket()`` raises :class:`TicketError` with the reason
(``malformed ticket``, ``bad signature``, ``ticket for another room``, ``expired ticket``,
``ticket already used``, ``too many accepted reservations``, ``no agent key``).
"""

from __future__ import annotations

__all__ = [
    "AgentTimeoutError",
    "ConnectionClosedError",
    "FleetAgentError",
    "ProtocolMismatchError",
    "RoomExistsError",
    "UnknownRoomTypeError",
    "describe",
]


class FleetAgentError(Exception):
    """Root of every error the agent library raises."""


class AgentTimeoutError(FleetAgentError, TimeoutError):
    """A deadline passed (``connect_timeout_ms``, ``await_empty(timeout_ms=...)``)."""


class ConnectionClosedError(FleetAgentError):
    """The connection a pending call depended on is gone."""


class ProtocolMismatchError(FleetAgentError):
    """The orchestrator speaks another protocol major; the agent gives up."""

    def __init__(self, remote: int, local: int) -> None:
        super().__init__(
            f"protocol version mismatch: orchestrator speaks {remote}, agent speaks {local}"
        )
        self.remote = remote
        self.local = local


class RoomExistsError(FleetAgentError):
    """A room with this id already exists on the host."""

    def __init__(self, room_id: str) -> None:
        super().__init__(f"room {room_id!r} already exists")
        self.room_id = room_id


class UnknownRoomTypeError(FleetAgentError):
    """The host has no factory for this room type."""

    def __init__(self, room_type: str) -> None:
        super().__init__(f"unknown room type {room_type!r}")
        self.room_type = room_type


def describe(exc: BaseException) -> str:
    """``Type: message`` (or ``Type`` alone) for log lines and error texts."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
