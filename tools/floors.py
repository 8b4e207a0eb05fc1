"""Floor servers: a bare aiohttp server doing the least work each benchmarked operation
could do, so every benchmark figure has a same-machine, same-run reference.

``python -m tools.floors [--heartbeat-ms MS] [--sse-rate N]`` listens on an ephemeral
127.0.0.1 port, prints one JSON line with it, then answers ``stats`` / ``reset`` /
``quit`` on stdin (one JSON line each), like :mod:`tools.loadgen.target`.

Routes (no middleware, no auth, no fleet logic):

- ``GET /`` — agent WebSocket: a precomputed Hello, then a precomputed Poll every
  heartbeat and one ``receive()`` of whatever comes back: the bare WebSocket round trip.
  Simulated agents are told whether to answer hash-only or full (the floor never looks).
- ``GET /cmd`` — agent WebSocket: a Hello, then only the acks ``POST /rt`` waits for.
- ``POST /rt`` — an HTTP request that does one WebSocket round trip before answering:
  a create Command to the next ``/cmd`` connection, ``201`` with a small JSON body once
  its Ack arrives.
- ``GET /small`` — a small constant JSON body (the size of a ``/v1/stats`` answer).
- ``GET /blob/{n}`` — ``n`` constant bytes (a large cached read).
- ``GET /events`` — Server-Sent Events: ``--sse-rate`` ``room:create`` frames per second
  to every open stream, each room id stamped with its emission time like the load
  generator's (``x<monotonic µs>-…``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Final

from aiohttp import WSMsgType, web
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from tools._loops import add_loop_option, run

SMALL: Final = (
    b'{"status":"OK","data":{"instances":100,"rooms":5000,"connections":15000,'
    b'"roomTypes":["match"],"stateHash":"0123456789abcdef"}}'
)
CREATED: Final = (
    b'{"status":"OK","data":{"id":"f","type":"match","connections":0,'
    b'"instanceId":"i_floor","endpointUrl":"ws://127.0.0.1:9000","local":false}}'
)
_TICK_S: Final = 0.01


class Floor:
    def __init__(self, heartbeat_ms: int, sse_rate: float) -> None:
        self.interval = heartbeat_ms / 1000.0
        self.sse_rate = sse_rate
        self.hello = wire.encode_frame(
            agent_pb2.Frame(
                hello=agent_pb2.Hello(
                    instance_id="i_floor", protocol_version=3, heartbeat_ms=heartbeat_ms
                )
            )
        )
        self.poll = wire.encode_frame(
            agent_pb2.Frame(poll=agent_pb2.Poll(req_id="poll_1", known_hash="-", status="active"))
        )
        self.counts: Counter[str] = Counter()
        self.links: list[web.WebSocketResponse] = []
        self.pending: dict[bytes, asyncio.Future[None]] = {}
        self.streams: list[web.StreamResponse] = []
        self.blobs: dict[int, bytes] = {}
        self.next_cmd = 0

    def app(self) -> web.Application:
        app = web.Application(handler_args={"access_log": None})
        app.router.add_get("/", self.polled)
        app.router.add_get("/cmd", self.commanded)
        app.router.add_post("/rt", self.round_trip)
        app.router.add_get("/small", self.small)
        app.router.add_get("/blob/{size}", self.blob)
        app.router.add_get("/events", self.events)
        return app

    async def polled(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(wire.SUBPROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            await ws.send_bytes(self.hello)
            due = loop.time()
            while True:
                await ws.send_bytes(self.poll)
                message = await ws.receive()
                if message.type is not WSMsgType.BINARY:
                    break
                self.counts["round_trips"] += 1
                due += self.interval
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    due = loop.time()
        except ConnectionError:
            pass
        return ws

    async def commanded(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(wire.SUBPROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        await ws.send_bytes(self.hello)
        self.links.append(ws)
        try:
            async for message in ws:
                if message.type is not WSMsgType.BINARY:
                    break
                data = message.data
                if data[4] == 0x0A and data[3] < 0x80 and data[5] < 0x80:
                    cmd_id = data[6 : 6 + data[5]]
                else:
                    cmd_id = wire.decode_frame(data).ack.cmd_id.encode()
                waiter = self.pending.pop(cmd_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        finally:
            self.links.remove(ws)
        return ws

    async def round_trip(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        if not self.links:
            return web.Response(status=503)
        self.next_cmd += 1
        n = self.next_cmd
        cmd_id = f"c{n}"
        frame = wire.encode_frame(
            agent_pb2.Frame(
                cmd=agent_pb2.Command(
                    cmd_id=cmd_id, op="create", room_id=f"f{n}", room_type="match"
                )
            )
        )
        waiter = asyncio.get_running_loop().create_future()
        self.pending[cmd_id.encode()] = waiter
        await self.links[n % len(self.links)].send_bytes(frame)
        await waiter
        self.counts["round_trips"] += 1
        return web.Response(status=201, body=CREATED, content_type="application/json")

    async def small(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=SMALL, content_type="application/json")

    async def blob(self, request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        body = self.blobs.get(size)
        if body is None:
            body = self.blobs[size] = b"x" * size
        return web.Response(body=body, content_type="application/json")

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(b": connected\n\n")
        self.streams.append(response)
        try:
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(1.0)
        finally:
            self.streams.remove(response)
        return response

    async def broadcast(self) -> None:
        """``sse_rate`` stamped ``room:create`` frames per second to every stream."""
        made = 0
        owed = 0.0
        while True:
            await asyncio.sleep(_TICK_S)
            owed += self.sse_rate * _TICK_S
            count = int(owed)
            if not count or not self.streams:
                continue
            owed -= count
            stamp = time.monotonic_ns() // 1000
            frames = []
            for _ in range(count):
                made += 1
                frames.append(
                    f'event: room:create\ndata: {{"id":"x{stamp}-f-{made}","type":"match",'
                    f'"connections":1,"instanceId":"i_floor","endpointUrl":'
                    f'"ws://127.0.0.1:9000","local":true}}\n\n'
                )
            chunk = "".join(frames).encode()
            self.counts["events"] += count
            await asyncio.gather(
                *(stream.write(chunk) for stream in list(self.streams)), return_exceptions=True
            )


async def _serve(args: argparse.Namespace) -> None:
    floor = Floor(args.heartbeat_ms, args.sse_rate)
    runner = web.AppRunner(floor.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1]
    broadcaster = asyncio.create_task(floor.broadcast()) if args.sse_rate > 0 else None
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).strip()
            if not line or line == b"quit":
                break
            if line == b"stats":
                reply: dict[str, object] = dict(floor.counts)
            elif line == b"reset":
                floor.counts.clear()
                reply = {}
            else:
                reply = {"error": "unknown command"}
            print(json.dumps(reply), flush=True)
    finally:
        if broadcaster is not None:
            broadcaster.cancel()
        for ws in list(floor.links):
            await ws.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.floors")
    parser.add_argument("--heartbeat-ms", type=int, default=1000)
    parser.add_argument("--sse-rate", type=float, default=0.0, help="SSE events per second")
    add_loop_option(parser)
    args = parser.parse_args(argv)
    from tools.loadgen._worker import raise_fd_limit

    raise_fd_limit()
    run(_serve(args), args.loop)


if __name__ == "__main__":
    main()
