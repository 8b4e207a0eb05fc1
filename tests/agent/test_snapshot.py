"""The agent's snapshot and hash (SPEC §2, §13.3; catalogue 3-7, 9)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import Capacity, Room, RoomManager, RoomView, wire
from fleet_agent._seats import SeatLedger
from fleet_agent._snapshot import Identity, Snapshot
from fleet_agent._tickets import TicketClaims, mint_ticket, ticket_key
from tests.support.agents import define_rooms
from tests.support.keys import KEY


def identity(**overrides: object) -> Identity:
    fields: dict[str, object] = {
        "name": "eu1",
        "process_uid": "p_1",
        "agent_version": "1.0.0",
        "endpoint_url": "wss://eu1",
        "labels": {"region": "eu"},
    }
    fields.update(overrides)
    return Identity(**fields)  # type: ignore[arg-type]


@pytest.fixture
def rooms() -> RoomManager:
    return define_rooms(RoomManager(), "match", "lobby")


async def test_the_spec_vector(rooms: RoomManager) -> None:
    only_match = RoomManager()
    only_match.define("match", Room)
    room = await only_match.create("match", "r1")
    room.connections = 3
    snapshot = Snapshot(identity(capacity=Capacity(max_rooms=10)))
    snapshot.mark_fleet("r1")
    assert snapshot.current_hash(only_match) == "23d9d53e385c3d97"


async def test_full_reply_carries_everything(rooms: RoomManager) -> None:
    (await rooms.create("match", "r2")).connections = 4
    await rooms.create("lobby", "r1")
    state = Snapshot(identity()).reply(rooms, "poll_1", None)
    assert state.req_id == "poll_1" and state.full and state.seq == 1
    assert (state.name, state.process_uid, state.endpoint_url) == ("eu1", "p_1", "wss://eu1")
    assert state.agent_version == "1.0.0" and state.protocol_version == 3
    assert dict(state.labels) == {"region": "eu"}
    assert list(state.room_types) == ["lobby", "match"]
    assert [(r.id, r.type, r.connections, r.origin) for r in state.rooms] == [
        ("r1", "lobby", 0, "local"),
        ("r2", "match", 4, "local"),
    ]
    assert state.status == "active" and state.auto_create is True
    assert not state.capacity.HasField("max_connections")
    assert not state.capacity.HasField("max_rooms")
    assert state.hash == wire.snapshot_hash(
        name="eu1",
        process_uid="p_1",
        agent_version="1.0.0",
        protocol_version=3,
        endpoint_url="wss://eu1",
        labels={"region": "eu"},
        max_connections=None,
        max_rooms=None,
        auto_create=True,
        room_types=["match", "lobby"],
        rooms=[("r2", "match", 4, "local"), ("r1", "lobby", 0, "local")],
        status="active",
    )


async def test_capacity_zero_is_kept_and_none_is_absent(rooms: RoomManager) -> None:
    state = Snapshot(identity(capacity=Capacity(max_rooms=0))).reply(rooms, "p", None)
    assert state.capacity.HasField("max_rooms") and state.capacity.max_rooms == 0
    assert not state.capacity.HasField("max_connections")
    decoded = wire.decode_frame(wire.encode_frame(agent_pb2.Frame(state=state))).state
    assert decoded.capacity.HasField("max_rooms") and decoded.capacity.max_rooms == 0


async def test_the_hash_moves_with_counts_rooms_and_status(rooms: RoomManager) -> None:
    snapshot = Snapshot(identity())
    room = await rooms.create("match", "r1")
    first = snapshot.current_hash(rooms)
    assert snapshot.current_hash(rooms) == first
    room.connections = 1
    counted = snapshot.current_hash(rooms)
    assert counted != first
    await rooms.create("match", "r2")
    grown = snapshot.current_hash(rooms)
    assert grown not in (first, counted)
    snapshot.status = "draining"
    drained = snapshot.current_hash(rooms)
    assert drained not in (first, counted, grown)
    snapshot.status = "active"
    assert snapshot.current_hash(rooms) == grown


async def test_the_hash_is_recomputed_only_after_a_change(
    rooms: RoomManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = wire.snapshot_hash

    def counting(**kwargs: object) -> str:
        calls.append(1)
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(wire, "snapshot_hash", counting)
    snapshot = Snapshot(identity())
    room = await rooms.create("match", "r1")
    for _ in range(5):
        snapshot.reply(rooms, "p", None)
    assert len(calls) == 1
    room.connections = 2
    snapshot.reply(rooms, "p", None)
    assert len(calls) == 2


async def test_known_hash_decides_full_or_hash_only(rooms: RoomManager) -> None:
    snapshot = Snapshot(identity())
    await rooms.create("match", "r1")
    full = snapshot.reply(rooms, "poll_1", None)
    assert full.full
    same = snapshot.reply(rooms, "poll_2", full.hash)
    assert not same.full and same.hash == full.hash and same.req_id == "poll_2"
    assert same.seq == 2 and same.name == "" and len(same.rooms) == 0
    assert {field.name for field, _ in same.ListFields()} == {"req_id", "seq", "hash"}
    other = snapshot.reply(rooms, "poll_3", "0000000000000000")
    assert other.full and other.seq == 3
    empty = snapshot.reply(rooms, "poll_4", "")
    assert empty.full


async def test_seq_grows_over_every_reply_and_restarts_at_one(rooms: RoomManager) -> None:
    snapshot = Snapshot(identity())
    seqs = [snapshot.reply(rooms, "p", None).seq for _ in range(3)]
    assert seqs == [1, 2, 3]
    snapshot.reset_seq()
    assert snapshot.reply(rooms, "p", None).seq == 1


async def test_provenance_marks_are_pruned_when_the_room_is_gone(rooms: RoomManager) -> None:
    snapshot = Snapshot(identity())
    await rooms.create("match", "r1")
    snapshot.mark_fleet("r1")
    assert [r.origin for r in snapshot.reply(rooms, "p", None).rooms] == ["fleet"]
    await rooms.destroy("r1")
    snapshot.reply(rooms, "p", None)
    await rooms.create("match", "r1")
    assert [r.origin for r in snapshot.reply(rooms, "p", None).rooms] == ["local"]


def test_the_installed_version_is_reported() -> None:
    from fleet_agent._agent import _agent_version

    assert _agent_version() == importlib.metadata.version("rivalis-fleet")


# -- matchmaking fields (docs/matchmaking.md §1, §2) -----------------------------------

RANKED = {"teams": 2, "mode": "ranked"}


async def test_the_matchmaking_vectors() -> None:
    only_match = define_rooms(RoomManager(), "match")
    room = await only_match.create("match", "r1")
    room.connections = 3
    seats = SeatLedger(KEY)
    snapshot = Snapshot(identity(capacity=Capacity(max_rooms=10)), seats)
    snapshot.mark_fleet("r1")
    room.metadata = RANKED
    assert snapshot.current_hash(only_match) == "0a29ed195853b204"
    room.max_connections = 10
    room.locked = True
    seats.accept("r1", mint_ticket(ticket_key(KEY), TicketClaims("s_1", "r1", 1, 2**42)))
    assert snapshot.current_hash(only_match) == "0f8cfa76c7f2be67"
    state = snapshot.reply(only_match, "p", None)
    assert list(state.accepted_reservations) == ["s_1"]
    [reported] = state.rooms
    assert reported.metadata == '{"mode":"ranked","teams":2}'
    assert reported.HasField("max_connections") and reported.max_connections == 10
    assert reported.locked


async def test_unset_matchmaking_fields_stay_off_the_wire(rooms: RoomManager) -> None:
    await rooms.create("match", "r1")
    state = Snapshot(identity(), SeatLedger(KEY)).reply(rooms, "p", None)
    [reported] = state.rooms
    assert not reported.HasField("max_connections") and reported.metadata == ""
    assert not reported.locked and list(state.accepted_reservations) == []
    field_names = {field.name for field, _ in reported.ListFields()}
    assert field_names == {"id", "type", "origin"}


async def test_the_hash_moves_with_metadata_seats_lock_and_accepted_ids(
    rooms: RoomManager,
) -> None:
    seats = SeatLedger(KEY)
    snapshot = Snapshot(identity(), seats)
    room = await rooms.create("match", "r1")
    hashes = [snapshot.current_hash(rooms)]
    room.metadata = RANKED
    hashes.append(snapshot.current_hash(rooms))
    room.metadata = {"mode": "ranked", "teams": 2}  # the same object: the same hash
    assert snapshot.current_hash(rooms) == hashes[-1]
    room.max_connections = 0
    hashes.append(snapshot.current_hash(rooms))
    room.locked = True
    hashes.append(snapshot.current_hash(rooms))
    seats.accept("r1", mint_ticket(ticket_key(KEY), TicketClaims("s_1", "r1", 1, 2**42)))
    hashes.append(snapshot.current_hash(rooms))
    assert len(set(hashes)) == len(hashes)
    room.metadata, room.max_connections, room.locked = {}, None, False
    assert snapshot.current_hash(rooms) not in hashes
    assert snapshot.current_hash(rooms) == Snapshot(identity(), seats).current_hash(rooms)


async def test_a_plain_view_reports_the_matchmaking_members_it_has() -> None:
    @dataclass
    class View:
        id: str
        type: str
        connections: int
        metadata_text: str = ""
        max_connections: int | None = None
        locked: bool = False

    class Host:
        def __init__(self) -> None:
            self.views = [View("a", "match", 1, '{"k":1}', 4, True), View("b", "match", 2)]

        def room_types(self) -> Sequence[str]:
            return ["match"]

        def rooms(self) -> Iterable[RoomView]:
            return self.views

        async def create_room(
            self, room_type: str, room_id: str | None, options: object = None
        ) -> RoomView:
            raise NotImplementedError

        async def destroy_room(self, room_id: str) -> bool:
            return False

    state = Snapshot(identity()).reply(Host(), "p", None)
    assert [(r.id, r.metadata, r.max_connections, r.locked) for r in state.rooms] == [
        ("a", '{"k":1}', 4, True),
        ("b", "", 0, False),
    ]
    assert not state.rooms[1].HasField("max_connections")
