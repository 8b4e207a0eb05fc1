"""Leader election on etcd (CONTRACT §10; docs/high-availability.md §3).

A node holds one *session* at a time: a lease of ``ceil(lease_ms / 1000)`` s renewed every
third of ``lease_ms``, its election key ``election/<lease id, hex>`` and member key
``members/<node id>`` on that lease, and a view of the cluster's candidates and members
(one range read, then a watch). The candidate with the lowest create revision leads; the
others wait for the keys below theirs to go.

The keepalives are sent from a thread of their own (:mod:`._lease_keeper`), so that a
saturated event loop does not delay them, and only while the event loop is alive. A
session ends when the lease has not been renewed for ⅔ of ``lease_ms`` by this node's
clock (a timer that does not wait for the keepalive call), when the lease or the
election key is gone, or on :meth:`Election.close`. The node then stops leading at once
(``on_change`` is told), deletes its election key and revokes its lease when etcd
answers, and campaigns again with a new lease, retrying etcd with jittered backoff (never
longer than half the lease) for as long as it runs. Every write of the leader is fenced
by its election key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Self

from ._cluster_view import ClusterView, LeaderInfo, MemberInfo, NodeInfo, Role
from ._etcd import (
    Change,
    Endpoint,
    EtcdClient,
    EtcdUnavailableError,
    KeyValue,
    connect,
    prefix_end,
)
from ._lease_keeper import LOOP_GATE_FRACTION, LeaseKeeper, LeaseLostError

__all__ = [
    "Election",
    "EtcdUnavailableError",
    "LeaderInfo",
    "MemberInfo",
    "NodeInfo",
    "Role",
    "backoff_s",
]

log = logging.getLogger("fleet.server")

STEP_DOWN_FRACTION = 2 / 3
"""A leader whose lease has not been renewed for this part of ``lease_ms`` steps down."""
CONNECT_TIMEOUT_S = 3.0
"""How long one endpoint has to answer when the election connects."""
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 3.0


def backoff_s(
    attempt: int, rand: Callable[[], float] = random.random, cap_s: float = BACKOFF_MAX_S
) -> float:
    """The pause before campaign ``attempt`` (0, 1, …): doubling from 0.1 s to at most
    ``cap_s`` (3 s), its second half random so that nodes that lost etcd together spread
    out."""
    ceiling = min(cap_s, BACKOFF_INITIAL_S * 2.0 ** min(attempt, 16))
    return ceiling / 2 + rand() * ceiling / 2


class _SessionLost(Exception):
    """The session cannot go on; the message says why."""


class Election:
    """Campaigns for the leadership of ``cluster`` on etcd until closed.

    :meth:`is_leader` is what every request checks. ``on_change`` is called (in the event
    loop, so it must be cheap; what it raises is logged) on every change of :attr:`role`
    or :attr:`leader`.
    """

    def __init__(
        self,
        *,
        endpoints: Sequence[str],
        cluster: str,
        node: NodeInfo,
        lease_ms: int,
        on_change: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("the election needs at least one etcd endpoint")
        if not cluster or "/" in cluster:
            raise ValueError(f"bad cluster name {cluster!r}")
        if lease_ms < 1000:
            raise ValueError("lease_ms must be at least 1000: etcd leases are whole seconds")
        self._endpoints = [Endpoint.parse(endpoint) for endpoint in endpoints]
        self._prefix = f"/rivalis-fleet/{cluster}/"
        self._cluster = cluster
        self._node = node
        self._ttl_s = math.ceil(lease_ms / 1000)
        self._step_down_s = lease_ms * STEP_DOWN_FRACTION / 1000
        self._timeout_s = lease_ms / 3000  # each etcd call, and the keepalive period
        self._gate_s = lease_ms * LOOP_GATE_FRACTION / 1000  # renewals need a loop this fresh
        # Retries never sleep past half the lease: a leader is back within a lease of
        # etcd's return, however long it was away.
        self._backoff_cap_s = min(BACKOFF_MAX_S, lease_ms / 2000)
        self._on_change = on_change
        self._clock = monotonic
        self._member_key = f"{self._prefix}members/{node.id}"
        self._view = ClusterView(self._prefix)
        self._view_changed = asyncio.Event()
        self._client: EtcdClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._role: Role = "standby"
        self._lease: int | None = None
        self._key: str | None = None
        self._revision = 0
        self._renewed = -math.inf
        self._campaigned = False
        self._unresigned: int | None = None  # a lease etcd may still hold for this node
        self._told: tuple[Role, LeaderInfo | None] = ("standby", None)

    # -- what the node asks --------------------------------------------------------------

    @property
    def node(self) -> NodeInfo:
        return self._node

    def is_leader(self) -> bool:
        """Leading, and the lease renewed less than ⅔ of ``lease_ms`` ago by this clock."""
        return self._role == "leader" and self._fresh()

    @property
    def role(self) -> Role:
        return "leader" if self.is_leader() else "standby"

    @property
    def leader(self) -> LeaderInfo | None:
        """The leader as this node's view of etcd shows it; None when there is none, or
        when this node cannot vouch for its view (its own lease is not fresh)."""
        if not self._fresh():
            return None
        found = self._view.leader()
        if found is None or (found[0] == self._key and not self.is_leader()):
            return None
        return found[1]

    @property
    def members(self) -> list[MemberInfo]:
        """The live nodes (by their member keys), this one always among them."""
        own = MemberInfo(self._node.id, self._node.url, self.role)
        others = [m for m in self._view.members() if m.id != own.id] if self._fresh() else []
        return sorted([own, *others], key=lambda member: member.id)

    async def read(self, key: str) -> bytes | None:
        """The value of ``key`` (relative to ``/rivalis-fleet/<cluster>/``), None if unset;
        :class:`EtcdUnavailableError` when etcd does not answer."""
        found = await self._connection().get(self._prefix + key)
        return None if found is None else found.value

    async def fenced_put(self, key: str, value: bytes) -> bool:
        """Write ``key`` only while this node leads: a transaction guarded by the create
        revision of its election key. False when not leading or deposed (the node then
        steps down); :class:`EtcdUnavailableError` when etcd does not answer (the write
        may or may not have happened)."""
        client, guard, revision = self._client, self._key, self._revision
        if client is None or guard is None or not self.is_leader():
            return False
        if await client.put_if_created(guard, revision, self._prefix + key, value):
            return True
        self._depose("a fenced write was refused: the election key is gone")
        return False

    def _fresh(self) -> bool:
        return self._lease is not None and self._clock() - self._renewed < self._step_down_s

    def _connection(self) -> EtcdClient:
        if self._client is None:
            tried = ", ".join(str(endpoint) for endpoint in self._endpoints)
            raise EtcdUnavailableError(f"not connected to etcd (endpoints: {tried})")
        return self._client

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the first endpoint that answers, then campaign in the background;
        :class:`EtcdUnavailableError` naming the endpoints when none answers."""
        if self._closed:
            raise RuntimeError("the election is closed")
        if self._task is not None:
            return
        self._client = await self._connect()
        self._task = asyncio.create_task(self._run(), name=f"election {self._node.id}")

    async def close(self) -> None:
        """Resign: stop leading at once, then delete the election key and revoke the lease
        (and so the member key) when etcd answers in time. Harmless twice."""
        if self._closed:
            return
        self._closed = True
        client, lease, key = self._client, self._lease, self._key
        self._drop("closing")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if client is not None:
            if lease is not None:
                await self._resign(client, lease, key)
            await client.close()
        self._client = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self) -> EtcdClient:
        return await connect(
            self._endpoints, timeout=self._timeout_s, open_timeout=CONNECT_TIMEOUT_S
        )

    # -- the campaign --------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                reason = await self._session()
            except Exception:
                log.exception("election: node %s failed to campaign", self._node.id)
                reason = "internal error"
            attempt = 0 if self._campaigned else attempt + 1
            delay = backoff_s(attempt, cap_s=self._backoff_cap_s)
            log.log(
                logging.INFO if attempt <= 1 else logging.DEBUG,
                "election: node %s out of session (%s); campaigns again in %.2f s",
                self._node.id,
                reason,
                delay,
            )
            await asyncio.sleep(delay)

    async def _session(self) -> str:
        """One lease, from its grant to its end; why it ended."""
        self._campaigned = False
        try:
            if self._client is None:
                self._client = await self._connect()
            client = self._client
            if self._unresigned is not None:
                await self._revoke_unresigned(client)
            started = self._clock()
            lease = await client.grant(self._ttl_s)
        except EtcdUnavailableError as exc:
            await self._disconnect()
            return str(exc)
        self._lease, self._renewed = lease, started
        key = f"{self._prefix}election/{lease:x}"
        reason = "closing"
        try:
            keeper = LeaseKeeper(
                client.blocking_leases,
                lease,
                period_s=self._timeout_s,
                gate_s=self._gate_s,
                clock=self._clock,
                renewed=lambda sent: self._renewed_at(lease, sent),
            )
            await _first_to_end(
                keeper.run(),
                self._watchdog(),
                self._follow(client),
                self._campaign(client, lease, key),
            )
        except (_SessionLost, LeaseLostError, EtcdUnavailableError) as exc:
            reason = str(exc)
        except Exception:
            log.exception("election: session of node %s failed", self._node.id)
            reason = "internal error"
        finally:
            self._drop(reason)
            if not self._closed:
                await self._resign(client, lease, key)
                await self._disconnect()
        return reason

    def _renewed_at(self, lease: int, sent: float) -> None:
        """The keeper's thread: etcd renewed ``lease`` after a request sent at ``sent``."""
        if self._lease == lease:
            self._renewed = max(self._renewed, sent)

    async def _watchdog(self) -> None:
        """End the session once the lease has gone unrenewed for ⅔ of ``lease_ms``,
        whatever the keepalive call is doing; step down at that very moment."""
        while True:
            left = self._renewed + self._step_down_s - self._clock()
            if left <= 0:
                reason = f"lease not renewed for {self._step_down_s * 1000:.0f} ms"
                self._drop(reason)
                raise _SessionLost(reason)
            await asyncio.sleep(left)

    async def _follow(self, client: EtcdClient) -> None:
        """Keep the view: read the candidates and members, then watch them; read again
        after a broken watch."""
        start = self._view.election_prefix
        end = prefix_end(self._view.members_prefix)  # one range covers both prefixes
        attempt = 0
        while True:
            try:
                kvs, revision = await client.get_range(start, end)
                self._view.reset(kvs, revision)
                self._on_view_change()
                async with contextlib.aclosing(client.watch(start, end, revision + 1)) as batches:
                    async for batch in batches:
                        self._view.apply(batch)
                        self._on_view_change()
                        attempt = 0
            except EtcdUnavailableError as exc:
                log.debug("election: %s", exc)
            await asyncio.sleep(backoff_s(attempt, cap_s=self._backoff_cap_s))
            attempt += 1

    async def _campaign(self, client: EtcdClient, lease: int, key: str) -> None:
        """Create the election key, then lead whenever it is the first one."""
        revision = await client.create(key, self._node.to_json(), lease)
        if revision is None:
            raise _SessionLost("the election key exists already")
        self._key, self._revision, self._campaigned = key, revision, True
        standby = MemberInfo(self._node.id, self._node.url, "standby")
        await client.put(self._member_key, standby.to_json(), lease)
        log.info("election: node %s campaigns in cluster %s", self._node.id, self._cluster)
        while True:
            await self._view_changed.wait()
            self._view_changed.clear()
            if self._view.revision < revision:
                continue  # the view does not show the key yet
            if not self._view.has(key):
                raise _SessionLost("the election key was deleted")
            if self._role == "standby" and self._view.first() == key:
                await self._take_lead(client, lease, key, revision)

    async def _take_lead(self, client: EtcdClient, lease: int, key: str, revision: int) -> None:
        since = int(time.time() * 1000)
        value = self._node.to_json(since)
        if not await client.put_if_created(key, revision, key, value, lease):
            raise _SessionLost("the election key was deleted")
        if self._lease != lease:
            raise _SessionLost("the session ended")
        self._view.apply([Change("put", KeyValue(key, value, revision, revision, lease))])
        self._role = "leader"
        log.info("election: node %s leads cluster %s", self._node.id, self._cluster)
        self._notify()
        leader = MemberInfo(self._node.id, self._node.url, "leader")
        try:
            await client.put(self._member_key, leader.to_json(), lease)
        except EtcdUnavailableError as exc:
            log.info("election: the member key of node %s keeps its role: %s", self._node.id, exc)

    # -- leaving -------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        """Forget the session at once: standby, no lease, an empty view."""
        if self._role == "leader":
            level = logging.INFO if self._closed else logging.WARNING
            log.log(level, "election: node %s steps down: %s", self._node.id, reason)
        self._role = "standby"
        self._lease, self._key, self._revision = None, None, 0
        self._view.clear()
        self._notify()

    def _depose(self, reason: str) -> None:
        """Stop leading at once; the session ends when the view shows the key gone."""
        if self._role == "leader":
            log.warning("election: node %s steps down: %s", self._node.id, reason)
            self._role = "standby"
            self._notify()

    async def _resign(self, client: EtcdClient, lease: int, key: str | None) -> None:
        """Delete the election key, then revoke the lease (and with it the member key);
        best effort, each call bounded."""
        try:
            if key is not None:
                await client.delete(key)
            await client.revoke(lease)
        except EtcdUnavailableError as exc:
            log.info("election: node %s could not resign: %s", self._node.id, exc)
            self._unresigned = lease  # revoked when etcd answers again, before campaigning

    async def _revoke_unresigned(self, client: EtcdClient) -> None:
        """Revoke the lease a session ended without revoking (etcd did not answer then),
        so that its election key does not stand before the new one until it expires."""
        lease, self._unresigned = self._unresigned, None
        if lease is not None:
            with contextlib.suppress(EtcdUnavailableError):
                await client.revoke(lease)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- telling the node ----------------------------------------------------------------

    def _on_view_change(self) -> None:
        self._view_changed.set()
        self._notify()

    def _notify(self) -> None:
        now = (self.role, self.leader)
        if now == self._told:
            return
        self._told = now
        try:
            self._on_change()
        except Exception:
            log.exception("election: on_change failed")


async def _first_to_end(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run ``jobs`` together until one ends; cancel the others; raise what it raised."""
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    outcomes = {task: task.exception() for task in tasks if not task.cancelled()}
    for task in tasks:
        error = outcomes.get(task) if task in done else None
        if error is not None:
            raise error
    raise _SessionLost("a session task ended")
