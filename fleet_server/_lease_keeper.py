"""The keepalive of an election session's lease, sent from a thread of its own.

A leader whose event loop is saturated (every agent reconnecting at once after a
takeover, a machine short of CPU) still runs every callback, but each one late, and a
keepalive sent from the loop waits for several loop iterations — the gRPC call, its
reply, the timeout around it — so that a loop hundreds of milliseconds behind misses
its ⅔-of-the-lease deadline and the leader steps down, although etcd answers at once.

:class:`LeaseKeeper` sends the keepalives from a thread over a blocking gRPC channel
(:class:`~._etcd.BlockingLeases`), every third of the lease, and only while the event
loop is *alive*: the loop stamps a clock every :data:`TICK_S`, and a renewal is sent only
if that stamp is less than a third of the lease old. A loop that is slow keeps its lease;
a loop that is stuck (a callback that never returns, a deadlock) stops the renewals, and
the node steps down by its own clock as before: at most a lease after the loop's last
stamp, always before etcd lets the lease expire (the ⅔ deadline still counts from the
moment the last successful renewal was *sent*).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Final

from ._etcd import BlockingLeases, EtcdUnavailableError

__all__ = ["LOOP_GATE_FRACTION", "TICK_S", "LeaseKeeper"]

log = logging.getLogger("fleet.server")

TICK_S: Final = 0.1
"""How often the event loop stamps the keeper's clock (when it is not behind)."""
LOOP_GATE_FRACTION: Final = 1 / 3
"""A renewal is sent only if the event loop stamped less than this part of the lease ago."""
GATED_POLL_S: Final = 0.02
"""How often a renewal held back by a silent loop looks again."""
RETRY_S: Final = 0.1
"""The pause before a failed keepalive is sent again (the ⅔ deadline has the last word)."""


class LeaseKeeper:
    """Renews ``lease`` every ``period_s`` from a thread while :meth:`run` runs, over a
    client ``leases()`` makes in that thread (and closes when it ends).

    ``renewed(sent)`` is called in the thread after each renewal etcd accepted, with the
    ``clock`` time the request was sent; :meth:`run` raises :class:`LeaseLostError`
    when etcd says the lease is gone.
    """

    def __init__(
        self,
        leases: Callable[[], BlockingLeases],
        lease: int,
        *,
        period_s: float,
        gate_s: float,
        clock: Callable[[], float],
        renewed: Callable[[float], None],
    ) -> None:
        self._leases = leases
        self._lease = lease
        self._period = period_s
        self._gate = gate_s
        self._clock = clock
        self._renewed = renewed
        self._stop = threading.Event()
        self._lost: str | None = None
        self.loop_seen = clock()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lease-keeper-{lease:x}", daemon=True
        )

    async def run(self) -> None:
        """Start the thread, stamp the loop's clock until cancelled; raises
        :class:`LeaseLostError` once the lease is gone. The thread stops with it."""
        self._thread.start()
        try:
            while self._lost is None:
                self.loop_seen = self._clock()
                await asyncio.sleep(TICK_S)
            raise LeaseLostError(self._lost)
        finally:
            self._stop.set()

    def _renew_loop(self) -> None:
        due = self._clock() + self._period  # the grant counts as the first renewal
        leases: BlockingLeases | None = None
        try:
            leases = self._leases()
            while not self._stop.is_set():
                now = self._clock()
                if now < due:
                    self._stop.wait(due - now)
                elif now - self.loop_seen >= self._gate:
                    self._stop.wait(GATED_POLL_S)  # the loop is silent: hold the renewal
                else:
                    due = self._renew(leases, now)
        except Exception:
            log.exception("election: the lease keeper failed")
            self._lost = "the lease keeper failed"
        finally:
            if leases is not None:
                leases.close()

    def _renew(self, leases: BlockingLeases, sent: float) -> float:
        """One keepalive; when the next is due."""
        try:
            ttl = leases.keepalive(self._lease)
        except EtcdUnavailableError as exc:
            log.debug("election: %s", exc)
            return self._clock() + RETRY_S
        if ttl <= 0:
            self._lost = "the lease expired"
            self._stop.set()
        elif not self._stop.is_set():
            self._renewed(sent)
        return sent + self._period


class LeaseLostError(Exception):
    """etcd no longer has the session's lease (or its keeper failed)."""
