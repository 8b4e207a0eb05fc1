"""This node's role in its cluster, and the membership store it keeps (CONTRACT §9–10).

Alone (no etcd) the node is ``single``: with a ``state_path`` it loads the record before
it listens, settles, and keeps the file current until shutdown writes it once more.

With ``etcd_endpoints`` it campaigns (:mod:`._election`) once it listens. Winning, it
*takes the lead*: it loads the record from etcd, settles, and only then accepts agents
and commands. Losing the lease (or etcd), it *steps down*: it stops accepting, closes
its agent links with 4010 ``not leader`` and forgets the record, which its successor
loads. Every request asks :meth:`Coordinator.leads`, which checks the lease by this
node's own clock, so a leader frozen past its lease refuses before anything else runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

from ._agent_tokens import AgentTokenBook
from ._cluster_view import LeaderInfo, NodeInfo
from ._election import Election, EtcdUnavailableError
from ._fleet import Fleet
from ._ids import mint_node_id
from ._interfaces import Surface
from ._membership import FileStore, Membership, MembershipError, MembershipStore, Recorder
from ._options import OrchestratorOptions

__all__ = ["NOT_LEADER_CLOSE", "Coordinator", "EtcdStore"]

log = logging.getLogger("fleet.server")

NOT_LEADER_CLOSE: Final = 4010
_RETRY_TAKE_LEAD_S: Final = 0.5

CloseAgents = Callable[[int, str], Awaitable[None]]


class EtcdStore:
    """The record in etcd, at ``/rivalis-fleet/<cluster>/membership``; fenced writes."""

    def __init__(self, election: Election) -> None:
        self._election = election

    @property
    def where(self) -> str:
        return "etcd key membership"

    async def load(self) -> Membership | None:
        raw = await self._election.read("membership")
        return None if raw is None else Membership.from_json(raw)

    async def save(self, membership: Membership) -> bool:
        return await self._election.fenced_put("membership", membership.to_json())


class Coordinator:
    """Owns the role (single, leader, standby) and the membership store's lifecycle."""

    def __init__(
        self,
        options: OrchestratorOptions,
        fleet: Fleet,
        close_agents: CloseAgents,
        end_streams: Callable[[], object] = lambda: None,
        agent_tokens: AgentTokenBook | None = None,
    ) -> None:
        self._options = options
        self._fleet = fleet
        self._agent_tokens = agent_tokens  # their records are part of the membership record
        self._close_agents = close_agents
        self._end_streams = end_streams
        self._clustered: Final = bool(options.etcd_endpoints)
        self._election: Election | None = None
        self._node: NodeInfo | None = None
        self._recorder: Recorder | None = None
        self._leading = not self._clustered
        self._since = _now_ms()
        self._transition: asyncio.Task[None] | None = None
        self._closed = False
        self._followed: str | None = None  # the leader URL last logged
        fleet.leads = self.leads

    # --- what surfaces ask ------------------------------------------------------------

    @property
    def role(self) -> str:
        if not self._clustered:
            return "single"
        return "leader" if self.leads() else "standby"

    def leads(self) -> bool:
        if not self._clustered:
            return True
        election = self._election
        if not self._leading or election is None:
            return False
        if election.is_leader():
            return True
        self._reconcile_soon()  # the lease went stale by our clock: step down now
        return False

    def leader_hint(self, surface: Surface) -> str | None:
        leader = self._leader()
        if leader is None or (self._node is not None and leader.id == self._node.id):
            return None
        if surface == "api":
            return leader.url
        if surface == "agent":
            return leader.agent_url
        return leader.grpc_url or None

    def info(self) -> dict[str, Any]:
        leader = self._leader()
        members: list[dict[str, str]]
        if self._election is None:
            node = self._node
            members = [{"id": node.id, "url": node.url, "role": "single"}] if node else []
        else:
            members = [{"id": m.id, "url": m.url, "role": m.role} for m in self._election.members]
        return {
            "role": self.role,
            "leader": None if leader is None else _leader_dict(leader),
            "settled": self.leads() and self._fleet.roster.settled,
            "members": members,
        }

    def _leader(self) -> LeaderInfo | None:
        if self._election is not None:
            return self._election.leader
        node = self._node
        if node is None:
            return None
        return LeaderInfo(node.id, node.url, node.grpc_url, node.agent_url, self._since)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Before listening: alone, load the file record (if any)."""
        if not self._clustered and self._options.state_path is not None:
            await self._take_over(FileStore(self._options.state_path))
        elif self._clustered and self._options.state_path is not None:
            log.warning("state_path is ignored with etcd: the record lives in etcd")

    async def listening(self, port: int, grpc_port: int | None) -> None:
        """Once bound: name this node; with etcd, connect and campaign (raises
        :class:`EtcdUnavailableError` naming the endpoints when none answers)."""
        self._node = _node_info(self._options, port, grpc_port)
        if not self._clustered:
            return
        election = Election(
            endpoints=self._options.etcd_endpoints,
            cluster=self._options.cluster,
            node=self._node,
            lease_ms=self._options.leader_lease_ms,
            on_change=self._reconcile_soon,
        )
        await election.start()
        self._election = election
        log.info(
            "campaigning cluster=%s node=%s url=%s",
            self._options.cluster,
            self._node.id,
            self._node.url,
        )

    async def stop(self) -> None:
        """After every instance was torn down: write the record once more, then resign."""
        self._closed = True
        if self._transition is not None:
            self._transition.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._transition
            self._transition = None
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            await recorder.close(final=self.leads())
        if self._election is not None:
            await self._election.close()

    # --- taking and leaving the lead --------------------------------------------------

    def _reconcile_soon(self) -> None:
        if self._closed or (self._transition is not None and not self._transition.done()):
            return
        self._transition = asyncio.get_running_loop().create_task(self._reconcile())

    async def _reconcile(self) -> None:
        election = self._election
        while election is not None and not self._closed:
            wants = election.is_leader()
            if wants and not self._leading:
                if not await self._take_lead(election):
                    await asyncio.sleep(_RETRY_TAKE_LEAD_S)
            elif not wants and self._leading:
                await self._step_down()
            else:
                self._log_leader(election)
                return

    def _log_leader(self, election: Election) -> None:
        leader = election.leader
        url = leader.url if leader is not None else None
        if self._leading or url == self._followed:
            return
        self._followed = url
        if url is None:
            log.warning("standby cluster=%s: no node leads", self._options.cluster)
        else:
            log.info("standby cluster=%s leader=%s", self._options.cluster, url)

    async def _take_lead(self, election: Election) -> bool:
        started = time.perf_counter()
        try:
            await self._take_over(EtcdStore(election))
        except EtcdUnavailableError as exc:
            log.warning("taking the lead failed: the record could not be read (%s)", exc)
            return False
        if not election.is_leader():  # lost it while loading
            await self._forget()
            return True
        self._leading = True
        self._followed = None
        self._since = _now_ms()
        log.info(
            "leading cluster=%s node=%s url=%s took_ms=%.0f settle_ms=%d",
            self._options.cluster,
            election.node.id,
            election.node.url,
            (time.perf_counter() - started) * 1000,
            self._options.settle_ms,
        )
        return True

    async def _step_down(self) -> None:
        self._leading = False
        log.warning("stepping down cluster=%s: the lease is not fresh", self._options.cluster)
        await self._close_agents(NOT_LEADER_CLOSE, "not leader")
        self._end_streams()  # SSE and WatchEvents clients reconnect and are sent on
        await self._forget()

    async def _forget(self) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            await recorder.close(final=False)
        self._fleet.forget_membership()

    async def flush_membership(self) -> bool:
        """Write the membership record now (a revocation answers once it is stored);
        True when there is no store to write."""
        recorder = self._recorder
        return True if recorder is None else await recorder.flush()

    def _capture(self) -> Membership:
        membership = self._fleet.capture_membership()
        book = self._agent_tokens
        return membership if book is None else replace(membership, agent_tokens=book.records())

    async def _take_over(self, store: MembershipStore) -> None:
        membership = await _load(store)
        self._fleet.forget_membership()
        self._fleet.restore(membership, self._options.settle_ms)
        recorder = self._recorder = Recorder(store, self._capture)
        self._fleet.track_membership(recorder.changed)
        if self._agent_tokens is not None:
            if membership is not None:
                self._agent_tokens.restore(membership.agent_tokens)
            self._agent_tokens.on_change = recorder.changed
        recorder.changed()
        if membership is not None:
            log.info(
                "membership loaded from %s processes=%d orphan_holds=%d",
                store.where,
                len(membership.processes),
                len(membership.orphans),
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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _leader_dict(leader: LeaderInfo) -> dict[str, Any]:
    return {
        "id": leader.id,
        "url": leader.url,
        "grpcUrl": leader.grpc_url or None,
        "agentUrl": leader.agent_url,
        "since": leader.since,
    }


def _node_info(options: OrchestratorOptions, port: int, grpc_port: int | None) -> NodeInfo:
    """This node's addresses: ``advertise_url`` or ``http://<host>:<port>``; the agent
    endpoint is the same host and port over ws(s); gRPC the same host."""
    url = options.advertise_url
    if url is None:
        host = options.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        url = f"http://{_bracketed(host)}:{port}"
    parts = urllib.parse.urlsplit(url)
    agent_url = urllib.parse.urlunsplit(
        ("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path or "/", "", "")
    )
    host = parts.hostname or "127.0.0.1"
    grpc_url = f"{_bracketed(host)}:{grpc_port}" if grpc_port is not None else ""
    return NodeInfo(id=mint_node_id(), url=url, grpc_url=grpc_url, agent_url=agent_url)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
