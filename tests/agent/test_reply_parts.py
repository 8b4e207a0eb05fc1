"""Replies in parts and deltas from a real agent (docs/snapshots-at-scale.md, CONTRACT §15)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import FleetAgent, RoomManager, _reply_parts, wire
from fleet_agent._snapshot import Snapshot
from fleet_server import Orchestrator
from tests.support.agents import define_rooms, fleet_agent
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.waits import wait_for

from .fake_orchestrator import FakeOrchestrator
from .support import CountingRooms, join

MakeAgent = Callable[..., FleetAgent]

META = {"mode": "ranked", "map": "m" * 200}  # about 256 B of metadata per room


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[agent_pb2.State]]]:
    """Every reply the agents of a test send, each as the States of its frames."""
    replies: list[list[agent_pb2.State]] = []
    original = Snapshot.reply_frames

    def spy(self: Snapshot, *args: object) -> list[bytes]:
        frames = original(self, *args)  # type: ignore[arg-type]
        replies.append([wire.decode_frame(frame).state for frame in frames])
        return frames

    monkeypatch.setattr(Snapshot, "reply_frames", spy)
    yield replies


def in_sync(orch: Orchestrator, agent: FleetAgent, rooms: RoomManager) -> bool:
    """Whether the orchestrator's rooms of ``agent`` are the manager's, field by field."""
    instance_id = agent.instance_id
    info = orch.fleet.get_instance(instance_id) if instance_id else None
    if info is None:
        return False
    seen = {
        r.id: (r.connections, dict(r.metadata), r.max_connections, r.locked)
        for r in orch.fleet.find_rooms(instance_id=instance_id)
    }
    held = {r.id: (r.connections, r.metadata, r.max_connections, r.locked) for r in rooms.rooms()}
    return seen == held


async def test_a_reply_larger_than_a_part_joins_in_parts_and_changes_go_as_deltas(
    monkeypatch: pytest.MonkeyPatch, sent: list[list[agent_pb2.State]]
) -> None:
    monkeypatch.setattr(_reply_parts, "PART_BUDGET", 32 * 1024)  # 4 MiB, scaled down
    async with running_orchestrator(heartbeat_ms=50) as orch:
        rooms = define_rooms(RoomManager(), "match")
        for i in range(400):
            room = await rooms.create("match", f"r{i:04d}")
            room.metadata = {**META, "room": i}
            room.max_connections = 8
        agent = fleet_agent(rooms, url=agent_url(orch.port))
        async with agent:
            await wait_for(lambda: in_sync(orch, agent, rooms), 5)
            first = sent[0]
            assert len(first) > 3 and [s.part for s in first] == list(range(1, len(first) + 1))
            assert all(s.parts == len(first) for s in first)
            assert first[0].name == "eu1" and not first[1].name  # identity in part 1 only
            assert sum(len(s.rooms) for s in first) == 400
            mark = len(sent)
            chosen = random.Random(7).sample(sorted(r.id for r in rooms.rooms()), 20)
            for room_id in chosen[:10]:
                changed = rooms.get(room_id)
                assert changed is not None
                changed.connections = 3
            for room_id in chosen[10:15]:
                await rooms.destroy(room_id)
            created = await rooms.create("match", "zz-new")
            created.locked = True
            await wait_for(lambda: in_sync(orch, agent, rooms), 5)
            deltas = [reply for reply in sent[mark:] if reply[0].base_hash]
            assert deltas, "the changes went as deltas"
            assert all(len(reply) == 1 for reply in deltas)  # a small delta: one frame
            listed = {r.id for reply in deltas for r in reply[0].rooms}
            removed = {i for reply in deltas for i in reply[0].removed_rooms}
            assert listed <= set(chosen[:10]) | {"zz-new"} and "zz-new" in listed
            assert removed == set(chosen[10:15])
            snapshot = orch.fleet.get_instance(agent.instance_id or "")
            assert snapshot is not None and orch.fleet.stats.rooms == 396


async def test_forced_full_replies_stay_full_between_deltas(
    sent: list[list[agent_pb2.State]],
) -> None:
    async with running_orchestrator(heartbeat_ms=30) as orch:
        rooms = define_rooms(RoomManager(), "match")
        room = await rooms.create("match", "a")
        agent = fleet_agent(rooms, url=agent_url(orch.port))
        async with agent:
            await wait_for(lambda: in_sync(orch, agent, rooms), 5)
            for n in range(1, 15):  # more than the 12 polls between forced full replies
                room.connections = n
                await wait_for(_after(len(sent), sent, lambda: in_sync(orch, agent, rooms)), 5)
        full = [reply for reply in sent if reply[0].full and not reply[0].base_hash]
        assert len(full) >= 2  # the join and at least one forced full reply
        assert any(reply[0].base_hash for reply in sent)


async def test_an_orchestrator_without_features_gets_one_frame_full_replies(
    make_agent: MakeAgent, fake: FakeOrchestrator, rooms: CountingRooms
) -> None:
    await rooms.create("match", "a")
    link = await join(make_agent(), fake)
    first = await link.poll()
    assert first.full and len(first.rooms) == 1
    room = rooms.get("a")
    assert room is not None
    room.connections = 2
    again = await link.poll(known_hash=first.hash)
    assert again.full and not again.base_hash and not again.parts
    assert len(again.rooms) == 1


async def test_after_a_reply_in_parts_the_agent_waits_longer_for_the_next_poll(
    monkeypatch: pytest.MonkeyPatch,
    make_agent: MakeAgent,
    fake: FakeOrchestrator,
    rooms: CountingRooms,
) -> None:
    monkeypatch.setattr(_reply_parts, "PART_BUDGET", 2048)
    for i in range(200):
        await rooms.create("match", f"r{i:04d}")
    connecting = asyncio.create_task(make_agent().connect())
    link = await fake.next_link()
    await link.hello(heartbeat_ms=100, features=("parts",))
    await asyncio.wait_for(connecting, 5)
    await link.send_poll()
    first = (await link.recv()).state
    assert first.parts >= 3
    for _ in range(1, first.parts):
        await link.recv()
    await asyncio.sleep(0.45)  # past the 3 heartbeats of a one-frame reply, within 3 + parts
    assert not link.closed.is_set()
    again = await link.poll(known_hash=first.hash)
    assert not again.full


def _after(
    count: int, sent: list[list[agent_pb2.State]], check: Callable[[], bool]
) -> Callable[[], bool]:
    """True once more than ``count`` replies went out and ``check`` holds."""
    return lambda: len(sent) > count and check()


def test_frames_of_cuts_at_room_boundaries_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_reply_parts, "PART_BUDGET", 1000)
    entries = [
        wire.room_entry((f"room{i:03d}", "match", i, "fleet", "", None, False)) for i in range(200)
    ]
    head = b"\x22\x04abcd" + agent_pb2.State(name="n").SerializeToString()
    hash_head = b"\x22\x04abcd"
    tail = agent_pb2.State(status="active").SerializeToString()
    frames = _reply_parts.frames_of("poll_1", 9, head, hash_head, entries, tail)
    states = [wire.decode_frame(frame).state for frame in frames]
    assert len(states) > 2
    assert all(len(frame) <= 1000 + 64 for frame in frames)
    assert [s.part for s in states] == list(range(1, len(states) + 1))
    assert {(s.req_id, s.seq, s.hash, s.parts, s.full) for s in states} == {
        ("poll_1", 9, "abcd", len(states), True)
    }
    assert states[0].name == "n" and states[0].status == "active"
    assert all(not s.name and not s.status for s in states[1:])
    assert [r.id for s in states for r in s.rooms] == [f"room{i:03d}" for i in range(200)]


def test_a_reply_that_fits_is_one_frame_without_part_numbers() -> None:
    entry = wire.room_entry(("a", "match", 1, "local", "", None, False))
    base, removed = _reply_parts.delta_fields("h0", ["gone"])
    frames = _reply_parts.frames_of(
        "p", 2, b"\x22\x02h1", b"\x22\x02h1", [entry, *removed], b"", base
    )
    (state,) = [wire.decode_frame(frame).state for frame in frames]
    assert (state.part, state.parts, state.base_hash) == (0, 0, "h0")
    assert [r.id for r in state.rooms] == ["a"] and list(state.removed_rooms) == ["gone"]
