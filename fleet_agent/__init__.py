"""The agent library a game server embeds to join a rivalis-fleet orchestrator.

::

    rooms = RoomManager()
    rooms.define("match", Room)
    async with FleetAgent(rooms, url="ws://127.0.0.1:7350", key=key,
                          endpoint_url="ws://127.0.0.1:9000") as agent:
        ...

A room reports ``metadata``, ``max_connections`` and ``locked`` for matchmaking, gets its
create ``options``, and admits a player holding a seat ticket with
``room.accept_ticket(ticket)`` (docs/matchmaking.md).

The wire codec and the canonical hash live in the public module :mod:`fleet_agent.wire`.
"""

from __future__ import annotations

from ._agent import FleetAgent
from ._errors import FleetAgentError, RoomExistsError, UnknownRoomTypeError
from ._host import RoomHost, RoomView
from ._options import Backoff, Capacity
from ._rooms import Room, RoomManager
from ._seats import SeatReservation
from ._status import AgentStatus
from ._tickets import TicketError

__all__ = [
    "AgentStatus",
    "Backoff",
    "Capacity",
    "FleetAgent",
    "FleetAgentError",
    "Room",
    "RoomExistsError",
    "RoomHost",
    "RoomManager",
    "RoomView",
    "SeatReservation",
    "TicketError",
    "UnknownRoomTypeError",
]
