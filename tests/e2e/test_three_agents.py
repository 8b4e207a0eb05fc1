"""An embedded orchestrator and three real FleetAgents over RoomManagers (CONTRACT §6, §7)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from fleet_agent import Backoff, Capacity, FleetAgent, Room, RoomManager
from fleet_server import ErrorCode, FleetError, Orchestrator, Placement

from ..server.raw_agent import ADMIN, KEY, wait_for

FAST = Backoff(initial_ms=20, max_ms=100)


def iid(agent: FleetAgent) -> str:
    assert agent.instance_id is not None
    return agent.instance_id


@contextlib.asynccontextmanager
async def fleet_of_three(
    orch: Orchestrator,
) -> AsyncIterator[list[tuple[FleetAgent, RoomManager]]]:
    members: list[tuple[FleetAgent, RoomManager]] = []
    for name, region in (("eu1", "eu"), ("eu2", "eu"), ("us1", "us")):
        rooms = RoomManager()
        rooms.define("match", Room)
        rooms.define("lobby", Room)
        agent = FleetAgent(
            rooms,
            url=f"ws://127.0.0.1:{orch.port}",
            key=KEY,
            endpoint_url=f"ws://{name}.example:9000",
            name=name,
            labels={"region": region},
            capacity=Capacity(max_rooms=10),
            backoff=FAST,
        )
        await agent.connect()
        members.append((agent, rooms))
    try:
        await wait_for(lambda: orch.fleet.stats.instances == 3)
        yield members
    finally:
        for agent, _ in members:
            await agent.disconnect()


async def test_rooms_are_placed_created_destroyed_and_drained_across_three_agents() -> None:
    async with (
        Orchestrator(
            host="127.0.0.1", port=0, agent_key=KEY, admin_key=ADMIN, api=False, heartbeat_ms=80
        ) as orch,
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
    orch = Orchestrator(
        host="127.0.0.1", port=0, agent_key=KEY, admin_key=ADMIN, api=False, heartbeat_ms=80
    )
    await orch.listen()
    port = orch.port
    rooms = RoomManager()
    rooms.define("match", Room)
    agent = FleetAgent(
        rooms,
        url=f"ws://127.0.0.1:{port}",
        key=KEY,
        endpoint_url="ws://game.example:9000",
        name="g1",
        backoff=FAST,
    )
    await agent.connect()
    try:
        await wait_for(lambda: orch.fleet.stats.instances == 1)
        await rooms.create("match", room_id="mine")
        await orch.fleet.create_room("match", room_id="theirs")
        first_id = agent.instance_id
        process_uid = agent.process_uid
        await orch.shutdown()

        orch = Orchestrator(
            host="127.0.0.1", port=port, agent_key=KEY, admin_key=ADMIN, api=False, heartbeat_ms=80
        )
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
