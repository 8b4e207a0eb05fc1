"""RoomManager, the reference RoomHost (SPEC §13.5)."""

from __future__ import annotations

import asyncio
import re

import pytest

from fleet_agent import (
    FleetAgent,
    Room,
    RoomExistsError,
    RoomHost,
    RoomManager,
    RoomView,
    SeatReservation,
    TicketError,
    UnknownRoomTypeError,
    wire,
)
from fleet_agent._tickets import TicketClaims, mint_ticket, ticket_key
from tests.support.keys import KEY


class Recording(Room):
    def __init__(self, room_id: str, room_type: str) -> None:
        super().__init__(room_id, room_type)
        self.events: list[str] = []

    async def on_create(self) -> None:
        self.events.append("create")

    async def on_destroy(self) -> None:
        self.events.append("destroy")


def test_room_connections_is_a_settable_non_negative_int() -> None:
    room = Room("r1", "match")
    assert (room.id, room.type, room.connections) == ("r1", "match", 0)
    room.connections = 3
    assert room.connections == 3
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="connections"):
            room.connections = bad  # type: ignore[assignment]
    assert room.connections == 3
    assert isinstance(room, RoomView)


def test_room_manager_is_a_room_host() -> None:
    assert isinstance(RoomManager(), RoomHost)


async def test_create_runs_the_hook_and_makes_the_room_visible() -> None:
    rooms = RoomManager()
    rooms.define("match", Recording)
    room = await rooms.create("match", room_id="r1")
    assert isinstance(room, Recording) and room.events == ["create"]
    assert rooms.get("r1") is room and "r1" in rooms and len(rooms) == 1
    assert list(rooms.rooms()) == [room]
    assert rooms.room_types() == ("match",)


async def test_generated_ids_follow_the_fleet_format() -> None:
    rooms = RoomManager()
    rooms.define("match", Room)
    made = [await rooms.create("match") for _ in range(50)]
    ids = {room.id for room in made}
    assert len(ids) == 50
    assert all(re.fullmatch(r"r_[A-Za-z0-9_-]{21}", room_id) for room_id in ids)


async def test_define_takes_any_factory_callable() -> None:
    rooms = RoomManager()
    made: list[tuple[str, str]] = []

    def factory(room_id: str, room_type: str) -> Room:
        made.append((room_id, room_type))
        return Room(room_id, room_type)

    rooms.define("lobby", factory)
    await rooms.create_room("lobby", "l1")
    assert made == [("l1", "lobby")]
    with pytest.raises(ValueError, match="already defined"):
        rooms.define("lobby", Room)
    with pytest.raises(ValueError, match="room_type"):
        rooms.define("", Room)


async def test_create_refuses_unknown_types_and_taken_ids() -> None:
    rooms = RoomManager()
    rooms.define("match", Room)
    with pytest.raises(UnknownRoomTypeError, match="nope"):
        await rooms.create("nope")
    await rooms.create("match", "r1")
    with pytest.raises(RoomExistsError, match="r1"):
        await rooms.create_room("match", "r1")


async def test_concurrent_creates_of_one_id_let_exactly_one_win() -> None:
    rooms = RoomManager()

    class Slow(Room):
        async def on_create(self) -> None:
            await asyncio.sleep(0.01)

    rooms.define("match", Slow)
    results = await asyncio.gather(
        *(rooms.create("match", "dup") for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, Room) for r in results) == 1
    assert sum(isinstance(r, RoomExistsError) for r in results) == 4


async def test_a_failing_on_create_leaves_no_room_and_frees_the_id() -> None:
    rooms = RoomManager()

    class Broken(Room):
        async def on_create(self) -> None:
            raise RuntimeError("boom")

    rooms.define("broken", Broken)
    rooms.define("match", Room)
    with pytest.raises(RuntimeError, match="boom"):
        await rooms.create("broken", "r1")
    assert rooms.get("r1") is None
    await rooms.create("match", "r1")


async def test_destroy_runs_the_hook_notifies_and_reports_missing_rooms() -> None:
    rooms = RoomManager()
    rooms.define("match", Recording)
    room = await rooms.create("match", "r1")
    seen: list[str] = []
    unsubscribe = rooms.add_destroy_listener(lambda r: seen.append(r.id))

    async def async_listener(r: Room) -> None:
        seen.append("async:" + r.id)

    rooms.add_destroy_listener(async_listener)
    assert await rooms.destroy_room("r1") is True
    assert isinstance(room, Recording) and room.events == ["create", "destroy"]
    assert seen == ["r1", "async:r1"]
    assert await rooms.destroy("r1") is False
    unsubscribe()
    unsubscribe()
    await rooms.create("match", "r2")
    await rooms.destroy("r2")
    assert seen == ["r1", "async:r1", "async:r2"]


async def test_a_raising_listener_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rooms = RoomManager()
    rooms.define("match", Room)
    seen: list[str] = []

    def broken(room: Room) -> None:
        raise RuntimeError("listener boom")

    rooms.add_destroy_listener(broken)
    rooms.add_destroy_listener(lambda r: seen.append(r.id))
    await rooms.create("match", "r1")
    assert await rooms.destroy("r1") is True
    assert seen == ["r1"]
    assert any("listener" in r.getMessage() for r in caplog.records if r.name == "fleet.agent")


async def test_shutdown_destroys_every_room_and_is_idempotent() -> None:
    rooms = RoomManager()
    rooms.define("match", Recording)
    made = [await rooms.create("match") for _ in range(3)]
    await rooms.shutdown()
    await rooms.shutdown()
    assert len(rooms) == 0
    assert all(isinstance(r, Recording) and r.events == ["create", "destroy"] for r in made)


# -- matchmaking fields, options, tickets (docs/matchmaking.md) -------------------------


def test_matchmaking_fields_default_to_none_set_and_validate() -> None:
    room = Room("r1", "match")
    assert (room.options, room.metadata, room.metadata_text) == ({}, {}, "")
    assert (room.max_connections, room.locked) == (None, False)
    room.max_connections = 10
    room.locked = True
    assert (room.max_connections, room.locked) == (10, True)
    for bad in (-1, 1.5, True, "2", wire.MAX_CONNECTIONS + 1):
        with pytest.raises(ValueError, match="max_connections"):
            room.max_connections = bad  # type: ignore[assignment]
    for not_bool in (1, "yes", None):
        with pytest.raises(ValueError, match="locked"):
            room.locked = not_bool  # type: ignore[assignment]
    assert (room.max_connections, room.locked) == (10, True)
    room.max_connections = wire.MAX_CONNECTIONS
    room.max_connections = None
    assert room.max_connections is None


def test_metadata_is_kept_as_canonical_text_from_assignment_and_read_as_a_copy() -> None:
    room = Room("r1", "match")
    value = {"teams": 2, "mode": "ranked", "map": "dust"}
    room.metadata = value
    assert room.metadata_text == '{"map":"dust","mode":"ranked","teams":2}'
    value["mode"] = "casual"  # the caller's object is not the room's
    read = room.metadata
    read["teams"] = 3
    assert room.metadata == {"map": "dust", "mode": "ranked", "teams": 2}
    room.metadata = {}
    assert (room.metadata, room.metadata_text) == ({}, "")


@pytest.mark.parametrize(
    "bad",
    [[1], "text", 3, None, {"a": object()}, {"a": {1, 2}}, {"pad": "x" * 2048}],
)
def test_bad_metadata_raises_and_keeps_the_old_value(bad: object) -> None:
    room = Room("r1", "match")
    room.metadata = {"mode": "ranked"}
    with pytest.raises(ValueError, match="metadata"):
        room.metadata = bad  # type: ignore[assignment]
    assert room.metadata_text == '{"mode":"ranked"}'


async def test_options_are_the_rooms_before_on_create_runs() -> None:
    seen: list[dict[str, object]] = []

    class Match(Room):
        async def on_create(self) -> None:
            seen.append(dict(self.options))
            self.metadata = {"map": self.options.get("map", "any")}

    rooms = RoomManager()
    rooms.define("match", Match)
    options = {"map": "dust", "mode": "ranked"}
    room = await rooms.create("match", "r1", options)
    options["map"] = "changed"
    assert seen == [{"map": "dust", "mode": "ranked"}]
    assert room.options == {"map": "dust", "mode": "ranked"}
    assert room.metadata == {"map": "dust"}
    other = await rooms.create_room("match", "r2", options={"map": "nuke"})
    assert isinstance(other, Room) and other.options == {"map": "nuke"}
    local = await rooms.create("match", "r3")
    assert local.options == {} and seen[-1] == {}
    with pytest.raises(ValueError, match="options must be a JSON object"):
        await rooms.create("match", "r4", ["map"])  # type: ignore[arg-type]
    assert rooms.get("r4") is None


async def test_a_room_without_an_agent_refuses_tickets_with_no_agent_key() -> None:
    rooms = RoomManager()
    rooms.define("match", Room)
    room = await rooms.create("match", "r1")
    ticket = mint_ticket(ticket_key(KEY), TicketClaims("s_1", "r1", 1, 2**42))
    with pytest.raises(TicketError, match="no agent key"):
        room.accept_ticket(ticket)
    with pytest.raises(TicketError, match="no agent key"):
        Room("r2", "match").accept_ticket(ticket)


async def test_an_agent_lets_present_and_future_rooms_accept_its_tickets_offline() -> None:
    rooms = RoomManager()
    rooms.define("match", Room)
    before = await rooms.create("match", "r1")
    FleetAgent(rooms, url="ws://127.0.0.1:9", key=KEY, endpoint_url="ws://e")  # never connected
    after = await rooms.create("match", "r2")
    key = ticket_key(KEY)
    one = before.accept_ticket(mint_ticket(key, TicketClaims("s_1", "r1", 2, 2**42)))
    two = after.accept_ticket(mint_ticket(key, TicketClaims("s_2", "r2", 1, 2**42)))
    assert one == SeatReservation("s_1", "r1", 2, 2**42)
    assert (two.id, two.room_id, two.seats, two.expires_at) == ("s_2", "r2", 1, 2**42)
    with pytest.raises(TicketError, match="bad signature"):
        after.accept_ticket(mint_ticket(ticket_key("k2"), TicketClaims("s_3", "r2", 1, 2**42)))
