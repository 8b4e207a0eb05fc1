"""A game-server process for tests: a FleetAgent over a RoomManager whose ``slow`` rooms
take an hour to create. Usage: python -m tests.e2e.agent_process URL KEY NAME"""

from __future__ import annotations

import asyncio
import sys

from fleet_agent import Backoff, FleetAgent, Room, RoomManager


class SlowRoom(Room):
    async def on_create(self) -> None:
        await asyncio.sleep(3600)


async def main(url: str, key: str, name: str) -> None:
    rooms = RoomManager()
    rooms.define("match", Room)
    rooms.define("slow", SlowRoom)
    agent = FleetAgent(
        rooms,
        url=url,
        key=key,
        endpoint_url=f"ws://{name}.example:9000",
        name=name,
        backoff=Backoff(initial_ms=20, max_ms=200),
    )
    await agent.connect()
    print(f"ready {agent.instance_id}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
