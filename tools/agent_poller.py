"""A stand-in orchestrator that polls one agent back to back, to time the agent's replies.

``python -m tools.agent_poller`` listens on an ephemeral 127.0.0.1 port for agents (any
key), sends each one a Hello with heartbeat 0 (the agent's liveness check off: polls
come only in bursts) that accepts replies in parts, prints one JSON line with its port,
then answers on stdin:

- ``polls N hash``: N Polls in a row to the first agent, each sent once the previous
  reply arrived, carrying the hash of the agent's current snapshot: every reply is
  hash-only while nothing changes. The hash is learnt by one Poll without a hash, not
  counted, in the first hash burst on a connection (or after a burst met a full reply),
  and kept: a later burst's window holds no full reply of a big agent;
- ``polls N full``: N Polls without a hash: every reply is a full snapshot;
- ``quit`` or end of input: stop.

Each burst answers ``{"polls", "full", "bytes", "seconds"}`` (``full``: full replies
among them, ``bytes``: the last reply's size). The Polls are the orchestrator's own
bytes (:func:`fleet_server._link.poll_message`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Final

from aiohttp import WSMsgType, web
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server._link import poll_message
from tools._loops import run

_HELLO: Final = wire.encode_frame(
    agent_pb2.Frame(
        hello=agent_pb2.Hello(
            instance_id="i_poller", protocol_version=3, heartbeat_ms=0, features=("parts",)
        )
    )
)


class Poller:
    def __init__(self) -> None:
        self.links: list[web.WebSocketResponse] = []
        self.done = asyncio.Event()
        self.sent = 0
        self.known: dict[web.WebSocketResponse, str] = {}  # the hash each agent replied with

    async def agent(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(wire.SUBPROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        await ws.send_bytes(_HELLO)
        self.links.append(ws)
        try:
            await self.done.wait()
        finally:
            self.links.remove(ws)
            self.known.pop(ws, None)
        return ws

    async def _ask(self, ws: web.WebSocketResponse, known: str | None) -> agent_pb2.State:
        self.sent += 1
        await ws.send_bytes(poll_message(f"poll_{self.sent}", known, "active"))
        data = await _receive(ws)
        state = wire.decode_frame(data).state
        for _ in range(1, state.parts):  # the rest of a reply in parts
            await _receive(ws)
        return state

    async def burst(self, count: int, mode: str) -> dict[str, object]:
        deadline = time.monotonic() + 30
        while not self.links:
            if time.monotonic() > deadline:
                return {"error": "no agent"}
            await asyncio.sleep(0.05)
        ws = self.links[0]
        known = None
        if mode == "hash":
            known = self.known.get(ws)
            if known is None:
                known = self.known[ws] = (await self._ask(ws, None)).hash
        full = 0
        size = 0
        started = time.perf_counter()
        try:
            for _ in range(count):
                self.sent += 1
                await ws.send_bytes(poll_message(f"poll_{self.sent}", known, "active"))
                data = await _receive(ws)
                size = len(data)
                if size > 64:  # a hash-only State is ~40 bytes
                    full += 1
                    self.known.pop(ws, None)  # the next hash burst learns it again
                    parts = wire.decode_frame(data).state.parts if known is None else 0
                    for _ in range(1, parts):
                        size += len(await _receive(ws))
        except ConnectionError as exc:
            return {"error": str(exc)}
        seconds = time.perf_counter() - started
        return {"polls": count, "full": full, "bytes": size, "seconds": seconds}


async def _receive(ws: web.WebSocketResponse) -> bytes:
    message = await ws.receive()
    if message.type is not WSMsgType.BINARY:
        raise ConnectionError(f"agent link ended: {message.type}")
    data: bytes = message.data
    return data


async def _serve() -> None:
    poller = Poller()
    app = web.Application(handler_args={"access_log": None})
    app.router.add_get("/", poller.agent)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    print(json.dumps({"port": sockets[0].getsockname()[1], "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            words = (await reader.readline()).decode().split()
            if not words or words[0] == "quit":
                break
            if words[0] == "polls" and len(words) == 3:
                reply = await poller.burst(int(words[1]), words[2])
            else:
                reply = {"error": "unknown command"}
            print(json.dumps(reply), flush=True)
    finally:
        poller.done.set()
        await runner.cleanup()


def main() -> None:
    run(_serve(), "uvloop")


if __name__ == "__main__":
    main()
