"""Polls and commands through the fake orchestrator (SPEC §13.3; catalogue 5-8, 88-90, 95)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import Capacity, FleetAgent, Room, RoomExistsError, RoomView, wire

from .fake_orchestrator import FakeOrchestrator
from .support import CountingRooms, join

MakeAgent = Callable[..., FleetAgent]


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "fleet.agent" and r.levelno == level
    ]


async def test_local_creates_send_nothing_and_show_in_the_next_reply(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    link = await join(make_agent(), fake)
    for i in range(50):
        await rooms.create("match", f"r{i:02}")
    await link.assert_silent()
    state = await link.poll()
    assert state.full and len(state.rooms) == 50
    assert {r.origin for r in state.rooms} == {"local"}


async def test_poll_replies_are_full_or_hash_only_by_known_hash(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    link = await join(make_agent(), fake)
    room = await rooms.create("match", "r1")
    full = await link.poll()
    assert full.full and full.seq == 1 and full.name == "eu1"
    same = await link.poll(known_hash=full.hash)
    assert not same.full and same.hash == full.hash and same.seq == 2
    assert same.name == "" and len(same.rooms) == 0
    room.connections = 5
    changed = await link.poll(known_hash=full.hash)
    assert changed.full and changed.hash != full.hash and changed.seq == 3
    assert [r.connections for r in changed.rooms] == [5]


async def test_create_and_destroy_commands(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    link = await join(make_agent(), fake)
    ack = await link.command("create", room_id="r1", room_type="match")
    assert ack.ok and (ack.room.id, ack.room.type) == ("r1", "match")
    assert not ack.HasField("error")
    assert rooms.get("r1") is not None
    generated = await link.command("create", room_type="lobby")
    assert generated.ok and generated.room.id.startswith("r_")
    assert rooms.get(generated.room.id) is not None
    state = await link.poll()
    assert {(r.id, r.origin) for r in state.rooms} == {
        ("r1", "fleet"),
        (generated.room.id, "fleet"),
    }
    destroyed = await link.command("destroy", room_id="r1")
    assert destroyed.ok and not destroyed.already_gone
    assert rooms.get("r1") is None
    missing = await link.command("destroy", room_id="r1")
    assert missing.ok and missing.already_gone


async def test_provenance_follows_the_room_not_the_id(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    link = await join(make_agent(), fake)
    assert (await link.command("create", room_id="r1", room_type="match")).ok
    await rooms.create("match", "r2")
    state = await link.poll()
    assert {(r.id, r.origin) for r in state.rooms} == {("r1", "fleet"), ("r2", "local")}
    await rooms.destroy("r1")
    await rooms.create("match", "r1")
    state = await link.poll()
    assert {(r.id, r.origin) for r in state.rooms} == {("r1", "local"), ("r2", "local")}


@pytest.mark.parametrize(
    ("options", "command", "expected"),
    [
        ({"auto_create": False}, {"room_type": "match"}, "auto_create"),
        ({}, {"room_id": "r9"}, "room_type"),
        ({"capacity": Capacity(max_rooms=1)}, {"room_type": "match"}, "capacity"),
        ({}, {"room_type": "nope"}, "unknown room type 'nope'"),
    ],
)
async def test_create_refusals(
    make_agent: MakeAgent,
    fake: FakeOrchestrator,
    rooms: CountingRooms,
    options: dict[str, object],
    command: dict[str, str],
    expected: str,
) -> None:
    await rooms.create("lobby", "existing")
    link = await join(make_agent(**options), fake)
    ack = await link.command("create", **command)
    assert not ack.ok and not ack.exists
    assert expected in ack.error
    assert len(rooms) == 1


async def test_create_of_an_existing_id_says_exists(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    await rooms.create("match", "r1")
    link = await join(make_agent(), fake)
    ack = await link.command("create", room_id="r1", room_type="match")
    assert not ack.ok and ack.exists
    state = await link.poll()
    assert [r.origin for r in state.rooms] == ["local"]


async def test_other_commands(make_agent: MakeAgent, fake: FakeOrchestrator) -> None:
    link = await join(make_agent(), fake)
    no_id = await link.command("destroy")
    assert not no_id.ok and "room_id" in no_id.error
    unknown = await link.command("explode", room_id="r1")
    assert not unknown.ok and "explode" in unknown.error


async def test_commands_finish_before_the_next_frame_is_read(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    class Slow(Room):
        async def on_create(self) -> None:
            await asyncio.sleep(0.1)

    rooms.define("slow", Slow)
    link = await join(make_agent(), fake)
    cmd_id = await link.send_command("create", room_id="s1", room_type="slow")
    req_id = await link.send_poll()
    first, second = await link.recv(), await link.recv()
    assert first.ack.cmd_id == cmd_id and first.ack.ok
    assert second.state.req_id == req_id
    assert [r.id for r in second.state.rooms] == ["s1"]


async def test_garbage_wrong_major_and_agent_bound_frames_are_dropped(
    make_agent: MakeAgent, fake: FakeOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    link = await join(make_agent(), fake)
    garbage = wire.encode_frame(agent_pb2.Frame(cmd=agent_pb2.Command(cmd_id="cmd_1", op="create")))
    await link.send_raw(garbage[:2] + b"\xff\xff\xff\xff" + garbage[2:])
    await link.send_raw(bytes([2, 0]) + garbage[2:])
    await link.send_raw('{"type":"poll"}')
    await link.send(agent_pb2.Frame(state=agent_pb2.State(req_id="poll_1")))
    await link.send(agent_pb2.Frame(ack=agent_pb2.Ack(cmd_id="cmd_1", ok=True)))
    await link.hello("i_again")
    await link.send(agent_pb2.Frame())
    await link.assert_silent()
    warned = messages(caplog, logging.WARNING)
    assert any("decode" in m for m in warned)
    assert any("version" in m and "major 2" in m for m in warned)
    assert any("version" in m and "major 123" in m for m in warned)
    assert sum("not one an agent accepts" in m for m in warned) == 4
    state = await link.poll()
    assert state.seq == 1
    assert link.ws.closed is False


@dataclass(frozen=True, slots=True)
class View:
    id: str
    type: str
    connections: int


class BulkHost:
    """A plain RoomHost (no RoomManager) holding many rooms with long ids."""

    def __init__(self, count: int) -> None:
        self.views = [View(f"{i:06}" + "x" * 194, "match", 1) for i in range(count)]

    def room_types(self) -> Sequence[str]:
        return ["match"]

    def rooms(self) -> Iterable[RoomView]:
        return self.views

    async def create_room(
        self, room_type: str, room_id: str | None, options: Mapping[str, Any] | None = None
    ) -> RoomView:
        raise RoomExistsError(room_id or "")

    async def destroy_room(self, room_id: str) -> bool:
        return False


def frame_size(host: BulkHost) -> int:
    from fleet_agent._snapshot import Identity, Snapshot

    ident = Identity("eu1", "p_" + "0" * 24, "0.1.0", "ws://127.0.0.1:9000", {})
    return len(
        wire.encode_frame(agent_pb2.Frame(state=Snapshot(ident).reply(host, "poll_1", None)))
    )


@pytest.mark.parametrize(("count", "level"), [(11_500, logging.WARNING), (17_500, logging.ERROR)])
async def test_large_snapshots_are_logged_once_and_still_sent(
    make_agent: MakeAgent,
    fake: FakeOrchestrator,
    caplog: pytest.LogCaptureFixture,
    count: int,
    level: int,
) -> None:
    host = BulkHost(count)
    size = frame_size(host)
    share = size / wire.MAX_FRAME_BYTES
    assert (0.5 <= share < 0.9) if level == logging.WARNING else (0.9 <= share < 1.0)
    link = await join(make_agent(host), fake)
    caplog.clear()
    state = await link.poll()
    assert state.full and len(state.rooms) == count
    about_size = [
        r for r in caplog.records if r.name == "fleet.agent" and "snapshot is" in r.getMessage()
    ]
    assert [r.levelno for r in about_size] == [level]
    if level == logging.ERROR:
        text = about_size[0].getMessage()
        assert "reconnect loop" in text and "fewer rooms" in text and "more instances" in text
    caplog.clear()
    assert not (await link.poll(known_hash=state.hash)).full
    assert not [r for r in caplog.records if "snapshot is" in r.getMessage()]


async def test_a_host_failing_during_a_poll_leaves_it_unanswered(
    make_agent: MakeAgent, fake: FakeOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(BulkHost):
        broken = True

        def rooms(self) -> Iterable[RoomView]:
            if self.broken:
                raise RuntimeError("host bug")
            return self.views

    host = Flaky(2)
    link = await join(make_agent(host), fake)
    await link.send_poll()
    await link.assert_silent()
    assert any("snapshot" in m for m in messages(caplog, logging.ERROR))
    host.broken = False
    assert len((await link.poll()).rooms) == 2


@pytest.mark.parametrize(
    "poll",
    [
        agent_pb2.Poll(req_id="p1", known_hash="h" * 16, status="active"),
        agent_pb2.Poll(req_id="p2", status="draining"),
        agent_pb2.Poll(req_id="p3", known_hash=""),
        agent_pb2.Poll(),
        agent_pb2.Poll(req_id="é" * 40, known_hash="x" * 60, status="active"),  # > 127 bytes
        agent_pb2.Poll(req_id="p4", status="ü"),
    ],
)
def test_the_quick_poll_reader_agrees_with_the_codec(poll: agent_pb2.Poll) -> None:
    from fleet_agent._frames import _quick_poll

    data = wire.encode_frame(agent_pb2.Frame(poll=poll))
    quick = _quick_poll(data)
    if quick is not None:
        known = poll.known_hash if poll.HasField("known_hash") else None
        assert quick == (poll.req_id, known, poll.status)
    else:
        assert len(data) > 127 + 4  # only a long poll goes to the codec


@pytest.mark.parametrize(
    "data",
    [
        wire.HEADER + b"\x12\x04\x0a\x02p1",  # the length says 4, 4 follow: fine below
        wire.HEADER + b"\x12\x05\x0a\x02p1",  # a length past the end
        wire.HEADER + b"\x12\x04\x08\x01\x0a\x00",  # a varint field (unknown)
        wire.HEADER + b"\x12\x04\x0a\x02\xff\xfe",  # not UTF-8
        wire.HEADER + b"\x12\x02\x0a\x05",  # a field past the message
        bytes((wire.PROTOCOL_MAJOR + 1, 0)) + b"\x12\x00",  # another major
        wire.HEADER + b"\x12\x00\x12\x00",  # two polls: the codec decides
    ],
)
def test_the_quick_poll_reader_leaves_anything_odd_to_the_codec(data: bytes) -> None:
    from fleet_agent._frames import _quick_poll

    quick = _quick_poll(data)
    if data == wire.HEADER + b"\x12\x04\x0a\x02p1":
        assert quick == ("p1", None, "")
    else:
        assert quick is None
