"""Replies in parts and deltas from an agent (docs/snapshots-at-scale.md, CONTRACT §15)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server import _replies, _snapshot
from fleet_server._link import CloseCode
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for

from .harness import Harness, harness


def split(state: agent_pb2.State, parts: int) -> list[agent_pb2.State]:
    """``state`` as ``parts`` frames: every non-room field in the first."""
    rooms = list(state.rooms)
    removed = list(state.removed_rooms)
    size = -(-len(rooms) // parts) if rooms else 0
    out: list[agent_pb2.State] = []
    for index in range(parts):
        if index == 0:
            part = agent_pb2.State()
            part.CopyFrom(state)
            del part.rooms[:]
            del part.removed_rooms[:]
        else:
            part = agent_pb2.State(
                req_id=state.req_id,
                full=True,
                seq=state.seq,
                hash=state.hash,
                base_hash=state.base_hash,
            )
        part.part, part.parts = index + 1, parts
        part.rooms.extend(rooms[index * size : (index + 1) * size])
        if index == parts - 1:
            part.removed_rooms.extend(removed)
        out.append(part)
    return out


async def send_all(agent: RawAgent, frames: list[agent_pb2.State]) -> None:
    for frame in frames:
        await agent.send_frame(agent_pb2.Frame(state=frame))


async def joined_by_hand(h: Harness, rooms: int = 0) -> tuple[RawAgent, agent_pb2.Poll]:
    """An agent that answers by hand; its first poll is answered with ``rooms`` rooms."""
    agent = h.agent()
    agent.rooms = {f"r{i:06d}": RawRoom("match", connections=1) for i in range(rooms)}
    await agent.connect()
    await h.applied(agent)
    agent.auto_reply = False
    return agent, await agent.next_poll(len(agent.polls))


def delta(agent: RawAgent, poll: agent_pb2.Poll, base: str, removed: list[str]) -> agent_pb2.State:
    """The agent's full state cut down to the rooms not in the base: a delta."""
    state = agent.state(poll.req_id, True)
    keep = [r for r in state.rooms if r.id in _changed(agent)]
    del state.rooms[:]
    state.rooms.extend(keep)
    state.base_hash = base
    state.removed_rooms.extend(removed)
    return state


def _changed(agent: RawAgent) -> set[str]:
    return set(getattr(agent, "changed", set()))


async def test_the_hello_lists_parts_and_deltas() -> None:
    async with harness(heartbeat_ms=1000) as h:
        agent = h.agent(auto_reply=False)
        hello = await agent.connect()
        assert list(hello.features) == ["parts", "deltas"]


async def test_a_reply_in_parts_joins_with_every_room() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent = h.agent(auto_reply=False)
        agent.rooms = {f"r{i:04d}": RawRoom("match", connections=i % 7) for i in range(3000)}
        await agent.connect()
        poll = await agent.next_poll(0)
        state = agent.state(poll.req_id, True)
        await send_all(agent, split(state, 3))
        await h.applied(agent)
        stats = h.orch.fleet.stats
        assert stats.rooms == 3000
        assert stats.connections == sum(i % 7 for i in range(3000))
        assert h.orch.fleet.get_room("r2999") is not None
        assert len(h.of("room:create")) == 3000


async def test_a_reply_in_parts_may_list_more_rooms_than_one_frame_may(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fleet.server")
    monkeypatch.setattr(_snapshot, "MAX_ROOMS", 100)  # the one-frame limit, scaled down
    async with harness(heartbeat_ms=100) as h:
        agent = h.agent(auto_reply=False)
        agent.rooms = {f"r{i:06d}": RawRoom("match") for i in range(150)}
        await agent.connect()
        await agent.reply(await agent.next_poll(0), full=True)
        await wait_for(lambda: "rooms has more than 100 entries" in caplog.text)  # one frame
        poll = await agent.next_poll(1)
        assert h.orch.fleet.stats.rooms == 0
        await send_all(agent, split(agent.state(poll.req_id, True), 2))
        await wait_for(lambda: h.orch.fleet.stats.rooms == 150)


async def test_a_delta_adds_changes_and_removes_only_what_it_lists() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=3)
        base = poll.known_hash
        mark = len(h.events)
        del agent.rooms["r000000"]
        agent.rooms["r000001"].connections = 5
        agent.rooms["new"] = RawRoom("match", connections=2)
        agent.changed = {"r000001", "new"}  # type: ignore[attr-defined]
        state = delta(agent, poll, base, ["r000000"])
        assert len(state.rooms) == 2
        await agent.send_frame(agent_pb2.Frame(state=state))
        await h.applied(agent)
        fleet = h.orch.fleet
        assert fleet.get_room("r000000") is None
        assert fleet.get_room("new") is not None
        room = fleet.get_room("r000001")
        assert room is not None and room.connections == 5
        assert fleet.get_room("r000002") is not None
        assert fleet.stats.rooms == 3 and fleet.stats.connections == 1 + 5 + 2
        assert [e.id for e in h.of("room:create", mark)] == ["new"]
        assert [e.id for e in h.of("room:destroy", mark)] == ["r000000"]


async def test_a_delta_in_parts_is_applied_when_its_last_part_is_in() -> None:
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=10)
        base = poll.known_hash
        for i in range(10, 40):
            agent.rooms[f"r{i:06d}"] = RawRoom("match")
        del agent.rooms["r000003"]
        agent.changed = {f"r{i:06d}" for i in range(10, 40)}  # type: ignore[attr-defined]
        await send_all(agent, split(delta(agent, poll, base, ["r000003"]), 3))
        await h.applied(agent)
        assert h.orch.fleet.stats.rooms == 39
        assert h.orch.fleet.get_room("r000003") is None


async def test_a_delta_on_another_base_is_dropped_and_the_snapshot_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=2)
        agent.rooms["new"] = RawRoom("match")
        agent.changed = {"new"}  # type: ignore[attr-defined]
        await agent.send_frame(agent_pb2.Frame(state=delta(agent, poll, "0" * 16, [])))
        await wait_for(lambda: "delta dropped" in caplog.text)
        assert "base is not the applied snapshot" in caplog.text
        assert h.orch.fleet.get_room("new") is None
        assert h.orch.fleet.stats.rooms == 2
        assert not agent.closed.is_set()


@pytest.mark.parametrize(
    ("removed", "reason"),
    [
        (["new"], "a room both changed and removed"),
        (["r000000", "new"], "a room both changed and removed"),
    ],
)
async def test_an_inconsistent_delta_is_rejected_and_the_snapshot_kept(
    caplog: pytest.LogCaptureFixture, removed: list[str], reason: str
) -> None:
    caplog.set_level(logging.WARNING, "fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=2)
        agent.rooms["new"] = RawRoom("match")
        agent.changed = {"new"}  # type: ignore[attr-defined]
        await agent.send_frame(agent_pb2.Frame(state=delta(agent, poll, poll.known_hash, removed)))
        await wait_for(lambda: "snapshot rejected" in caplog.text)
        assert reason in caplog.text
        assert h.orch.fleet.get_room("new") is None
        assert h.orch.fleet.get_room("r000000") is not None


@pytest.mark.parametrize(
    ("spoil", "logged"),
    [
        ("status", "status must be active or draining"),
        ("seq", "snapshot dropped"),
        ("limit", "rooms has more than 2 entries"),
    ],
)
async def test_a_delta_that_fails_a_late_check_leaves_its_base_for_the_next_delta(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, spoil: str, logged: str
) -> None:
    """A delta changes the applied snapshot's room map in place once every check has
    passed: one refused by a check after its rooms (fields, seq, size) changes nothing."""
    caplog.set_level(logging.WARNING, "fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=3)
        base = poll.known_hash
        del agent.rooms["r000000"]
        agent.rooms["new"] = RawRoom("match")
        agent.changed = {"new"}  # type: ignore[attr-defined]
        bad = delta(agent, poll, base, ["r000000"])
        if spoil == "status":
            bad.status = "bogus"
        elif spoil == "seq":
            bad.seq = 1  # the joining reply's
        else:
            monkeypatch.setattr(_replies, "MAX_ROOMS_IN_PARTS", 2)
            agent.rooms["more"] = RawRoom("match")
            bad.rooms.add(id="more", type="match")
        await agent.send_frame(agent_pb2.Frame(state=bad))
        await wait_for(lambda: logged in caplog.text)
        monkeypatch.undo()
        fleet = h.orch.fleet
        assert fleet.get_room("r000000") is not None and fleet.get_room("new") is None
        assert fleet.stats.rooms == 3
        instance = fleet._read.instance(agent.instance_id)
        assert instance is not None and instance.snapshot is not None
        assert sorted(instance.snapshot.rooms) == ["r000000", "r000001", "r000002"]
        agent.rooms.pop("more", None)
        following = await agent.next_poll(len(agent.polls))
        assert following.known_hash == base  # the orchestrator still holds the base
        await agent.send_frame(agent_pb2.Frame(state=delta(agent, following, base, ["r000000"])))
        await h.applied(agent)
        assert fleet.get_room("r000000") is None and fleet.get_room("new") is not None
        assert fleet.stats.rooms == 3
        assert not agent.closed.is_set()


async def test_a_delta_may_remove_a_room_the_base_never_listed() -> None:
    """A room made and gone between two replies: the agent lists it removed, harmlessly."""
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=2)
        del agent.rooms["r000001"]
        agent.changed = set()  # type: ignore[attr-defined]
        state = delta(agent, poll, poll.known_hash, ["r000001", "made-and-gone"])
        await agent.send_frame(agent_pb2.Frame(state=state))
        await h.applied(agent)
        assert h.orch.fleet.stats.rooms == 1


async def test_removed_rooms_outside_a_delta_are_rejected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=2)
        state = agent.state(poll.req_id, True)
        state.removed_rooms.append("r000000")
        await agent.send_frame(agent_pb2.Frame(state=state))
        await wait_for(lambda: "removed_rooms only in a delta" in caplog.text)


async def test_a_bad_room_in_a_later_part_rejects_the_reply_without_a_kick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=2)
        for i in range(2, 30):
            agent.rooms[f"r{i:06d}"] = RawRoom("match")
        agent.rooms["r000029"].connections = wire.MAX_CONNECTIONS + 1
        await send_all(agent, split(agent.state(poll.req_id, True), 3))
        await wait_for(lambda: "snapshot rejected" in caplog.text)
        assert f"room connections above {wire.MAX_CONNECTIONS}" in caplog.text
        assert h.orch.fleet.stats.rooms == 2
        assert not agent.closed.is_set()


async def test_a_room_listed_in_two_parts_is_listed_twice(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fleet.server")
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=4)
        frames = split(agent.state(poll.req_id, True), 2)
        frames[1].rooms.add(id="r000000", type="match")
        await send_all(agent, frames)
        await wait_for(lambda: "room id listed twice" in caplog.text)


def _out_of_order(frames: list[agent_pb2.State]) -> list[agent_pb2.State]:
    return [frames[0], frames[2]]


def _other_seq(frames: list[agent_pb2.State]) -> list[agent_pb2.State]:
    frames[1].seq += 1
    return frames[:2]


def _no_part_number(frames: list[agent_pb2.State]) -> list[agent_pb2.State]:
    frames[0].part = 0
    return frames[:1]


def _too_many(frames: list[agent_pb2.State]) -> list[agent_pb2.State]:
    frames[0].parts = _replies.MAX_PARTS + 1
    return frames[:1]


def _hash_only_between(frames: list[agent_pb2.State]) -> list[agent_pb2.State]:
    hash_only = agent_pb2.State(req_id=frames[0].req_id, full=False, seq=frames[0].seq)
    return [frames[0], hash_only]


def _starts_at_two(frames: list[agent_pb2.State]) -> list[agent_pb2.State]:
    return frames[1:2]


@pytest.mark.parametrize(
    "cut",
    [_out_of_order, _other_seq, _no_part_number, _too_many, _hash_only_between, _starts_at_two],
)
async def test_parts_that_break_the_order_get_the_agent_kicked(cut: object) -> None:
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=9)
        frames = split(agent.state(poll.req_id, True), 3)
        assert callable(cut)
        await send_all(agent, cut(frames))
        assert await agent.wait_closed() == CloseCode.PROTOCOL_VIOLATION


async def test_a_slow_reply_in_parts_is_a_sign_of_life_and_acks_may_come_between() -> None:
    async with harness(heartbeat_ms=60) as h:
        agent, poll = await joined_by_hand(h, rooms=12)
        frames = split(agent.state(poll.req_id, True), 6)
        create = asyncio.create_task(h.orch.fleet.create_room("match", room_id="mid"))
        for frame in frames:  # six parts over ~5 heartbeats: no eviction (3 missed)
            await agent.send_frame(agent_pb2.Frame(state=frame))
            await asyncio.sleep(0.06)  # the create's ack (auto) comes between two parts
        await create
        assert agent.commands and agent.commands[0].room_id == "mid"
        agent.auto_reply = True
        answered = {s.req_id for s in agent.states_sent} | {poll.req_id}
        if agent.polls[-1].req_id not in answered:
            await agent.reply(agent.polls[-1])
        await h.applied(agent)
        assert not agent.closed.is_set()
        assert h.orch.fleet.get_room("mid") is not None


def test_a_reply_beyond_the_room_limit_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_replies, "MAX_ROOMS_IN_PARTS", 5)
    first = agent_pb2.State(req_id="p", full=True, seq=1, hash="h", part=1, parts=2)
    first.rooms.add(id="a", type="match")
    collected = _replies.ReplyParts(first, None)
    list(collected.batches(first))
    second = agent_pb2.State(req_id="p", full=True, seq=1, hash="h", part=2, parts=2)
    for i in range(5):
        second.rooms.add(id=f"b{i}", type="match")
    collected.add(second)
    list(collected.batches(second))
    assert collected.complete
    assert collected.reply.reason == "rooms has more than 5 entries"


@pytest.mark.parametrize("batch", [2_000, 4])
async def test_a_big_full_reply_reconciles_only_the_rooms_that_differ(
    monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """The rooms that differ are found a batch at a time while the parts are parsed."""
    monkeypatch.setattr(_replies, "DIFF_FROM", 2)
    monkeypatch.setattr(_replies, "BATCH", batch)
    async with harness(heartbeat_ms=100) as h:
        agent, poll = await joined_by_hand(h, rooms=30)
        mark = len(h.events)
        agent.rooms["r000004"].connections = 9
        del agent.rooms["r000007"]
        agent.rooms["late"] = RawRoom("match")
        await send_all(agent, split(agent.state(poll.req_id, True), 3))
        await h.applied(agent)
        fleet = h.orch.fleet
        assert fleet.stats.rooms == 30 and fleet.get_room("r000007") is None
        room = fleet.get_room("r000004")
        assert room is not None and room.connections == 9
        assert [e.id for e in h.of("room:create", mark)] == ["late"]
        assert [e.id for e in h.of("room:destroy", mark)] == ["r000007"]
        assert not h.of("room:update", mark)
