"""Event-stream consumers in their own process: SSE (raw HTTP/1.0) and gRPC WatchEvents
(raw HTTP/2, :mod:`._h2watch`; with ``grpc_aio``, grpc.aio's client, which costs the
consumer 100+ µs of CPU per message).

Each stream counts events by type; ``room:create`` events whose room id carries a
load-generator stamp (``x<monotonic µs>-…``) add their delivery delay to one histogram
(CLOCK_MONOTONIC is system-wide, so stamps from another process compare directly).
Controlled over a pipe like the load-generator workers: ``status``, ``report``,
``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final, cast

import grpc
from rivalis.fleet.v1 import control_pb2 as pb
from rivalis.fleet.v1 import control_pb2_grpc as pb_grpc

from .._loops import run
from ._h2watch import H2Watch
from ._histogram import Histogram

__all__ = ["CONNECTED", "StreamsConfig", "account", "streams_main"]

CONNECTED: Final = b": connected\n\n"

_FRAME: Final = re.compile(rb'\n\nevent: ([^\n]+)\ndata: (?:\{"id":"x(\d+)-)?')
_CREATE: Final = b"room:create"


def account(block: bytes, counts: Counter[str], latency: Histogram) -> None:
    """Count the events of ``block`` by type and time each stamped ``room:create``.

    ``block`` holds whole SSE frames, each after a blank line (the one ending the frame
    before it; JSON data holds no raw newline): one regex pass finds every frame's type
    and stamp, and frames sharing both (the creates of one agent reply) are added once,
    with their count."""
    found = _FRAME.findall(block)
    if not found:
        return
    now = time.monotonic_ns() // 1000
    for (kind, stamp), n in Counter(found).items():
        counts[kind.decode()] += n
        if stamp and kind == _CREATE:
            latency.add((now - int(stamp)) / 1e6, n)


@dataclass(frozen=True)
class StreamsConfig:
    host: str
    port: int
    sse: int
    path: str = "/v1/events"
    grpc_port: int | None = None
    grpc: int = 0
    admin_key: str = ""
    grpc_aio: bool = False  # read WatchEvents with grpc.aio's client, not raw HTTP/2


class _SseStream(asyncio.Protocol):
    def __init__(self, request: bytes, latency: Histogram) -> None:
        self._request = request
        self.latency = latency
        self.counts: Counter[str] = Counter()
        self.status = 0
        self.open = False
        self.ended = False
        self._head = True
        self._buf = bytearray()
        self._rest = b"\n\n"
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's too
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self._head:
            buf = self._buf
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(buf[9:12])
            data = bytes(buf[end + 4 :])
            self._buf = bytearray()
            self._head = False
            if self.status != 200:
                if self.transport is not None:
                    self.transport.abort()
                return
        # ``_rest`` is the unfinished frame, after the blank line that ended the one before
        block = self._rest + data
        if not self.open and CONNECTED in block:
            self.open = True
        cut = block.rfind(b"\n\n")
        if cut < 0:
            self._rest = block
            return
        self._rest = block[cut:]
        account(block[:cut], self.counts, self.latency)


class _GrpcStream:
    def __init__(self, latency: Histogram) -> None:
        self.latency = latency
        self.counts: Counter[str] = Counter()
        self.open = False
        self.ended = False
        self.error = ""

    async def run(self, stub: pb_grpc.FleetControlAsyncStub, key: str) -> None:
        call = stub.WatchEvents(
            pb.WatchEventsRequest(), metadata=(("authorization", f"Bearer {key}"),)
        )
        try:
            await call.initial_metadata()
            self.open = True
            async for event in call:
                kind = event.type
                self.counts[kind] += 1
                if kind == "room:create":
                    room_id = event.room.id
                    if room_id.startswith("x"):
                        stamp = int(room_id[1 : room_id.index("-")])
                        self.latency.add((time.monotonic_ns() // 1000 - stamp) / 1e6)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                self.error = exc.code().name
        finally:
            self.ended = True


def _factory(stream: _SseStream) -> Callable[[], _SseStream]:
    return lambda: stream


def _h2_factory(watch: H2Watch) -> Callable[[], H2Watch]:
    return lambda: watch


def streams_main(conn: Connection, config: StreamsConfig) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        run(_Consumers(conn, config).run(), "uvloop")


class _Consumers:
    def __init__(self, conn: Connection, config: StreamsConfig) -> None:
        self._conn = conn
        self._config = config
        self.latency = Histogram()
        self.sse: list[_SseStream] = []
        self.grpc: list[_GrpcStream | H2Watch] = []

    async def run(self) -> None:
        config = self._config
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        loop.add_reader(self._conn.fileno(), self._on_command)
        request = (
            f"GET {config.path} HTTP/1.0\r\nHost: {config.host}\r\n"
            f"Authorization: Bearer {config.admin_key}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        for _ in range(config.sse):
            stream = _SseStream(request, self.latency)
            self.sse.append(stream)
            await loop.create_connection(_factory(stream), config.host, config.port)
        tasks: list[asyncio.Task[None]] = []
        channel: grpc.aio.Channel | None = None
        if config.grpc and config.grpc_port is not None and not config.grpc_aio:
            authority = f"{config.host}:{config.grpc_port}"
            for _ in range(config.grpc):
                watch = H2Watch(authority, config.admin_key, self.latency)
                self.grpc.append(watch)
                await loop.create_connection(_h2_factory(watch), config.host, config.grpc_port)
        elif config.grpc and config.grpc_port is not None:
            channel = grpc.aio.insecure_channel(f"{config.host}:{config.grpc_port}")
            stub: pb_grpc.FleetControlAsyncStub = pb_grpc.FleetControlStub(channel)
            for _ in range(config.grpc):
                stream_g = _GrpcStream(self.latency)
                self.grpc.append(stream_g)
                tasks.append(asyncio.create_task(stream_g.run(stub, config.admin_key)))
        await self._stop.wait()
        for sse in self.sse:
            if sse.transport is not None:
                sse.transport.abort()
        for watch_stream in self.grpc:
            if isinstance(watch_stream, H2Watch):
                watch_stream.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if channel is not None:
            await channel.close()
        loop.remove_reader(self._conn.fileno())

    def _on_command(self) -> None:
        try:
            message: dict[str, Any] = self._conn.recv()
        except (EOFError, OSError):
            self._stop.set()
            return
        op = message.get("op")
        if op == "status":
            self._conn.send(
                {
                    "open": sum(s.open for s in self.sse) + sum(g.open for g in self.grpc),
                    "ended": sum(s.ended for s in self.sse) + sum(g.ended for g in self.grpc),
                }
            )
        elif op == "report":
            self._conn.send(self._report())
            if message.get("reset"):
                self.latency.clear()
                for counts in [s.counts for s in self.sse] + [g.counts for g in self.grpc]:
                    counts.clear()
        elif op == "stop":
            self._conn.send(self._report())
            self._stop.set()

    def _report(self) -> dict[str, Any]:
        return {
            "sse": [dict(s.counts) for s in self.sse],
            "grpc": [dict(g.counts) for g in self.grpc],
            "ended": sum(s.ended for s in self.sse) + sum(g.ended for g in self.grpc),
            "errors": [g.error for g in self.grpc if g.error]
            + [f"sse HTTP {s.status}" for s in self.sse if s.status not in (0, 200)],
            "latency": self.latency.to_state(),
            "cpu_s": sum(os.times()[:2]),
        }
