"""The ``GET /v1/events`` Server-Sent Events streams (SPEC §10 "SSE").

:class:`EventStreams` keeps at most ``limit`` streams open (one more is ``429
SSE_LIMIT``), each a subscription of the event hub with the SSE encoder, so each event
is encoded once — ``event: <type>`` + ``data: <compact camelCase JSON>`` — for every
stream, in emission order. A stream starts with ``: connected``; aiohttp-sse adds a
``: ping`` every ``ping_ms``. A stream ends when its client goes (noticed within a
second, or at the next write), when it overflows under the hub's one rule (a consumer
``BUFFER_LIMIT`` events or ``BUFFER_BYTES`` bytes behind is cut off and its connection
aborted), or at :meth:`EventStreams.close`, which the orchestrator runs first at
shutdown: every stream gets its pending events and a clean end, new ones are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse

from fleet_server._interfaces import ErrorCode, EventHub, Subscription, Writer

from ._envelope import rejected
from ._middleware import CONTEXT
from ._server import on_connection_lost

__all__ = ["BUFFER_BYTES", "BUFFER_LIMIT", "KIND", "EventStreams", "encode_event"]

log = logging.getLogger("fleet.http")

KIND: Final = "sse"  # the hub's name for these subscriptions
BUFFER_LIMIT: Final = 1 << 18  # events buffered per stream (references to shared bytes)
BUFFER_BYTES: Final = 8 << 20  # … or bytes held (plus one frame): big events pin memory
CLOSE_GRACE_S: Final = 1.0
WATCH_S: Final = 1.0  # how often an idle stream checks that its client is still there
CONNECTED: Final = b": connected\n\n"
DIRECT_LIMIT: Final = 64 * 1024  # bytes waiting in a socket's buffer: then the task writes


def encode_event(event_type: str, payload: Any) -> bytes:
    """One SSE frame; ``payload`` is a read-model shape with ``to_dict()``."""
    data = json.dumps(payload.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return f"event: {event_type}\ndata: {data}\n\n".encode()


def _direct_writer(request: web.Request, writer: AbstractStreamWriter | None) -> Writer | None:
    """A writer that puts events straight on the stream's socket while its buffer holds
    less than :data:`DIRECT_LIMIT` (chunk-framed when the response is chunked): the hub
    then writes every stream once per loop turn, with no task switch per stream. None
    when the response's framing is not known (the stream's task writes everything)."""
    transport = request.transport
    chunked = getattr(writer, "chunked", None)
    if transport is None or not isinstance(chunked, bool) or getattr(writer, "_compress", None):
        return None
    get_size = getattr(transport, "get_write_buffer_size", None)
    if get_size is None:
        return None

    def write_now(data: bytes) -> bool:
        if transport.is_closing() or get_size() >= DIRECT_LIMIT:
            return False
        if chunked:
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            transport.write(data)
        return True

    return write_now


class _Stream:
    """One open ``/v1/events`` response and its hub subscription."""

    def __init__(self, request: web.Request, ip: str) -> None:
        self.request = request
        self.ip = ip
        self.subscription: Subscription | None = None
        self.finished = asyncio.Event()
        self.response: EventSourceResponse | None = None  # once prepared

    @property
    def ended(self) -> bool:
        return self.subscription is None or self.subscription.ended

    @property
    def buffered(self) -> int:
        return self.subscription.buffered if self.subscription is not None else 0

    def cut_off(self) -> None:
        """The hub cut the stream off: the consumer fell too far behind."""
        log.warning("sse stream cut off: consumer too slow ip=%s", self.ip)
        self.abort()

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def client_gone(self) -> bool:
        transport = self.request.transport
        response = self.response
        return (
            transport is None
            or transport.is_closing()
            or (response is not None and not response.is_connected())
        )


class EventStreams:
    """The open SSE streams of one app."""

    def __init__(self, hub: EventHub, *, limit: int, ping_ms: int) -> None:
        self._hub = hub
        self._limit = limit
        self._ping_s = ping_ms / 1000.0
        self._watch_s = min(WATCH_S, self._ping_s)
        self._streams: set[_Stream] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False

    def __len__(self) -> int:
        return len(self._streams)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        context = request.get(CONTEXT)
        ip = context.ip if context is not None else (request.remote or "unknown")
        if self._closing:
            return rejected(ErrorCode.NOT_READY)
        stream = _Stream(request, ip)
        subscription = self._hub.subscribe(
            KIND,
            encode_event,
            limit=self._limit,
            max_items=BUFFER_LIMIT,
            max_bytes=BUFFER_BYTES,
            on_overflow=stream.cut_off,
        )
        if subscription is None:
            log.warning("sse stream limit reached ip=%s limit=%d", ip, self._limit)
            return rejected(ErrorCode.SSE_LIMIT)
        stream.subscription = subscription
        # The slot is freed the moment the client goes, not at the next watch tick.
        on_connection_lost(request, subscription.end)
        self._open(stream)
        response = EventSourceResponse(sep="\n", ping_interval=self._ping_s)
        response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
        response.headers["Cache-Control"] = "no-cache, no-transform"
        try:
            writer = await response.prepare(request)
            stream.response = response
            await response.write(CONNECTED)
            direct = _direct_writer(request, writer)
            if direct is not None:
                subscription.write_with(direct)
            await self._pump(subscription, response)
        except ConnectionError:
            pass  # the client went away
        except Exception:
            if not response.prepared:
                raise  # nothing sent yet: the guard answers with the envelope
            log.exception("sse stream failed ip=%s", ip)  # mid-stream: the stream just ends
        finally:
            self._release(stream, subscription)
            try:
                await self._finish(response)
            finally:
                stream.finished.set()
        return response

    @staticmethod
    async def _pump(subscription: Subscription, response: EventSourceResponse) -> None:
        # Everything queued since the last write goes out as one write, the same bytes
        # object for every stream that takes the same chunks.
        while data := await subscription.joined():
            await response.write(data)

    @staticmethod
    async def _finish(response: EventSourceResponse) -> None:
        if not response.prepared:
            return
        response.stop_streaming()
        await response.wait()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()

    def _open(self, stream: _Stream) -> None:
        self._streams.add(stream)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="sse-client-watch")

    def _release(self, stream: _Stream, subscription: Subscription) -> None:
        subscription.close()
        self._streams.discard(stream)
        if not self._streams and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        """Every ``WATCH_S``, end the streams whose client went away (one timer for all
        streams, so a stream's wait for its next event costs no timer)."""
        while True:
            await asyncio.sleep(self._watch_s)
            for stream in list(self._streams):
                if stream.client_gone() and stream.subscription is not None:
                    stream.subscription.end()

    async def close(self) -> None:
        """End every stream (after what it already holds) and refuse new ones."""
        self._closing = True
        self._hub.end_all(KIND)
        streams = list(self._streams)
        if not streams:
            return
        waits = [asyncio.ensure_future(stream.finished.wait()) for stream in streams]
        _, pending = await asyncio.wait(waits, timeout=CLOSE_GRACE_S)
        for waiter in pending:
            waiter.cancel()
        for stream in streams:
            if not stream.finished.is_set():
                stream.abort()
