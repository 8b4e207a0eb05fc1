"""Which game-server processes the orchestrator knows, and whether it has settled.

A process is *connected* while one of its links has applied a snapshot, and *gone*
(since a wall-clock time) after its last link's unclean teardown; a clean leave forgets
it. After a start or a takeover with a membership store, the processes the store
recorded are *awaited*: until each is back, or ``settle_ms`` has passed, the
orchestrator has not settled and creates that name their room id must wait
(CONTRACT §9), because an awaited process may already have that id.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping

__all__ = ["Roster"]


class Roster:
    """Connected and gone processes, plus the settle state after a restore."""

    def __init__(
        self,
        clock_ms: Callable[[], int],
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self.on_change = on_change
        self._connected: Counter[str] = Counter()  # process uid -> links in the read model
        self._gone: dict[str, int] = {}  # process uid -> gone since (ms)
        self._awaited: set[str] = set()
        self._settle_deadline = 0.0  # monotonic seconds

    # --- settling -----------------------------------------------------------------

    @property
    def settled(self) -> bool:
        if not self._awaited:
            return True
        if self._monotonic() >= self._settle_deadline:
            self._awaited.clear()
            return True
        return False

    @property
    def awaited(self) -> int:
        """Recorded processes not back yet (0 once settled)."""
        return 0 if self.settled else len(self._awaited)

    def retry_after_s(self) -> int:
        """Whole seconds until the settle deadline, at least 1."""
        return max(1, math.ceil(self._settle_deadline - self._monotonic()))

    def restore(
        self, processes: Mapping[str, int], settle_ms: int, *, wait_all: bool = False
    ) -> None:
        """Await every recorded process (connected ones excepted) for at most
        ``settle_ms``; ``wait_all`` waits that long whoever comes back."""
        for process_uid, last_seen in processes.items():
            if process_uid not in self._connected:
                self._gone.setdefault(process_uid, last_seen)
        self._awaited = {uid for uid in processes if uid not in self._connected}
        if wait_all:
            self._awaited.add("")  # no process has this uid: only the deadline settles
        self._settle_deadline = self._monotonic() + settle_ms / 1000.0
        self.on_change()

    def clear(self) -> None:
        """Forget every process: gone, connected and awaited alike."""
        self._connected.clear()
        self._gone.clear()
        self._awaited.clear()

    # --- joins and leaves ---------------------------------------------------------

    def joined(self, process_uid: str) -> None:
        """A link of the process applied its first snapshot."""
        self._connected[process_uid] += 1
        self._awaited.discard(process_uid)
        if self._gone.pop(process_uid, None) is not None or self._connected[process_uid] == 1:
            self.on_change()

    def left(self, process_uid: str, *, clean: bool) -> None:
        """A link of the process that had joined is gone."""
        count = self._connected[process_uid] - 1
        if count > 0:
            self._connected[process_uid] = count
            return
        del self._connected[process_uid]
        if not clean:
            self._gone[process_uid] = self._clock_ms()
        self.on_change()

    def records(self, keep_gone_ms: int) -> dict[str, int]:
        """Every process to record, with when it was last seen; gone ones older than
        ``keep_gone_ms`` are forgotten here."""
        now = self._clock_ms()
        for process_uid in [u for u, since in self._gone.items() if now - since > keep_gone_ms]:
            del self._gone[process_uid]
        out = dict(self._gone)
        for process_uid in self._connected:
            out[process_uid] = now
        return out
