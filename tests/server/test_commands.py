"""The command engine against raw agents: the in-flight cap, teardown and failed sends,
unknown targets (SPEC §8; catalogue 50, 51, 54)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server import ErrorCode, FleetError, Placement
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .harness import harness, silent


async def test_thirty_third_concurrent_command_is_busy_never_sent_and_releases_its_id() -> None:
    async with harness(command_timeout_ms=30_000) as h:
        agent = await h.join(rooms={"keep": RawRoom("match", 1)})
        other = await h.join(name="other")
        agent.on_command = silent
        pin = Placement(instance_id=agent.instance_id)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(h.orch.fleet.create_room("match", room_id=f"c{i}", placement=pin))
            for i in range(31)
        ]
        tasks.append(asyncio.create_task(h.orch.fleet.destroy_room("keep")))
        await wait_for(lambda: len(agent.commands) == 32)
        fleet = h.orch.fleet
        for attempt in (
            fleet.create_room("match", room_id="busy-33", placement=pin),
            fleet.drain_instance(agent.instance_id),
            fleet.undrain_instance(agent.instance_id),
            fleet.destroy_room("keep"),
        ):
            with pytest.raises(FleetError) as info:
                await attempt
            assert info.value.code is ErrorCode.INSTANCE_BUSY
            assert info.value.http_status == 429
        assert not fleet._read.is_taken("busy-33")
        assert h.link(agent).instance.inflight == 31
        # The busy create's id is free for another instance at once.
        room = await fleet.create_room("match", room_id="busy-33")
        assert room.instance_id == other.instance_id
        await h.settle_polls(agent, count=1)
        assert len(agent.commands) == 32  # nothing more was ever sent
        # Acking everything settles all 32; the instance takes commands again.
        for cmd in list(agent.commands):
            await agent.send_frame(agent_pb2.Frame(ack=agent.execute(cmd)))
        await asyncio.gather(*tasks)
        agent.on_command = None
        await fleet.drain_instance(agent.instance_id)
        assert h.link(agent).instance.inflight == 0


async def test_socket_close_fails_every_pending_command_at_once_and_holds_their_ids() -> None:
    async with harness(command_timeout_ms=100_000) as h:
        agent = await h.join(rooms={"old": RawRoom("match", 1)})
        other = await h.join(name="other")
        agent.on_command = silent
        fleet = h.orch.fleet
        pin = Placement(instance_id=agent.instance_id)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(fleet.create_room("match", room_id=f"p{i}", placement=pin))
            for i in range(3)
        ]
        tasks.append(asyncio.create_task(fleet.destroy_room("old")))
        tasks.append(asyncio.create_task(fleet.drain_instance(agent.instance_id)))
        await wait_for(lambda: len(agent.commands) == 5)
        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        await agent.close()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10.0)
        assert loop.time() - closed_at < 10.0  # at once, not at the 100 s timeout
        for result in results:
            assert isinstance(result, FleetError)
            assert result.code is ErrorCode.INSTANCE_DISCONNECTED
            assert result.http_status == 502
            assert "socket close" in str(result) or "clean leave" in str(result)
        # The creates were sent: the game server may have run them, so their ids stay
        # taken for its process until it reports (CONTRACT §9).
        assert fleet.orphans.holds_of(agent.process_uid) == {"p0", "p1", "p2"}
        with pytest.raises(FleetError) as info:
            await fleet.create_room("match", room_id="p0")
        assert info.value.code is ErrorCode.ROOM_EXISTS
        # The process comes back without them: they are free again.
        await h.join(process_uid=agent.process_uid, rooms={"old": RawRoom("match", 1)})
        assert not fleet.orphans
        room = await fleet.create_room(
            "match", room_id="p0", placement=Placement(instance_id=other.instance_id)
        )
        assert room.instance_id == other.instance_id


async def test_failing_command_send_is_disconnected_at_once_and_holds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with harness(command_timeout_ms=200) as h:
        agent = await h.join(max_rooms=1)
        link = h.link(agent)
        original = link.send_encoded

        async def failing(data: bytes) -> None:
            if wire.decode_frame(data).WhichOneof("body") == "cmd":
                raise ConnectionResetError("socket went away")
            await original(data)

        monkeypatch.setattr(link, "send_encoded", failing)
        fleet = h.orch.fleet
        with pytest.raises(FleetError) as info:
            await fleet.create_room("match", room_id="unsent")
        assert info.value.code is ErrorCode.INSTANCE_DISCONNECTED
        assert agent.commands == []
        assert link.pending == {}  # settled, its timer cancelled
        assert link.instance.inflight == 0
        assert not fleet._read.is_taken("unsent")
        # Past the command timeout nothing fires late and nothing stays held.
        await h.settle_polls(agent, count=3)
        assert not fleet._read.is_taken("unsent")
        assert link.instance.holds == set()
        monkeypatch.undo()
        room = await fleet.create_room("match", room_id="unsent")  # the only maxRooms slot
        assert room.instance_id == agent.instance_id


async def test_unknown_room_and_unknown_instance_are_not_found() -> None:
    async with harness() as h:
        pending = h.agent(auto_reply=False)  # connected but never in the read model
        await pending.connect()
        agent = await h.join()
        fleet = h.orch.fleet
        with pytest.raises(FleetError) as info:
            await fleet.destroy_room("nope")
        assert info.value.code is ErrorCode.ROOM_NOT_FOUND and info.value.http_status == 404
        for call in (fleet.drain_instance, fleet.undrain_instance):
            for instance_id in ("i_nope", pending.instance_id):
                with pytest.raises(FleetError) as info:
                    await call(instance_id)
                assert info.value.code is ErrorCode.INSTANCE_NOT_FOUND
                assert info.value.http_status == 404
        assert agent.commands == [] and pending.commands == []


async def test_destroy_of_an_already_gone_room_succeeds_and_the_room_leaves_reads() -> None:
    async with harness() as h:
        agent = await h.join(rooms={"ending": RawRoom("match", 1)})
        del agent.rooms["ending"]  # the game ended it; the fleet has not polled yet

        async def gone(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True, already_gone=True)

        agent.on_command = gone
        await h.orch.fleet.destroy_room("ending")
        assert h.orch.fleet.get_room("ending") is None
        assert [(c.op, c.room_id) for c in agent.commands] == [("destroy", "ending")]


async def test_shutdown_fails_pending_commands_fires_leave_and_closes_agents_with_1001() -> None:
    async with harness(command_timeout_ms=100_000) as h:
        agent = await h.join(rooms={"r": RawRoom("match", 1)})
        agent.on_command = silent
        pending = asyncio.create_task(h.orch.fleet.create_room("match", room_id="late"))
        await wait_for(lambda: len(agent.commands) == 1)
        await h.orch.shutdown()
        with pytest.raises(FleetError) as info:
            await pending
        assert info.value.code is ErrorCode.INSTANCE_DISCONNECTED
        assert "orchestrator shutdown" in str(info.value)
        assert await agent.wait_closed() == 1001
        assert [i.id for i in h.of("instance:leave")] == [agent.instance_id]
        assert [r.id for r in h.of("room:destroy")] == ["r"]
        assert h.orch.fleet.instances == [] and h.orch.ready is False
        await h.orch.shutdown()  # idempotent
