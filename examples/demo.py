"""A living fleet in one process: an orchestrator, three game servers, rooms placed live.

Run with ``make run`` (or ``python -m examples.demo``); Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal

from fleet_agent import Capacity, FleetAgent, Room, RoomManager
from fleet_server import FleetError, Orchestrator, Placement


def _print_event(kind: str) -> object:
    def show(payload: object) -> None:
        ident = getattr(payload, "id", None) or getattr(payload, "state_hash", "")
        print(f"  event {kind:<15} {ident}")

    return show


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(name)s ▸ %(message)s")
    agent_key = secrets.token_urlsafe(32)
    orch = Orchestrator(host="127.0.0.1", port=0, agent_key=agent_key, api=False, heartbeat_ms=1000)
    await orch.listen()
    print(f"orchestrator listening on 127.0.0.1:{orch.port}")
    for kind in ("instance:join", "instance:leave", "room:create", "room:destroy"):
        orch.on(kind, _print_event(kind))  # type: ignore[arg-type]

    agents: list[FleetAgent] = []
    for name, region in (("eu1", "eu"), ("eu2", "eu"), ("us1", "us")):
        rooms = RoomManager()
        rooms.define("match", Room)
        rooms.define("lobby", Room)
        agent = FleetAgent(
            rooms,
            url=f"ws://127.0.0.1:{orch.port}",
            key=agent_key,
            endpoint_url=f"ws://{name}.example:9000",
            name=name,
            labels={"region": region},
            capacity=Capacity(max_rooms=20),
        )
        await agent.connect()
        agents.append(agent)
    while orch.fleet.stats.instances < 3:
        await asyncio.sleep(0.05)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("placing rooms every second; Ctrl-C to stop")
    n = 0
    try:
        while not stop.is_set():
            n += 1
            region = "eu" if n % 3 else "us"
            try:
                room = await orch.fleet.create_room(
                    "match", placement=Placement(labels={"region": region})
                )
                print(f"created {room.id} on {room.instance_id} ({region})")
                if n % 4 == 0:
                    await orch.fleet.destroy_room(room.id)
                    print(f"destroyed {room.id}")
            except FleetError as exc:
                print(f"create failed: {exc.code}")
            stats = orch.fleet.stats
            print(f"fleet: {stats.instances} instances, {stats.rooms} rooms")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        for agent in agents:
            await agent.disconnect()
        await orch.shutdown()
        print("stopped")


if __name__ == "__main__":
    asyncio.run(main())
