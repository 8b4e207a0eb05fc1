"""Signed webhooks (CONTRACT §14, docs/integrations.md §2).

Each hook listens on the event hub and appends matching events to its own bounded queue
(the oldest dropped and counted when full), so emitting never waits on HTTP. One task
per hook POSTs the events in order, each retried with exponential backoff and full
jitter for up to ten minutes, then given up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay
from tenacity import wait_random_exponential as _full_jitter

from ._events import EVENT_TYPES, EventHub
from ._ids import ID_ALPHABET

__all__ = ["QUEUE_SIZE", "Webhook", "WebhookSender", "signature"]

log = logging.getLogger("fleet.server")

QUEUE_SIZE: Final = 10_000
GIVE_UP_S: Final = 600.0
ATTEMPT_TIMEOUT_S: Final = 10.0
BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
DROP_KIND: Final = "webhook"
MAX_SECRET: Final = 256
WEAK_SECRET: Final = 16  # shorter secrets are accepted, with a warning


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where to POST which events, and the secret their signatures use."""

    url: str
    events: Sequence[str]
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        url = self.url
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        events = self.events
        if isinstance(events, str) or not isinstance(events, Sequence) or not events:
            raise ValueError(f"events must be a non-empty list of: {', '.join(EVENT_TYPES)}")
        unknown = [e for e in events if e not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"events has unknown types; known: {', '.join(EVENT_TYPES)}")
        object.__setattr__(self, "events", tuple(dict.fromkeys(events)))
        secret = self.secret
        if (
            not isinstance(secret, str)
            or not 1 <= len(secret) <= MAX_SECRET
            or any(c.isspace() for c in secret)
        ):
            raise ValueError(f"secret must be 1 to {MAX_SECRET} characters without whitespace")
        if len(secret) < WEAK_SECRET:
            log.warning(
                "webhook secret shorter than %d characters: its signatures are easy to forge "
                "host=%s",
                WEAK_SECRET,
                parts.hostname,
            )

    @classmethod
    def parse(cls, value: Any, where: str) -> Webhook:
        """A webhook from a YAML mapping; ``ValueError`` naming ``where.<key>``."""
        if isinstance(value, Webhook):
            return value
        if not isinstance(value, Mapping) or set(value) - {"url", "events", "secret"}:
            raise ValueError(f"{where} must be a mapping with url, events and secret")
        try:
            return cls(value.get("url"), value.get("events"), value.get("secret"))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``Fleet-Signature``: ``t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _event_id() -> str:
    return "evt_" + "".join(ID_ALPHABET[b & 63] for b in os.urandom(21))


class _DeliveryFailed(Exception):
    pass


class WebhookSender:
    """One hook: its queue, its listeners on the hub and its delivery task."""

    def __init__(
        self,
        hook: Webhook,
        hub: EventHub,
        session: aiohttp.ClientSession,
        *,
        queue_size: int = QUEUE_SIZE,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.hook = hook
        self._hub = hub
        self._session = session
        self._queue: collections.deque[tuple[str, str, int, Any]] = collections.deque()
        self._size = queue_size
        self._clock_ms = clock_ms
        self._ready = asyncio.Event()
        self._unsubscribe = [hub.on(t, self._listener(t)) for t in hook.events]
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook")
        self.delivered = 0
        self.given_up = 0

    def _listener(self, event_type: str) -> Callable[[Any], None]:
        def enqueue(payload: Any) -> None:
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self._hub.dropped[DROP_KIND] += 1
            self._queue.append((_event_id(), event_type, self._clock_ms(), payload))
            self._ready.set()

        return enqueue

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            event = self._queue.popleft()  # in flight: no longer the queue's to drop
            body = self._body(*event)
            try:
                await self._deliver(event[0], body)
                self.delivered += 1
            except Exception as exc:
                self.given_up += 1
                log.warning("webhook gave up event=%s type=%s error=%s", event[0], event[1], exc)

    @staticmethod
    def _body(event_id: str, event_type: str, at: int, payload: Any) -> bytes:
        data = payload.to_dict() if hasattr(payload, "to_dict") else payload
        document = {"id": event_id, "type": event_type, "time": at, "data": data}
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()

    async def _deliver(self, event_id: str, body: bytes) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_delay(GIVE_UP_S),
            wait=_full_jitter(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S),
            retry=retry_if_exception_type((_DeliveryFailed, aiohttp.ClientError, TimeoutError)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._post(event_id, body)

    async def _post(self, event_id: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "Fleet-Event-Id": event_id,
            "Fleet-Signature": signature(self.hook.secret, int(time.time()), body),
        }
        timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
        async with self._session.post(
            self.hook.url, data=body, headers=headers, timeout=timeout
        ) as response:
            await response.read()
            if not 200 <= response.status < 300:
                raise _DeliveryFailed(f"status {response.status}")
