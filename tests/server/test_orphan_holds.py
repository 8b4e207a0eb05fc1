"""Orphan holds (CONTRACT §9): the ids a torn-down instance accounted for stay taken
for its process until that process reports again or ``orphan_hold_ms`` passes."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_server import ErrorCode, FleetError, Placement
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import Harness, harness, silent

CUT = 1001  # any close but 1000: the agent did not leave on purpose


async def _taken(h: Harness, room_id: str) -> None:
    with pytest.raises(FleetError) as info:
        await h.orch.fleet.create_room("match", room_id=room_id)
    assert info.value.code is ErrorCode.ROOM_EXISTS


def _hosts(h: Harness, room_id: str) -> list[str]:
    """Every instance that lists ``room_id`` (by its raw id)."""
    return [i.id for i in h.orch.fleet.instances for r in i.rooms if r.id == room_id]


async def test_listed_rooms_stay_taken_after_a_socket_cut_but_are_not_listed() -> None:
    async with harness() as h:
        agent = await h.join(
            rooms={"r1": RawRoom("match", 3, origin="fleet"), "l1": RawRoom("match", 1)}
        )
        await h.join(name="other")
        await agent.close(code=CUT)
        await wait_for(lambda: len(h.orch.fleet.instances) == 1)
        assert h.orch.fleet.orphans.holds_of(agent.process_uid) == {"r1", "l1"}
        await _taken(h, "r1")
        await _taken(h, "l1")
        assert h.orch.fleet.get_room("r1") is None
        assert h.orch.fleet.stats.rooms == 0
        assert h.orch.fleet.stats.connections == 0


async def test_a_clean_leave_frees_its_listed_rooms_at_once() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"r1": RawRoom("match", 3, origin="fleet")})
        other = await h.join(name="other")
        await agent.close()  # 1000, as FleetAgent.disconnect() does
        await wait_for(lambda: len(h.orch.fleet.instances) == 1)
        assert not h.orch.fleet.orphans
        room = await h.orch.fleet.create_room("match", room_id="r1")
        assert room.instance_id == other.instance_id


async def test_the_returning_process_gets_its_rooms_back_and_frees_the_rest() -> None:
    async with harness() as h:
        rooms = {"keep": RawRoom("match", 2, origin="fleet"), "gone": RawRoom("match")}
        agent = await h.join(rooms=rooms)
        await agent.close(code=CUT)
        await wait_for(lambda: not h.orch.fleet.instances)
        back = await h.join(process_uid=agent.process_uid, rooms={"keep": rooms["keep"]})
        assert not h.orch.fleet.orphans
        room = h.orch.fleet.get_room("keep")
        assert room is not None and room.instance_id == back.instance_id
        await _taken(h, "keep")  # listed again
        created = await h.orch.fleet.create_room("match", room_id="gone")
        assert created.instance_id == back.instance_id


async def test_a_late_ack_after_a_timeout_and_a_cut_never_puts_one_id_on_two_instances() -> None:
    """The 504-then-retry window: the game server created the room, its ack never came,
    its socket broke; a matchmaker retrying the same id every 20 ms must never win."""
    async with harness(command_timeout_ms=200) as h:
        agent = await h.join()
        other = await h.join(name="other")

        async def create_without_ack(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            agent.rooms[cmd.room_id] = RawRoom(cmd.room_type, origin="fleet")
            return None

        agent.on_command = create_without_ack
        agent.auto_reply = False  # no snapshot either: the orchestrator cannot know
        pin = Placement(instance_id=agent.instance_id)
        with pytest.raises(FleetError) as timeout:
            await h.orch.fleet.create_room("match", room_id="m-1", placement=pin)
        assert timeout.value.code is ErrorCode.COMMAND_TIMEOUT
        await agent.close(code=CUT)
        await wait_for(lambda: len(h.orch.fleet.instances) == 1)
        outcomes: list[ErrorCode] = []
        for _ in range(15):
            try:
                await h.orch.fleet.create_room("match", room_id="m-1")
            except FleetError as exc:
                outcomes.append(exc.code)
            else:
                raise AssertionError("the retry was placed while the first room may exist")
            await asyncio.sleep(0.02)
        assert set(outcomes) == {ErrorCode.ROOM_EXISTS}
        back = await h.join(process_uid=agent.process_uid, rooms=dict(agent.rooms))
        assert _hosts(h, "m-1") == [back.instance_id]
        await _taken(h, "m-1")
        assert other.commands == []


async def test_orphan_holds_lapse_after_orphan_hold_ms() -> None:
    async with harness(orphan_hold_ms=300) as h:
        agent = await h.join(rooms={"r1": RawRoom("match", origin="fleet")})
        other = await h.join(name="other")
        await agent.close(code=CUT)
        await wait_for(lambda: "r1" in h.orch.fleet.orphans)
        await wait_for(lambda: not h.orch.fleet.orphans, timeout=5.0)
        room = await h.orch.fleet.create_room("match", room_id="r1")
        assert room.instance_id == other.instance_id


async def test_generated_ids_skip_orphan_held_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness() as h:
        agent = await h.join(rooms={"rHELD": RawRoom("match", origin="fleet")})
        await h.join(name="other")
        await agent.close(code=CUT)
        await wait_for(lambda: "rHELD" in h.orch.fleet.orphans)
        script = itertools.chain(["rHELD", "rHELD"], itertools.repeat("rFRESH"))
        monkeypatch.setattr("fleet_server._fleet.generate_room_id", lambda: next(script))
        room = await h.orch.fleet.create_room("match")
        assert room.id == "rFRESH"


async def test_a_create_sent_on_a_link_that_leaves_cleanly_is_still_held() -> None:
    async with harness(command_timeout_ms=100_000) as h:
        agent = await h.join()
        await h.join(name="other")
        agent.on_command = silent
        pin = Placement(instance_id=agent.instance_id)
        task = asyncio.create_task(h.orch.fleet.create_room("match", room_id="c1", placement=pin))
        await wait_for(lambda: len(agent.commands) == 1)
        await agent.close()  # clean, but the create may have run
        with pytest.raises(FleetError) as info:
            await task
        assert info.value.code is ErrorCode.INSTANCE_DISCONNECTED
        await _taken(h, "c1")
