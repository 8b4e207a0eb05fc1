"""Fleet event subscriptions: ``orch.on(type, callback)`` and stream subscribers."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

__all__ = ["EVENT_TYPES", "EventBus", "Listener"]

log = logging.getLogger("fleet.server")

EVENT_TYPES: Final = (
    "instance:join",
    "instance:leave",
    "instance:stale",
    "room:create",
    "room:destroy",
    "sync",
)

Listener = Callable[[Any], Awaitable[None] | None]
StreamListener = Callable[[str, Any], None]


class EventBus:
    """Delivers events in emission order; a failing listener affects nothing else."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {t: [] for t in EVENT_TYPES}
        self._streams: list[StreamListener] = []
        self._tasks: set[asyncio.Task[None]] = set()

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
        """Whether any listener or stream would receive an event of this type now."""
        return bool(self._streams or self._listeners[event_type])

    def subscribe_all(self, listener: StreamListener) -> Callable[[], None]:
        """Every event as ``listener(type, payload)``, synchronously (for stream fan-out)."""
        self._streams.append(listener)

        def unsubscribe() -> None:
            if listener in self._streams:
                self._streams.remove(listener)

        return unsubscribe

    def emit(self, events: Iterable[tuple[str, Any]]) -> None:
        for event_type, payload in events:
            for stream in list(self._streams):
                try:
                    stream(event_type, payload)
                except Exception:
                    log.exception("event listener failed event=%s", event_type)
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
