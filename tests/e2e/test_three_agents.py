"""An embedded orchestrator and three real FleetAgents over RoomManagers (CONTRACT §6, §7)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from fleet_agent import Capacity, FleetAgent, RoomManager
from fleet_server import ErrorCode, FleetError, Orchestrator, Placement
from tests.support.agents import FleetAgents, define_rooms, fleet_agent
from tests.support.orchestrators import agent_url, new_orchestrator, running_orchestrator
from tests.support.waits import wait_for


def iid(agent: FleetAgent) -> str:
    assert agent.instance_id is not None
    return agent.instance_id


@contextlib.asynccontextmanager
async def fleet_of_three(
    orch: Orchestrator,
) -> AsyncIterator[list[tuple[FleetAgent, RoomManager]]]:
    members: list[tuple[FleetAgent, RoomManager]] = []
    async with FleetAgents(url=agent_url(orch.port), capacity=Capacity(max_rooms=10)) as make:
        for name, region in (("eu1", "eu"), ("eu2", "eu"), ("us1", "us")):
            rooms = define_rooms(RoomManager(), "match", "lobby")
            agent = make(rooms, name=name, labels={"region": region})
            await agent.connect()
            members.append((agent, rooms))
        await wait_for(lambda: orch.fleet.stats.instances == 3)
        yield members


async def test_rooms_are_placed_created_destroyed_and_drained_across_three_agents() -> None:
    async with (
        running_orchestrator(heartbeat_ms=80) as orch,
        fleet_of_three(orch) as members,
    ):
        (eu1, eu1_rooms), (eu2, _), (us1, us1_rooms) = members
        assert orch.fleet.stats.room_types == ("lobby", "match")

        room = await orch.fleet.create_room(
            "match", room_id="m-1", placement=Placement(labels={"region": "us"})
        )
        assert room.instance_id == us1.instance_id
        assert room.endpoint_url == "ws://us1.example:9000"
        assert us1_rooms.get("m-1") is not None
        assert orch.fleet.get_room("m-1") == room

        spread = [await orch.fleet.create_room("lobby") for _ in range(6)]
        assert {r.instance_id for r in spread} == {
            eu1.instance_id,
            eu2.instance_id,
            us1.instance_id,
        }

        await orch.fleet.drain_instance(iid(eu1))
        await wait_for(lambda: eu1.status == "draining")
        placed = [
            await orch.fleet.create_room("match", placement=Placement(labels={"region": "eu"}))
            for _ in range(3)
        ]
        assert {r.instance_id for r in placed} == {eu2.instance_id}
        with pytest.raises(FleetError) as info:
            await orch.fleet.create_room("match", placement=Placement(instance_id=eu1.instance_id))
        assert info.value.code is ErrorCode.INSTANCE_DRAINING
        forced = await orch.fleet.create_room(
            "match", placement=Placement(instance_id=eu1.instance_id, force=True)
        )
        assert forced.instance_id == eu1.instance_id
        await orch.fleet.undrain_instance(iid(eu1))
        await wait_for(lambda: eu1.status == "connected")
        await wait_for(
            lambda: orch.fleet.get_instance(iid(eu1)).status == "active"  # type: ignore[union-attr]
        )

        await orch.fleet.destroy_room("m-1")
        assert us1_rooms.get("m-1") is None
        assert orch.fleet.get_room("m-1") is None

        local = await eu1_rooms.create("lobby", room_id="hand-made")
        local.connections = 4
        await wait_for(lambda: orch.fleet.get_room("hand-made") is not None)
        info_room = orch.fleet.get_room("hand-made")
        assert info_room is not None and info_room.local is True
        await wait_for(lambda: orch.fleet.get_room("hand-made").connections == 4)  # type: ignore[union-attr]
        assert orch.fleet.stats.connections >= 4

        left: list[str] = []
        orch.on("instance:leave", lambda info: left.append(info.id))
        us1_id = us1.instance_id
        await us1.disconnect()
        await wait_for(lambda: left == [us1_id])
        assert orch.fleet.get_instance(us1_id) is None
        assert all(r.instance_id != us1_id for r in orch.fleet.rooms)


async def test_orchestrator_restart_rebuilds_the_read_model_and_keeps_local_flags() -> None:
    orch = new_orchestrator(api=False, heartbeat_ms=80)
    await orch.listen()
    port = orch.port
    rooms = define_rooms(RoomManager(), "match")
    agent = fleet_agent(
        rooms, url=agent_url(port), name="g1", endpoint_url="ws://game.example:9000"
    )
    await agent.connect()
    try:
        await wait_for(lambda: orch.fleet.stats.instances == 1)
        await rooms.create("match", room_id="mine")
        await orch.fleet.create_room("match", room_id="theirs")
        first_id = agent.instance_id
        process_uid = agent.process_uid
        await orch.shutdown()

        orch = new_orchestrator(port=port, api=False, heartbeat_ms=80)
        await orch.listen()
        await wait_for(lambda: orch.fleet.stats.rooms == 2, timeout=10)
        instance = orch.fleet.instances[0]
        assert instance.id != first_id and instance.process_uid == process_uid
        mine, theirs = orch.fleet.get_room("mine"), orch.fleet.get_room("theirs")
        assert mine is not None and mine.local is True
        assert theirs is not None and theirs.local is False
    finally:
        await agent.disconnect()
        await orch.shutdown()
