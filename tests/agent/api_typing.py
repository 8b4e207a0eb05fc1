"""Type-checked only (mypy, never run): pins how the public API is meant to be called."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fleet_agent import (
    AgentStatus,
    Backoff,
    Capacity,
    FleetAgent,
    FleetAgentError,
    Room,
    RoomExistsError,
    RoomHost,
    RoomManager,
    RoomView,
    SeatReservation,
    TicketError,
    UnknownRoomTypeError,
)


class Match(Room):
    async def on_create(self) -> None:
        self.connections = 0
        mode: object = self.options.get("mode", "casual")
        self.metadata = {"mode": mode, "teams": 2}
        self.max_connections = 10
        self.locked = False


class MinimalHost:
    """Any object with these four members is a RoomHost."""

    def room_types(self) -> Sequence[str]:
        return ("match",)

    def rooms(self) -> Iterable[RoomView]:
        return ()

    async def create_room(
        self, room_type: str, room_id: str | None, options: Mapping[str, Any] | None = None
    ) -> RoomView:
        raise UnknownRoomTypeError(room_type)

    async def destroy_room(self, room_id: str) -> bool:
        return False


async def api() -> None:
    rooms = RoomManager()
    rooms.define("match", Match)
    rooms.define("lobby", lambda room_id, room_type: Room(room_id, room_type))
    room: Room = await rooms.create("match", room_id="r1")
    room.connections = 3
    options: dict[str, Any] = room.options
    metadata: dict[str, Any] = room.metadata
    room.metadata = {**metadata, "map": "dust"}
    text: str = room.metadata_text
    seats: int | None = room.max_connections
    room.max_connections = None
    locked: bool = room.locked
    with contextlib.suppress(TicketError):
        reservation: SeatReservation = room.accept_ticket("v1.x.y")
        ids: tuple[str, str, int, int] = (
            reservation.id,
            reservation.room_id,
            reservation.seats,
            reservation.expires_at,
        )
        del ids
    del options, text, seats, locked
    await rooms.create("match", "r3", {"mode": "ranked"})
    await rooms.create_room("match", None, options={"mode": "ranked"})
    found: Room | None = rooms.get("r1")
    unsubscribe = rooms.add_destroy_listener(lambda r: None)
    unsubscribe()
    gone: bool = await rooms.destroy("r1")
    host: RoomHost = rooms
    other: RoomHost = MinimalHost()

    agent = FleetAgent(
        host,
        url="ws://127.0.0.1:7350",
        key="k",
        endpoint_url="ws://127.0.0.1:9000",
        name="eu1",
        labels={"region": "eu"},
        capacity=Capacity(max_connections=2000, max_rooms=100),
        auto_create=True,
        connect_timeout_ms=None,
        backoff=Backoff(initial_ms=500, max_ms=30_000),
    )
    with contextlib.suppress(TimeoutError, FleetAgentError):
        await agent.connect()
    status: AgentStatus = agent.status
    connected: bool = agent.status == "connected"
    instance_id: str | None = agent.instance_id
    process_uid: str = agent.process_uid
    url: str = agent.url
    await agent.drain()
    await agent.undrain()
    await agent.await_empty(timeout_ms=60_000)
    agent.enable_graceful_shutdown(empty_timeout_ms=60_000)
    await agent.disconnect()
    async with FleetAgent(other, url="ws://h", key="k", endpoint_url="ws://e") as joined:
        assert isinstance(joined, FleetAgent)
    cluster = FleetAgent(other, url=["ws://a:7350", "ws://b:7350"], key="k", endpoint_url="ws://e")
    urls: tuple[str, ...] = ("ws://a:7350", "ws://b:7350")
    in_use: str = FleetAgent(other, url=urls, key="k", endpoint_url="ws://e").url
    del cluster, in_use
    with contextlib.suppress(RoomExistsError, UnknownRoomTypeError):
        await rooms.create("match", "r2")
    del found, gone, status, connected, instance_id, process_uid, url
