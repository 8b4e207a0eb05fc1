"""``WatchEvents`` streams over the event hub.

Each call subscribes to the hub with the ``FleetEvent`` encoder, so each event is
serialized once for every stream and the servicer sends the same bytes as they are.
At most ``limit`` streams are open at once. A stream's queue is bounded as an SSE
stream's is — :data:`QUEUE_SIZE` events or :data:`QUEUE_BYTES` bytes, references to
bytes shared by every stream — not by a short count of events: grpc.aio sends one
message per completion round trip, far slower per event than an SSE write, so a burst
or a busy second queues many events on a stream whose client reads everything. A
stream whose queue is full has fallen behind (its client stopped reading: HTTP/2 flow
control holds the sends): the hub cuts it off (:attr:`WatchStream.overflowed`) and the
servicer ends it with ``RESOURCE_EXHAUSTED`` + ``SSE_LIMIT``. :meth:`WatchHub.close`
(shutdown) ends every stream after what it already holds, and streams opened afterwards
end at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from fleet_server._interfaces import EventHub, Subscription

from ._grpc_messages import event_bytes

__all__ = ["KIND", "QUEUE_BYTES", "QUEUE_SIZE", "WatchHub", "WatchStream"]

KIND: Final = "grpc"  # the hub's name for these subscriptions
QUEUE_SIZE: Final = 1 << 18  # events queued per stream (references to shared bytes)
QUEUE_BYTES: Final = 8 << 20  # … or bytes held (plus one event), as for SSE


class WatchStream:
    """One ``WatchEvents`` call's subscription; iterate it to receive serialized events."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    @property
    def overflowed(self) -> bool:
        return self._subscription.overflowed

    def close(self) -> None:
        """Free the slot (the call is over)."""
        self._subscription.close()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while messages := await self._subscription.batch():
            for message in messages:
                yield message


class WatchHub:
    """At most ``limit`` concurrent ``WatchEvents`` streams on the event hub."""

    def __init__(self, hub: EventHub, *, limit: int) -> None:
        self._hub = hub
        self._limit = limit
        self._closed = False

    def __len__(self) -> int:
        return self._hub.count(KIND)

    def open(self) -> WatchStream | None:
        """A new stream, subscribed from now on; None at the cap."""
        subscription = self._hub.subscribe(
            KIND, event_bytes, limit=self._limit, max_items=QUEUE_SIZE, max_bytes=QUEUE_BYTES
        )
        if subscription is None:
            return None
        if self._closed:
            subscription.end()
        return WatchStream(subscription)

    def close(self) -> None:
        """End every stream and refuse new ones (shutdown)."""
        self._closed = True
        self._hub.end_all(KIND)
