"""Create, destroy, drain through the Python API against raw agents (SPEC §6–§8)."""

from __future__ import annotations

import asyncio

import pytest

from fleet_server import ErrorCode, FleetError, Orchestrator, Placement
from tests.support.agents import RawAgents
from tests.support.orchestrators import running_orchestrator
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for


async def test_create_room_is_readable_the_moment_it_resolves(
    orch: Orchestrator, agents: RawAgents
) -> None:
    agent = await agents(name="eu1", endpoint_url="wss://eu1.example")
    before = orch.fleet.state_hash
    room = await orch.fleet.create_room("match", room_id="m-42")
    assert room.id == "m-42" and room.instance_id == agent.instance_id
    assert room.endpoint_url == "wss://eu1.example" and room.local is False
    assert room.connections == 0
    assert orch.fleet.get_room("m-42") == room
    assert orch.fleet.find_rooms(type="match") == [room]
    assert orch.fleet.stats.rooms == 1
    assert orch.fleet.state_hash != before
    assert [c.op for c in agent.commands] == ["create"]
    assert agent.commands[0].room_id == "m-42" and agent.commands[0].room_type == "match"
    with pytest.raises(FleetError) as info:
        await orch.fleet.create_room("match", room_id="m-42")
    assert info.value.code is ErrorCode.ROOM_EXISTS
    assert len(agent.commands) == 1


async def test_destroy_room_is_gone_the_moment_it_resolves(
    orch: Orchestrator, agents: RawAgents
) -> None:
    await agents()
    events: list[str] = []
    orch.on("room:destroy", lambda room: events.append(room.id))
    await orch.fleet.create_room("match", room_id="gone")
    await orch.fleet.destroy_room("gone")
    assert orch.fleet.get_room("gone") is None
    assert orch.fleet.stats.rooms == 0
    assert events == ["gone"]
    await asyncio.sleep(0.3)  # the next snapshot (without the room) adds no event
    assert events == ["gone"]
    with pytest.raises(FleetError) as info:
        await orch.fleet.destroy_room("gone")
    assert info.value.code is ErrorCode.ROOM_NOT_FOUND


async def test_twenty_concurrent_creates_of_one_id_yield_exactly_one_room(
    orch: Orchestrator, agents: RawAgents
) -> None:
    for _ in range(3):
        await agents()
    results = await asyncio.gather(
        *(orch.fleet.create_room("match", room_id="same") for _ in range(20)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, FleetError)]
    assert len(ok) == 1 and len(errors) == 19
    assert {e.code for e in errors} == {ErrorCode.ROOM_EXISTS}


async def _serial_order(strategy: str, orch: Orchestrator, n: int) -> list[str]:
    rooms = [
        await orch.fleet.create_room("match", placement=Placement(strategy=strategy))  # type: ignore[arg-type]
        for _ in range(n)
    ]
    return [room.instance_id for room in rooms]


async def test_most_loaded_concurrent_creates_pack_exactly_like_a_serial_run(
    orch: Orchestrator, agents: RawAgents
) -> None:
    fleet = [await agents(name=f"n{i}", max_rooms=16) for i in range(4)]
    for agent in fleet:
        agent.reply_delay = 0  # replies keep flowing; packing must not depend on them
    results = await asyncio.gather(
        *(
            orch.fleet.create_room("match", placement=Placement(strategy="most-loaded"))
            for _ in range(64)
        )
    )
    per_instance: dict[str, int] = {}
    for room in results:
        per_instance[room.instance_id] = per_instance.get(room.instance_id, 0) + 1
    assert sorted(per_instance.values()) == [16, 16, 16, 16]
    # Filled one after another: each instance's rooms form one contiguous run of requests.
    order = [room.instance_id for room in results]
    runs = [order[i] for i in range(len(order)) if i == 0 or order[i] != order[i - 1]]
    assert len(runs) == 4
    with pytest.raises(FleetError) as info:
        await orch.fleet.create_room("match")
    assert info.value.code is ErrorCode.NO_CANDIDATE


async def test_least_loaded_concurrent_creates_spread_evenly(
    orch: Orchestrator, agents: RawAgents
) -> None:
    for i in range(4):
        await agents(name=f"n{i}", max_rooms=16)
    results = await asyncio.gather(*(orch.fleet.create_room("match") for _ in range(64)))
    counts: dict[str, int] = {}
    for room in results:
        counts[room.instance_id] = counts.get(room.instance_id, 0) + 1
    assert sorted(counts.values()) == [16, 16, 16, 16]


async def test_max_rooms_headroom_is_exact_under_immediate_placements(
    orch: Orchestrator, agents: RawAgents
) -> None:
    await agents(max_rooms=5, rooms={f"r{i}": RawRoom("match", 0, "local") for i in range(3)})
    results = await asyncio.gather(
        *(orch.fleet.create_room("match") for _ in range(10)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    codes = [r.code for r in results if isinstance(r, FleetError)]
    assert len(ok) == 2 and codes == [ErrorCode.NO_CANDIDATE] * 8


async def test_drain_and_undrain_round_trip(orch: Orchestrator, agents: RawAgents) -> None:
    agent = await agents()
    await orch.fleet.drain_instance(agent.instance_id)
    assert agent.commands[-1].op == "drain"
    with pytest.raises(FleetError) as info:
        await orch.fleet.create_room("match")
    assert info.value.code is ErrorCode.NO_CANDIDATE
    await wait_for(lambda: orch.fleet.get_instance(agent.instance_id).status == "draining")  # type: ignore[union-attr]
    await wait_for(lambda: agent.polls[-1].status == "draining")
    await orch.fleet.undrain_instance(agent.instance_id)
    assert agent.commands[-1].op == "undrain"
    room = await orch.fleet.create_room("match")
    assert room.instance_id == agent.instance_id
    with pytest.raises(FleetError) as missing:
        await orch.fleet.drain_instance("i_nope")
    assert missing.value.code is ErrorCode.INSTANCE_NOT_FOUND


async def test_command_outcomes(agents: RawAgents) -> None:
    async with (
        running_orchestrator(heartbeat_ms=100, command_timeout_ms=200) as orch,
        RawAgents(orch) as made,
    ):
        agent = await made()
        from rivalis.fleet.v3 import agent_pb2

        async def failing(cmd: agent_pb2.Command) -> agent_pb2.Ack | None:
            if cmd.room_id == "boom":
                return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, error="boom happened")
            if cmd.room_id == "exists":
                return agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=False, exists=True)
            return None  # silence

        agent.on_command = failing
        with pytest.raises(FleetError) as info:
            await orch.fleet.create_room("match", room_id="boom")
        assert info.value.code is ErrorCode.COMMAND_FAILED and "boom happened" in str(info.value)
        assert info.value.http_status == 502
        with pytest.raises(FleetError) as info:
            await orch.fleet.create_room("match", room_id="exists")
        assert info.value.code is ErrorCode.ROOM_EXISTS
        with pytest.raises(FleetError) as info:
            await orch.fleet.create_room("match", room_id="silent")
        assert info.value.code is ErrorCode.COMMAND_TIMEOUT
        assert "cmd_" in str(info.value) and "create" in str(info.value)
        # After the timeout the id stays taken until the agent's next reply.
        with pytest.raises(FleetError) as info:
            await orch.fleet.create_room("match", room_id="silent")
        assert info.value.code is ErrorCode.ROOM_EXISTS
        await wait_for(lambda: not orch.fleet._read.is_taken("silent"))
        assert [c.cmd_id for c in agent.commands][:3] == ["cmd_1", "cmd_2", "cmd_3"]
