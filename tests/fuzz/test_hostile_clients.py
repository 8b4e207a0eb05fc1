"""Slow and abusive clients: the orchestrator stays responsive for everyone else.

Each test runs one abuse against a live orchestrator while a probe asks ``GET
/v1/stats`` (admin key, a new connection each time) and ``GET /healthz`` every 50 ms;
every probe must answer 200 within :data:`PROBE_BOUND_S`. The abuses: a slowloris
(headers trickled forever), WebSocket agents that stop reading, 1,000 failed
authentications from one IP, agent frames of 4 MiB + 1 and 16 MiB + 1, and an SSE
consumer that never reads. The measured figures are printed (``pytest -s``) and kept
in ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import statistics
import struct
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import aiohttp
import pytest
from rivalis.fleet.v3 import agent_pb2

from fleet_agent import wire
from fleet_server import ErrorCode, FleetError, Orchestrator, Placement
from fleet_server._orchestrator import HEADER_TIMEOUT_S
from gateway._sse import BUFFER_BYTES
from tests.support.clients import bearer
from tests.support.figures import report
from tests.support.keys import ADMIN, KEY
from tests.support.orchestrators import agent_url, running_orchestrator
from tests.support.raw_agent import RawAgent, RawRoom
from tests.support.waits import wait_for

PROBE_BOUND_S = 2.0  # generous; the measured figures are in the milliseconds
ATTACKER_IP = "127.0.0.2"


class Probe:
    """A well-behaved client measuring how long the orchestrator takes to answer it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True)  # a fresh connection per probe
        timeout = aiohttp.ClientTimeout(total=PROBE_BOUND_S * 5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while not self._stop.is_set():
                for path, headers in (
                    ("/v1/stats", bearer()),
                    ("/healthz", {}),
                ):
                    started = time.perf_counter()
                    try:
                        async with session.get(
                            f"http://127.0.0.1:{self.port}{path}", headers=headers
                        ) as response:
                            await response.read()
                            status = response.status
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.failures.append(f"{path}: {type(exc).__name__}")
                        continue
                    self.latencies.append(time.perf_counter() - started)
                    if status != 200:
                        self.failures.append(f"{path}: {status}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> dict[str, Any]:
        self._stop.set()
        assert self._task is not None
        await self._task
        assert not self.failures, self.failures[:10]
        assert self.latencies
        worst = max(self.latencies)
        assert worst < PROBE_BOUND_S, worst
        ordered = sorted(self.latencies)
        return {
            "probes": len(ordered),
            "probe_p50_ms": statistics.median(ordered) * 1000,
            "probe_p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
            "probe_max_ms": worst * 1000,
        }


@contextlib.asynccontextmanager
async def probed(**options: Any) -> AsyncIterator[tuple[Orchestrator, dict[str, Any]]]:
    """A running orchestrator (API on) with a probe; the probe's figures on exit."""
    options.setdefault("api", True)
    async with running_orchestrator(**options) as orch:
        probe = Probe(orch.port)
        probe.start()
        figures: dict[str, Any] = {}
        try:
            yield orch, figures
        finally:
            figures.update(await probe.stop())


# --- raw sockets ------------------------------------------------------------------


async def upgrade(port: int, protocols: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", size)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def mute_agent(port: int, name: str) -> tuple[str, asyncio.StreamWriter]:
    """An agent that joins (answers its first poll) and then never reads again."""
    reader, writer = await upgrade(port, f"{wire.SUBPROTOCOL}, {KEY}")
    hello = wire.decode_frame((await read_ws_frame(reader))[1]).hello
    poll = wire.decode_frame((await read_ws_frame(reader))[1]).poll
    state = agent_pb2.State(
        req_id=poll.req_id,
        full=True,
        seq=1,
        hash="0" * 16,
        name=name,
        process_uid="p_" + os.urandom(12).hex(),
        agent_version="1.0.0",
        protocol_version=3,
        endpoint_url=f"ws://{name}.example:9000",
        auto_create=True,
        room_types=["match"],
        status="active",
    )
    writer.write(ws_frame(wire.encode_frame(agent_pb2.Frame(state=state))))
    await writer.drain()
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()  # from now on not one byte is read
    return hello.instance_id, writer


# --- the abuses ---------------------------------------------------------------------


async def test_slowloris_connections_are_cut_at_the_header_timeout_and_probes_keep_answering() -> (
    None
):
    connections = 200
    async with probed() as (orch, figures):
        opened = time.monotonic()
        streams = [
            await asyncio.open_connection("127.0.0.1", orch.port) for _ in range(connections)
        ]
        for _, writer in streams:
            writer.write(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")
        closed_at: list[float] = []

        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            deadline = opened + HEADER_TIMEOUT_S + 5
            while time.monotonic() < deadline:
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X-Slow: 1\r\n")
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                        closed_at.append(time.monotonic() - opened)
                        break
            writer.close()

        await asyncio.gather(*(trickle(r, w) for r, w in streams))
    assert len(closed_at) == connections, "some slowloris connections were never cut"
    assert min(closed_at) >= HEADER_TIMEOUT_S - 1 and max(closed_at) <= HEADER_TIMEOUT_S + 3
    report(
        "slowloris",
        connections=connections,
        cut_after_s=f"{min(closed_at):.1f}-{max(closed_at):.1f}",
        **figures,
    )


async def test_agents_that_stop_reading_are_evicted_and_their_commands_fail_at_once() -> None:
    heartbeat_ms = 300
    async with probed(heartbeat_ms=heartbeat_ms, command_timeout_ms=60_000) as (orch, figures):
        healthy = RawAgent(agent_url(orch.port), name="healthy")
        await healthy.connect()
        try:
            left: dict[str, float] = {}

            def on_leave(info: Any) -> None:
                left.setdefault(info.id, time.monotonic())

            orch.on("instance:leave", on_leave)
            mutes = [await mute_agent(orch.port, f"mute{i}") for i in range(20)]
            await wait_for(lambda: orch.fleet.stats.instances == 21, 5)
            target = mutes[0][0]
            creates = [
                asyncio.ensure_future(
                    orch.fleet.create_room("match", f"m-{i}", Placement(instance_id=target))
                )
                for i in range(32)
            ]
            await asyncio.sleep(0.05)
            with pytest.raises(FleetError) as busy:
                await orch.fleet.create_room("match", "m-33", Placement(instance_id=target))
            assert busy.value.code is ErrorCode.INSTANCE_BUSY
            muted = time.monotonic()
            await wait_for(lambda: len(left) == 20, 5 * heartbeat_ms / 1000)
            results = await asyncio.gather(*creates, return_exceptions=True)
            assert {type(r) for r in results} == {FleetError}
            assert {r.code for r in results if isinstance(r, FleetError)} == {
                ErrorCode.INSTANCE_DISCONNECTED
            }
            evicted_s = max(left.values()) - muted
            assert healthy.instance_id not in left and orch.fleet.stats.instances == 1
            # The close handshake the mute peers never answer is bounded too.
            await wait_for(lambda: len(orch.transport.links) == 1, 15)
            released_s = time.monotonic() - muted
            assert not orch.fleet._reserved
            for _, writer in mutes:
                writer.transport.abort()
        finally:
            await healthy.close()
    report(
        "websocket agents that stop reading",
        agents=20,
        heartbeat_ms=heartbeat_ms,
        evicted_within_ms=evicted_s * 1000,
        sockets_released_within_s=released_s,
        **figures,
    )


async def test_a_thousand_failed_auths_from_one_ip_are_throttled_while_others_are_served() -> None:
    async with probed() as (orch, figures):
        connector = aiohttp.TCPConnector(local_addr=(ATTACKER_IP, 0), limit=20)
        statuses: dict[int, int] = {}
        started = time.monotonic()
        async with aiohttp.ClientSession(connector=connector) as attacker:

            async def attempt(i: int) -> None:
                path = "/v1/stats" if i % 2 else "/v1/rooms"
                async with attacker.get(
                    f"http://127.0.0.1:{orch.port}{path}",
                    headers={"Authorization": f"Bearer wrong-{i}"},
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

            await asyncio.gather(*(attempt(i) for i in range(1000)))
            elapsed = time.monotonic() - started
            # Blocked now, even with the right key, over REST and the agent handshake.
            async with attacker.get(
                f"http://127.0.0.1:{orch.port}/v1/stats",
                headers=bearer(),
            ) as response:
                assert response.status == 429
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await attacker.ws_connect(agent_url(orch.port), protocols=(wire.SUBPROTOCOL, KEY))
            assert refused.value.status == 429
        assert statuses == {401: 10, 429: 990}
        assert len(orch._auth.throttle) == 1
        # Everyone else is served: a probe from 127.0.0.1 with the admin key, and an agent.
        agent = RawAgent(agent_url(orch.port))
        await agent.connect()
        await agent.close()
    report(
        "1,000 failed auths from one IP",
        attempts_per_s=1000 / elapsed,
        statuses=statuses,
        buckets=1,
        **figures,
    )


async def test_agent_frames_over_four_mib_are_kicked_and_the_fleet_carries_on() -> None:
    async with probed(heartbeat_ms=200) as (orch, figures):
        url = agent_url(orch.port)
        healthy = RawAgent(url, name="healthy", rooms={"keep": RawRoom("match", 1)})
        await healthy.connect()
        await wait_for(lambda: orch.fleet.get_room("keep") is not None)
        outcomes: dict[str, Any] = {}
        try:
            for label, size in (
                ("4MiB", wire.MAX_FRAME_BYTES),
                ("4MiB+1", wire.MAX_FRAME_BYTES + 1),
                ("16MiB+1", 4 * wire.MAX_FRAME_BYTES + 1),
            ):
                attacker = RawAgent(url, name=f"big-{label}")
                await attacker.connect()
                await wait_for(partial(orch.fleet.get_instance, attacker.instance_id))
                junk = wire.HEADER + b"\xff" * (size - 2)  # never a valid Frame
                sent = time.monotonic()
                with contextlib.suppress(ConnectionError):  # it may be cut off mid-send
                    await attacker.send_bytes(junk)
                code = await attacker.wait_closed(10)
                outcomes[label] = (code, round((time.monotonic() - sent) * 1000, 1))
                assert orch.fleet.get_instance(attacker.instance_id) is None
                await attacker.close()
            first = healthy.instance_id
            polls = len(healthy.polls)
            await wait_for(lambda: len(healthy.polls) > polls + 2)  # still polled, same id
            assert orch.fleet.get_instance(first) is not None and not healthy.closed.is_set()
        finally:
            await healthy.close()
    assert outcomes["4MiB"][0] == 4002  # in size, but undecodable
    assert outcomes["4MiB+1"][0] == 4004
    assert outcomes["16MiB+1"][0] == 1009  # past aiohttp's own cap: its "message too big"
    report("oversize agent frames", close_code_and_ms=outcomes, **figures)


async def test_an_sse_consumer_that_never_reads_is_cut_off_at_its_byte_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with probed(heartbeat_ms=100) as (orch, figures):
        streams = orch._end_streams.__self__  # type: ignore[union-attr]
        _, writer = await asyncio.open_connection("127.0.0.1", orch.port)
        writer.write(
            f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n".encode()
        )
        transport = writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()  # not one byte is read, not even the headers
        await wait_for(lambda: len(streams) == 1)
        stuck = next(iter(streams._streams))

        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{orch.port}/v1/events",
                headers=bearer(),
            ) as live,
        ):  # a consumer that reads, alongside
            assert (await live.content.readline()) == b": connected\n"
            leaves = LineCounter(live, b"event: instance:leave")
            # Big events: an agent with 2,000 rooms joins and leaves, again and again.
            rooms = {f"room-{i:04d}": RawRoom("match", i % 7) for i in range(2000)}
            cycles = backlog = 0
            while not stuck.ended:
                assert cycles < 40, "the stuck consumer was never cut off"
                cycles += 1
                agent = RawAgent(agent_url(orch.port), name="big", rooms=rooms)
                await agent.connect()
                await wait_for(partial(orch.fleet.get_instance, agent.instance_id))
                await agent.close()
                await wait_for(lambda: orch.fleet.stats.instances == 0)
                backlog = max(backlog, stuck.buffered)
            await wait_for(lambda: len(streams) == 1, 5)  # only the reader is left
            for _ in range(2):  # it goes on receiving
                agent = RawAgent(agent_url(orch.port), name="after", rooms=rooms)
                await agent.connect()
                await wait_for(partial(orch.fleet.get_instance, agent.instance_id))
                await agent.close()
            await wait_for(lambda: leaves.count == cycles + 2, 10)  # every one
            await leaves.close()
        writer.transport.abort()
        assert any("consumer too slow" in r.getMessage() for r in caplog.records)
    report(
        "sse consumer that never reads",
        cycles_until_cut=cycles,
        backlog_at_cut_mib=backlog / 2**20,
        budget_mib=BUFFER_BYTES / 2**20,
        reader_saw_leaves=leaves.count,
        **figures,
    )


class LineCounter:
    """Counts the lines of a stream that start with ``marker``."""

    def __init__(self, response: aiohttp.ClientResponse, marker: bytes) -> None:
        self.count = 0
        self._task = asyncio.ensure_future(self._run(response, marker))

    async def _run(self, response: aiohttp.ClientResponse, marker: bytes) -> None:
        while line := await response.content.readline():
            if line.startswith(marker):
                self.count += 1

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
