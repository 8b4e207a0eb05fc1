"""Orphan holds (CONTRACT §9): the ids a torn-down instance accounted for stay taken.

At teardown every id the instance listed, sent a create for without an ack, or held
after a create timeout is held on behalf of its game-server process (``process_uid``),
because that process may have the room even though the orchestrator never heard so.
The holds of a process end together: when a link of the same process applies a
snapshot (it now says what it has) or ``orphan_hold_ms`` after the teardown. One timer
per process, not per id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["OrphanHold", "OrphanHolds"]

log = logging.getLogger("fleet.server")


class OrphanHold(NamedTuple):
    """One held id, as the membership store records it."""

    room_id: str
    process_uid: str
    expires_at: int  # wall clock, ms


@dataclass(eq=False, slots=True)
class _Process:
    ids: set[str] = field(default_factory=set)
    expires_at: int = 0
    timer: asyncio.TimerHandle | None = None


class OrphanHolds:
    """Held ids by process; ``room_id in holds`` says whether an id is taken by one."""

    def __init__(
        self,
        hold_ms: int,
        clock_ms: Callable[[], int],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._hold_ms = hold_ms
        self._clock_ms = clock_ms
        self.on_change = on_change
        self._owner: dict[str, str] = {}  # room id -> process uid holding it
        self._processes: dict[str, _Process] = {}

    def __contains__(self, room_id: object) -> bool:
        return room_id in self._owner

    def __len__(self) -> int:
        return len(self._owner)

    def __iter__(self) -> Iterator[OrphanHold]:
        for process_uid, process in self._processes.items():
            for room_id in process.ids:
                yield OrphanHold(room_id, process_uid, process.expires_at)

    @property
    def hold_ms(self) -> int:
        return self._hold_ms

    def holds_of(self, process_uid: str) -> frozenset[str]:
        process = self._processes.get(process_uid)
        return frozenset(process.ids) if process is not None else frozenset()

    def hold(
        self, process_uid: str, room_ids: Collection[str], expires_at: int | None = None
    ) -> None:
        """Hold ``room_ids`` for ``process_uid`` until it reports or the hold lapses.

        A process held already keeps one expiry, the later of the two.
        """
        if not room_ids:
            return
        if expires_at is None:
            expires_at = self._clock_ms() + self._hold_ms
        process = self._processes.get(process_uid)
        if process is None:
            process = self._processes[process_uid] = _Process()
        process.ids.update(room_ids)
        for room_id in room_ids:
            self._owner[room_id] = process_uid
        if expires_at > process.expires_at or process.timer is None:
            process.expires_at = max(expires_at, process.expires_at)
            self._arm(process_uid, process)
        log.info(
            "orphan hold process=%s ids=%d for_ms=%d",
            process_uid,
            len(process.ids),
            max(0, process.expires_at - self._clock_ms()),
        )
        self.on_change()

    def restore(self, holds: Iterable[OrphanHold]) -> None:
        """Hold what a stored record held, each process until its recorded expiry;
        lapsed ones are dropped."""
        now = self._clock_ms()
        by_process: dict[str, tuple[list[str], int]] = {}
        for hold in holds:
            if hold.expires_at > now:
                ids, expiry = by_process.get(hold.process_uid, ([], 0))
                ids.append(hold.room_id)
                by_process[hold.process_uid] = (ids, max(expiry, hold.expires_at))
        for process_uid, (ids, expiry) in by_process.items():
            self.hold(process_uid, ids, expiry)

    def release(self, process_uid: str) -> frozenset[str]:
        """The process reported: its holds end (listed ids are its rooms again)."""
        process = self._processes.pop(process_uid, None)
        if process is None:
            return frozenset()
        if process.timer is not None:
            process.timer.cancel()
        for room_id in process.ids:
            if self._owner.get(room_id) == process_uid:
                del self._owner[room_id]
        self.on_change()
        return frozenset(process.ids)

    def clear(self) -> None:
        """Forget every hold."""
        self.close()
        self._processes.clear()
        self._owner.clear()

    def close(self) -> None:
        """Stop the timers; the holds stay readable (for the last save)."""
        for process in self._processes.values():
            if process.timer is not None:
                process.timer.cancel()
                process.timer = None

    def _arm(self, process_uid: str, process: _Process) -> None:
        if process.timer is not None:
            process.timer.cancel()
        delay_s = max(0.0, (process.expires_at - self._clock_ms()) / 1000.0)
        loop = asyncio.get_running_loop()
        process.timer = loop.call_later(delay_s, self._lapse, process_uid)

    def _lapse(self, process_uid: str) -> None:
        process = self._processes.get(process_uid)
        if process is None:
            return
        process.timer = None
        now = self._clock_ms()
        if process.expires_at > now:  # a clock that moved back: wait again
            self._arm(process_uid, process)
            return
        released = self.release(process_uid)
        log.info("orphan hold lapsed process=%s ids=%d", process_uid, len(released))
