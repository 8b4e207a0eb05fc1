"""Create options, room metadata/seats/lock and seat tickets through a running agent
(CONTRACT §11, docs/matchmaking.md): what the orchestrator sends, and what the next
State reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from fleet_agent import FleetAgent, Room, RoomManager, RoomView, SeatReservation, TicketError
from fleet_agent._tickets import TicketClaims, mint_ticket, ticket_key
from tests.support.agents import define_rooms, fleet_agent
from tests.support.keys import KEY as ORCHESTRATOR_KEY
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.waits import wait_for

from .fake_orchestrator import KEY, FakeOrchestrator, Link
from .support import CountingRooms, join

MakeAgent = Callable[..., FleetAgent]


def now_ms() -> int:
    return int(time.time() * 1000)


def ticket(room: str = "r1", rid: str = "s_1", *, ttl_ms: int = 30_000, key: str = KEY) -> str:
    return mint_ticket(ticket_key(key), TicketClaims(rid, room, 1, now_ms() + ttl_ms))


class Seen(Room):
    """Records the options it saw in on_create and puts the map into its metadata."""

    seen: list[dict[str, Any]] = []

    async def on_create(self) -> None:
        Seen.seen.append(dict(self.options))
        self.metadata = {"map": self.options.get("map", "any")}


class OldHost:
    """A host written before create options: create_room(room_type, room_id)."""

    def __init__(self) -> None:
        self.rooms_by_id: dict[str, Room] = {}

    def room_types(self) -> Sequence[str]:
        return ["match"]

    def rooms(self) -> Iterable[RoomView]:
        return list(self.rooms_by_id.values())

    async def create_room(self, room_type: str, room_id: str | None) -> RoomView:
        room = Room(room_id or "generated", room_type)
        self.rooms_by_id[room.id] = room
        return room

    async def destroy_room(self, room_id: str) -> bool:
        return self.rooms_by_id.pop(room_id, None) is not None


async def test_create_options_reach_on_create_and_the_room(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    rooms.define("seen", Seen)
    Seen.seen = []
    link = await join(make_agent(), fake)
    ack = await link.command(
        "create", room_id="r1", room_type="seen", options='{"map":"dust","mode":"ranked"}'
    )
    assert ack.ok and ack.room.id == "r1"
    assert Seen.seen == [{"map": "dust", "mode": "ranked"}]
    room = rooms.get("r1")
    assert room is not None and room.options == {"map": "dust", "mode": "ranked"}
    empty = await link.command("create", room_id="r2", room_type="seen", options="{}")
    assert empty.ok and Seen.seen[-1] == {}
    state = await link.poll()
    assert {(r.id, r.metadata) for r in state.rooms} == {
        ("r1", '{"map":"dust"}'),
        ("r2", '{"map":"any"}'),
    }


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ("[1]", "options must be a JSON object"),
        ("nope", "options must be a JSON object"),
        ('"map"', "options must be a JSON object"),
        ('{"pad":"' + "x" * 4096 + '"}', "options must be at most 4096 bytes"),
    ],
)
async def test_bad_options_fail_the_create_and_create_nothing(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms, options: str, error: str
) -> None:
    link = await join(make_agent(), fake)
    ack = await link.command("create", room_id="r1", room_type="match", options=options)
    assert not ack.ok and ack.error == error
    assert rooms.get("r1") is None and len(rooms) == 0


async def test_a_host_without_options_still_creates_and_refuses_creates_with_options(
    make_agent: MakeAgent, fake: FakeOrchestrator
) -> None:
    host = OldHost()
    link = await join(make_agent(host), fake)
    plain = await link.command("create", room_id="r1", room_type="match")
    assert plain.ok and list(host.rooms_by_id) == ["r1"]
    empty = await link.command("create", room_id="r2", room_type="match", options="{}")
    assert empty.ok and list(host.rooms_by_id) == ["r1", "r2"]
    refused = await link.command("create", room_id="r3", room_type="match", options='{"a":1}')
    assert not refused.ok and "takes no options" in refused.error
    assert list(host.rooms_by_id) == ["r1", "r2"]


async def test_metadata_seats_and_lock_show_in_the_next_state(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    link = await join(make_agent(), fake)
    room = await rooms.create("match", "r1")
    first = await link.poll()
    assert first.rooms[0].metadata == "" and not first.rooms[0].HasField("max_connections")
    assert not (await link.poll(known_hash=first.hash)).full
    room.metadata = {"teams": 2, "mode": "ranked"}
    with_metadata = await link.poll(known_hash=first.hash)
    assert with_metadata.full and with_metadata.rooms[0].metadata == '{"mode":"ranked","teams":2}'
    room.max_connections = 10
    seats = await link.poll(known_hash=with_metadata.hash)
    assert seats.full and seats.rooms[0].max_connections == 10
    room.locked = True
    locked = await link.poll(known_hash=seats.hash)
    assert locked.full and locked.rooms[0].locked
    room.max_connections = None
    unlimited = await link.poll(known_hash=locked.hash)
    assert unlimited.full and not unlimited.rooms[0].HasField("max_connections")
    assert len({first.hash, with_metadata.hash, seats.hash, locked.hash, unlimited.hash}) == 5


async def accepted_ids(link: Link) -> list[str]:
    return list((await link.poll()).accepted_reservations)


async def test_an_accepted_ticket_is_reported_until_it_expires(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    link = await join(make_agent(), fake)
    room = await rooms.create("match", "r1")
    long = room.accept_ticket(ticket(rid="s_long"))
    assert isinstance(long, SeatReservation) and (long.id, long.room_id, long.seats) == (
        "s_long",
        "r1",
        1,
    )
    short = room.accept_ticket(ticket(rid="s_short", ttl_ms=400))
    assert short.expires_at <= now_ms() + 400
    before = await link.poll()
    assert list(before.accepted_reservations) == ["s_long", "s_short"]
    await wait_for(
        lambda: _equals(accepted_ids(link), ["s_long"]),
        5,
        step=0.05,
        message="s_short was still reported after its expiry",
    )
    after = await link.poll(known_hash=before.hash)
    assert after.full and list(after.accepted_reservations) == ["s_long"]


async def _equals(ids: Any, expected: list[str]) -> bool:
    return bool(await ids == expected)


async def test_each_refused_ticket_says_why_and_reports_nothing(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    link = await join(make_agent(), fake)
    room = await rooms.create("match", "r1")
    await rooms.create("match", "r2")
    used = ticket(rid="s_used")
    room.accept_ticket(used)
    cases = {
        "bad signature": ticket(key="another-agent-key"),
        "expired ticket": ticket(ttl_ms=-1),
        "ticket already used": used,
        "ticket for another room": ticket(room="r2"),
        "malformed ticket": "v1.not-a-ticket",
    }
    for reason, presented in cases.items():
        with pytest.raises(TicketError, match=reason):
            room.accept_ticket(presented)
    assert await accepted_ids(link) == ["s_used"]
    other = rooms.get("r2")
    assert other is not None
    assert other.accept_ticket(ticket(room="r2", rid="s_r2")).room_id == "r2"
    assert await accepted_ids(link) == ["s_r2", "s_used"]


async def test_a_real_orchestrator_takes_a_snapshot_with_the_new_fields() -> None:
    """An orchestrator that does not read them yet still accepts such a snapshot."""
    async with running_orchestrator(heartbeat_ms=100) as orch:
        rooms = define_rooms(RoomManager(), "match")
        room = await rooms.create("match", "r1")
        room.metadata = {"mode": "ranked"}
        room.max_connections = 10
        room.locked = True
        room.connections = 1
        agent = fleet_agent(rooms, url=agent_url(orch.port))
        room.accept_ticket(ticket(rid="s_1", key=ORCHESTRATOR_KEY))  # offline, not connected
        async with agent:
            await wait_for(lambda: orch.fleet.get_room("r1") is not None, 5)
            room.connections = 2
            await wait_for(lambda: _connections(orch.fleet.get_room("r1")) == 2, 5)
            assert agent.instance_id is not None
            instance = orch.fleet.get_instance(agent.instance_id)
            assert instance is not None and instance.status == "active"


def _connections(info: Any) -> int | None:
    return None if info is None else int(info.connections)
