"""Hostile HTTP (issue "Locking down", CONTRACT §4–5): malformed requests get the JSON
envelope and never their own bytes back, a flood of them costs a few summary lines and
no traceback, a trickled body is a 408, and an SSE slot is free the moment its client
goes."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest

from gateway import _middleware
from tests.support.clients import Http
from tests.support.orchestrators import running_orchestrator

MARKER = "zq-echo-marker"

MALFORMED = [
    f"GET /{MARKER} HTTP/9.9\r\nHost: x\r\n\r\n".encode(),
    f"GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-{MARKER}: a\x00b\r\n\r\n".encode(),
    f"POST /v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: abc{MARKER}\r\n\r\n".encode(),
    f"G\x01T /{MARKER} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
]
HUGE_HEADER = f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {MARKER}{'a' * 60_000}\r\n\r\n".encode()


async def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read the answer until the server closes; the answer is read
    while sending, since the server may answer (and close) before it has all of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(asyncio.wait_for(reader.read(), 10))
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass
    try:
        return await answer
    except ConnectionError:
        return b""
    finally:
        writer.close()


def _envelope(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head, head
    assert MARKER.encode() not in answer  # never the client's own bytes
    return status, json.loads(body)


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_a_malformed_request_gets_the_envelope_not_its_bytes_back(
    request_bytes: bytes,
) -> None:
    async with running_orchestrator(api=True) as orch:
        status, body = _envelope(await _exchange(orch.port, request_bytes))
        assert (status, body) == (400, {"status": "rejected", "cause": "VALIDATION"})


async def test_an_oversize_header_is_payload_too_large() -> None:
    async with running_orchestrator(api=True) as orch:
        answer = await _exchange(orch.port, HUGE_HEADER)
        status, body = _envelope(answer)
        assert (status, body) == (413, {"status": "rejected", "cause": "PAYLOAD_TOO_LARGE"})


async def test_a_flood_of_garbage_costs_a_few_summary_lines_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_orchestrator(api=True) as orch:
        deadline = time.monotonic() + 1.0
        sent = 0

        async def client(n: int) -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                await _exchange(orch.port, MALFORMED[n % len(MALFORMED)])
                sent += 1

        await asyncio.gather(*(client(n) for n in range(10)))
        assert sent >= 50
        ok = await _exchange(
            orch.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert ok.startswith(b"HTTP/1.1 200")  # the server carries on
    http_lines = [r for r in caplog.records if r.name == "fleet.http"]
    assert 1 <= len(http_lines) <= 3, [r.getMessage() for r in http_lines]
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= 30]
    assert all(MARKER not in r.getMessage() for r in caplog.records)


async def test_a_trickled_body_is_a_408_and_the_connection_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_middleware, "BODY_TIMEOUT_S", 0.3)
    async with running_orchestrator(api=True) as orch:
        reader, writer = await asyncio.open_connection("127.0.0.1", orch.port)
        from tests.support.keys import ADMIN

        writer.write(
            b"POST /v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ADMIN}\r\n".encode()
            + b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # read() ends: closed
        writer.close()
        status, body = _envelope(answer)
        assert (status, body) == (408, {"status": "rejected", "cause": "REQUEST_TIMEOUT"})


async def test_an_sse_slot_is_free_as_soon_as_its_client_goes() -> None:
    async with (
        running_orchestrator(api=True, sse_stream_limit=1) as orch,
        aiohttp.ClientSession() as session,
    ):
        http = Http(session, orch.port)
        first = await session.get(http.url("/v1/events"), headers=http.auth())
        assert first.status == 200
        await first.content.readline()
        first.close()  # the dashboard reloads
        closed = time.monotonic()
        while True:
            again = await session.get(http.url("/v1/events"), headers=http.auth())
            if again.status == 200:
                freed_s = time.monotonic() - closed
                again.close()
                break
            assert again.status == 429
            again.close()
            await asyncio.sleep(0.02)
        assert freed_s < 0.9, freed_s  # not at the 1 s watch tick: at once


async def test_an_authorization_header_that_is_not_utf8_is_401_not_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A byte that is not UTF-8 reaches the key check as a lone surrogate, which failed
    to encode: 500 INTERNAL and a traceback, for anyone, on every protected route and
    the agent handshake."""
    caplog.set_level(logging.INFO)
    async with running_orchestrator(api=True) as orch:
        for request_bytes in (
            b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer \xff" + MARKER.encode() + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: rivalis-fleet.v1, \xff" + MARKER.encode() + b"\r\n\r\n",
        ):
            status, body = _envelope(await _exchange(orch.port, request_bytes))
            assert (status, body) == (401, {"status": "rejected", "cause": "UNAUTHORIZED"})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


GARBLED_GZIP = b"Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\nnot-gzip.."


async def test_a_body_that_does_not_decompress_is_400_and_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A protected route's body read got aiohttp's RequestPayloadError (500 INTERNAL and
    a traceback); any other route answered, then aiohttp read the rest of the body and
    logged "Unhandled exception" with a traceback for each such request."""
    caplog.set_level(logging.INFO)
    async with running_orchestrator(api=True) as orch:
        from tests.support.keys import ADMIN

        read_by_the_guard = (
            f"POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + GARBLED_GZIP
        )
        status, body = _envelope(await _exchange(orch.port, read_by_the_guard))
        assert (status, body) == (400, {"status": "rejected", "cause": "VALIDATION"})
        for _ in range(3):  # answered before the body is read; the body fails afterwards
            answer = await _exchange(
                orch.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + GARBLED_GZIP
            )
            status, body = _envelope(answer)
            assert (status, body) == (405, {"status": "rejected", "cause": "METHOD_NOT_ALLOWED"})
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    http_lines = [r.getMessage() for r in caplog.records if r.name == "fleet.http"]
    assert http_lines == ["bad request cause=ContentEncodingError (more are summarised every 10 s)"]


async def test_an_unknown_expect_gets_the_envelope_not_aiohttps_417_quoting_it() -> None:
    """aiohttp checks ``Expect`` before the middleware runs and answered a plain-text
    ``417 Unknown Expect: <the header>``."""
    async with running_orchestrator(api=True) as orch:
        for path in ("/v1/rooms", "/healthz", f"/{MARKER}"):
            answer = await _exchange(
                orch.port,
                f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Expect: {MARKER}\r\nContent-Length: 2\r\n\r\n{{}}".encode(),
            )
            status, body = _envelope(answer)
            assert (status, body) == (400, {"status": "rejected", "cause": "VALIDATION"})
        continued = await _exchange(
            orch.port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Expect: 100-continue\r\n\r\n",
        )
        assert continued.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
