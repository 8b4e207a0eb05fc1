"""The snapshot's kept rooms: replies written from cached entries are the bytes the
message classes give, a RoomManager's changes reach the next reply, and a poll after no
change reads no room."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import Capacity, Room, RoomManager, RoomView, wire
from fleet_agent._seats import SeatLedger
from fleet_agent._snapshot import Identity, Snapshot
from fleet_agent._tickets import TicketClaims, mint_ticket, ticket_key
from tests.support.keys import KEY

IDENTITY = Identity(
    name="eu1",
    process_uid="p_1",
    agent_version="1.0.0",
    endpoint_url="wss://eu1",
    labels={"region": "eu", "zone": "b", "tier": "x"},
    capacity=Capacity(max_connections=500, max_rooms=0),
)


class Scanned:
    """The same rooms behind a host that is not a RoomManager: the snapshot lists them."""

    def __init__(self, manager: RoomManager) -> None:
        self.manager = manager

    def room_types(self) -> Sequence[str]:
        return self.manager.room_types()

    def rooms(self) -> Iterable[RoomView]:
        return list(self.manager.rooms())

    async def create_room(self, room_type: str, room_id: str | None, options: Any = None) -> Room:
        raise NotImplementedError

    async def destroy_room(self, room_id: str) -> bool:
        return False


def reference(snapshot: Snapshot, host: RoomManager, req_id: str, seq: int) -> bytes:
    """A full reply built from the message classes, as the agent built it before."""
    ident = snapshot.identity
    rows = sorted(host.rooms(), key=lambda room: room.id)
    accepted = snapshot._seats.accepted() if snapshot._seats is not None else ()
    state = agent_pb2.State(
        req_id=req_id,
        full=True,
        seq=seq,
        hash=snapshot.current_hash(host),
        name=ident.name,
        process_uid=ident.process_uid,
        agent_version=ident.agent_version,
        protocol_version=wire.PROTOCOL_MAJOR,
        endpoint_url=ident.endpoint_url,
        labels=dict(ident.labels),
        auto_create=ident.auto_create,
        room_types=sorted(host.room_types()),
        rooms=[
            agent_pb2.RoomState(
                id=room.id,
                type=room.type,
                connections=room.connections,
                origin=snapshot.origin(room.id),
                metadata=room.metadata_text,
                max_connections=room.max_connections,
                locked=room.locked,
            )
            for room in rows
        ],
        status=snapshot.status,
        accepted_reservations=accepted,
    )
    if ident.capacity.max_connections is not None:
        state.capacity.max_connections = ident.capacity.max_connections
    if ident.capacity.max_rooms is not None:
        state.capacity.max_rooms = ident.capacity.max_rooms
    return wire.encode_frame(agent_pb2.Frame(state=state))


def same_reply(data: bytes, expected: bytes) -> bool:
    """Byte for byte but for the order of the labels map, which protobuf leaves open
    (it follows the string hash seed): the same length and the same message."""
    return len(data) == len(expected) and wire.decode_frame(data) == wire.decode_frame(expected)


async def busy_manager() -> tuple[RoomManager, SeatLedger]:
    manager = RoomManager()
    manager.define("match", Room)
    manager.define("lobby", Room)
    seats = SeatLedger(KEY)
    manager.attach_seat_ledger(seats)
    for index in range(30):
        room = await manager.create("match" if index % 3 else "lobby", f"r{index:02d}é")
        room.connections = index * 1000
        if index % 4 == 0:
            room.metadata = {"mode": "ranked", "n": index, "ü": [1, 2.5]}
        if index % 5 == 0:
            room.max_connections = index
        room.locked = index % 7 == 0
    ticket = mint_ticket(ticket_key(KEY), TicketClaims("s_1", "r03é", 2, 2**42))
    manager.get("r03é").accept_ticket(ticket)  # type: ignore[union-attr]
    return manager, seats


async def test_a_full_reply_is_byte_for_byte_what_the_message_classes_give() -> None:
    manager, seats = await busy_manager()
    snapshot = Snapshot(IDENTITY, seats)
    snapshot.mark_fleet("r05é")
    data = snapshot.reply_frame(manager, "poll_7", None)
    assert same_reply(data, reference(snapshot, manager, "poll_7", 1))
    snapshot.status = "draining"
    (await manager.create("lobby", "a0")).connections = 3
    await manager.destroy("r10é")
    data = snapshot.reply_frame(manager, "poll_8", "stale")
    assert same_reply(data, reference(snapshot, manager, "poll_8", 2))
    state = wire.decode_frame(data).state
    assert [room.id for room in state.rooms][:2] == ["a0", "r00é"]
    assert state.rooms[6].origin == "fleet" and state.capacity.max_rooms == 0


async def test_a_hash_only_reply_is_byte_for_byte_what_the_message_classes_give() -> None:
    manager, seats = await busy_manager()
    snapshot = Snapshot(IDENTITY, seats)
    digest = snapshot.current_hash(manager)
    data = snapshot.reply_frame(manager, "poll_" + "x" * 200, digest)
    state = agent_pb2.State(req_id="poll_" + "x" * 200, full=False, seq=1, hash=digest)
    assert data == wire.encode_frame(agent_pb2.Frame(state=state))


async def test_every_change_reaches_the_next_reply_as_a_fresh_scan_sees_it() -> None:
    manager, seats = await busy_manager()
    tracked = Snapshot(IDENTITY, seats)
    hashes = {tracked.current_hash(manager)}
    room = manager.get("r01é")
    assert room is not None

    async def create() -> None:
        await manager.create("match", "zz")

    async def destroy() -> None:
        await manager.destroy("r02é")

    changes: list[Any] = [
        lambda: setattr(room, "connections", 7),
        lambda: setattr(room, "metadata", {"a": 1}),
        lambda: setattr(room, "max_connections", 0),
        lambda: setattr(room, "locked", True),
        create,
        destroy,
        lambda: manager.define("duel", Room),
        lambda: setattr(tracked, "status", "draining"),
        lambda: tracked.mark_fleet("r01é"),
        lambda: seats.accept(
            "r01é", mint_ticket(ticket_key(KEY), TicketClaims("s_2", "r01é", 1, 2**42))
        ),
        lambda: tracked.forget("r01é"),
    ]
    for change in changes:
        result = change()
        if result is not None and hasattr(result, "__await__"):
            await result
        digest = tracked.current_hash(manager)
        assert digest not in hashes, change
        hashes.add(digest)
        scan = Snapshot(IDENTITY, seats)
        scan.status = tracked.status
        if "r01é" in tracked._fleet_rooms:
            scan.mark_fleet("r01é")
        assert scan.current_hash(Scanned(manager)) == digest
        scanned = scan.reply(Scanned(manager), "p", None)
        assert tracked.reply(manager, "p", None).rooms == scanned.rooms


async def test_a_poll_after_no_change_reads_no_room(monkeypatch: pytest.MonkeyPatch) -> None:
    manager, seats = await busy_manager()
    snapshot = Snapshot(IDENTITY, seats)
    digest = snapshot.current_hash(manager)
    reads: list[str] = []
    real = Snapshot._apply

    def counting(self: Snapshot, host: RoomManager) -> None:
        reads.append("apply")
        real(self, host)

    monkeypatch.setattr(Snapshot, "_apply", counting)
    monkeypatch.setattr(RoomManager, "room_types", lambda self: pytest.fail("listed"))
    for index in range(5):
        data = snapshot.reply_frame(manager, f"p{index}", digest)
        assert not wire.decode_frame(data).state.full
    assert reads == []
    room = manager.get("r04é")
    assert room is not None
    room.connections = 1
    room.connections = 1  # the same value again: no second report
    assert snapshot._pending == {"r04é"}
    monkeypatch.undo()
    assert snapshot.current_hash(manager) != digest


async def test_a_computed_connections_property_is_read_at_every_poll() -> None:
    class Counted(Room):
        players = 0

        @property  # type: ignore[misc]
        def connections(self) -> int:
            return self.players

    manager = RoomManager()
    manager.define("match", Counted)
    room = await manager.create("match", "r1")
    assert isinstance(room, Counted)
    snapshot = Snapshot(IDENTITY)
    first = snapshot.reply(manager, "p", None)
    assert first.rooms[0].connections == 0
    room.players = 4
    second = snapshot.reply(manager, "p", first.hash)
    assert second.full and second.rooms[0].connections == 4


async def test_the_changes_since_a_version_list_changed_and_removed_rooms() -> None:
    manager, seats = await busy_manager()
    snapshot = Snapshot(IDENTITY, seats)
    snapshot.current_hash(manager)
    version = snapshot.version
    room = manager.get("r07é")
    assert room is not None
    room.connections = 1
    await manager.destroy("r08é")
    await manager.create("match", "new")
    snapshot.current_hash(manager)
    changes = snapshot.changes_since(version)
    assert changes is not None
    assert changes.changed == ("new", "r07é") and changes.removed == ("r08é",)
    empty = snapshot.changes_since(snapshot.version)
    assert empty is not None and empty.changed == empty.removed == ()


async def test_a_snapshot_moved_to_another_host_reports_that_host_only() -> None:
    first, seats = await busy_manager()
    second = RoomManager()
    second.define("match", Room)
    await second.create("match", "only")
    snapshot = Snapshot(IDENTITY, seats)
    snapshot.current_hash(first)
    assert [room.id for room in snapshot.reply(second, "p", None).rooms] == ["only"]
    assert len(snapshot.reply(Scanned(first), "p", None).rooms) == 30
    assert [room.id for room in snapshot.reply(second, "p", None).rooms] == ["only"]
