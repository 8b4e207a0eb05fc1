"""The coalesced ``sync`` event (SPEC §5): one fleet hash per burst of reconciles.

Reconcile events go out at once; ``sync`` follows in a later loop callback, so all the
reconciles of one burst share one fleet hash. On a fleet whose hash is costly, flushes
are spaced so hashing stays under a twentieth of the loop's time, and a large fleet is
hashed a slice per loop callback. With nobody listening for ``sync``, none is computed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from ._events import EventHub, EventType
from ._fleet_hash import SyncJob
from ._read_model import ReadModel

__all__ = ["SyncFlusher"]

_SYNC_SPACING: Final = 20  # a flush that took t waits 20 t after it: hashing ≤ 5 % of the loop
_SLICE_S: Final = 0.004  # re-encoding changed instances' hash entries, per slice
_ENCODE_SLICES: Final = 64  # then whatever is left is encoded with the capture
_SLICE_BYTES: Final = 4 * 1024 * 1024  # of fleet text hashed per slice (~3 ms)


class SyncFlusher:
    """Emits the read model's events into the hub and owes it the ``sync`` that follows."""

    def __init__(self, read: ReadModel, hub: EventHub) -> None:
        self._read = read
        self._hub = hub
        self._handle: asyncio.Handle | None = None
        self._job: SyncJob | None = None  # a sync being hashed slice by slice
        self._slices = 0
        self._spent = 0.0
        self._cost = 0.0  # seconds the last sync took, all slices
        self._last = 0.0

    def emit(self, events: list[tuple[str, Any]]) -> None:
        """Emit reconcile events now and schedule the coalesced ``sync`` (SPEC §5).

        ``sync`` follows in a later loop callback, so all reconciles of one burst share
        one fleet hash; on a fleet whose hash is costly, flushes are spaced so hashing
        stays under a twentieth of the loop's time. With no listener and no stream for
        ``sync``, none is computed (the next one, once someone listens, always goes out).
        """
        if events:
            self._hub.emit(events)
        if self._read.sync_due and self._handle is None and not self._hub.wants(EventType.SYNC):
            self._read.skip_sync()
        if self._read.sync_due and self._handle is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last + _SYNC_SPACING * self._cost - loop.time())
            if delay > 0:
                self._handle = loop.call_later(delay, self._flush)
            else:
                self._handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """One slice of the owed ``sync``: re-encode changed instances, then hash the
        captured fleet a few MB at a time; a small fleet finishes in the first slice."""
        self._handle = None
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        job = self._job
        if job is None:
            self._slices += 1
            if self._slices <= _ENCODE_SLICES and not self._read.encode_entries(_SLICE_S):
                self._spent += time.perf_counter() - started
                self._handle = loop.call_soon(self._flush)
                return
            job = self._job = self._read.start_sync()
        done = job.advance(_SLICE_BYTES)
        self._spent += time.perf_counter() - started
        if not done:
            self._handle = loop.call_soon(self._flush)
            return
        self._job = None
        self._slices = 0
        self._cost, self._spent = self._spent, 0.0
        self._last = loop.time()
        event = self._read.finish_sync(job)
        self.emit([event] if event is not None else [])

    def close(self) -> None:
        """Emit any owed ``sync`` now and stop scheduling (orchestrator shutdown)."""
        if self._handle is None:
            return
        self._handle.cancel()
        self._handle = None
        job, self._job = self._job, None
        events = []
        if job is not None:
            job.advance()
            events.append(self._read.finish_sync(job))
        if self._read.sync_due:
            events.append(self._read.take_sync())
        self._hub.emit([event for event in events if event is not None])
