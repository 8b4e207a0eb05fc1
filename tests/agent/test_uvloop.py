"""The agent inside a game server that runs uvloop (whose transports are not
``asyncio.Transport`` subclasses): it joins the real orchestrator, answers polls, creates
and destroys on command, and leaves cleanly."""

from __future__ import annotations

import asyncio

import uvloop

from fleet_agent import RoomManager
from tests.support.agents import define_rooms, fleet_agent
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.waits import wait_for


async def _round_trip() -> None:
    async with running_orchestrator(heartbeat_ms=50) as orch:
        rooms = define_rooms(RoomManager(), "match")
        for i in range(50):
            await rooms.create("match", f"r{i:03d}")
        agent = fleet_agent(rooms, url=agent_url(orch.port))
        async with agent:
            await wait_for(lambda: orch.fleet.stats.rooms == 50, 5)
            created = await orch.fleet.create_room("match", "from-orch")
            assert created.id == "from-orch" and rooms.get("from-orch") is not None
            await orch.fleet.destroy_room("r000")
            assert rooms.get("r000") is None
            await wait_for(lambda: orch.fleet.stats.rooms == 50, 5)
            instance_id = agent.instance_id
        await wait_for(lambda: orch.fleet.get_instance(instance_id or "") is None, 5)


def test_an_agent_on_uvloop_joins_serves_commands_and_leaves() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(_round_trip(), 30))
