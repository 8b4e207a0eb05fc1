"""A game-server process for the chaos tests: FleetAgents driven by lines on stdin.

    python -m tests.chaos.agent_host URL[,URL…] KEY NAME [--agents N] [--lag-ms MS]
        [--backoff-ms INITIAL,MAX] [--watch-ms MS]

URL is one orchestrator or a comma list of them (the nodes of a cluster): every agent
dials the list (``FleetAgent(url=[…])``). ``--backoff-ms`` sets the agents' reconnect
backoff (the tests' fast one by default); ``--watch-ms`` how often each agent is looked
at for a rejoin (5 ms by default; hosts of many agents look less often).

Each agent runs over its own :class:`~fleet_agent.RoomManager` (so its own process_uid
and rooms) with room types ``match`` (created at once), ``lag`` (created after
``--lag-ms``) and ``slow`` (creation takes an hour: a command that never acks).

Every line on stdout is one event, flushed at once::

    joined <slot> <instance_id> <process_uid> <monotonic s> <url>   (also after each reconnect)
    left <slot>
    creating <room_id>   (a ``lag`` room's creation began)
    local <slot> <room_id>
    rooms <json: {process_uid: [room ids]}>

Commands on stdin: ``join`` (one more agent), ``leave <slot>`` (disconnect for good; its
rooms go with it), ``local <slot> <room_id>`` (a room made on the game server itself),
``dump`` (every agent's rooms). The process ends when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

from fleet_agent import Backoff, FleetAgent, Room, RoomManager
from tests.support.agents import FAST, SlowRoom, define_rooms, fleet_agent


def lag_room(lag_s: float) -> type[Room]:
    class LagRoom(Room):
        async def on_create(self) -> None:
            say("creating", self.id)
            await asyncio.sleep(lag_s)

    return LagRoom


def say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


class Host:
    def __init__(
        self,
        urls: list[str],
        key: str,
        name: str,
        lag_s: float,
        backoff: Backoff,
        watch_s: float,
    ) -> None:
        self.urls = urls
        self.watch_s = watch_s
        self.key = key
        self.name = name
        self.lag_s = lag_s
        self.backoff = backoff
        self.agents: dict[int, tuple[FleetAgent, RoomManager]] = {}
        self.watchers: dict[int, asyncio.Task[None]] = {}
        self._next = 0

    async def join(self) -> None:
        slot = self._next
        self._next += 1
        rooms = define_rooms(RoomManager(), "match", lag=lag_room(self.lag_s), slow=SlowRoom)
        agent = fleet_agent(
            rooms,
            url=self.urls[0] if len(self.urls) == 1 else self.urls,
            key=self.key,
            name=f"{self.name}-{slot}",
            backoff=self.backoff,
        )
        self.agents[slot] = (agent, rooms)
        await agent.connect()
        self.watchers[slot] = asyncio.create_task(self._watch(slot, agent))

    async def _watch(self, slot: int, agent: FleetAgent) -> None:
        """Report every (re)join: the instance id an agent holds changed."""
        seen: str | None = None
        while True:
            current = agent.instance_id
            if current is not None and current != seen:
                seen = current
                at = f"{time.monotonic():.6f}"
                say("joined", slot, current, agent.process_uid, at, agent.url)
            await asyncio.sleep(self.watch_s)

    async def leave(self, slot: int) -> None:
        entry = self.agents.pop(slot, None)
        watcher = self.watchers.pop(slot, None)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if entry is not None:
            await entry[0].disconnect()
        say("left", slot)

    async def local(self, slot: int, room_id: str) -> None:
        _, rooms = self.agents[slot]
        await rooms.create("match", room_id=room_id)
        say("local", slot, room_id)

    def dump(self) -> None:
        rooms = {
            agent.process_uid: sorted(room.id for room in manager.rooms())
            for agent, manager in self.agents.values()
        }
        say("rooms", json.dumps(rooms, separators=(",", ":")))

    async def serve(self, stdin: asyncio.StreamReader) -> None:
        while line := await stdin.readline():
            words = line.decode().split()
            if not words:
                continue
            command, args = words[0], words[1:]
            if command == "join":
                await self.join()
            elif command == "leave":
                await self.leave(int(args[0]))
            elif command == "local":
                await self.local(int(args[0]), args[1])
            elif command == "dump":
                self.dump()

    async def close(self) -> None:
        for slot in list(self.agents):
            await self.leave(slot)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("name")
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--lag-ms", type=float, default=500.0)
    parser.add_argument("--backoff-ms", default=f"{FAST.initial_ms:g},{FAST.max_ms:g}")
    parser.add_argument("--watch-ms", type=float, default=5.0)
    args = parser.parse_args()
    initial_ms, max_ms = (float(part) for part in args.backoff_ms.split(","))
    urls = [url for url in args.url.split(",") if url]
    backoff = Backoff(initial_ms=initial_ms, max_ms=max_ms)
    host = Host(urls, args.key, args.name, args.lag_ms / 1000.0, backoff, args.watch_ms / 1000)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await asyncio.gather(*(host.join() for _ in range(args.agents)))
    try:
        await host.serve(stdin)
    finally:
        await host.close()


if __name__ == "__main__":
    asyncio.run(main())
