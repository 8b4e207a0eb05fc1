"""The ``GET /v1/events`` Server-Sent Events streams (SPEC §10 "SSE").

:class:`EventStreams` keeps at most ``limit`` streams open (one more is ``429
SSE_LIMIT``) over one event-bus subscription held while any stream is open. Each
event is encoded once — ``event: <type>`` + ``data: <compact camelCase JSON>`` — and
appended to every open stream's buffer in emission order. A stream starts with
``: connected``; aiohttp-sse adds a ``: ping`` every ``ping_ms``. A stream ends when
its client goes (noticed within a second, or at the next write), when its buffer
overflows (a consumer that fell ``BUFFER_LIMIT`` events or ``BUFFER_BYTES`` bytes behind
is cut off), or at
:meth:`EventStreams.close`, which the orchestrator runs first at shutdown: every
stream gets its pending events and a clean end, new ones are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from fleet_server._errors import ErrorCode
from fleet_server._events import EventBus

from ._envelope import rejected
from ._middleware import CONTEXT

__all__ = ["BUFFER_BYTES", "BUFFER_LIMIT", "EventStreams"]

log = logging.getLogger("fleet.http")

BUFFER_LIMIT: Final = 1 << 18  # events buffered per stream (references to shared bytes)
BUFFER_BYTES: Final = 8 << 20  # … or bytes held (plus one frame): big events pin memory
CLOSE_GRACE_S: Final = 1.0
WATCH_S: Final = 1.0  # how often an idle stream checks that its client is still there
CONNECTED: Final = b": connected\n\n"


def encode_event(event_type: str, payload: Any) -> bytes:
    """One SSE frame; ``payload`` is a read-model shape with ``to_dict()``."""
    data = json.dumps(payload.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return f"event: {event_type}\ndata: {data}\n\n".encode()


class _Stream:
    def __init__(self, request: web.Request, ip: str) -> None:
        self.request = request
        self.ip = ip
        self.frames: deque[bytes] = deque()
        self.buffered = 0  # bytes in ``frames``
        self.wake = asyncio.Event()
        self.ended = False
        self.finished = asyncio.Event()
        self.response: EventSourceResponse | None = None  # once prepared

    def push(self, frame: bytes) -> None:
        if self.ended:
            return
        if len(self.frames) >= BUFFER_LIMIT or self.buffered >= BUFFER_BYTES:
            log.warning("sse stream cut off: consumer too slow ip=%s", self.ip)
            self.frames.clear()
            self.end()
            self.abort()
            return
        self.frames.append(frame)
        self.buffered += len(frame)
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()

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

    def __init__(self, events: EventBus, *, limit: int, ping_ms: int) -> None:
        self._events = events
        self._limit = limit
        self._ping_s = ping_ms / 1000.0
        self._watch_s = min(WATCH_S, self._ping_s)
        self._streams: set[_Stream] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False

    def __len__(self) -> int:
        return len(self._streams)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        context = request.get(CONTEXT)
        ip = context.ip if context is not None else (request.remote or "unknown")
        if self._closing:
            return rejected(ErrorCode.NOT_READY)
        if len(self._streams) >= self._limit:
            log.warning("sse stream limit reached ip=%s limit=%d", ip, self._limit)
            return rejected(ErrorCode.SSE_LIMIT)
        stream = _Stream(request, ip)
        self._open(stream)
        response = EventSourceResponse(sep="\n", ping_interval=self._ping_s)
        response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
        response.headers["Cache-Control"] = "no-cache, no-transform"
        try:
            await response.prepare(request)
            stream.response = response
            await response.write(CONNECTED)
            await self._pump(stream, response)
        except ConnectionError:
            pass  # the client went away
        except Exception:
            if not response.prepared:
                raise  # nothing sent yet: the envelope middleware answers
            log.exception("sse stream failed ip=%s", ip)  # mid-stream: the stream just ends
        finally:
            self._release(stream)
            try:
                await self._finish(response)
            finally:
                stream.finished.set()
        return response

    async def _pump(self, stream: _Stream, response: EventSourceResponse) -> None:
        while True:
            if stream.frames:
                data = b"".join(stream.frames)
                stream.frames.clear()
                stream.buffered = 0
                await response.write(data)
                continue
            if stream.ended:
                return
            stream.wake.clear()
            await stream.wake.wait()

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
        if self._unsubscribe is None:
            self._unsubscribe = self._events.subscribe_all(self._deliver)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="sse-client-watch")

    def _release(self, stream: _Stream) -> None:
        stream.end()
        self._streams.discard(stream)
        if not self._streams:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if self._watcher is not None:
                self._watcher.cancel()
                self._watcher = None

    async def _watch(self) -> None:
        """Every ``WATCH_S``, end the streams whose client went away (one timer for all
        streams, so a stream's wait for its next event costs no timer)."""
        while True:
            await asyncio.sleep(self._watch_s)
            for stream in list(self._streams):
                if stream.client_gone():
                    stream.end()

    def _deliver(self, event_type: str, payload: Any) -> None:
        if not self._streams:
            return
        frame = encode_event(event_type, payload)
        for stream in list(self._streams):
            stream.push(frame)

    async def close(self) -> None:
        """End every stream (after what it already holds) and refuse new ones."""
        self._closing = True
        streams = list(self._streams)
        for stream in streams:
            stream.end()
        if not streams:
            return
        waits = [asyncio.ensure_future(stream.finished.wait()) for stream in streams]
        _, pending = await asyncio.wait(waits, timeout=CLOSE_GRACE_S)
        for waiter in pending:
            waiter.cancel()
        for stream in streams:
            if not stream.finished.is_set():
                stream.abort()
