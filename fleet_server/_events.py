"""The fleet's one event fan-out: typed events to listeners and to bounded subscriptions.

:class:`EventHub` delivers every event in emission order to

- *listeners* (``orch.on(type, callback)``): sync or async callables; a failing one is
  logged and affects nothing else;
- *subscriptions* (SSE streams, gRPC ``WatchEvents``, later webhooks and the
  dashboard): each subscribes with an *encoder* — a function turning ``(type,
  payload)`` into the bytes its surface sends — and each event is encoded once per
  encoder, however many subscriptions share it.

Each emit hands every subscription of an encoder one shared *chunk*: the events of
that emit, each encoded once, and their concatenation (joined once, on first use). A
consumer takes everything queued in one go (:meth:`Subscription.batch` per event,
:meth:`Subscription.joined` as one text), so its cost per loop turn does not grow with
the number of events, nor an event's cost with the number of subscriptions beyond
one queue append per emit.

A subscription may also take a *writer* (:meth:`Subscription.write_with`): a function
that writes bytes at once (a socket with room in its buffer) or refuses. Its events are
then written by the hub once per loop turn — everything the emits of that turn queued,
in one write — and its consumer's task is woken only when the writer refuses; that task
then owns the queue until it has emptied it, so the order never changes.

One overflow rule for every subscription: its queue holds at most ``max_items`` events
(and, when given, ``max_bytes`` bytes plus one event); an event that finds it full cuts
the subscription off — its queue is dropped, it leaves the hub, ``overflowed`` is set,
its ``on_overflow`` hook runs at once, and the events dropped (those queued and those
that found the queue full) are counted per kind (:attr:`EventHub.dropped`). A consumer
that keeps up is never cut.

Emission order is one order for every listener and subscription: an emit from inside a
listener is delivered after the events of the emit that called it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "EVENT_TYPES",
    "Encoder",
    "EventHub",
    "EventType",
    "Listener",
    "Subscription",
    "Writer",
]

log = logging.getLogger("fleet.server")


class EventType(StrEnum):
    """The fleet events (CONTRACT §6), in the order a reconcile emits them."""

    INSTANCE_JOIN = "instance:join"
    INSTANCE_LEAVE = "instance:leave"
    INSTANCE_STALE = "instance:stale"
    ROOM_CREATE = "room:create"
    ROOM_DESTROY = "room:destroy"
    ROOM_UPDATE = "room:update"  # metadata, locked or maxConnections changed (CONTRACT §11)
    SYNC = "sync"


EVENT_TYPES: Final = tuple(EventType)

Listener = Callable[[Any], Awaitable[None] | None]
Encoder = Callable[[str, Any], bytes]
Writer = Callable[[bytes], bool]  # writes at once (True) or refuses (False)
Event = tuple[str, Any]


class _Chunk:
    """The events of one emit, encoded for one encoder; shared by its subscriptions."""

    __slots__ = ("_joined", "items", "last", "size")

    def __init__(self, items: list[bytes]) -> None:
        self.items = items
        self.size = sum(map(len, items))
        self.last = len(items[-1])
        self._joined: bytes | None = None

    @property
    def joined(self) -> bytes:
        """The events' bytes end to end, joined once for every subscription."""
        joined = self._joined
        if joined is None:
            items = self.items
            joined = self._joined = items[0] if len(items) == 1 else b"".join(items)
        return joined


def _joined(chunks: deque[_Chunk]) -> bytes:
    """The chunks' events end to end (one chunk's joined bytes as they are)."""
    if len(chunks) == 1:
        return chunks[0].joined
    return b"".join([chunk.joined for chunk in chunks])


@dataclass(eq=False, slots=True)
class Subscription:
    """One consumer's bounded queue of encoded events; read it with :meth:`batch` or
    :meth:`joined`."""

    _hub: EventHub
    kind: str
    encoder: Encoder
    _max_items: int
    _max_bytes: int | None
    _on_overflow: Callable[[], None] | None
    _chunks: deque[_Chunk] = field(default_factory=deque)
    _count: int = 0
    _size: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: Writer | None = None  # writes at once, or refuses (False)
    _owned: bool = False  # the consumer's task was woken: it owns the queue until empty
    _flushing: bool = False  # in the hub's list of subscriptions to write this turn
    ended: bool = False
    overflowed: bool = False

    def __len__(self) -> int:
        return self._count

    @property
    def buffered(self) -> int:
        """Bytes queued now."""
        return self._size

    def push(self, data: bytes) -> None:
        """Queue one encoded event, or cut the subscription off if its queue is full."""
        self.offer(_Chunk([data]))

    def offer(self, chunk: _Chunk) -> None:
        """Queue a chunk of events, or cut the subscription off if one of them finds the
        queue full (the same rule as one event at a time)."""
        if self.ended:
            return
        count = len(chunk.items)
        if self._count + count > self._max_items or (
            self._max_bytes is not None and self._size + chunk.size - chunk.last >= self._max_bytes
        ):
            self._cut(count)
            return
        self._chunks.append(chunk)
        self._count += count
        self._size += chunk.size
        if self._writer is None or self._owned:
            self._wake.set()
        elif not self._flushing:
            self._flushing = True
            self._hub.flush_later(self)

    def write_with(self, writer: Writer) -> None:
        """From now on the hub writes this subscription's events with ``writer`` once per
        loop turn (what is queued goes with the next ones); the consumer's task is woken
        only when ``writer`` refuses."""
        self._writer = writer

    def flush(self) -> None:
        """Write everything queued with the writer; when it refuses (or the subscription
        ended), wake the consumer's task, which then owns the queue until it is empty."""
        self._flushing = False
        writer = self._writer
        if not self._chunks or writer is None:
            return
        if not self._owned and not self.ended:
            chunks = self._chunks
            data = _joined(chunks)
            try:
                written = writer(data)
            except Exception:
                log.exception("event stream write failed kind=%s", self.kind)
                written = False
            if written:
                self._chunks = deque()
                self._count = self._size = 0
                return
            self._owned = True
        self._wake.set()

    def _cut(self, incoming: int) -> None:
        """Cut off: the ``incoming`` events that found the queue full and the queued ones
        are dropped and counted."""
        dropped = self._count + incoming
        self._chunks.clear()
        self._count = self._size = 0
        self.overflowed = True
        self.ended = True
        self._hub.release(self, dropped=dropped)
        self._wake.set()
        if self._on_overflow is not None:
            self._on_overflow()

    async def _take(self) -> deque[_Chunk]:
        while not self._chunks and not self.ended:
            self._owned = False  # queue empty: the writer may write again
            self._wake.clear()
            await self._wake.wait()
        chunks, self._chunks = self._chunks, deque()
        self._count = self._size = 0
        return chunks

    async def batch(self) -> list[bytes]:
        """Every queued event, waiting for one; empty once ended (or cut off) and empty."""
        chunks = await self._take()
        if len(chunks) == 1:
            return list(chunks[0].items)
        items: list[bytes] = []
        for chunk in chunks:
            items.extend(chunk.items)
        return items

    async def joined(self) -> bytes:
        """Every queued event's bytes end to end (one write), waiting for one; empty
        once ended (or cut off) and empty."""
        return _joined(await self._take())

    def end(self) -> None:
        """Stop after what is queued (shutdown): :meth:`batch` returns it, then nothing."""
        self.ended = True
        self._hub.release(self)
        self._wake.set()

    def close(self) -> None:
        """The consumer is gone: leave the hub (idempotent)."""
        self.ended = True
        self._hub.release(self)


class EventHub:
    """Delivers events in emission order to listeners and subscriptions."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {t: [] for t in EventType}
        self._groups: dict[Encoder, list[Subscription]] = {}
        self._counts: Counter[str] = Counter()  # open subscriptions per kind
        self._tasks: set[asyncio.Task[None]] = set()
        self._emitting = False
        self._deferred: list[Event] = []  # emitted by a listener while emitting
        self._to_flush: list[Subscription] = []  # with a writer and events queued this turn
        self._flush_handle: asyncio.Handle | None = None
        self.dropped: Counter[str] = Counter()  # events dropped, per kind

    # --- listeners ------------------------------------------------------------------

    def on(self, event_type: str, callback: Listener) -> Callable[[], None]:
        if event_type not in self._listeners:
            raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}")
        if not callable(callback):
            raise ValueError("callback must be callable")
        listeners = self._listeners[event_type]
        listeners.append(callback)

        def unsubscribe() -> None:
            if callback in listeners:
                listeners.remove(callback)

        return unsubscribe

    def wants(self, event_type: str) -> bool:
        """Whether any listener or subscription would receive an event of this type now."""
        return bool(self._groups or self._listeners[event_type])

    # --- subscriptions --------------------------------------------------------------

    def subscribe(
        self,
        kind: str,
        encoder: Encoder,
        *,
        limit: int,
        max_items: int,
        max_bytes: int | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> Subscription | None:
        """A subscription receiving every event from now on; None when ``kind``
        already has ``limit`` open."""
        if self._counts[kind] >= limit:
            return None
        subscription = Subscription(self, kind, encoder, max_items, max_bytes, on_overflow)
        self._groups.setdefault(encoder, []).append(subscription)
        self._counts[kind] += 1
        return subscription

    def count(self, kind: str) -> int:
        """Subscriptions of ``kind`` open now."""
        return self._counts[kind]

    def __len__(self) -> int:
        return sum(self._counts.values())

    def release(self, subscription: Subscription, *, dropped: int = 0) -> None:
        """``subscription`` leaves the hub; ``dropped``: the events it was cut off with."""
        group = self._groups.get(subscription.encoder)
        if group is None or subscription not in group:
            return
        group.remove(subscription)
        if not group:
            del self._groups[subscription.encoder]
        self._counts[subscription.kind] -= 1
        if dropped:
            self.dropped[subscription.kind] += dropped

    def end_all(self, kind: str | None = None) -> list[Subscription]:
        """End every subscription of ``kind`` (None: of every kind) after what it holds;
        returns them."""
        ended = [
            s for group in self._groups.values() for s in group if kind is None or s.kind == kind
        ]
        for subscription in ended:
            subscription.end()
        return ended

    # --- delivery -------------------------------------------------------------------

    def flush_later(self, subscription: Subscription) -> None:
        """Write ``subscription``'s queue at the next loop turn, with every other one that
        got events this turn (at once when no loop runs)."""
        self._to_flush.append(subscription)
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        subscriptions, self._to_flush = self._to_flush, []
        for subscription in subscriptions:
            subscription.flush()

    def emit(self, events: Iterable[Event]) -> None:
        """Deliver ``events`` in order: each subscription gets them as one chunk per
        encoder, then the listeners run event by event."""
        if self._emitting:  # a listener emitting: after the events being delivered
            self._deferred.extend(events)
            return
        self._emitting = True
        try:
            batch = list(events)
            while batch:
                self._deliver(batch)
                batch, self._deferred = self._deferred, []
        finally:
            self._emitting = False
            self._deferred = []

    def _deliver(self, events: list[Event]) -> None:
        for encoder, group in list(self._groups.items()):
            items: list[bytes] = []
            for event_type, payload in events:
                try:
                    items.append(encoder(event_type, payload))
                except Exception:
                    log.exception("event encoding failed event=%s", event_type)
            if items:
                chunk = _Chunk(items)
                for subscription in list(group):
                    subscription.offer(chunk)
        for event_type, payload in events:
            for callback in list(self._listeners[event_type]):
                try:
                    result = callback(payload)
                except Exception:
                    log.exception("event listener failed event=%s", event_type)
                    continue
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(self._await(event_type, result))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _await(event_type: str, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("event listener failed event=%s", event_type)

    async def close(self) -> None:
        """Wait briefly for running async listeners, then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
