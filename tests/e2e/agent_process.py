"""A game-server process for tests: a FleetAgent over a RoomManager whose ``slow`` rooms
take an hour to create. Usage: python -m tests.e2e.agent_process URL KEY NAME"""

from __future__ import annotations

import asyncio
import sys

from fleet_agent import RoomManager
from tests.support.agents import SlowRoom, define_rooms, fleet_agent


async def main(url: str, key: str, name: str) -> None:
    rooms = define_rooms(RoomManager(), "match", slow=SlowRoom)
    agent = fleet_agent(rooms, url=url, key=key, name=name)
    await agent.connect()
    print(f"ready {agent.instance_id}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
