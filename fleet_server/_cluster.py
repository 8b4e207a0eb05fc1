"""This node's role in its cluster, and the membership store it keeps (CONTRACT §9–10).

Alone (no etcd), the node is ``single``: with a ``state_path`` it loads the record at
start, settles, and keeps the file current until shutdown writes it once more.
"""

from __future__ import annotations

import logging
from typing import Final

from ._fleet import Fleet
from ._membership import FileStore, Membership, MembershipError, MembershipStore, Recorder
from ._options import OrchestratorOptions

__all__ = ["Coordinator"]

log = logging.getLogger("fleet.server")


class Coordinator:
    """Owns the role (single, leader, standby) and the membership store's lifecycle."""

    def __init__(self, options: OrchestratorOptions, fleet: Fleet) -> None:
        self._options = options
        self._fleet = fleet
        self._store: Final[MembershipStore | None] = (
            FileStore(options.state_path) if options.state_path is not None else None
        )
        self._recorder: Recorder | None = None

    @property
    def recorder(self) -> Recorder | None:
        return self._recorder

    async def start(self) -> None:
        """Load the stored record (if any) and start keeping it; before agents connect."""
        if self._store is not None:
            await self._take_over(self._store)

    async def stop(self) -> None:
        """Write the record one last time (after every instance was torn down)."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            await recorder.close(final=True)

    async def _take_over(self, store: MembershipStore) -> None:
        membership = await _load(store)
        self._fleet.restore(membership, self._options.settle_ms)
        recorder = self._recorder = Recorder(store, self._fleet.capture_membership)
        self._fleet.track_membership(recorder.changed)
        recorder.changed()
        if membership is not None:
            log.info(
                "membership loaded from %s processes=%d orphan_holds=%d settle_ms=%d",
                store.where,
                len(membership.processes),
                len(membership.orphans),
                self._options.settle_ms,
            )


async def _load(store: MembershipStore) -> Membership | None:
    """The stored record; an empty one when there is none; None when it is unreadable
    (logged: the node then waits the whole settle time for explicit ids)."""
    try:
        membership = await store.load()
    except MembershipError as exc:
        log.error("membership record in %s is unreadable (%s); settling in full", store.where, exc)
        return None
    return membership if membership is not None else Membership()
