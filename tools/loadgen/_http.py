"""A lean HTTP/1.1 keep-alive client for REST load, on a bare asyncio protocol.

One request at a time per connection; responses need a ``Content-Length`` (or a
status without a body, 204/304), which is what aiohttp's ``web.Response`` sends. The
client's own cost stays small so that, on a 2-core machine, the server is what is
measured.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ._histogram import Histogram

__all__ = ["HttpConnection", "HttpLoadResult", "http_load", "request_bytes"]

_NO_BODY: Final = frozenset({204, 304})


def request_bytes(
    method: str,
    path: str,
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HttpConnection(asyncio.Protocol):
    """``status, body = await conn.request(raw_request)``; ``body`` is kept only when
    ``keep_body`` (otherwise empty, but fully read)."""

    def __init__(self, keep_body: bool = False) -> None:
        self._keep = keep_body
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head = bytearray()
        self._body = bytearray()
        self._status = 0
        self._remaining = -1  # -1: reading the head
        self.lost: Exception | None = None

    @classmethod
    async def open(cls, host: str, port: int, keep_body: bool = False) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(keep_body), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.lost = exc or ConnectionResetError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self.lost)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self._transport is None:
            raise ConnectionResetError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._head.clear()
        self._body.clear()
        self._remaining = -1
        self._transport.write(raw)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        if self._remaining < 0:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._head[:end]).lower()
            rest = bytes(self._head[end + 4 :])
            self._status = int(head[9:12])
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                stop = head.find(b"\r\n", marker + 2)
                self._remaining = int(head[marker + 17 : stop if stop >= 0 else None])
            elif self._status in _NO_BODY or 100 <= self._status < 200:
                self._remaining = 0
            else:
                self._fail(ValueError("response without Content-Length"))
                return
            data = rest
        if data:
            if self._keep:
                self._body += data
            self._remaining -= len(data)
        if self._remaining <= 0:
            waiter = self._waiter
            self._waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_result((self._status, bytes(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()


@dataclass
class HttpLoadResult:
    requests: int = 0
    elapsed: float = 0.0
    latency: Histogram = field(default_factory=Histogram)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def non(self, *ok: int) -> int:
        """Responses with a status outside ``ok``, plus transport errors."""
        return sum(n for s, n in self.statuses.items() if s not in ok) + sum(self.errors.values())


async def http_load(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    keep_body: bool = False,
    on_response: Callable[[int, bytes], None] | None = None,
) -> HttpLoadResult:
    """Send requests from ``concurrency`` keep-alive connections until ``duration``
    seconds pass or ``count`` requests are done (whichever first; one is required)."""
    if duration is None and count is None:
        raise ValueError("http_load needs a duration or a count")
    result = HttpLoadResult()
    conns = [await HttpConnection.open(host, port, keep_body) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline = started + duration if duration is not None else float("inf")
    issued = 0

    async def client(conn: HttpConnection) -> None:
        nonlocal issued
        while True:
            if count is not None and issued >= count:
                return
            if time.perf_counter() >= deadline:
                return
            index = issued
            issued += 1
            sent = time.perf_counter()
            try:
                status, body = await conn.request(make_request(index))
            except (OSError, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
                return
            result.latency.add(time.perf_counter() - sent)
            result.statuses[status] += 1
            result.requests += 1
            if on_response is not None:
                on_response(status, body)

    try:
        await asyncio.gather(*(client(conn) for conn in conns))
    finally:
        result.elapsed = time.perf_counter() - started
        for conn in conns:
            conn.close()
    return result
