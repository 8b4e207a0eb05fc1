"""GET /v1/events: frames, pings, query-key auth, the stream cap, shutdown (SPEC §10 "SSE")."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from typing import Any

import aiohttp
import pytest

from fleet_server import Orchestrator, RoomInfo
from tests.support.keys import ADMIN, KEY
from tests.support.raw_agent import RawRoom
from tests.support.waits import wait_for

from .support import Gateway, SseReader, running_gateway


async def open_stream(gw: Gateway) -> aiohttp.ClientResponse:
    """An authenticated ``GET /v1/events``; the caller closes it."""
    return await gw.session.get(gw.url("/v1/events"), headers=gw.auth())


async def test_a_stream_opens_with_connected_and_carries_every_event_in_rest_shape(
    gw: Gateway,
) -> None:
    async with await open_stream(gw) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["Cache-Control"] == "no-cache, no-transform"
        assert stream.headers["X-Accel-Buffering"] == "no"
        assert "ETag" not in stream.headers
        events = SseReader(stream)
        assert await events.frame() == [": connected"]

        agent = await gw.agent(name="eu1", rooms={"r1": RawRoom("match", 2)})
        joined = await events.event("instance:join")
        assert joined["id"] == agent.instance_id and joined["processUid"] == agent.process_uid
        assert joined["rooms"][0]["instanceId"] == agent.instance_id
        created = await events.event("room:create")
        assert created == (await gw.get("/v1/rooms/r1")).data
        synced = await events.event("sync")
        assert synced == (await gw.get("/v1/stats")).data

        assert (await gw.post("/v1/rooms", json={"type": "match", "roomId": "m1"})).status == 201
        assert (await events.event("room:create"))["id"] == "m1"
        assert (await gw.delete("/v1/rooms/m1")).status == 200
        assert (await events.event("room:destroy"))["id"] == "m1"
        await agent.close()
        left = await events.event("instance:leave")
        assert left["id"] == agent.instance_id


async def test_frames_are_compact_event_and_data_lines(gw: Gateway) -> None:
    async with await open_stream(gw) as stream:
        events = SseReader(stream)
        await events.frame()
        agent = await gw.agent()
        lines = await events.frame()
        assert lines[0] == "event: instance:join"
        assert lines[1].startswith('data: {"id":"' + agent.instance_id + '","name":')
        assert ", " not in lines[1] and not any(line.startswith("id:") for line in lines)


async def test_pings_arrive_at_the_configured_cadence() -> None:
    async with running_gateway(sse_ping_ms=100) as gw, await open_stream(gw) as stream:
        events = SseReader(stream)
        assert await events.frame() == [": connected"]
        stamps: list[float] = []
        while len(stamps) < 3:
            frame = await events.frame(timeout=2)
            if frame == [": ping"]:
                stamps.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(0.05 < gap < 0.6 for gap in gaps), gaps


async def test_the_defaults_are_15_s_pings_and_100_streams(gw: Gateway) -> None:
    defaults = Orchestrator(agent_key=KEY, admin_key=ADMIN)
    assert (defaults.options.sse_ping_ms, defaults.options.sse_stream_limit) == (15_000, 100)
    async with await open_stream(gw) as stream:
        events = SseReader(stream)
        await events.frame()
        with pytest.raises(TimeoutError):
            await events.frame(timeout=0.3)


async def test_query_key_auth_is_consulted_only_when_enabled(gw: Gateway) -> None:
    refused = await gw.get(f"/v1/events?key={ADMIN}", key=None)
    assert (refused.status, refused.cause) == (401, "UNAUTHORIZED")
    async with running_gateway(sse_query_auth=True) as on:
        reply = await on.session.get(on.url(f"/v1/events?key={ADMIN}"))
        async with reply as stream:
            assert stream.status == 200
            assert await SseReader(stream).frame() == [": connected"]
        for key in ("wrong-key-0123456789abcdef", KEY):
            bad = await on.get(f"/v1/events?key={key}", key=None)
            assert (bad.status, bad.cause) == (401, "UNAUTHORIZED")
        other_route = await on.get(f"/v1/stats?key={ADMIN}", key=None)
        assert other_route.cause == "UNAUTHORIZED"


async def test_a_bad_header_and_a_bad_query_key_charge_the_throttle_once() -> None:
    async with running_gateway(sse_query_auth=True, auth_failure_limit=2) as gw:
        statuses = [
            (
                await gw.get("/v1/events?key=bad-query-0123456789", key="bad-header-0123456789")
            ).status
            for _ in range(3)
        ]
        assert statuses == [401, 401, 429]


async def test_the_stream_cap_refuses_one_more_and_a_closed_stream_frees_its_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.http")
    async with running_gateway(sse_stream_limit=2) as gw:
        first = await open_stream(gw)
        second = await open_stream(gw)
        assert (first.status, second.status) == (200, 200)
        await SseReader(second).frame()
        third = await gw.get("/v1/events")
        assert (third.status, third.cause) == (429, "SSE_LIMIT")
        assert any(
            "sse stream limit reached ip=127.0.0.1" in r.getMessage() for r in caplog.records
        )
        first.close()  # the client goes away; the server notices within a second

        async def reopened() -> aiohttp.ClientResponse | None:
            again = await open_stream(gw)
            if again.status == 200:
                return again
            again.release()
            return None

        again = await wait_for(reopened, 3, step=0.05, message="slot not freed")
        again.close()
        second.close()


async def test_shutdown_ends_every_stream_and_refuses_new_ones() -> None:
    async with running_gateway(sse_ping_ms=60_000) as gw:
        streams = [await open_stream(gw) for _ in range(3)]
        readers = [SseReader(s) for s in streams]
        for reader in readers:
            assert await reader.frame() == [": connected"]
        started = time.monotonic()
        await gw.orch.shutdown()
        assert time.monotonic() - started < 1.0
        for reader in readers:
            assert await reader.ended(timeout=2)
        for stream in streams:
            stream.close()


async def test_a_consumer_that_falls_behind_is_cut_off(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.http")
    monkeypatch.setattr("gateway._sse.BUFFER_LIMIT", 3)
    async with await open_stream(gw) as stream:
        events = SseReader(stream)
        await events.frame()
        rooms = {f"r{i}": RawRoom("match") for i in range(5)}
        await gw.agent(rooms=rooms)  # join + 5 creates + sync in one burst
        assert await events.ended(timeout=3)
    assert any("consumer too slow" in r.getMessage() for r in caplog.records)
    async with await open_stream(gw) as fresh:
        assert fresh.status == 200


def _rooms(prefix: str, count: int, metadata_bytes: int = 0) -> list[tuple[str, Any]]:
    """``count`` room:update events (ids ``<prefix><i>``), each with that much metadata."""
    metadata = {"blob": "x" * metadata_bytes} if metadata_bytes else {}
    return [
        ("room:update", RoomInfo(f"{prefix}{i}", "m", 0, "i", "", False, metadata))
        for i in range(count)
    ]


async def _stalled_stream(gw: Gateway) -> socket.socket:
    """A ``GET /v1/events`` whose client never reads past the headers, on a socket with a
    small receive buffer so that the server's writes back up soon."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", gw.port))
    head = f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
    await loop.sock_sendall(sock, head.encode())
    assert (await loop.sock_recv(sock, 1024)).startswith(b"HTTP/1.1 200")
    return sock


async def test_a_burst_does_not_cut_a_stream_that_reads_but_a_stalled_one_is_cut(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.http")
    monkeypatch.setattr("gateway._sse.BUFFER_BYTES", 256 * 1024)
    hub = gw.orch._hub
    async with await open_stream(gw) as stream:
        reader = SseReader(stream)
        assert await reader.frame() == [": connected"]
        stalled = await _stalled_stream(gw)
        await wait_for(lambda: hub.count("sse") == 2)
        try:
            for i in range(100):  # 8 × 16 KiB: the stalled stream's socket, then its queue
                hub.emit(_rooms(f"big{i}-", 8, 16 * 1024))
                for k in range(8):
                    assert (await reader.event("room:update"))["id"] == f"big{i}-{k}"
                if hub.dropped["sse"]:
                    break
            assert hub.count("sse") == 1, "the stalled stream was never cut"
            dropped = hub.dropped["sse"]  # the events queued for it, and the one that cut it
            assert dropped >= 2
            assert any("consumer too slow" in r.getMessage() for r in caplog.records)
            # A burst within the queue's bound (one larger would cut any stream, as it is
            # queued in one loop turn) is read in full and in order by a stream that reads.
            burst = _rooms("b", 1200)  # about 150 KiB
            hub.emit(burst)
            for _, room in burst:
                assert (await reader.event("room:update"))["id"] == room.id
            assert hub.dropped["sse"] == dropped and hub.count("sse") == 1
        finally:
            stalled.close()
