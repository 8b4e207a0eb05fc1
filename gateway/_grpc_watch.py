"""Fan-out of fleet events to ``WatchEvents`` streams.

One :class:`WatchHub` per gRPC server subscribes to the event bus while any stream is
open, serializes each event to a ``FleetEvent`` once and appends the same bytes to every
stream's bounded buffer, in emission order (the servicer sends them as they are). A
stream whose buffer is full has fallen behind: it stops receiving and reports
:attr:`WatchStream.overflowed`, and the servicer ends it with ``RESOURCE_EXHAUSTED`` +
``SSE_LIMIT``. :meth:`WatchHub.close` (shutdown) ends every stream after what it
already holds and refuses new ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from fleet_server._events import EventBus

from ._grpc_messages import event_bytes

__all__ = ["QUEUE_SIZE", "WatchHub", "WatchStream"]

QUEUE_SIZE: Final = 1024


class WatchStream:
    """One ``WatchEvents`` call's buffer; iterate it to receive serialized events."""

    def __init__(self, hub: WatchHub, queue_size: int) -> None:
        self._hub = hub
        self._size = queue_size
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.overflowed = False
        self.ended = False

    def push(self, message: bytes) -> None:
        if len(self._queue) >= self._size:
            self.overflowed = True
            self._hub.release(self)
        else:
            self._queue.append(message)
        self._wake.set()

    def end(self) -> None:
        self.ended = True
        self._wake.set()

    def close(self) -> None:
        """Free the slot (the call is over)."""
        self.ended = True
        self._hub.release(self)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.overflowed:
            if self._queue:
                yield self._queue.popleft()
            elif self.ended:
                return
            else:
                self._wake.clear()
                await self._wake.wait()


class WatchHub:
    """At most ``limit`` concurrent streams over one event-bus subscription."""

    def __init__(self, events: EventBus, *, limit: int, queue_size: int = QUEUE_SIZE) -> None:
        self._events = events
        self._limit = limit
        self._queue_size = queue_size
        self._streams: list[WatchStream] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._streams)

    def open(self) -> WatchStream | None:
        """A new stream, subscribed from now on; None at the cap."""
        if len(self._streams) >= self._limit:
            return None
        stream = WatchStream(self, self._queue_size)
        if self._closed:
            stream.end()
            return stream
        self._streams.append(stream)
        if self._unsubscribe is None:
            self._unsubscribe = self._events.subscribe_all(self._deliver)
        return stream

    def release(self, stream: WatchStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
        if not self._streams and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def close(self) -> None:
        """End every stream and refuse new ones (shutdown)."""
        self._closed = True
        for stream in list(self._streams):
            stream.end()
            self.release(stream)

    def _deliver(self, event_type: str, payload: Any) -> None:
        if not self._streams:
            return
        message = event_bytes(event_type, payload)
        for stream in list(self._streams):
            stream.push(message)
