"""One game-server agent alone in its process, for measuring what the agent costs.

``python -m tools.agent_proc real --url URL --rooms N`` runs the real
:class:`fleet_agent.FleetAgent` over a :class:`fleet_agent.RoomManager` holding ``N``
rooms (generated ids, connections 0-7); ``python -m tools.agent_proc floor …`` is its
floor: a bare WebSocket client (:class:`tools.loadgen._wsclient.WsClient`) answering
each Poll with a precomputed reply for the same ``N`` rooms (hash-only when the poll
knows its hash, else the full one) and each create with an ack, the least work the same
exchanges could cost.

Once joined (a Hello came) it prints one JSON line (``pid``, ``port`` 0), then answers
``stats`` (rooms, connections, polls, commands), ``churn F`` (the real agent changes
F of its rooms per second, see :class:`Churn`) and ``quit`` (or end of input) on stdin,
one JSON line each, like :mod:`tools.loadgen.target`. ``--metadata-bytes N`` gives each
of the real agent's rooms about N bytes of metadata.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from rivalis.fleet.v3 import agent_pb2

from fleet_agent import FleetAgent, Room, RoomManager, wire
from tools._loops import add_loop_option, run
from tools.loadgen._agent import _parse_poll
from tools.loadgen._frames import AGENT_VERSION, ack_frame, full_tail, hash_tail, state_frame
from tools.loadgen._generator import AGENT_KEY
from tools.loadgen._wsclient import WsClient

ENDPOINT: Final = "ws://127.0.0.1:9000/"
ROOM_TYPE: Final = "match"
_TAG_POLL: Final = 0x12
_TAG_CMD: Final = 0x22
_TAG_HELLO: Final = 0x0A


class Counts:
    def __init__(self, rooms: Callable[[], int], connections: Callable[[], int] = int) -> None:
        self.rooms = rooms
        self.connections = connections
        self.polls = 0
        self.commands = 0

    def report(self) -> dict[str, int]:
        return {
            "rooms": self.rooms(),
            "connections": self.connections(),
            "polls": self.polls,
            "commands": self.commands,
        }


def _metadata(index: int, size: int) -> dict[str, object]:
    """A room's metadata of about ``size`` bytes of canonical JSON."""
    return {"room": index, "pad": "x" * max(0, size - 24)}


class Churn:
    """Changes ``rate`` of the rooms per second (in 10 ticks a second): most get a new
    ``connections``, one in twenty is replaced by a new room (destroy + create)."""

    def __init__(self, manager: RoomManager, metadata_bytes: int) -> None:
        self.manager = manager
        self.metadata_bytes = metadata_bytes
        self.rate = 0.0
        self.changes = 0
        self._random = random.Random(1)
        self._made = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        carry = 0.0
        while True:
            await asyncio.sleep(0.1)
            carry += len(self.manager) * self.rate / 10
            count, carry = int(carry), carry - int(carry)
            if count:
                await self._change(count)

    async def _change(self, count: int) -> None:
        manager, rnd = self.manager, self._random
        ids = rnd.sample(list(manager._rooms), min(count, len(manager)))
        for n, room_id in enumerate(ids):
            room = manager.get(room_id)
            if room is None:
                continue
            if n % 20 == 19:
                await manager.destroy(room_id)
                self._made += 1
                fresh = await manager.create(ROOM_TYPE, f"churn{self._made:08d}")
                if self.metadata_bytes:
                    fresh.metadata = _metadata(self._made, self.metadata_bytes)
            else:
                room.connections = (room.connections + 1 + rnd.randrange(7)) % 8
            self.changes += 1


async def _real(
    url: str, rooms: int, name: str, metadata_bytes: int = 0
) -> tuple[Counts, Callable[[], object], RoomManager]:
    manager = RoomManager()
    manager.define(ROOM_TYPE, Room)
    for index in range(rooms):
        room = await manager.create(ROOM_TYPE)
        room.connections = index % 8
        if metadata_bytes:
            room.metadata = _metadata(index, metadata_bytes)
    agent = FleetAgent(
        manager,
        url=url,
        key=AGENT_KEY,
        endpoint_url=ENDPOINT,
        name=name,
        connect_timeout_ms=60_000,
    )
    await agent.connect()
    counts = Counts(
        lambda: len(manager), lambda: sum(room.connections for room in manager._rooms.values())
    )
    return counts, agent.disconnect, manager


class FloorAgent:
    """The bare client: precomputed replies, a parsed req_id, an ack built per create."""

    def __init__(self, url: str, rooms: int, name: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        rows: list[wire.RoomRow] = [
            (f"r_floor{index:016d}", ROOM_TYPE, index % 8, "local") for index in range(rooms)
        ]
        self.created = 0
        self.counts = Counts(lambda: rooms + self.created)
        digest = wire.snapshot_hash(
            name=name,
            process_uid="p_floor",
            agent_version=AGENT_VERSION,
            protocol_version=wire.PROTOCOL_MAJOR,
            endpoint_url=ENDPOINT,
            labels={},
            max_connections=None,
            max_rooms=None,
            auto_create=True,
            room_types=[ROOM_TYPE],
            rooms=rows,
            status="active",
        )
        self.hash = digest.encode()
        self.hash_tail = hash_tail(digest)
        self.full_tail = full_tail(
            digest=digest,
            name=name,
            process_uid="p_floor",
            endpoint_url=ENDPOINT,
            labels={},
            max_rooms=None,
            room_types=[ROOM_TYPE],
            rooms=rows,
            status="active",
        )
        self.seq = 0
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client = WsClient(
            host=f"{self.host}:{self.port}",
            path=self.path,
            protocols=(wire.SUBPROTOCOL, AGENT_KEY),
            on_open=lambda: None,
            on_message=self.on_message,
            on_close=self.on_close,
        )

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self.client, self.host, self.port)
        await self.joined

    def on_close(self, code: int, http_status: int | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"closed {code} {http_status}"))

    def on_message(self, data: bytes) -> None:
        tag = data[2]
        if tag == _TAG_POLL:
            self.counts.polls += 1
            req_id, known = _parse_poll(data)
            self.seq += 1
            tail = self.hash_tail if known == self.hash else self.full_tail
            self.client.send(state_frame(req_id, self.seq, tail))
        elif tag == _TAG_CMD:
            self.counts.commands += 1
            cmd = agent_pb2.Frame.FromString(data[2:]).cmd
            ack = agent_pb2.Ack(cmd_id=cmd.cmd_id, ok=True)
            if cmd.op == "create":
                self.created += 1
                ack.room.id = cmd.room_id or f"f{self.created}"
                ack.room.type = cmd.room_type
            self.client.send(ack_frame(ack))
        elif tag == _TAG_HELLO and not self.joined.done():
            self.joined.set_result(None)

    async def disconnect(self) -> None:
        self.client.close()
        await asyncio.sleep(0.05)


async def _serve(args: argparse.Namespace) -> None:
    churn: Churn | None = None
    if args.mode == "real":
        counts, leave, manager = await _real(args.url, args.rooms, args.name, args.metadata_bytes)
        churn = Churn(manager, args.metadata_bytes)
    else:
        floor = FloorAgent(args.url, args.rooms, args.name)
        await floor.connect()
        counts, leave = floor.counts, floor.disconnect
    print(json.dumps({"port": 0, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).strip()
            if not line or line == b"quit":
                break
            words = line.decode().split()
            if line == b"stats":
                reply: dict[str, object] = dict(counts.report())
                if churn is not None:
                    reply["changes"] = churn.changes
            elif words[0] == "churn" and len(words) == 2 and churn is not None:
                churn.rate = float(words[1])
                reply = {"churn": churn.rate}
            else:
                reply = {"error": "unknown command"}
            print(json.dumps(reply), flush=True)
    finally:
        result = leave()
        if asyncio.iscoroutine(result):
            await result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.agent_proc")
    parser.add_argument("mode", choices=("real", "floor"))
    parser.add_argument("--url", required=True, help="the orchestrator's agent URL")
    parser.add_argument("--rooms", type=int, default=0, help="rooms held from the start")
    parser.add_argument("--name", default="bench-agent")
    parser.add_argument(
        "--metadata-bytes", type=int, default=0, help="metadata of about N bytes per room (real)"
    )
    add_loop_option(parser)
    args = parser.parse_args(argv)
    run(_serve(args), args.loop)


if __name__ == "__main__":
    main()
